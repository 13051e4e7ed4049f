package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/internal/sources"
)

const testConfig = `
registries:
  - registry: quay.io
    secret: {namespace: psi, name: quay-regcred}
  - registry: "*.dkr.ecr.eu-west-1.amazonaws.com"
    secret: {namespace: psi, name: ecr-regcred}
    namespaceSelector: {matchLabels: {team: payments}}
`

var (
	quayRef = config.SecretRef{Namespace: "psi", Name: "quay-regcred"}
	optIn   = map[string]string{config.InjectLabel: config.InjectEnabled}
)

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{
		Forget: "Forget", Create: "Create", Sync: "Sync", Revoke: "Revoke", Ignore: "Ignore", Action(42): "Action(42)",
	} {
		if got := a.String(); got != want {
			t.Errorf("Action(%d).String() = %q, want %q", int(a), got, want)
		}
	}
}

func TestDecide(t *testing.T) {
	for name, tc := range map[string]struct {
		facts Facts
		want  Action
	}{
		"a source is never written, even labelled as managed":       {Facts{Exists: true, IsManaged: true, IsSource: true, HasEntry: true}, Ignore},
		"an unmanaged Secret of a configured name is never written": {Facts{Exists: true, HasEntry: true, Selected: true}, Ignore},
		"a copy deleted from a selected namespace is recreated":     {Facts{HasEntry: true, Selected: true}, Create},
		"a deleted copy in an unselected namespace is forgotten":    {Facts{HasEntry: true}, Forget},
		"a deleted Secret of an unconfigured name is forgotten":     {Facts{}, Forget},
		"a copy in a selected namespace is synced":                  {Facts{Exists: true, IsManaged: true, HasEntry: true, Selected: true}, Sync},
		"a copy in an unselected namespace is revoked":              {Facts{Exists: true, IsManaged: true, HasEntry: true}, Revoke},
		"a copy no entry names any more is revoked":                 {Facts{Exists: true, IsManaged: true}, Revoke},
	} {
		t.Run(name, func(t *testing.T) {
			if got := Decide(tc.facts); got != tc.want {
				t.Errorf("Decide = %v, want %v", got, tc.want)
			}
		})
	}
}

// countingClient is the API server of these tests: the fake client behind controller-runtime's
// interceptor, which counts the reads and writes that reach it, records the Pod lists' field selectors and
// the deletes' preconditions, and answers patches and deletes as the API server does where the fake client
// does not. Client is the fake client itself, for the tests' own reads and writes, which nothing counts.
type countingClient struct {
	client.WithWatch
	Client               client.WithWatch
	reads, lists, writes atomic.Int32

	mu sync.Mutex
	// fieldSelectors are the field selectors of the lists, in order.
	fieldSelectors []string
	// preconditions are those of the deletes, in order.
	preconditions []metav1.Preconditions
}

func newCountingClient(fc client.WithWatch) *countingClient {
	c := &countingClient{Client: fc}
	c.WithWatch = interceptor.NewClient(fc, interceptor.Funcs{
		Get: func(ctx context.Context, fc client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			c.reads.Add(1)
			return fc.Get(ctx, key, obj, opts...)
		},
		List: c.list,
		Create: func(ctx context.Context, fc client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			c.writes.Add(1)
			return fc.Create(ctx, obj, opts...)
		},
		Patch:  c.patch,
		Delete: c.delete,
	})
	return c
}

// list passes the list on without its field selector, which the fake client serves only in the form
// key=value; the reconciler filters Pods by phase itself as well.
func (c *countingClient) list(ctx context.Context, fc client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
	c.reads.Add(1)
	c.lists.Add(1)
	lo := &client.ListOptions{}
	lo.ApplyOptions(opts)
	c.mu.Lock()
	if lo.FieldSelector != nil {
		c.fieldSelectors = append(c.fieldSelectors, lo.FieldSelector.String())
	} else {
		c.fieldSelectors = append(c.fieldSelectors, "")
	}
	c.mu.Unlock()
	lo.FieldSelector = nil
	return fc.List(ctx, list, lo)
}

// patch refuses, as the API server does and the fake client does not, a patch that changes the data of an
// immutable Secret or the type of a Secret.
func (c *countingClient) patch(ctx context.Context, fc client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
	c.writes.Add(1)
	if current := (&corev1.Secret{}); fc.Get(ctx, client.ObjectKeyFromObject(obj), current) == nil {
		body, err := p.Data(obj)
		if err != nil {
			return err
		}
		var patch struct {
			Type corev1.SecretType `json:"type"`
			Data map[string]any    `json:"data"`
		}
		if err := json.Unmarshal(body, &patch); err != nil {
			return err
		}
		if (patch.Type != "" && patch.Type != current.Type) || (current.Immutable != nil && *current.Immutable && patch.Data != nil) {
			return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Secret").GroupKind(), obj.GetName(), nil)
		}
	}
	return fc.Patch(ctx, obj, p, opts...)
}

// delete honours a UID precondition too, which the fake client ignores.
func (c *countingClient) delete(ctx context.Context, fc client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
	c.writes.Add(1)
	do := &client.DeleteOptions{}
	do.ApplyOptions(opts)
	c.mu.Lock()
	if do.Preconditions != nil {
		c.preconditions = append(c.preconditions, *do.Preconditions)
	} else {
		c.preconditions = append(c.preconditions, metav1.Preconditions{})
	}
	c.mu.Unlock()
	if do.Preconditions != nil && do.Preconditions.UID != nil {
		current := managed.PartialSecret()
		if err := fc.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
			return err
		}
		if current.UID != *do.Preconditions.UID {
			return apierrors.NewConflict(corev1.Resource("secrets"), obj.GetName(), fmt.Errorf("UID precondition %s, object has %s", *do.Preconditions.UID, current.UID))
		}
	}
	return fc.Delete(ctx, obj, do)
}

func dockerConfig(password string) []byte {
	return []byte(`{"auths":{"quay.io":{"username":"u","password":"` + password + `"}}}`)
}

func sourceSecret(name string, data []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "psi", Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
}

// oldCopy returns a copy of src in ns created an hour ago, old enough to be revoked.
func oldCopy(src *corev1.Secret, ns string) *corev1.Secret {
	c := managed.Copy(src, ns)
	c.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	return c
}

type fixture struct {
	r      *Reconciler
	api    *countingClient
	cache  client.Client
	source *corev1.Secret
}

// newFixture builds a reconciler whose cache and API server both hold objs (the cache is the API server's
// fake client read directly, so that API reads and cache reads are told apart).
func newFixture(t *testing.T, src *corev1.Secret, objs ...client.Object) *fixture {
	t.Helper()
	return newSplitFixture(t, src, nil, objs...)
}

// newSplitFixture is newFixture with a cache of its own holding cached, for a cache that lags behind the
// API server; nil cached shares the API server's objects.
func newSplitFixture(t *testing.T, src *corev1.Secret, cached []client.Object, objs ...client.Object) *fixture {
	t.Helper()
	matcher := configtest.Matcher(t, testConfig)
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	all := append([]client.Object{}, objs...)
	if src != nil {
		all = append(all, src)
	}
	api := newCountingClient(fake.NewClientBuilder().WithScheme(scheme).WithObjects(all...).Build())
	cache := api.Client
	if cached != nil {
		cache = fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached...).Build()
	}
	srcs := sources.Static{}
	if src != nil {
		srcs[config.SecretRef{Namespace: src.Namespace, Name: src.Name}] = src
	}
	f := &fixture{api: api, cache: cache, source: src}
	f.r = &Reconciler{
		Config:            config.NewStaticStore(matcher),
		Sources:           srcs,
		Cache:             cache,
		APIReader:         api,
		Client:            api,
		RevocationRecheck: time.Minute,
	}
	return f
}

func (f *fixture) reconcile(t *testing.T, ns, name string) reconcile.Result {
	t.Helper()
	res, err := f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (f *fixture) secret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := f.api.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return s
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func podUsing(ns, secret string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-" + string(phase)},
		Spec:       corev1.PodSpec{ImagePullSecrets: []corev1.LocalObjectReference{{Name: secret}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestReconcileSync(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("new"))
	old := managed.Copy(sourceSecret("quay-regcred", dockerConfig("old")), "team")
	for name, tc := range map[string]struct {
		copy *corev1.Secret
		// foreign: the leader saw someone else write the copy (a watch event it did not cause); otherwise the
		// copy is as the cache first listed it, as a new leader finds every copy.
		foreign            bool
		wantReads          int32
		wantWrites         int32
		wantReason         string
		replaced, requeued bool
	}{
		"a copy in step costs no API call": {
			copy: managed.Copy(src, "team"),
		},
		"a copy with old data is written without a read": {
			copy: old.DeepCopy(), wantWrites: 1, wantReason: "source changed",
		},
		"a placeholder is filled in without a read": {
			copy: managed.Placeholder(quayRef, "team"), wantWrites: 1, wantReason: "copy differs from its source",
		},
		"a copy made before digest annotations existed is written without a read": {
			copy: func() *corev1.Secret {
				c := managed.Copy(src, "team")
				delete(c.Annotations, managed.DigestAnnotation)
				return c
			}(),
			wantWrites: 1, wantReason: "copy differs from its source",
		},
		"a write without a read removes the keys the source lacks": {
			copy: func() *corev1.Secret {
				c := old.DeepCopy()
				c.Data["extra"] = []byte("x")
				return c
			}(),
			wantWrites: 1, wantReason: "source changed",
		},
		"a copy someone else edited, keeping its digest annotation, is read and restored": {
			copy: func() *corev1.Secret {
				c := managed.Copy(src, "team")
				c.Data = map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("theirs"), "extra": []byte("x")}
				return c
			}(),
			foreign: true, wantReads: 1, wantWrites: 1, wantReason: "copy differs from its source",
		},
		"a copy someone else wrote in step is read and left alone": {
			copy: managed.Copy(src, "team"), foreign: true, wantReads: 1,
		},
		"a copy someone else made immutable is read and replaced": {
			copy: func() *corev1.Secret {
				c := old.DeepCopy()
				c.Immutable = ptr.To(true)
				return c
			}(),
			foreign: true, wantReads: 1, wantWrites: 2, replaced: true,
		},
		"a copy someone else made of another type is read and replaced": {
			copy: func() *corev1.Secret {
				c := managed.Copy(src, "team")
				c.Type = corev1.SecretTypeOpaque
				return c
			}(),
			foreign: true, wantReads: 1, wantWrites: 2, replaced: true,
		},
		"an immutable copy found at start is read and replaced once its write is refused": {
			copy: func() *corev1.Secret {
				c := old.DeepCopy()
				c.Immutable = ptr.To(true)
				return c
			}(),
			wantReads: 1, wantWrites: 3, replaced: true, requeued: true,
		},
		"a copy of another type found at start is read and replaced once its write is refused": {
			copy: func() *corev1.Secret {
				c := old.DeepCopy()
				c.Type = corev1.SecretTypeOpaque
				return c
			}(),
			wantReads: 1, wantWrites: 3, replaced: true, requeued: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			// The fake API server assigns no UIDs: a seeded one tells the original from a replacement.
			tc.copy.UID = "original"
			f := newFixture(t, src, namespace("team", optIn), tc.copy)
			recorder := &recordingEvents{}
			f.r.Events = events.New(recorder, 100, 100)
			before := f.secret(t, "team", "quay-regcred")
			key := types.NamespacedName{Namespace: "team", Name: "quay-regcred"}
			if tc.foreign {
				f.r.writes.observed(key, before.ResourceVersion, false)
			}
			if res := f.reconcile(t, "team", "quay-regcred"); res.RequeueAfter > 0 {
				if !tc.requeued {
					t.Errorf("requeued after %v, want no requeue", res.RequeueAfter)
				}
				f.reconcile(t, "team", "quay-regcred")
			} else if tc.requeued {
				t.Error("not requeued, want a requeue")
			}
			got := f.secret(t, "team", "quay-regcred")
			if got == nil {
				t.Fatal("copy is gone")
			}
			if !managed.InSync(got, src) {
				t.Errorf("copy not in sync: type %q data %q annotations %v", got.Type, got.Data, got.Annotations)
			}
			if n := f.api.reads.Load(); n != tc.wantReads {
				t.Errorf("reads = %d, want %d", n, tc.wantReads)
			}
			if n := f.api.writes.Load(); n != tc.wantWrites {
				t.Errorf("writes = %d, want %d", n, tc.wantWrites)
			}
			if replaced := got.UID != before.UID; replaced != tc.replaced {
				t.Errorf("replaced = %v, want %v", replaced, tc.replaced)
			}
			if tc.wantReason != "" && !recorder.has("Updated from psi/quay-regcred: "+tc.wantReason) {
				t.Errorf("events %q, want one with reason %q", recorder.notes(), tc.wantReason)
			}
			// A second pass over the same copy costs nothing: the leader wrote or read it last.
			reads, writes := f.api.reads.Load(), f.api.writes.Load()
			f.reconcile(t, "team", "quay-regcred")
			if f.api.reads.Load() != reads || f.api.writes.Load() != writes {
				t.Errorf("second pass made %d reads and %d writes, want none", f.api.reads.Load()-reads, f.api.writes.Load()-writes)
			}
			if own, foreign := f.r.writes.size(); own != 0 || foreign != 0 {
				t.Errorf("after the passes the leader still remembers %d writes of its own and %d of others, want none", own, foreign)
			}
		})
	}
}

// TestReconcileTrustsOnlyItsOwnWrites follows the watch events of one copy: the leader's own write, seen
// before or after it returns, keeps the copy trusted; another's write, digest annotation kept, is read.
func TestReconcileTrustsOnlyItsOwnWrites(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("v1"))
	f := newFixture(t, src, namespace("team", optIn), managed.Copy(src, "team"))
	key := types.NamespacedName{Namespace: "team", Name: "quay-regcred"}
	rotated := sourceSecret("quay-regcred", dockerConfig("v2"))
	f.r.Sources = sources.Static{quayRef: rotated}
	f.reconcile(t, "team", "quay-regcred") // the rotation: one write, no read
	written := f.secret(t, "team", "quay-regcred")
	for _, order := range []string{"after the write returned", "before the write returned"} {
		if order == "before the write returned" {
			// The event is handled before the write's answer is: it looks like someone else's until then.
			f.r.writes.forget(key)
			f.r.writes.observed(key, written.ResourceVersion, false)
			f.r.writes.wrote(key, written.ResourceVersion)
		} else {
			f.r.writes.observed(key, written.ResourceVersion, false)
		}
		f.reconcile(t, "team", "quay-regcred")
		if reads, writes := f.api.reads.Load(), f.api.writes.Load(); reads != 0 || writes != 1 {
			t.Fatalf("rotation and its own event seen %s: %d reads and %d writes, want 0 and 1", order, reads, writes)
		}
	}

	// A tenant writes other data and keeps the digest annotation: the event is not the leader's.
	edited := written.DeepCopy()
	edited.Data = map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("tenant")}
	if err := f.api.Update(context.Background(), edited); err != nil {
		t.Fatal(err)
	}
	f.r.writes.observed(key, edited.ResourceVersion, false)
	f.reconcile(t, "team", "quay-regcred")
	if got := f.secret(t, "team", "quay-regcred"); !managed.InSync(got, rotated) {
		t.Errorf("edited copy not restored: %q", got.Data)
	}
	if reads, writes := f.api.reads.Load(), f.api.writes.Load(); reads != 1 || writes != 2 {
		t.Errorf("after the tenant's edit: %d reads and %d writes in all, want 1 and 2", reads, writes)
	}

	// The same edit made while no leader ran is seen as the cache lists it, and trusted.
	untrusted := edited.DeepCopy()
	current := f.secret(t, "team", "quay-regcred")
	untrusted.ResourceVersion = current.ResourceVersion
	if err := f.api.Update(context.Background(), untrusted); err != nil {
		t.Fatal(err)
	}
	f.r.writes.forget(key) // a new leader
	f.reconcile(t, "team", "quay-regcred")
	if reads, writes := f.api.reads.Load(), f.api.writes.Load(); reads != 1 || writes != 2 {
		t.Errorf("an edit made while no leader ran: %d reads and %d writes in all, want still 1 and 2 (it stands until a sweep or rotation)",
			reads, writes)
	}
}

// recordingEvents is an EventRecorder that keeps the notes of the Events it records.
type recordingEvents struct {
	mu   sync.Mutex
	list []string
}

func (r *recordingEvents) Eventf(_ runtime.Object, _ runtime.Object, _, _, _, note string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, fmt.Sprintf(note, args...))
}

func (r *recordingEvents) notes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.list)
}

func (r *recordingEvents) has(note string) bool { return slices.Contains(r.notes(), note) }

func TestReconcileKeepsCopiesOfBrokenSources(t *testing.T) {
	good := managed.Copy(sourceSecret("quay-regcred", dockerConfig("good")), "team")
	for name, src := range map[string]*corev1.Secret{
		"source deleted": nil,
		"source of the wrong type": func() *corev1.Secret {
			s := sourceSecret("quay-regcred", nil)
			s.Type, s.Data = corev1.SecretTypeOpaque, map[string][]byte{"token": []byte("t")}
			return s
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, src, namespace("team", optIn), good.DeepCopy())
			f.reconcile(t, "team", "quay-regcred")
			if got := f.secret(t, "team", "quay-regcred"); got == nil || !cmp.Equal(good.Data, got.Data) {
				t.Errorf("copy changed or deleted: %v", got)
			}
			if n := f.api.writes.Load(); n != 0 {
				t.Errorf("writes = %d, want 0", n)
			}
		})
	}
}

func TestReconcileCreatesDeletedCopy(t *testing.T) {
	for name, tc := range map[string]struct {
		src         *corev1.Secret
		placeholder bool
	}{
		"from the source":                 {src: sourceSecret("quay-regcred", dockerConfig("v1"))},
		"as a placeholder without source": {placeholder: true},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, tc.src, namespace("team", optIn))
			f.reconcile(t, "team", "quay-regcred")
			got := f.secret(t, "team", "quay-regcred")
			if got == nil {
				t.Fatal("copy not created")
			}
			want := managed.Placeholder(quayRef, "team")
			if !tc.placeholder {
				want = managed.Copy(tc.src, "team")
			}
			if !cmp.Equal(want.Data, got.Data) || !managed.IsManaged(got) {
				t.Errorf("created %v, want %v", got, want)
			}
		})
	}
	t.Run("not in a namespace that is not selected", func(t *testing.T) {
		f := newFixture(t, sourceSecret("quay-regcred", dockerConfig("v1")), namespace("team", nil))
		f.reconcile(t, "team", "quay-regcred")
		if f.api.writes.Load() != 0 {
			t.Error("created a copy in a namespace that is not opted in")
		}
	})
	t.Run("not in a terminating namespace", func(t *testing.T) {
		ns := namespace("team", optIn)
		ns.DeletionTimestamp = ptr.To(metav1.Now())
		ns.Finalizers = []string{"kubernetes"}
		f := newFixture(t, sourceSecret("quay-regcred", dockerConfig("v1")), ns)
		f.reconcile(t, "team", "quay-regcred")
		if f.api.writes.Load() != 0 {
			t.Error("created a copy in a terminating namespace")
		}
	})
}

func TestReconcileRevokes(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("v1"))
	ecr := sourceSecret("ecr-regcred", dockerConfig("ecr"))
	for name, tc := range map[string]struct {
		objs        []client.Object
		key         string
		wantDeleted bool
		wantRequeue bool
	}{
		"namespace opted out, no Pod": {
			objs:        []client.Object{namespace("team", nil), oldCopy(src, "team")},
			key:         "quay-regcred",
			wantDeleted: true,
		},
		"entry selector no longer matches": {
			objs:        []client.Object{namespace("team", optIn), oldCopy(ecr, "team")},
			key:         "ecr-regcred",
			wantDeleted: true,
		},
		"no entry names the copy any more": {
			objs:        []client.Object{namespace("team", optIn), oldCopy(sourceSecret("gone-regcred", dockerConfig("x")), "team")},
			key:         "gone-regcred",
			wantDeleted: true,
		},
		"a running Pod still uses the copy": {
			objs:        []client.Object{namespace("team", nil), oldCopy(src, "team"), podUsing("team", "quay-regcred", corev1.PodRunning)},
			key:         "quay-regcred",
			wantRequeue: true,
		},
		"a pending Pod still uses the copy": {
			objs:        []client.Object{namespace("team", nil), oldCopy(src, "team"), podUsing("team", "quay-regcred", corev1.PodPending)},
			key:         "quay-regcred",
			wantRequeue: true,
		},
		"finished Pods do not hold the copy": {
			objs: []client.Object{namespace("team", nil), oldCopy(src, "team"),
				podUsing("team", "quay-regcred", corev1.PodSucceeded), podUsing("team", "quay-regcred", corev1.PodFailed)},
			key:         "quay-regcred",
			wantDeleted: true,
		},
		"a copy younger than the recheck waits": {
			objs: []client.Object{namespace("team", nil), func() *corev1.Secret {
				c := managed.Copy(src, "team")
				c.CreationTimestamp = metav1.Now()
				return c
			}()},
			key:         "quay-regcred",
			wantRequeue: true,
		},
		"a Secret labelled as managed by a tenant, in a namespace that does not get it, is deleted, never filled": {
			objs: []client.Object{namespace("team", nil), func() *corev1.Secret {
				c := managed.Placeholder(quayRef, "team")
				c.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
				return c
			}()},
			key:         "quay-regcred",
			wantDeleted: true,
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, src, tc.objs...)
			res := f.reconcile(t, "team", tc.key)
			got := f.secret(t, "team", tc.key)
			if deleted := got == nil; deleted != tc.wantDeleted {
				t.Errorf("deleted = %v, want %v", deleted, tc.wantDeleted)
			}
			// A copy being revoked is deleted or left alone, never written: the one write is the delete.
			wantWrites := int32(0)
			if tc.wantDeleted {
				wantWrites = 1
			}
			if n := f.api.writes.Load(); n != wantWrites {
				t.Errorf("writes = %d, want %d", n, wantWrites)
			}
			if requeued := res.RequeueAfter > 0; requeued != tc.wantRequeue {
				t.Errorf("requeued after %v, want requeue %v", res.RequeueAfter, tc.wantRequeue)
			}
		})
	}
}

func TestReconcileNeverWritesWhatIsNotACopy(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("v1"))
	labelledSource := src.DeepCopy()
	labelledSource.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	unmanaged := managed.Copy(sourceSecret("quay-regcred", dockerConfig("theirs")), "team")
	unmanaged.Labels = nil
	labelOnly := oldCopy(sourceSecret("quay-regcred", dockerConfig("theirs")), "other")
	labelOnly.Annotations = nil
	for name, tc := range map[string]struct {
		objs []client.Object
		ns   string
	}{
		"a source labelled as managed, in a namespace that is not selected": {objs: []client.Object{namespace("psi", nil)}, ns: "psi"},
		"an unmanaged Secret of a configured name in a selected namespace":  {objs: []client.Object{namespace("team", optIn), unmanaged}, ns: "team"},
		"a Secret with the label but no source annotation, where no copy belongs": {
			objs: []client.Object{namespace("other", nil), labelOnly}, ns: "other"},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, labelledSource, tc.objs...)
			f.reconcile(t, tc.ns, "quay-regcred")
			if n := f.api.writes.Load(); n != 0 {
				t.Errorf("writes = %d, want 0", n)
			}
		})
	}
}

func TestRevocationListsPodsOncePerNamespaceForCopiesInUse(t *testing.T) {
	// A tenant makes many Secrets in the form of a copy in a namespace that gets none, and a Pod that names
	// them all, so that each is rechecked rather than deleted.
	objs := []client.Object{namespace("team", nil)}
	pod := podUsing("team", "s-0", corev1.PodRunning)
	const n = 20
	for i := range n {
		name := fmt.Sprintf("s-%d", i)
		objs = append(objs, oldCopy(sourceSecret(name, dockerConfig("x")), "team"))
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	f := newFixture(t, nil, append(objs, pod)...)
	for i := range n {
		if res := f.reconcile(t, "team", fmt.Sprintf("s-%d", i)); res.RequeueAfter == 0 {
			t.Errorf("s-%d: not kept for the Pod that uses it", i)
		}
	}
	// The first candidate reads itself and lists the Pods; the others are kept on that list's word.
	if lists, reads := f.api.lists.Load(), f.api.reads.Load(); lists != 1 || reads != 2 {
		t.Errorf("API lists = %d and reads = %d for %d candidates in use in one namespace, want 1 Pod list and 2 reads", lists, reads, n)
	}
	if writes := f.api.writes.Load(); writes != 0 {
		t.Errorf("writes = %d, want 0", writes)
	}
}

func TestRevocationListsPodsBeforeEachDelete(t *testing.T) {
	// Two copies that no longer apply in one namespace. A Pod that names the second, created after the
	// first was deleted, must keep it: the Pods are listed for each delete, never taken from an earlier list.
	f := newFixture(t, nil, namespace("team", nil),
		oldCopy(sourceSecret("s-0", dockerConfig("x")), "team"), oldCopy(sourceSecret("s-1", dockerConfig("x")), "team"))
	f.reconcile(t, "team", "s-0")
	if f.secret(t, "team", "s-0") != nil {
		t.Fatal("s-0, which no Pod uses, was not deleted")
	}
	if err := f.api.Client.Create(context.Background(), podUsing("team", "s-1", corev1.PodPending)); err != nil {
		t.Fatal(err)
	}
	if res := f.reconcile(t, "team", "s-1"); res.RequeueAfter == 0 {
		t.Errorf("s-1 not requeued for its Pod")
	}
	if f.secret(t, "team", "s-1") == nil {
		t.Error("s-1 was deleted although a Pod created before its check names it")
	}
	want := []string{"status.phase!=Succeeded,status.phase!=Failed", "status.phase!=Succeeded,status.phase!=Failed"}
	if diff := cmp.Diff(want, f.api.fieldSelectors); diff != "" {
		t.Errorf("Pod lists' field selectors (-want +got):\n%s", diff)
	}
}

func TestRevocationDeletesOnWhatItReadForTheDelete(t *testing.T) {
	src := sourceSecret("s-0", dockerConfig("x"))
	// The cache saw the copy as uid "cached" at resourceVersion 999 (the fake's first).
	cached := oldCopy(src, "team")
	cached.UID = "cached"
	for name, tc := range map[string]struct {
		// live is the Secret the API server holds; nil: none.
		live        func() *corev1.Secret
		wantDeleted bool
		wantRequeue bool
	}{
		"a copy edited since it was cached is deleted at its live resourceVersion": {
			live: func() *corev1.Secret {
				c := oldCopy(src, "team")
				c.UID = "cached"
				return c
			},
			wantDeleted: true,
		},
		"an old copy that took the cached one's place is deleted by its live UID": {
			live: func() *corev1.Secret {
				c := oldCopy(src, "team")
				c.UID = "other"
				return c
			},
			wantDeleted: true,
		},
		"a young copy that took the cached one's place waits": {
			live: func() *corev1.Secret {
				c := managed.Copy(src, "team")
				c.UID, c.CreationTimestamp = "young", metav1.Now()
				return c
			},
			wantRequeue: true,
		},
		"a Secret that lost the copy's form since it was cached is left alone": {
			live: func() *corev1.Secret {
				c := oldCopy(src, "team")
				c.UID, c.Labels = "cached", nil
				return c
			},
		},
		"a copy already deleted is not deleted again": {},
	} {
		t.Run(name, func(t *testing.T) {
			objs := []client.Object{namespace("team", nil)}
			var live *corev1.Secret
			if tc.live != nil {
				live = tc.live()
				objs = append(objs, live)
			}
			f := newSplitFixture(t, nil, []client.Object{namespace("team", nil), cached.DeepCopy()}, objs...)
			if live != nil {
				// An edit that moves the live resourceVersion past the cached one.
				live.Annotations = maps.Clone(live.Annotations)
				live.Annotations["note"] = "edited"
				if err := f.api.Update(context.Background(), live); err != nil {
					t.Fatal(err)
				}
				if live.ResourceVersion == "999" {
					t.Fatal("the edit did not move the resourceVersion")
				}
			}
			res := f.reconcile(t, "team", "s-0")
			if deleted := live != nil && f.secret(t, "team", "s-0") == nil; deleted != tc.wantDeleted {
				t.Errorf("deleted = %v, want %v", deleted, tc.wantDeleted)
			}
			if requeued := res.RequeueAfter > 0; requeued != tc.wantRequeue {
				t.Errorf("requeued after %v, want requeue %v", res.RequeueAfter, tc.wantRequeue)
			}
			var want []metav1.Preconditions
			if tc.wantDeleted {
				want = []metav1.Preconditions{{UID: &live.UID, ResourceVersion: &live.ResourceVersion}}
			}
			if diff := cmp.Diff(want, f.api.preconditions); diff != "" {
				t.Errorf("delete preconditions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRevocationBoundsPodListsPerNamespace(t *testing.T) {
	// A tenant makes many Secrets in the form of a copy in a namespace that gets none, and no Pod names
	// them: each delete takes a Pod list of its own, at most podListsPerRecheck per recheck period.
	const n = 2*podListsPerRecheck + 3
	objs := []client.Object{namespace("team", nil), namespace("other", nil), oldCopy(sourceSecret("s-0", dockerConfig("x")), "other")}
	for i := range n {
		objs = append(objs, oldCopy(sourceSecret(fmt.Sprintf("s-%d", i), dockerConfig("x")), "team"))
	}
	f := newFixture(t, nil, objs...)
	now := time.Now()
	f.r.now = func() time.Time { return now }
	remaining := func() int {
		list := &corev1.SecretList{}
		if err := f.api.Client.List(context.Background(), list, client.InNamespace("team")); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	left := n
	for period := 0; left > 0; period++ {
		lists := f.api.lists.Load()
		for i := range n {
			if f.secret(t, "team", fmt.Sprintf("s-%d", i)) == nil {
				continue
			}
			if res := f.reconcile(t, "team", fmt.Sprintf("s-%d", i)); res.RequeueAfter > time.Minute {
				t.Errorf("period %d: s-%d requeued after %v, beyond the recheck period", period, i, res.RequeueAfter)
			}
		}
		if got := f.api.lists.Load() - lists; got > podListsPerRecheck {
			t.Errorf("period %d: %d Pod lists in one namespace, want at most %d", period, got, podListsPerRecheck)
		}
		want := max(left-podListsPerRecheck, 0)
		if got := remaining(); got != want {
			t.Fatalf("period %d: %d Secrets left, want %d", period, got, want)
		}
		left = want
		now = now.Add(time.Minute)
	}
	// Another namespace has a bound of its own.
	f.reconcile(t, "other", "s-0")
	if f.secret(t, "other", "s-0") != nil {
		t.Error("the copy in another namespace waited for the tenant's namespace")
	}
	if n := len(f.r.podChecks); n > 2 {
		t.Errorf("%d namespaces remembered, want at most the 2 checked", n)
	}
}

func TestFindMissingRecreatesAfterLeaderChange(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("v1"))
	pod := func(ns, name string, phase corev1.PodPhase, refs ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: phase}}
		for _, r := range refs {
			p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: r})
		}
		return p
	}
	objs := []client.Object{
		namespace("psi", optIn), namespace("team", optIn), namespace("kept", optIn), namespace("done", optIn),
		namespace("other", nil),
		// Missing, named by a running and a pending Pod: asked for once.
		pod("team", "a", corev1.PodRunning, "quay-regcred", "ecr-regcred", "their-own"),
		pod("team", "b", corev1.PodPending, "quay-regcred"),
		// Present: nothing to do.
		managed.Copy(src, "kept"), pod("kept", "a", corev1.PodRunning, "quay-regcred"),
		// Named only by finished Pods.
		pod("done", "a", corev1.PodSucceeded, "quay-regcred"), pod("done", "b", corev1.PodFailed, "quay-regcred"),
		// In a namespace that does not get it.
		pod("other", "a", corev1.PodRunning, "quay-regcred"),
		// The source itself, in an opted-in namespace.
		pod("psi", "a", corev1.PodRunning, "quay-regcred"),
	}
	// A fresh reconciler, as a new leader has: it never saw a copy's delete.
	f := newFixture(t, src, objs...)
	var got []reconcile.Request
	stats, err := f.r.FindMissing(context.Background(), func(req reconcile.Request) { got = append(got, req) })
	if err != nil {
		t.Fatal(err)
	}
	want := []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: "team", Name: "quay-regcred"}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ReferenceStats{Pages: 1, Pods: 5, Missing: 1}, stats); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"status.phase!=Succeeded,status.phase!=Failed"}, f.api.fieldSelectors); diff != "" {
		t.Errorf("Pod list's field selector (-want +got):\n%s", diff)
	}
	for _, req := range got {
		f.reconcile(t, req.Namespace, req.Name)
	}
	if c := f.secret(t, "team", "quay-regcred"); c == nil || !managed.InSync(c, src) {
		t.Errorf("copy named by unfinished Pods not recreated: %v", c)
	}
	for _, ns := range []string{"done", "other"} {
		if f.secret(t, ns, "quay-regcred") != nil {
			t.Errorf("copy created in namespace %q", ns)
		}
	}
}

func TestFindUntruthfulFindsWhatTheCacheCannotTell(t *testing.T) {
	src := sourceSecret("quay-regcred", dockerConfig("v1"))
	old := managed.Copy(sourceSecret("quay-regcred", dockerConfig("v0")), "old")
	forged := managed.Copy(src, "forged")
	forged.Data = map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("tenant")}
	retyped := managed.Copy(src, "retyped")
	retyped.Type = corev1.SecretTypeOpaque
	unmarked := managed.Copy(src, "unmarked")
	delete(unmarked.Annotations, managed.DigestAnnotation)
	labelOnly := managed.Copy(src, "label-only")
	labelOnly.Annotations = map[string]string{managed.DigestAnnotation: "x"}
	objs := []client.Object{managed.Copy(src, "in-step"), old, forged, retyped, unmarked, labelOnly,
		managed.Placeholder(quayRef, "placeholder")}
	for _, o := range slices.Clone(objs) {
		objs = append(objs, namespace(o.GetNamespace(), optIn))
	}
	f := newFixture(t, src, objs...)
	var got []string
	stats, err := f.r.FindUntruthful(context.Background(), func(req reconcile.Request) { got = append(got, req.Namespace) })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"forged", "retyped", "unmarked"}, got); diff != "" {
		t.Errorf("copies found untruthful (-want +got):\n%s", diff)
	}
	if stats.Copies != 6 || stats.Untruthful != 3 {
		t.Errorf("stats %+v, want 6 copies and 3 untruthful", stats)
	}
	// Each is read before it is trusted again: the forged one is restored, not left as its cache entry says.
	for _, ns := range got {
		f.reconcile(t, ns, "quay-regcred")
	}
	for _, ns := range got {
		if c := f.secret(t, ns, "quay-regcred"); !managed.InSync(c, src) {
			t.Errorf("copy in %s not repaired: type %q data %q", ns, c.Type, c.Data)
		}
	}
	// One list, and one read per copy found.
	if lists, reads := f.api.lists.Load(), f.api.reads.Load(); lists != 1 || reads != 1+3 {
		t.Errorf("%d lists and %d reads in all, want 1 list and 3 reads", lists, reads-lists)
	}
}
