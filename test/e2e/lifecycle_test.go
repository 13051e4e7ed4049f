package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// How long the lifecycle tests wait for a behaviour before they call it missing. These are not the
// behaviours' timings, which the tests log (and docs/operations.md gives, with `make bench` for the fan-out):
// a test waits for the condition, and the bound only keeps a behaviour that never happens from hanging the
// run, with room for a machine loaded far beyond CI's. With the e2e webhook's flags (testenv: a 500ms
// config reload interval, a 2s revocation recheck) each happens within a few seconds on a quiet machine.
const (
	// syncBound: rotation, drift, a deleted copy and a source that appears later take effect within it.
	syncBound = testenv.SettleTimeout
	// reloadBound: a new configuration file takes effect within it.
	reloadBound = testenv.SettleTimeout
	// revokeBound: a copy that no longer applies and that no Pod uses is deleted within it.
	revokeBound = testenv.SettleTimeout
)

// rotatedConfig returns a dockerconfigjson payload different from dockerConfig's for the same registry.
func rotatedConfig(registry, password string) []byte {
	return []byte(fmt.Sprintf(`{"auths":{%q:{"username":"robot","password":%q}}}`, registry, password))
}

// eventually polls cond every 50ms until it holds or bound passes, and fails the test with describe()
// when it never held. It returns how long it took.
func eventually(t *testing.T, bound time.Duration, what string, cond func() (bool, error), describe func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, bound, true, func(context.Context) (bool, error) {
		ok, err := cond()
		lastErr = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %v (last error: %v): %s", what, bound, lastErr, describe())
	}
	return time.Since(start)
}

// copiesNamed returns the Secrets named name in every namespace, by namespace.
func copiesNamed(t *testing.T, name string) map[string]corev1.Secret {
	t.Helper()
	list, err := admin.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		if s.Namespace != sourceNamespace {
			out[s.Namespace] = s
		}
	}
	return out
}

// allHold reports whether the copy of name in each of namespaces holds data.
func allHold(t *testing.T, name string, namespaces []string, data []byte) (bool, string) {
	t.Helper()
	copies := copiesNamed(t, name)
	var stale []string
	for _, ns := range namespaces {
		c, ok := copies[ns]
		if !ok || !bytes.Equal(c.Data[corev1.DockerConfigJsonKey], data) {
			stale = append(stale, ns)
		}
	}
	return len(stale) == 0, fmt.Sprintf("%d of %d copies stale: %v", len(stale), len(namespaces), stale)
}

func setSourceData(t *testing.T, name string, data []byte) *corev1.Secret {
	t.Helper()
	s := sourceSecret(t, name)
	s.Data = map[string][]byte{corev1.DockerConfigJsonKey: data}
	updated, err := admin.CoreV1().Secrets(sourceNamespace).Update(context.Background(), s, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return updated
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func deletePod(t *testing.T, ns, name string) {
	t.Helper()
	if err := admin.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func secretGone(ns, name string) func() (bool, error) {
	return func() (bool, error) {
		_, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
}

// waitForLog waits until the webhook's log has a line holding every one of parts.
func waitForLog(t *testing.T, w *testenv.Webhook, bound time.Duration, parts ...string) {
	t.Helper()
	eventually(t, bound, fmt.Sprintf("log line with %q", parts), func() (bool, error) {
		for _, line := range strings.Split(w.Log(), "\n") {
			if containsAll([]string{line}, parts...) {
				return true, nil
			}
		}
		return false, nil
	}, func() string { return tail(w.Log(), 30) })
}

// TestRotationReachesEveryCopy rotates a source with copies in 25 namespaces and reports the delay to the
// last copy. The source is then replaced by one of the wrong type, which must not propagate, and restored.
// An unmanaged Secret of the same name in a selected namespace is never written, nor is the source.
func TestRotationReachesEveryCopy(t *testing.T) {
	const name, registry, image = "rotate-regcred", "rotate.example.com", "rotate.example.com/team/app:1"
	var namespaces []string
	for range 25 {
		ns := newNamespace(t, "rotate", optIn())
		cp.MustCreatePod(t, ns, podWith("app", image))
		namespaces = append(namespaces, ns)
	}
	theirsNS := newNamespace(t, "rotate-theirs", optIn())
	theirs, err := admin.CoreV1().Secrets(theirsNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("their-own.example.com")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cp.MustCreatePod(t, theirsNS, podWith("app", image))

	// The kubelet's credential verification records each copy's UID: a rotation must keep it.
	uids := copyUIDs(t, name, namespaces)
	rotated := rotatedConfig(registry, "second")
	source := setSourceData(t, name, rotated)
	took := eventually(t, syncBound, "rotation reaches every copy", func() (bool, error) {
		ok, _ := allHold(t, name, namespaces, rotated)
		return ok, nil
	}, func() string { _, d := allHold(t, name, namespaces, rotated); return d })
	t.Logf("rotation reached the last of %d copies %v after the source was updated", len(namespaces), took)
	if diff := cmp.Diff(uids, copyUIDs(t, name, namespaces)); diff != "" {
		t.Errorf("copies' UIDs changed by the rotation (-before +after):\n%s", diff)
	}
	waitForEvent(t, namespaces[0], name, events.ReasonCopyUpdated, "source changed")

	if got := getSecret(t, theirsNS, name); got.ResourceVersion != theirs.ResourceVersion {
		t.Errorf("unmanaged Secret %s/%s was written (resourceVersion %s -> %s)", theirsNS, name, theirs.ResourceVersion, got.ResourceVersion)
	}
	if got := sourceSecret(t, name); got.ResourceVersion != source.ResourceVersion {
		t.Errorf("source was written by someone else (resourceVersion %s -> %s)", source.ResourceVersion, got.ResourceVersion)
	}

	// Deleted, then back as an Opaque Secret (a Secret's type cannot change in place): neither the deletion
	// nor the wrong type reaches the copies.
	if err := admin.CoreV1().Secrets(sourceNamespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, webhook, syncBound, "Source secret deleted", sourceNamespace+"/"+name)
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"token": []byte("not a docker config")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, webhook, syncBound, "Source secret has the wrong type", sourceNamespace+"/"+name)
	// kubectl describe on the source says why its copies stopped following it.
	if e := waitForEvent(t, sourceNamespace, name, events.ReasonSourceInvalid, "wrong_type"); e.Type != corev1.EventTypeWarning {
		t.Errorf("event on the Opaque source: %s %q, want a Warning", e.Type, e.Note)
	}
	if ok, d := allHold(t, name, namespaces, rotated); !ok {
		t.Errorf("after the source was deleted and replaced by an Opaque Secret, the copies changed: %s", d)
	}

	// Fixed: the next good bytes reach every copy again.
	if err := admin.CoreV1().Secrets(sourceNamespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	third := rotatedConfig(registry, "third")
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: third},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, syncBound, "restored source reaches every copy", func() (bool, error) {
		ok, _ := allHold(t, name, namespaces, third)
		return ok, nil
	}, func() string { _, d := allHold(t, name, namespaces, third); return d })
	if diff := cmp.Diff(uids, copyUIDs(t, name, namespaces)); diff != "" {
		t.Errorf("copies' UIDs changed by a source deleted and created again (-before +after):\n%s", diff)
	}
}

// copyUIDs returns the UID of the copy of name in each of namespaces, once every one exists.
func copyUIDs(t *testing.T, name string, namespaces []string) map[string]types.UID {
	t.Helper()
	uids := map[string]types.UID{}
	eventually(t, syncBound, "a copy in every namespace", func() (bool, error) {
		copies := copiesNamed(t, name)
		clear(uids)
		for _, ns := range namespaces {
			c, ok := copies[ns]
			if !ok {
				return false, nil
			}
			uids[ns] = c.UID
		}
		return true, nil
	}, func() string { return fmt.Sprintf("copies in %d of %d namespaces", len(uids), len(namespaces)) })
	return uids
}

// TestDriftIsRestored edits a copy's data, then makes it immutable with other data: both are undone.
func TestDriftIsRestored(t *testing.T) {
	const name = "drift-regcred"
	ns := newNamespace(t, "drift", optIn())
	cp.MustCreatePod(t, ns, podWith("app", "drift.example.com/app:1"))
	want := sourceSecret(t, name).Data

	cp := getSecret(t, ns, name)
	cp.Data = map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("attacker.example.com"), "extra": []byte("x")}
	if _, err := admin.CoreV1().Secrets(ns).Update(context.Background(), cp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	restored := func() (bool, error) {
		got, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return cmp.Equal(want, got.Data) && got.Type == corev1.SecretTypeDockerConfigJson, nil
	}
	describe := func() string {
		got, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("copy has type %q and keys %d", got.Type, len(got.Data))
	}
	took := eventually(t, syncBound, "edited copy restored", restored, describe)
	t.Logf("edited copy restored after %v", took)
	// Restored in place: the kubelet's credential verification records the copy's UID.
	if got := getSecret(t, ns, name); got.UID != cp.UID {
		t.Errorf("edited copy restored by a new Secret: UID %s -> %s, want it updated in place", cp.UID, got.UID)
	}

	cp = getSecret(t, ns, name)
	cp.Data = map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("attacker.example.com")}
	cp.Immutable = ptr.To(true)
	if _, err := admin.CoreV1().Secrets(ns).Update(context.Background(), cp, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = eventually(t, syncBound, "immutable edited copy replaced", func() (bool, error) {
		got, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return got.UID != cp.UID && cmp.Equal(want, got.Data) && (got.Immutable == nil || !*got.Immutable), nil
	}, describe)
	t.Logf("immutable edited copy replaced after %v", took)
}

// TestDeletedCopyIsRecreated deletes a copy from a namespace that still gets it.
func TestDeletedCopyIsRecreated(t *testing.T) {
	const name = "drift-regcred"
	ns := newNamespace(t, "recreate", optIn())
	cp.MustCreatePod(t, ns, podWith("app", "drift.example.com/app:1"))
	old := getSecret(t, ns, name)
	if err := admin.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want := sourceSecret(t, name).Data
	took := eventually(t, syncBound, "deleted copy recreated", func() (bool, error) {
		got, err := admin.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return got.UID != old.UID && cmp.Equal(want, got.Data) && managed.IsManaged(got), nil
	}, func() string { return "no new copy" })
	t.Logf("deleted copy recreated after %v", took)
}

// refsConfig is the configuration of TestNewLeaderRecreatesReferencedCopies, on a control plane of its own.
const refsConfig = `
registries:
  - registry: refs.example.com
    secret: {namespace: pullsecret-injector, name: refs-regcred}
`

// TestNewLeaderRecreatesReferencedCopies stops the only replica, deletes two copies while none runs, and
// starts another: the copy that an unfinished Pod references comes back, the one no Pod references does
// not. The new replica never saw the deletes; it learns of the first from the Pod. It runs against a
// control plane of its own, so that no other reconciler sees the deletes.
func TestNewLeaderRecreatesReferencedCopies(t *testing.T) {
	const name, image = "refs-regcred", "refs.example.com/team/app:1"
	ctx := context.Background()
	plane, cs := ownControlPlane(t)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sourceNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	source, err := cs.CoreV1().Secrets(sourceNamespace).Create(ctx, pullSecret(name, "refs.example.com"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--leader-election-id", "refs",
		"--leader-election-lease-duration", leaseDuration.String(),
		"--leader-election-renew-deadline", renewDeadline.String(),
		"--leader-election-retry-period", retryPeriod.String()}
	first, err := plane.StartWebhook(ctx, binary, []byte(refsConfig), args...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, first)
	registerWebhook(t, cs, plane.MutatingWebhookConfiguration("refs", first.Port, &metav1.LabelSelector{MatchLabels: optIn()}))

	// used keeps a Pod that never starts (no kubelet here): Pending, unfinished. idle's Pod is deleted.
	copies := map[string]*corev1.Secret{}
	for _, ns := range []string{"refs-used", "refs-idle"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: optIn()}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := testenv.WaitForMutation(ctx, cs, ns, image, name); err != nil {
			t.Fatal(err)
		}
		pod, _, err := plane.CreatePod(ctx, ns, podWith("app", image))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{name}, refNames(pod)); diff != "" {
			t.Fatalf("namespace %s: imagePullSecrets (-want +got):\n%s", ns, diff)
		}
		if copies[ns], err = cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("copy made at admission: %v", err)
		}
	}
	if err := cs.CoreV1().Pods("refs-idle").Delete(ctx, "app", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, first, syncBound, acquiredLease)

	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	for ns, c := range copies {
		if err := cs.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.UID}}); err != nil {
			t.Fatal(err)
		}
	}

	second, err := plane.StartWebhook(ctx, binary, []byte(refsConfig), args...)
	if err != nil {
		t.Fatal(err)
	}
	stopAfterTest(t, second)
	took := eventually(t, syncBound, "copy an unfinished Pod references recreated by the new leader", func() (bool, error) {
		got, err := cs.CoreV1().Secrets("refs-used").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return got.UID != copies["refs-used"].UID && bytes.Equal(got.Data[corev1.DockerConfigJsonKey], source.Data[corev1.DockerConfigJsonKey]) &&
			managed.IsCopy(got), nil
	}, func() string { return tail(second.Log(), 30) })
	t.Logf("copy deleted while no leader ran recreated %v after the new replica started", took)
	// The pass that found it has finished and found only it: the copy no Pod references stays deleted.
	waitForLog(t, second, syncBound, "Unfinished Pods reference missing copies", `"missing":1`)
	if _, err := cs.CoreV1().Secrets("refs-idle").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("copy that no Pod references: %v, want it left deleted", err)
	}
}

// TestSourceAppearsLater admits Pods whose source does not exist yet, then creates the source.
func TestSourceAppearsLater(t *testing.T) {
	const name, image = "appears-regcred", "appears.example.com/team/app:1"
	var namespaces []string
	for range 3 {
		ns := newNamespace(t, "appears", optIn())
		pod, warns := cp.MustCreatePod(t, ns, podWith("app", image))
		if diff := cmp.Diff([]string{name}, refNames(pod)); diff != "" {
			t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
		}
		if !containsAll(warns, sourceNamespace+"/"+name, "does not exist yet") {
			t.Errorf("warnings %q do not say the source is missing", warns)
		}
		namespaces = append(namespaces, ns)
	}
	data := rotatedConfig("appears.example.com", "late")
	if _, err := admin.CoreV1().Secrets(sourceNamespace).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, syncBound, "copies filled once the source exists", func() (bool, error) {
		ok, _ := allHold(t, name, namespaces, data)
		return ok, nil
	}, func() string { _, d := allHold(t, name, namespaces, data); return d })
	t.Logf("source created later reached %d copies after %v", len(namespaces), took)
}

// TestRevocation removes a namespace's opt-in label and an entry selector's label: copies that no Pod uses
// go at once, a copy still used by an unfinished Pod stays until the Pod is gone.
func TestRevocation(t *testing.T) {
	const name, image = "revoke-regcred", "revoke.example.com/app:1"
	ctx := context.Background()

	t.Run("label removed, no Pod uses the copy", func(t *testing.T) {
		ns := newNamespace(t, "revoke-idle", optIn())
		cp.MustCreatePod(t, ns, podWith("app", image))
		deletePod(t, ns, "app")
		unlabelNamespace(t, ns, "pullsecret-injector.io/inject")
		took := eventually(t, revokeBound, "copy revoked", secretGone(ns, name), func() string { return "copy still there" })
		t.Logf("copy revoked %v after the label was removed", took)
	})

	t.Run("label removed, an unfinished Pod uses the copy", func(t *testing.T) {
		ns := newNamespace(t, "revoke-busy", optIn())
		cp.MustCreatePod(t, ns, podWith("app", image))
		unlabelNamespace(t, ns, "pullsecret-injector.io/inject")
		// The reconciler has looked at the copy and kept it for the Pod.
		waitForLog(t, webhook, revokeBound, "deleting it waits for the Pods that use it", `"namespace":"`+ns+`"`)
		if _, err := admin.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("copy used by a running Pod was revoked: %v", err)
		}
		deletePod(t, ns, "app")
		took := eventually(t, revokeBound, "copy revoked after the last Pod", secretGone(ns, name), func() string { return "copy still there" })
		t.Logf("copy revoked %v after the last Pod using it was deleted", took)
	})

	t.Run("entry selector no longer matches", func(t *testing.T) {
		ns := newNamespace(t, "revoke-selector", merge(optIn(), map[string]string{"team": "payments"}))
		cp.MustCreatePod(t, ns, podWith("api", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1", image))
		deletePod(t, ns, "api")
		labelNamespace(t, admin, ns, map[string]string{"team": "checkout"})
		eventually(t, revokeBound, "ecr copy revoked", secretGone(ns, "ecr-regcred"), func() string { return "copy still there" })
		if _, err := admin.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("copy of an entry that still selects the namespace: %v", err)
		}
	})
}

func unlabelNamespace(t *testing.T, ns, key string) {
	t.Helper()
	got, err := admin.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(got.Labels, key)
	if _, err := admin.CoreV1().Namespaces().Update(context.Background(), got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestNeverTheWrongSecret: a Secret a tenant labels as managed in a namespace that does not get it never
// receives credentials, and a source labelled as managed is never written or deleted.
func TestNeverTheWrongSecret(t *testing.T) {
	const name = "guard-regcred"
	ctx := context.Background()
	ns := newNamespace(t, "guard", nil)
	w, err := admin.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	bait := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{managed.ManagedByLabel: managed.ManagedByValue},
			Annotations: map[string]string{managed.SourceAnnotation: sourceNamespace + "/" + name}},
		Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
	}
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, bait, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A rotation while the bait exists: a reconciler that trusted the label would fill it in.
	setSourceData(t, name, rotatedConfig("guard.example.com", "secret"))
	// The reconciler deletes it as a copy that does not apply (it carries the label); until then it must
	// never hold the source's bytes.
	source := sourceSecret(t, name)
	deadline := time.After(revokeBound)
	for deleted := false; !deleted; {
		select {
		case ev := <-w.ResultChan():
			s, ok := ev.Object.(*corev1.Secret)
			if !ok {
				continue
			}
			if bytes.Equal(s.Data[corev1.DockerConfigJsonKey], source.Data[corev1.DockerConfigJsonKey]) {
				t.Fatalf("the Secret labelled as managed in unselected namespace %q received the source's credentials", ns)
			}
			deleted = ev.Type == "DELETED"
		case <-deadline:
			t.Fatalf("the Secret labelled as managed in unselected namespace %q was neither deleted nor left alone visibly within %v", ns, revokeBound)
		}
	}

	// A source labelled as managed is still only read.
	labelled := sourceSecret(t, "drift-regcred")
	labelled.Labels = map[string]string{managed.ManagedByLabel: managed.ManagedByValue}
	labelled, err = admin.CoreV1().Secrets(sourceNamespace).Update(ctx, labelled, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s := sourceSecret(t, "drift-regcred")
		delete(s.Labels, managed.ManagedByLabel)
		if _, err := admin.CoreV1().Secrets(sourceNamespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	})
	waitForLog(t, webhook, syncBound, "Not a copy this project may write", `"namespace":"`+sourceNamespace+`"`, `"name":"drift-regcred"`)
	if got := sourceSecret(t, "drift-regcred"); got.ResourceVersion != labelled.ResourceVersion {
		t.Errorf("source labelled as managed was written (resourceVersion %s -> %s)", labelled.ResourceVersion, got.ResourceVersion)
	}
}
