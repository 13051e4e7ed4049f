package policy

import (
	"testing"

	"github.com/pullsecret-injector/pullsecret-injector/internal/policy/policytest"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// docsConfig is the example of docs/configuration.md, with the benchmark's registry, as
// `make bench-admission` configures the project.
const docsConfig = fixtures.DocsExample + `  - registry: registry.bench.example
    secret: {namespace: pullsecret-injector, name: bench-regcred}
`

// BenchmarkMutate evaluates the policy as the API server does for one Pod create (the patch included),
// for the Pod of `make bench-admission` under the docs' example, and for one of testConfig's Pods: the
// policy's share of the API server's CPU per admission.
//
//	go test -run '^$' -bench BenchmarkMutate -benchmem ./internal/policy
func BenchmarkMutate(b *testing.B) {
	for _, tc := range []struct {
		name, config string
		images       []string
	}{
		{name: "docs example, one container", config: docsConfig, images: []string{"registry.bench.example/team/app:1"}},
		{name: "test config, four containers", config: testConfig, images: []string{
			"quay.io/org/app:1", "registry.example.com:5000/team-a/api", "nginx", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b, tc.config)
			pod := podOf(tc.images...)
			want := policytest.Want(h.matcher, pod, paymentsNS.Labels, InjectedAnnotation)
			got, err := h.eval.mutate(pod, paymentsNS)
			if err != nil {
				b.Fatal(err)
			}
			if len(got.Spec.ImagePullSecrets) != len(want.Spec.ImagePullSecrets) || len(got.Spec.ImagePullSecrets) == 0 {
				b.Fatalf("references %v, want %v", got.Spec.ImagePullSecrets, want.Spec.ImagePullSecrets)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.eval.mutate(pod, paymentsNS); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
