package policy

import (
	"context"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

const syncName = "psi"

// syncFixture runs a Syncer against a fake API server, with a configuration file it can change.
type syncFixture struct {
	cs    *fake.Clientset
	store *config.Store
	dir   string
	s     *Syncer
	// done is closed when Start returns.
	done chan struct{}
}

func newSyncFixture(t *testing.T, enabled bool, objects ...runtime.Object) *syncFixture {
	t.Helper()
	dir := t.TempDir()
	if err := fixtures.WriteConfigMapVolume(dir, "config.yaml", []byte(testConfig)); err != nil {
		t.Fatal(err)
	}
	store, err := config.NewStore(filepath.Join(dir, "config.yaml"), time.Hour, logr.Discard(), nil, config.WithCheck(Check))
	if err != nil {
		t.Fatal(err)
	}
	owner := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "owner", UID: "owner-uid"}}
	cs := fake.NewClientset(append([]runtime.Object{owner}, objects...)...)
	// The fake stores objects without a resourceVersion; the API server gives every write a new one, which
	// is how the syncer tells its own write from an older state of its cache.
	var rv atomic.Int64
	cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if w, ok := a.(interface{ GetObject() runtime.Object }); ok && (a.GetVerb() == "create" || a.GetVerb() == "update") {
			if m, err := meta.Accessor(w.GetObject()); err == nil {
				m.SetResourceVersion(strconv.FormatInt(rv.Add(1), 10))
			}
		}
		return false, nil, nil
	})
	s := NewSyncer()
	s.Client, s.Config, s.Enabled = cs, store, enabled
	s.Options = Options{PolicyName: syncName}
	s.Owner = ClusterRoleOwner(cs.RbacV1(), "owner")
	s.Log = testr(t)
	store.Subscribe(func(*config.Matcher) { s.Trigger() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Start(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &syncFixture{cs: cs, store: store, dir: dir, s: s, done: done}
}

func testr(t *testing.T) logr.Logger {
	return logr.New(logSink{t: t})
}

// logSink logs to t, so that a failing test shows what the syncer said.
type logSink struct {
	t      *testing.T
	values []any
}

func (l logSink) Init(logr.RuntimeInfo)  {}
func (l logSink) Enabled(level int) bool { return true }
func (l logSink) Info(level int, msg string, kv ...any) {
	l.t.Logf("%s %v", msg, append(l.values, kv...))
}
func (l logSink) Error(err error, msg string, kv ...any) {
	l.t.Logf("ERROR %s: %v %v", msg, err, append(l.values, kv...))
}
func (l logSink) WithValues(kv ...any) logr.LogSink {
	l.values = append(append([]any(nil), l.values...), kv...)
	return l
}
func (l logSink) WithName(string) logr.LogSink { return l }

// want returns the objects the syncer must store for the configuration in force.
func (f *syncFixture) want(t *testing.T) (*admissionregistrationv1.MutatingAdmissionPolicy, *admissionregistrationv1.MutatingAdmissionPolicyBinding) {
	t.Helper()
	p, b, err := Build(f.store.Matcher(), Options{PolicyName: syncName})
	if err != nil {
		t.Fatal(err)
	}
	owner := []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "owner", UID: "owner-uid"}}
	for _, o := range []metav1.Object{p, b} {
		o.SetLabels(map[string]string{managed.ManagedByLabel: managed.ManagedByValue})
		o.SetOwnerReferences(owner)
	}
	return p, b
}

// waitInStep waits until the stored objects have the specs, our label and the owner of the configuration in
// force.
func (f *syncFixture) waitInStep(t *testing.T) {
	t.Helper()
	wantP, wantB := f.want(t)
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(ctx, syncName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		b, err := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Get(ctx, syncName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = cmp.Diff(wantP.Spec, p.Spec) + cmp.Diff(wantB.Spec, b.Spec) +
			cmp.Diff(wantP.OwnerReferences, p.OwnerReferences) + cmp.Diff(wantB.OwnerReferences, b.OwnerReferences)
		if !managed.IsManaged(p) || !managed.IsManaged(b) {
			last += "\nnot labelled as ours"
		}
		return last == "", nil
	})
	if err != nil {
		t.Fatalf("policy objects never in step with the configuration: %v\n%s", err, last)
	}
}

// pass triggers a comparison and waits until the syncer has made it.
func (f *syncFixture) pass(t *testing.T) {
	t.Helper()
	before := f.s.passes.Load()
	f.s.Trigger()
	err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return f.s.passes.Load() > before, nil
	})
	if err != nil {
		t.Fatalf("the syncer made no pass: %v", err)
	}
}

// writes returns the create, update and delete actions on policy objects so far.
func (f *syncFixture) writes() []string {
	var out []string
	for _, a := range f.cs.Actions() {
		switch a.GetVerb() {
		case "create", "update", "delete", "patch":
			if a.GetResource().Group == admissionregistrationv1.GroupName {
				out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
			}
		}
	}
	return out
}

func TestSyncerCreatesUpdatesAndRestores(t *testing.T) {
	f := newSyncFixture(t, true)
	f.waitInStep(t)
	want := []string{"create mutatingadmissionpolicies", "create mutatingadmissionpolicybindings"}
	if diff := cmp.Diff(want, f.writes()); diff != "" {
		t.Errorf("writes to reach the first configuration (-want +got):\n%s", diff)
	}

	// Nothing is written while nothing differs, however often the syncer looks.
	f.pass(t)
	f.pass(t)
	if diff := cmp.Diff(want, f.writes()); diff != "" {
		t.Errorf("writes with nothing to change (-want +got):\n%s", diff)
	}

	// A reload: the policy follows.
	if err := fixtures.WriteConfigMapVolume(f.dir, "config.yaml", []byte(reloadedConfig)); err != nil {
		t.Fatal(err)
	}
	if !f.store.Reload() {
		t.Fatal("the new configuration was not taken")
	}
	f.waitInStep(t)

	// Someone edits the policy, and adds a label of their own: the spec is put back, their label kept.
	ctx := context.Background()
	policies := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicies()
	p, err := policies.Get(ctx, syncName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Spec.Variables = p.Spec.Variables[:1]
	p.Labels["theirs"] = "kept"
	if _, err := policies.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitInStep(t)
	if p, err := policies.Get(ctx, syncName, metav1.GetOptions{}); err != nil || p.Labels["theirs"] != "kept" {
		t.Errorf("label of someone else's after the repair: %v, %v", p.Labels, err)
	}

	// Someone deletes the binding: it is created again.
	if err := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Delete(ctx, syncName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitInStep(t)
}

// reloadedConfig drops and adds entries against testConfig.
const reloadedConfig = `
registries:
  - registry: quay.io
    secret: {namespace: ops, name: quay}
  - registry: ghcr.io
    secret: {namespace: ops, name: ghcr}
`

func TestSyncerLeavesAnObjectThatIsNotOurs(t *testing.T) {
	theirs := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: syncName, Labels: map[string]string{"owner": "someone"}},
		Spec:       admissionregistrationv1.MutatingAdmissionPolicySpec{ReinvocationPolicy: admissionregistrationv1.NeverReinvocationPolicy},
	}
	for _, enabled := range []bool{true, false} {
		f := newSyncFixture(t, enabled, theirs.DeepCopy())
		if enabled {
			f.pass(t)
			f.pass(t)
		} else {
			<-f.done // webhook mode makes one pass and returns
		}
		got, err := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(context.Background(), syncName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("enabled=%v: %v", enabled, err)
		}
		if diff := cmp.Diff(theirs.Spec, got.Spec); diff != "" {
			t.Errorf("enabled=%v: someone else's policy changed (-before +after):\n%s", enabled, diff)
		}
		for _, w := range f.writes() {
			if w == "update mutatingadmissionpolicies" || w == "delete mutatingadmissionpolicies" {
				t.Errorf("enabled=%v: %s of someone else's policy", enabled, w)
			}
		}
	}
}

func TestSyncerInWebhookModeDeletesOurs(t *testing.T) {
	p, b, err := Build(configtest.Matcher(t, testConfig), Options{PolicyName: syncName})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	b.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	p.UID, b.UID = "p-uid", "b-uid"
	f := newSyncFixture(t, false, p, b)
	<-f.done
	ctx := context.Background()
	_, errP := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicies().Get(ctx, syncName, metav1.GetOptions{})
	_, errB := f.cs.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Get(ctx, syncName, metav1.GetOptions{})
	if !apierrors.IsNotFound(errP) || !apierrors.IsNotFound(errB) {
		t.Fatalf("our policy objects were not deleted in webhook mode: %v, %v", errP, errB)
	}
	// The binding goes first: a policy without its binding does nothing, a binding without its policy
	// neither, but the binding is what applies the policy.
	want := []string{"delete mutatingadmissionpolicybindings", "delete mutatingadmissionpolicies"}
	if diff := cmp.Diff(want, f.writes()); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	for _, a := range f.cs.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			if pre := d.GetDeleteOptions().Preconditions; pre == nil || pre.UID == nil || pre.ResourceVersion == nil {
				t.Errorf("delete of %s without UID and resourceVersion preconditions: %+v", d.GetName(), pre)
			}
		}
	}
}
