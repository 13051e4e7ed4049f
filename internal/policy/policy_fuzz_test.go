package policy

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

var fuzzOnce struct {
	sync.Once
	h *harness
}

// fuzzHarness compiles, once per process, the policy of testConfig.
func fuzzHarness(tb testing.TB) *harness {
	tb.Helper()
	fuzzOnce.Do(func() { fuzzOnce.h = newHarness(tb, testConfig) })
	if fuzzOnce.h == nil {
		tb.Fatal("the policy of testConfig did not compile")
	}
	return fuzzOnce.h
}

// FuzzPolicyAgreesWithWebhook creates a fuzzed Pod (images one a line, existing references and
// namespace labels comma-separated, optionally the opt-out label) under testConfig, and checks that the
// policy, evaluated as the API server evaluates it, leaves the references and annotations the webhook's
// own handler leaves. The configuration stays testConfig: compiling one per input would make the fuzzer
// a hundred times slower, and FuzzPatternRegexp holds every pattern's expression to the matcher. Without
// -fuzz it runs only the seeds.
func FuzzPolicyAgreesWithWebhook(f *testing.F) {
	f.Add("quay.io/x\nnginx\nregistry.example.com:5000/team-a/app", "", "team=payments,tier=prod", false)
	f.Add("ghcr.io/org/app\n123.dkr.ecr.eu-west-1.amazonaws.com/app\nlocalhost:5000/x", "quay,hub", "tier=staging,team=a", false)
	f.Add("localhost/x\n[::1]:5000/x\n[A]/x\nLOCAL/x", "local", "legacy=1,env=dev", false)
	f.Add("quay.io/x", "", "", true)
	f.Add("my_reg.io/app\nmyorg/app:1", "other", "team=payments", false)
	for _, image := range hostileImages {
		f.Add(image+"\nquay.io/x", "", "tier=prod", false)
	}
	f.Fuzz(func(t *testing.T, images, existing, nsLabels string, optOut bool) {
		h := fuzzHarness(t)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		for i, image := range strings.SplitN(images, "\n", 8) {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: jsonRoundTrip(t, image)})
		}
		for _, name := range strings.Split(existing, ",") {
			if name != "" {
				pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: jsonRoundTrip(t, name)})
			}
		}
		if optOut {
			pod.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
		}
		l := map[string]string{config.InjectLabel: config.InjectEnabled}
		for _, kv := range strings.Split(nsLabels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if len(validation.IsQualifiedName(k)) == 0 && len(validation.IsValidLabelValue(v)) == 0 && k != config.InjectLabel {
				l[k] = v
			}
		}
		ns := namespace("fuzz", l)

		want := outcomeOf(webhookPod(t, h.matcher, pod, ns))
		if diff := cmp.Diff(want, outcomeOf(h.admit(t, pod, ns))); diff != "" {
			t.Errorf("policy differs from the webhook for images %q, references %q, namespace labels %v (-webhook +policy):\n%s",
				images, existing, l, diff)
		}
	})
}

// FuzzInjectedAnnotationAgrees gives a Pod a fuzzed injected annotation of its own, as its author or an
// earlier invocation may have written it, with references to some of the configured Secrets and images
// that need some, and checks that the policy leaves the annotation (and the references) the webhook's
// own handler leaves: both read an earlier injection as the text {"secret":<name>, and keep it only for a
// Secret the Pod references and would be given. Without -fuzz it runs only the seeds.
func FuzzInjectedAnnotationAgrees(f *testing.F) {
	f.Add(`[{"secret":"quay","registries":["quay.io"]}]`, "quay", "quay.io/x\nnginx")
	f.Add(`[{"secret":"quay","registries":["quay.io"]},{"secret":"hub","registries":["docker.io/myorg"]}]`, "quay,hub", "quay.io/x\nmyorg/app\nregistry.example.com:5000/team-a/x")
	f.Add(`[{"registries":["quay.io"],"secret":"quay"}]`, "quay", "quay.io/x\nnginx")
	f.Add(`[{"secret": "quay", "registries": []}]`, "quay", "quay.io/x\nnginx")
	f.Add(`lie {"secret":"quay", lie`, "quay", "quay.io/x\nnginx")
	f.Add(`{"secret":"team-a",{"secret":"quay",`, "team-a,other", "registry.example.com:5000/team-a/x\nnginx")
	f.Add(`[{"secret":"quay\u0022,"}]`, "quay", "quay.io/x\nnginx")
	f.Add("", "", "nginx")
	f.Fuzz(func(t *testing.T, annotation, existing, images string) {
		h := fuzzHarness(t)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{
			InjectedAnnotation: jsonRoundTrip(t, annotation),
		}}}
		for i, image := range strings.SplitN(images, "\n", 8) {
			pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: jsonRoundTrip(t, image)})
		}
		for _, name := range strings.Split(existing, ",") {
			if name != "" {
				pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: jsonRoundTrip(t, name)})
			}
		}
		want := outcomeOf(webhookPod(t, h.matcher, pod, paymentsNS))
		if diff := cmp.Diff(want, outcomeOf(h.admit(t, pod, paymentsNS))); diff != "" {
			t.Errorf("policy differs from the webhook for annotation %q, references %q, images %q (-webhook +policy):\n%s",
				annotation, existing, images, diff)
		}
	})
}
