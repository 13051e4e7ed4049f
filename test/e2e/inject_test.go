package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/events"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
	injector "github.com/pullsecret-injector/pullsecret-injector/webhook"
)

var nsCounter atomic.Int64

// newNamespace creates a uniquely named namespace with labels.
func newNamespace(t *testing.T, prefix string, labels map[string]string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, nsCounter.Add(1))
	if err := createNamespace(context.Background(), name, labels); err != nil {
		t.Fatal(err)
	}
	return name
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func podWith(name string, images ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i, image := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: image})
	}
	return pod
}

func refNames(pod *corev1.Pod) []string {
	var out []string
	for _, r := range pod.Spec.ImagePullSecrets {
		out = append(out, r.Name)
	}
	return out
}

func managedCopies(t *testing.T, namespace string) []corev1.Secret {
	t.Helper()
	list, err := admin.CoreV1().Secrets(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: managed.Selector})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func sourceSecret(t *testing.T, name string) *corev1.Secret {
	t.Helper()
	s, err := admin.CoreV1().Secrets(sourceNamespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func containsAll(haystack []string, needles ...string) bool {
	joined := strings.Join(haystack, "\n")
	for _, n := range needles {
		if !strings.Contains(joined, n) {
			return false
		}
	}
	return true
}

func TestLabelledNamespaceGetsReferenceAndCopy(t *testing.T) {
	ns := newNamespace(t, "labelled", optIn())
	pod, warns := cp.MustCreatePod(t, ns, podWith("app", "registry.example.com:5000/team-a/app:1.0"))

	if diff := cmp.Diff([]string{"team-a-regcred"}, refNames(pod)); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	if len(warns) != 0 {
		t.Errorf("unexpected warnings: %q", warns)
	}
	copied, err := admin.CoreV1().Secrets(ns).Get(context.Background(), "team-a-regcred", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("copy not found: %v", err)
	}
	source := sourceSecret(t, "team-a-regcred")
	if copied.Type != source.Type {
		t.Errorf("copy type = %q, want %q", copied.Type, source.Type)
	}
	if diff := cmp.Diff(source.Data, copied.Data); diff != "" {
		t.Errorf("copy data (-want +got):\n%s", diff)
	}
	if got := copied.Labels[managed.ManagedByLabel]; got != managed.ManagedByValue {
		t.Errorf("copy managed-by label = %q", got)
	}
	if got := copied.Annotations[managed.SourceAnnotation]; got != sourceNamespace+"/team-a-regcred" {
		t.Errorf("copy source annotation = %q", got)
	}

	// The Pod says what was added, and for which configured registry.
	var injected []injector.Injection
	if err := json.Unmarshal([]byte(pod.Annotations[injector.InjectedAnnotation]), &injected); err != nil {
		t.Fatalf("annotation %s = %q: %v", injector.InjectedAnnotation, pod.Annotations[injector.InjectedAnnotation], err)
	}
	want := []injector.Injection{{Secret: "team-a-regcred", Registries: []string{"registry.example.com:5000/team-a"}}}
	if diff := cmp.Diff(want, injected); diff != "" {
		t.Errorf("annotation %s (-want +got):\n%s", injector.InjectedAnnotation, diff)
	}
	// kubectl describe secret shows that the copy was made, and from what.
	event := waitForEvent(t, ns, copied.Name, events.ReasonCopyCreated, sourceNamespace+"/team-a-regcred")
	if event.Type != corev1.EventTypeNormal || event.ReportingController != events.Controller || event.Regarding.UID != copied.UID {
		t.Errorf("event %+v: want a Normal %s from %s regarding the copy, naming its source", event, events.ReasonCopyCreated, events.Controller)
	}
}

// waitForEvent waits for an events.k8s.io Event with reason about the object named regarding in namespace,
// whose note contains note.
func waitForEvent(t *testing.T, namespace, regarding, reason, note string) *eventsv1.Event {
	t.Helper()
	var found *eventsv1.Event
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, testenv.SettleTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := admin.EventsV1().Events(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i, e := range list.Items {
			if e.Regarding.Name == regarding && e.Reason == reason && strings.Contains(e.Note, note) {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event about %s/%s saying %q: %v", reason, namespace, regarding, note, err)
	}
	return found
}

func TestNothingChanges(t *testing.T) {
	for name, tc := range map[string]struct {
		labels map[string]string
		pod    *corev1.Pod
	}{
		"unlabelled namespace": {
			pod: podWith("app", "registry.example.com:5000/team-a/app:1.0"),
		},
		"namespace labelled with another value": {
			labels: map[string]string{config.InjectLabel: config.InjectDisabled},
			pod:    podWith("app", "quay.io/org/app"),
		},
		"unconfigured registry": {
			labels: optIn(),
			pod:    podWith("app", "ghcr.io/org/app:1", "nginx", "registry.example.com:5000/team-b/app"),
		},
		"pod opted out by label": {
			labels: optIn(),
			pod: func() *corev1.Pod {
				p := podWith("app", "quay.io/org/app")
				p.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
				return p
			}(),
		},
	} {
		t.Run(name, func(t *testing.T) {
			ns := newNamespace(t, "untouched", tc.labels)
			pod, _ := cp.MustCreatePod(t, ns, tc.pod)
			if len(pod.Spec.ImagePullSecrets) != 0 {
				t.Errorf("imagePullSecrets = %v, want none", refNames(pod))
			}
			if copies := managedCopies(t, ns); len(copies) != 0 {
				t.Errorf("%d managed secrets in %q, want none", len(copies), ns)
			}
		})
	}
}

func TestImagesMapToMatchingSecretsInConfigOrder(t *testing.T) {
	ns := newNamespace(t, "order", optIn())
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.PodSpec{
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "own-secret"}, {Name: "quay-regcred"}},
			InitContainers: []corev1.Container{
				{Name: "init-quay", Image: "quay.io/org/init:1"},
				{Name: "init-hub", Image: "myorg/migrate@sha256:" + strings.Repeat("a", 64)},
			},
			Containers: []corev1.Container{
				{Name: "hub", Image: "docker.io/myorg/app:2"},
				{Name: "team-a", Image: "registry.example.com:5000/team-a/api"},
				{Name: "team-a-2", Image: "registry.example.com:5000/team-a/worker:3"},
				// ECR is only for namespaces labelled team=payments.
				{Name: "ecr", Image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app:1"},
				{Name: "library", Image: "nginx"},
			},
		},
	}
	got, _ := cp.MustCreatePod(t, ns, pod)
	want := []string{"own-secret", "quay-regcred", "team-a-regcred", "hub-regcred"}
	if diff := cmp.Diff(want, refNames(got)); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	var names []string
	for _, s := range managedCopies(t, ns) {
		names = append(names, s.Name)
	}
	// quay-regcred was named by the Pod already: it is not added again, but its copy is still made, so a
	// chart that hard-codes the name works in a newly opted-in namespace.
	if diff := cmp.Diff([]string{"hub-regcred", "quay-regcred", "team-a-regcred"}, names); diff != "" {
		t.Errorf("managed copies (-want +got):\n%s", diff)
	}
}

func TestServerSideDryRunWritesNothing(t *testing.T) {
	ns := newNamespace(t, "dryrun", optIn())
	ctx := context.Background()
	got, err := admin.CoreV1().Pods(ns).Create(ctx, podWith("app", "quay.io/org/app"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"quay-regcred"}, refNames(got)); diff != "" {
		t.Errorf("dry-run response imagePullSecrets (-want +got):\n%s", diff)
	}
	if _, err := admin.CoreV1().Secrets(ns).Get(ctx, "quay-regcred", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("secret after dry run: err = %v, want NotFound", err)
	}
	if _, err := admin.CoreV1().Pods(ns).Get(ctx, "app", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after dry run: err = %v, want NotFound", err)
	}
}

func TestUnmanagedSecretIsNeverModified(t *testing.T) {
	ns := newNamespace(t, "unmanaged", optIn())
	ctx := context.Background()
	theirs := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "conflict-regcred", Labels: map[string]string{"owner": "team"}},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig("their-own.example.com")},
	}
	before, err := admin.CoreV1().Secrets(ns).Create(ctx, theirs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod, warns := cp.MustCreatePod(t, ns, podWith("app", "conflict.example.com/app:1"))
	after, err := admin.CoreV1().Secrets(ns).Get(ctx, "conflict-regcred", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("unmanaged secret changed (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"conflict-regcred"}, refNames(pod)); diff != "" {
		t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
	}
	if !containsAll(warns, `secret "conflict-regcred"`, "not managed by pullsecret-injector") {
		t.Errorf("warnings %q do not name the unmanaged secret", warns)
	}
	// A second Pod takes the same path and gets the same answer.
	pod, warns = cp.MustCreatePod(t, ns, podWith("app2", "conflict.example.com/app:1"))
	if len(pod.Spec.ImagePullSecrets) != 1 || !containsAll(warns, "not managed by pullsecret-injector") {
		t.Errorf("second pod: imagePullSecrets %v, warnings %q", refNames(pod), warns)
	}
}

func TestBrokenSourcesNeverBlockThePod(t *testing.T) {
	for name, tc := range map[string]struct {
		image    string
		wantRefs []string
		wantWarn []string
	}{
		"missing source is referenced, with a placeholder copy": {
			image:    "missing.example.com/app",
			wantRefs: []string{"missing-regcred"},
			wantWarn: []string{"pullsecret-injector/missing-regcred", "does not exist yet"},
		},
		"source of the wrong type is referenced, with a placeholder copy": {
			image:    "opaque.example.com/app",
			wantRefs: []string{"opaque-regcred"},
			wantWarn: []string{"pullsecret-injector/opaque-regcred", `type "Opaque"`},
		},
	} {
		t.Run(name, func(t *testing.T) {
			ns := newNamespace(t, "broken", optIn())
			pod, warns := cp.MustCreatePod(t, ns, podWith("app", tc.image))
			if diff := cmp.Diff(tc.wantRefs, refNames(pod)); diff != "" {
				t.Errorf("imagePullSecrets (-want +got):\n%s", diff)
			}
			if !containsAll(warns, tc.wantWarn...) {
				t.Errorf("warnings %q do not contain %q", warns, tc.wantWarn)
			}
			copies := managedCopies(t, ns)
			if len(copies) != 1 {
				t.Fatalf("%d managed secrets, want the placeholder", len(copies))
			}
			want := managed.Placeholder(config.SecretRef{Namespace: sourceNamespace, Name: tc.wantRefs[0]}, ns)
			if copies[0].Type != want.Type || string(copies[0].Data[corev1.DockerConfigJsonKey]) != string(want.Data[corev1.DockerConfigJsonKey]) {
				t.Errorf("copy has type %q and data %q, want the placeholder %q", copies[0].Type,
					copies[0].Data[corev1.DockerConfigJsonKey], want.Data[corev1.DockerConfigJsonKey])
			}
		})
	}
}

func TestConcurrentPodsShareOneCopy(t *testing.T) {
	ns := newNamespace(t, "concurrent", optIn())
	cs, err := newClient()
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// As a ReplicaSet creates them: generateName, no metadata.namespace.
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "web-"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "quay.io/org/web:1"}}},
			}
			got, err := cs.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
			if err != nil {
				errs <- err
				return
			}
			if diff := cmp.Diff([]string{"quay-regcred"}, refNames(got)); diff != "" {
				errs <- fmt.Errorf("pod %s imagePullSecrets (-want +got):\n%s", got.Name, diff)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	pods, err := admin.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != n {
		t.Errorf("%d pods stored, want %d", len(pods.Items), n)
	}
	for _, p := range pods.Items {
		if diff := cmp.Diff([]string{"quay-regcred"}, refNames(&p)); diff != "" {
			t.Errorf("stored pod %s imagePullSecrets (-want +got):\n%s", p.Name, diff)
		}
	}
	if copies := managedCopies(t, ns); len(copies) != 1 {
		t.Errorf("%d managed copies, want exactly 1", len(copies))
	}
}

func TestEntryNamespaceSelector(t *testing.T) {
	const ecrImage = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/payments/api:7"
	payments := newNamespace(t, "payments", merge(optIn(), map[string]string{"team": "payments"}))
	checkout := newNamespace(t, "checkout", merge(optIn(), map[string]string{"team": "checkout"}))

	pod, _ := cp.MustCreatePod(t, payments, podWith("api", ecrImage))
	if diff := cmp.Diff([]string{"ecr-regcred"}, refNames(pod)); diff != "" {
		t.Errorf("payments imagePullSecrets (-want +got):\n%s", diff)
	}
	pod, _ = cp.MustCreatePod(t, checkout, podWith("api", ecrImage))
	if len(pod.Spec.ImagePullSecrets) != 0 {
		t.Errorf("checkout imagePullSecrets = %v, want none", refNames(pod))
	}
	if copies := managedCopies(t, checkout); len(copies) != 0 {
		t.Errorf("%d managed secrets in checkout, want none", len(copies))
	}
}

// A pipeline runs `kubectl create namespace`, `kubectl label` and `kubectl apply` back to back: the
// webhook's caches may not have seen the label yet, and the Pod must get its secrets anyway. On loopback the
// informer usually wins this race, so this test alone would pass against a webhook that trusted its cache;
// TestCacheLagNeverCostsASecret makes the cache lag for certain.
func TestNamespaceLabelledJustBeforeFirstPod(t *testing.T) {
	ctx := context.Background()
	cs, err := newClient()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		name := fmt.Sprintf("pipeline-%d-%d", i, time.Now().UnixNano()%100000)
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		labelNamespace(t, cs, name, merge(optIn(), map[string]string{"team": "payments"}))
		got, err := cs.CoreV1().Pods(name).Create(ctx,
			podWith("first", "quay.io/org/app", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"ecr-regcred", "quay-regcred"}, refNames(got)); diff != "" {
			t.Errorf("round %d: imagePullSecrets (-want +got):\n%s", i, diff)
		}
	}
}

func labelNamespace(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels = merge(ns.Labels, labels)
	if _, err := cs.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
