package policy

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
)

// manyEntries is a configuration of n distinct registries, every fourth one with a namespace selector.
func manyEntries(n int) string {
	var b strings.Builder
	b.WriteString("registries:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - registry: registry-%d.example.com:5000/team-%d\n    secret: {namespace: ops, name: s%d}\n", i, i, i)
		if i%4 == 3 {
			b.WriteString("    namespaceSelector: {matchLabels: {team: payments}}\n")
		}
	}
	return b.String()
}

// TestCost evaluates the whole mutation (every variable it reads included) with the API server's
// limits, for Pods from one container to 200, with the longest images a Pod can pull, and reports the
// cost. A cost over the limits is an error the API server answers by refusing the Pod (failurePolicy
// Fail), so each case must evaluate, and to what the webhook decides.
//
//	go test -run TestCost -v ./internal/policy
func TestCost(t *testing.T) {
	digest := "@sha512:" + strings.Repeat("0123456789abcdef", 8)
	longest := func(i int) string {
		// The longest reference NormalizeImage accepts on a short domain: a 255-character path (padded
		// after a unique prefix), a 128-character tag, a sha512 digest.
		path := fmt.Sprintf("team-a/app-%d-", i)
		path += strings.Repeat("a", 255-len(path))
		return "registry.example.com:5000/" + path + ":" + strings.Repeat("t", 128) + digest
	}
	tests := []struct {
		name   string
		config string
		images func(i int) string
		n      int
	}{
		{name: "one container, test config", config: testConfig, n: 1, images: func(int) string { return "quay.io/org/app:1.0" }},
		{name: "200 containers, test config", config: testConfig, n: 200,
			images: func(i int) string { return fmt.Sprintf("quay.io/org/app-%d:1.%d", i, i) }},
		{name: "200 of the longest images, test config", config: testConfig, n: 200, images: longest},
		{name: "200 containers, 50 entries", config: manyEntries(50), n: 200,
			images: func(i int) string { return fmt.Sprintf("registry-%d.example.com:5000/team-%d/app:%d", i%60, i%60, i) }},
		{name: "200 containers matching nothing, 50 entries", config: manyEntries(50), n: 200,
			images: func(i int) string { return fmt.Sprintf("gcr.io/org/app-%d:1.0", i) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.config)
			pod := &corev1.Pod{}
			for i := range tc.n {
				pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: tc.images(i)})
			}
			probes := compile(t, h.policy, h.policy.Spec.Mutations[0].JSONPatch.Expression)
			_, cost, err := probes.evaluate(h.policy.Spec.Mutations[0].JSONPatch.Expression, pod, paymentsNS)
			if err != nil {
				t.Fatalf("evaluate: %v", err)
			}
			t.Logf("cost %d (%.1f%% of the budget of %d per Pod)", cost, 100*float64(cost)/celconfig.RuntimeCELCostBudget, celconfig.RuntimeCELCostBudget)
			got, err := h.eval.mutate(pod, paymentsNS)
			if err != nil {
				t.Fatalf("mutate: %v", err)
			}
			want := policytest.Want(h.matcher, pod, paymentsNS.Labels, InjectedAnnotation)
			if diff := cmp.Diff(outcomeOf(want), outcomeOf(got)); diff != "" {
				t.Errorf("policy differs from the webhook (-webhook +policy):\n%s", diff)
			}
		})
	}
}
