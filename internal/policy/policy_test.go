package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
	"github.com/pullsecret-injector/pullsecret-injector/webhook"
)

// testConfig has an entry for each thing the policy must reproduce: hosts, ports and paths, wildcards,
// Docker Hub and its index.docker.io fallback, two patterns for one Secret, a lone star (single-label and
// bracketed IPv6 hosts), and every kind of per-entry namespace selector.
const testConfig = `
registries:
  - registry: registry.example.com:5000/team-a
    secret: {namespace: ops, name: team-a}
  - registry: "*.dkr.ecr.eu-west-1.amazonaws.com"
    secret: {namespace: ops, name: ecr}
    namespaceSelector: {matchLabels: {team: payments}}
  - registry: docker.io/myorg
    secret: {namespace: ops, name: hub}
  - registry: quay.io
    secret: {namespace: ops, name: quay}
  - registry: https://index.docker.io/v1/
    secret: {namespace: ops, name: hub}
  - registry: ghcr.io/org
    secret: {namespace: ops, name: ghcr}
    namespaceSelector:
      matchExpressions:
        - {key: tier, operator: In, values: [prod, staging]}
        - {key: legacy, operator: DoesNotExist}
  - registry: "*"
    secret: {namespace: ops, name: local}
  - registry: "[::1]:5000"
    secret: {namespace: ops, name: local}
  - registry: localhost:5000
    secret: {namespace: ops, name: localport}
    namespaceSelector:
      matchExpressions:
        - {key: env, operator: NotIn, values: [dev]}
        - {key: team, operator: Exists}
`

func namespace(name string, l map[string]string) *corev1.Namespace {
	all := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range l {
		all[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: all}}
}

var (
	plainNS    = namespace("plain", map[string]string{config.InjectLabel: config.InjectEnabled})
	paymentsNS = namespace("payments", map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments", "tier": "prod"})
	legacyNS   = namespace("legacy", map[string]string{config.InjectLabel: config.InjectEnabled, "tier": "prod", "legacy": "yes", "env": "dev", "team": "x"})
	offNS      = namespace("off", nil)
	systemNS   = namespace("kube-system", map[string]string{config.InjectLabel: config.InjectEnabled})
)

func containers(images ...string) []corev1.Container {
	out := make([]corev1.Container, len(images))
	for i, image := range images {
		out[i] = corev1.Container{Name: fmt.Sprintf("c%d", i), Image: image}
	}
	return out
}

func podOf(images ...string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: containers(images...)}}
}

func refs(names ...string) []corev1.LocalObjectReference {
	out := make([]corev1.LocalObjectReference, len(names))
	for i, n := range names {
		out[i].Name = n
	}
	return out
}

// outcome is what the tests compare: the references and the annotations.
type outcome struct {
	Refs        []corev1.LocalObjectReference
	Annotations map[string]string
}

func outcomeOf(p *corev1.Pod) outcome {
	return outcome{Refs: p.Spec.ImagePullSecrets, Annotations: p.Annotations}
}

// bindingSelects says whether the API server would send pod, created in ns, through b: its namespace and
// object selectors.
func bindingSelects(t testing.TB, b *admissionregistrationv1.MutatingAdmissionPolicyBinding, pod *corev1.Pod, ns *corev1.Namespace) bool {
	t.Helper()
	nsSel, err := metav1.LabelSelectorAsSelector(b.Spec.MatchResources.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	objSel, err := metav1.LabelSelectorAsSelector(b.Spec.MatchResources.ObjectSelector)
	if err != nil {
		t.Fatal(err)
	}
	return nsSel.Matches(labels.Set(ns.Labels)) && objSel.Matches(labels.Set(pod.Labels))
}

type harness struct {
	matcher *config.Matcher
	policy  *admissionregistrationv1.MutatingAdmissionPolicy
	binding *admissionregistrationv1.MutatingAdmissionPolicyBinding
	eval    *evaluator
}

func newHarness(t testing.TB, configYAML string, probes ...string) *harness {
	t.Helper()
	return harnessOf(t, configtest.Matcher(t, configYAML), probes...)
}

func harnessOf(t testing.TB, m *config.Matcher, probes ...string) *harness {
	t.Helper()
	p, b, err := Build(m, Options{PolicyName: "pullsecret-injector", ExcludedNamespaces: []string{"kube-system", "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	return &harness{matcher: m, policy: p, binding: b, eval: compile(t, p, probes...)}
}

// admit returns pod as the API server leaves it after the policy, when created in ns.
func (h *harness) admit(t testing.TB, pod *corev1.Pod, ns *corev1.Namespace) *corev1.Pod {
	t.Helper()
	if !bindingSelects(t, h.binding, pod, ns) {
		return pod
	}
	out, err := h.eval.mutate(pod, ns)
	if err != nil {
		t.Fatalf("mutate: %v", err)
	}
	return out
}

func TestPolicyAgreesWithWebhook(t *testing.T) {
	h := newHarness(t, testConfig)
	digest := "@sha256:" + strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		// wantAdded is a check on the expectation itself, which comes from the webhook.
		wantAdded []string
	}{
		{name: "one image", pod: podOf("quay.io/org/app:1"), ns: plainNS, wantAdded: []string{"quay"}},
		{name: "secrets in config order, not image order", ns: paymentsNS,
			pod:       podOf("ghcr.io/org/app", "quay.io/x", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"+digest, "registry.example.com:5000/team-a/api"),
			wantAdded: []string{"team-a", "ecr", "quay", "ghcr"}},
		{name: "per-entry selector leaves entries out", ns: plainNS,
			pod:       podOf("ghcr.io/org/app", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "quay.io/x"),
			wantAdded: []string{"quay"}},
		{name: "DoesNotExist and NotIn", ns: legacyNS,
			pod:       podOf("ghcr.io/org/app", "localhost:5000/app", "quay.io/x"),
			wantAdded: []string{"quay"}},
		{name: "Exists and NotIn select", ns: paymentsNS, pod: podOf("localhost:5000/app"), wantAdded: []string{"localport"}},
		{name: "two patterns of one secret list both", ns: plainNS, pod: podOf("myorg/app", "nginx"), wantAdded: []string{"hub"}},
		{name: "secret placed by its first matching entry", ns: plainNS, pod: podOf("nginx", "quay.io/x"),
			wantAdded: []string{"quay", "hub"}},
		{name: "existing reference is kept and not repeated", ns: plainNS,
			pod: func() *corev1.Pod {
				p := podOf("quay.io/x", "registry.example.com:5000/team-a/api")
				p.Spec.ImagePullSecrets = refs("other", "quay")
				return p
			}(), wantAdded: []string{"team-a"}},
		{name: "all already referenced", ns: plainNS,
			pod: func() *corev1.Pod {
				p := podOf("quay.io/x")
				p.Spec.ImagePullSecrets = refs("quay")
				return p
			}()},
		{name: "init and ephemeral containers", ns: plainNS,
			pod: func() *corev1.Pod {
				p := podOf("busybox")
				p.Spec.InitContainers = containers("quay.io/init")
				p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
					Name: "debug", Image: "registry.example.com:5000/team-ab/debug"}}}
				return p
			}(), wantAdded: []string{"team-a", "quay", "hub"}},
		{name: "invalid images are skipped", ns: plainNS,
			pod:       podOf("Quay.io/Org/App", "", "quay.io/x:", "upper/Case", strings.Repeat("a", 64), "quay.io/"+strings.Repeat("a", 300), "quay.io/x"),
			wantAdded: []string{"quay"}},
		{name: "nothing matches", ns: plainNS, pod: podOf("gcr.io/x/y")},
		{name: "lone star matches single-label hosts", ns: plainNS, pod: podOf("localhost/app", "LOCAL/app"), wantAdded: []string{"hub", "local"}},
		{name: "lone star and ipv6", ns: plainNS, pod: podOf("[::1]:5000/app"), wantAdded: []string{"local"}},
		{name: "bracketed non-address matches only the docker hub fallback", ns: plainNS, pod: podOf("[A]/app"), wantAdded: []string{"hub"}},
		{name: "other annotations are kept", ns: plainNS,
			pod: func() *corev1.Pod {
				p := podOf("quay.io/x")
				p.Annotations = map[string]string{"a": "b", "x/y": "z"}
				return p
			}(), wantAdded: []string{"quay"}},
		{name: "opted-out Pod", ns: plainNS,
			pod: func() *corev1.Pod {
				p := podOf("quay.io/x")
				p.Labels = map[string]string{config.InjectLabel: config.InjectDisabled}
				return p
			}()},
		{name: "namespace not opted in", ns: offNS, pod: podOf("quay.io/x")},
		{name: "excluded namespace", ns: systemNS, pod: podOf("quay.io/x")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := policytest.Want(h.matcher, tc.pod, tc.ns.Labels, InjectedAnnotation)
			if tc.ns == systemNS {
				// The webhook has no exclusion of its own: the chart's registration excludes kube-system.
				want = tc.pod
			} else if diff := cmp.Diff(outcomeOf(want), outcomeOf(webhookPod(t, h.matcher, tc.pod, tc.ns))); diff != "" {
				t.Errorf("policytest.Want differs from the webhook (-want +webhook):\n%s", diff)
			}
			var added []string
			for _, r := range want.Spec.ImagePullSecrets[len(tc.pod.Spec.ImagePullSecrets):] {
				added = append(added, r.Name)
			}
			if diff := cmp.Diff(tc.wantAdded, added); diff != "" {
				t.Errorf("expected additions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(outcomeOf(want), outcomeOf(h.admit(t, tc.pod, tc.ns))); diff != "" {
				t.Errorf("policy differs from the webhook (-webhook +policy):\n%s", diff)
			}
		})
	}
}

func TestImageVolumes(t *testing.T) {
	h := newHarness(t, testConfig)
	pod := podOf("busybox")
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "quay.io/org/data:1"}}},
		{Name: "empty", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "bad", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{}}},
	}
	got := h.admit(t, pod, plainNS)
	want := outcome{
		Refs:        refs("quay", "hub"),
		Annotations: map[string]string{InjectedAnnotation: `[{"secret":"quay","registries":["quay.io"]},{"secret":"hub","registries":["https://index.docker.io/v1/"]}]`},
	}
	if diff := cmp.Diff(want, outcomeOf(got)); diff != "" {
		t.Errorf("image volume (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(outcomeOf(policytest.Want(h.matcher, pod, plainNS.Labels, InjectedAnnotation)), outcomeOf(got)); diff != "" {
		t.Errorf("policy differs from policytest.Want (-want +got):\n%s", diff)
	}
}

// TestReinvocation: a Pod the policy already changed, to which another admission plugin then adds a
// container, gets the new Secret after the one it has, and an annotation that lists both, as the webhook
// would write it for the final Pod at once, and as the webhook, reinvoked, writes it too.
func TestReinvocation(t *testing.T) {
	h := newHarness(t, testConfig)
	pod := podOf("quay.io/x")
	first := h.admit(t, pod, plainNS)
	if diff := cmp.Diff(refs("quay"), first.Spec.ImagePullSecrets); diff != "" {
		t.Fatalf("first invocation (-want +got):\n%s", diff)
	}
	// Unchanged on a reinvocation that changes nothing.
	if diff := cmp.Diff(outcomeOf(first), outcomeOf(h.admit(t, first, plainNS))); diff != "" {
		t.Errorf("second invocation of an unchanged Pod (-first +second):\n%s", diff)
	}
	grown := first.DeepCopy()
	grown.Spec.Containers = append(grown.Spec.Containers, corev1.Container{Name: "sidecar", Image: "registry.example.com:5000/team-a/sidecar"})
	got := h.admit(t, grown, plainNS)

	atOnce := podOf("quay.io/x", "registry.example.com:5000/team-a/sidecar")
	want := outcome{
		Refs:        policytest.Want(h.matcher, grown, plainNS.Labels, InjectedAnnotation).Spec.ImagePullSecrets,
		Annotations: policytest.Want(h.matcher, atOnce, plainNS.Labels, InjectedAnnotation).Annotations,
	}
	if diff := cmp.Diff(refs("quay", "team-a"), want.Refs); diff != "" {
		t.Errorf("expected references (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, outcomeOf(got)); diff != "" {
		t.Errorf("after reinvocation (-at once +reinvoked):\n%s", diff)
	}
	if diff := cmp.Diff(outcomeOf(webhookPod(t, h.matcher, grown, plainNS)), outcomeOf(got)); diff != "" {
		t.Errorf("after reinvocation (-webhook reinvoked +policy reinvoked):\n%s", diff)
	}
}

func TestBuild(t *testing.T) {
	m := configtest.Matcher(t, `
namespaceSelector: {matchLabels: {a: b}, matchExpressions: [{key: c, operator: Exists}]}
registries:
  - registry: quay.io
    secret: {namespace: ops, name: quay}
`)
	p, b, err := Build(m, Options{PolicyName: "psi", BindingName: "psi-binding", ExcludedNamespaces: []string{"ops", "kube-system", "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "psi" || b.Name != "psi-binding" || b.Spec.PolicyName != "psi" {
		t.Errorf("names: policy %q, binding %q for policy %q", p.Name, b.Name, b.Spec.PolicyName)
	}
	if got := ptr.Deref(p.Spec.FailurePolicy, ""); got != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy = %q, want Fail", got)
	}
	if p.Spec.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy = %q, want IfNeeded", p.Spec.ReinvocationPolicy)
	}
	if len(p.Spec.Mutations) != 1 || p.Spec.Mutations[0].PatchType != admissionregistrationv1.PatchTypeJSONPatch {
		t.Errorf("mutations = %+v, want one JSON patch", p.Spec.Mutations)
	}
	wantRules := []admissionregistrationv1.NamedRuleWithOperations{{RuleWithOperations: admissionregistrationv1.RuleWithOperations{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
			Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
	}}}
	if diff := cmp.Diff(wantRules, p.Spec.MatchConstraints.ResourceRules); diff != "" {
		t.Errorf("resource rules (-want +got):\n%s", diff)
	}
	wantNS := &metav1.LabelSelector{
		MatchLabels: map[string]string{"a": "b"},
		MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "c", Operator: metav1.LabelSelectorOpExists},
			{Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "ops"}},
		},
	}
	if diff := cmp.Diff(wantNS, b.Spec.MatchResources.NamespaceSelector); diff != "" {
		t.Errorf("binding namespace selector (-want +got):\n%s", diff)
	}
	wantObj := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: config.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{config.InjectDisabled}},
	}}
	if diff := cmp.Diff(wantObj, b.Spec.MatchResources.ObjectSelector); diff != "" {
		t.Errorf("binding object selector (-want +got):\n%s", diff)
	}
	if InjectedAnnotation != webhook.InjectedAnnotation {
		t.Errorf("InjectedAnnotation = %q, the webhook's is %q", InjectedAnnotation, webhook.InjectedAnnotation)
	}
}

func TestBuildRefusesWhatDoesNotCompile(t *testing.T) {
	m := configtest.Matcher(t, `
registries:
  - registry: quay.io
    secret: {namespace: ops, name: quay}
  - registry: "cafe*:5000"
    secret: {namespace: ops, name: cafe}
`)
	_, _, err := Build(m, Options{PolicyName: "psi"})
	if err == nil || !strings.Contains(err.Error(), "registries[1].registry") {
		t.Errorf("Build() error = %v, want one naming registries[1].registry", err)
	}
	if _, _, err := Build(m, Options{}); err == nil {
		t.Error("Build() without a policy name returned no error")
	}
}
