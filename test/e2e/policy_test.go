package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
	"github.com/pullsecret-injector/pullsecret-injector/test/testenv"
)

// policyOptIn is the opt-in label of the policy test's own configuration. The webhook TestMain registers
// selects namespaces labelled pullsecret-injector.io/inject=enabled, and this test's namespaces never are,
// so neither the webhook nor the policy acts on the other's namespaces.
const policyOptIn = "e2e.pullsecret-injector.io/policy"

// policyConfig is the webhook's e2eConfig behind an opt-in label of its own, with entries added for what
// else the policy must reproduce: Docker Hub's index.docker.io fallback as a second pattern for one
// Secret, a lone star (single-label and IPv6 hosts), an IPv6 host, and every per-entry selector operator.
const policyConfig = `namespaceSelector: {matchLabels: {"` + policyOptIn + `": enabled}}` + e2eConfig + `
  - registry: https://index.docker.io/v1/
    secret: {namespace: pullsecret-injector, name: hub-regcred}
  - registry: ghcr.io/org
    secret: {namespace: pullsecret-injector, name: ghcr-regcred}
    namespaceSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [prod, staging]}
        - {key: legacy, operator: DoesNotExist}
  - registry: "*"
    secret: {namespace: pullsecret-injector, name: local-regcred}
  - registry: "[::1]:5000"
    secret: {namespace: pullsecret-injector, name: local-regcred}
  - registry: localhost:5000
    secret: {namespace: pullsecret-injector, name: localport-regcred}
    namespaceSelector:
      matchExpressions:
        - {key: env, operator: NotIn, values: [dev]}
        - {key: team, operator: Exists}
`

// TestMutatingAdmissionPolicy creates the MutatingAdmissionPolicy and binding compiled from policyConfig
// in the real API server (which validates and compiles its CEL on create), then creates Pods of every
// kind in namespaces of its own and checks that each is stored with the references and annotation the
// webhook's decision gives for the same Pod. MutatingAdmissionPolicy is GA and on by default in 1.36 and
// later: the API server needs no feature gate or runtime-config for it.
func TestMutatingAdmissionPolicy(t *testing.T) {
	ctx := context.Background()
	m := testenv.Matcher(t, policyConfig)
	p, b, err := policy.Build(m, policy.Options{
		PolicyName:         "pullsecret-injector-e2e",
		ExcludedNamespaces: []string{"kube-system", sourceNamespace},
	})
	if err != nil {
		t.Fatal(err)
	}
	policies := admin.AdmissionregistrationV1().MutatingAdmissionPolicies()
	bindings := admin.AdmissionregistrationV1().MutatingAdmissionPolicyBindings()
	if _, err := policies.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create policy: %v", err)
	}
	t.Cleanup(func() {
		if err := policies.Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete policy: %v", err)
		}
	})
	if _, err := bindings.Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create binding: %v", err)
	}
	t.Cleanup(func() {
		if err := bindings.Delete(context.Background(), b.Name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete binding: %v", err)
		}
	})

	// The API server stores the objects as built, defaults and all, so a reconciler that compares what it
	// would build with what is stored sees no difference when there is none.
	if stored, err := policies.Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(p.Spec, stored.Spec); diff != "" {
		t.Errorf("stored policy spec (-built +stored):\n%s", diff)
	}
	if stored, err := bindings.Get(ctx, b.Name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(b.Spec, stored.Spec); diff != "" {
		t.Errorf("stored binding spec (-built +stored):\n%s", diff)
	}

	optedIn := map[string]string{policyOptIn: "enabled"}
	plain := policyNamespace(t, "policy-plain", optedIn)
	payments := policyNamespace(t, "policy-payments", merge(optedIn, map[string]string{"team": "payments", "tier": "prod"}))
	legacy := policyNamespace(t, "policy-legacy", merge(optedIn, map[string]string{"tier": "prod", "legacy": "yes", "env": "dev", "team": "x"}))
	off := policyNamespace(t, "policy-off", nil)

	// The API server learns of a new policy and binding through an informer: wait, with dry runs that
	// store nothing, until a Pod that must be changed is.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := admin.CoreV1().Pods(plain.Name).Create(ctx, podWith("probe", "quay.io/probe/app"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		return len(got.Spec.ImagePullSecrets) > 0, nil
	})
	if err != nil {
		t.Fatalf("wait for the policy to take effect: %v", err)
	}

	digest := "@sha256:" + strings.Repeat("0123456789abcdef", 4)
	many := make([]string, 200)
	for i := range many {
		many[i] = []string{"quay.io/org/app-%d:1", "registry.example.com:5000/team-a/svc-%d", "nginx:1.%d", "gcr.io/x/y-%d"}[i%4]
		if strings.Contains(many[i], "%d") {
			many[i] = fmt.Sprintf(many[i], i)
		}
	}
	tests := []struct {
		name string
		ns   *corev1.Namespace
		pod  *corev1.Pod
		// changed says whether the Pod must come out changed, a check on the expectation itself.
		changed bool
	}{
		{name: "plain", ns: plain, pod: podWith("plain", "quay.io/org/app:1"), changed: true},
		{name: "config order", ns: payments, changed: true, pod: podWith("order",
			"ghcr.io/org/app", "quay.io/x", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"+digest, "registry.example.com:5000/team-a/api")},
		{name: "per-entry selectors exclude", ns: legacy, changed: true, pod: podWith("legacy",
			"ghcr.io/org/app", "localhost:5000/app", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "quay.io/x")},
		{name: "per-entry selectors include", ns: payments, changed: true, pod: podWith("include", "localhost:5000/app", "ghcr.io/org/tool")},
		{name: "two patterns of one secret", ns: plain, changed: true, pod: podWith("hub", "myorg/app", "nginx")},
		{name: "lone star and ipv6", ns: plain, changed: true, pod: podWith("local", "localhost/app", "[::1]:5000/app")},
		{name: "image volume", ns: plain, changed: true, pod: func() *corev1.Pod {
			pod := podWith("volume", "gcr.io/x/app")
			pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: "quay.io/org/data:1", PullPolicy: corev1.PullIfNotPresent}}}}
			return pod
		}()},
		{name: "init containers", ns: plain, changed: true, pod: func() *corev1.Pod {
			pod := podWith("init", "gcr.io/x/app")
			pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "registry.example.com:5000/team-ab/init"}}
			return pod
		}()},
		{name: "existing references", ns: plain, changed: true, pod: func() *corev1.Pod {
			pod := podWith("existing", "quay.io/x", "registry.example.com:5000/team-a/api")
			pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "mine"}, {Name: "quay-regcred"}}
			pod.Annotations = map[string]string{"keep": "me"}
			return pod
		}()},
		{name: "everything already referenced", ns: plain, pod: func() *corev1.Pod {
			pod := podWith("referenced", "quay.io/x")
			pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "quay-regcred"}}
			return pod
		}()},
		{name: "opted-out Pod", ns: plain, pod: func() *corev1.Pod {
			pod := podWith("opted-out", "quay.io/x")
			pod.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
			return pod
		}()},
		{name: "namespace not opted in", ns: off, pod: podWith("off", "quay.io/x")},
		{name: "invalid images", ns: plain, changed: true, pod: podWith("invalid",
			"Quay.io/Org/App", "quay.io/x:", "upper/Case", strings.Repeat("a", 64), "quay.io/"+strings.Repeat("a", 300), "registry.example.com:5000/team-a/ok")},
		{name: "200 containers", ns: payments, changed: true, pod: podWith("many", many...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := policytest.Want(m, tc.pod, labels.Set(tc.ns.Labels), policy.InjectedAnnotation)
			if changed := want != tc.pod; changed != tc.changed {
				t.Fatalf("the webhook changes the Pod: %v, want %v", changed, tc.changed)
			}
			stored, _ := createPod(t, tc.ns.Name, tc.pod)
			t.Cleanup(func() { deletePod(t, tc.ns.Name, stored.Name) })
			if diff := cmp.Diff(want.Spec.ImagePullSecrets, stored.Spec.ImagePullSecrets); diff != "" {
				t.Errorf("imagePullSecrets (-webhook +stored):\n%s", diff)
			}
			if diff := cmp.Diff(want.Annotations, stored.Annotations); diff != "" {
				t.Errorf("annotations (-webhook +stored):\n%s", diff)
			}
		})
	}
}

// policyNamespace creates a uniquely named namespace and deletes it when the test ends.
func policyNamespace(t *testing.T, prefix string, l map[string]string) *corev1.Namespace {
	t.Helper()
	name := newNamespace(t, prefix, l)
	t.Cleanup(func() {
		if err := admin.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete namespace %q: %v", name, err)
		}
	})
	ns, err := admin.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}
