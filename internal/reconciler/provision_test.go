package reconciler

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/config/configtest"
	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// cachedNamespace is a namespace as the namespace informer holds it.
func cachedNamespace(name string, labels map[string]string, terminating bool) *metav1.PartialObjectMetadata {
	ns := managed.PartialNamespace()
	ns.Name, ns.Labels = name, labels
	if terminating {
		ns.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	}
	return ns
}

// cachedCopy is a copy as the copies' informer holds it.
func cachedCopy(ns, name string) *metav1.PartialObjectMetadata {
	s := managed.PartialSecret()
	s.Namespace, s.Name = ns, name
	return s
}

func keys(reqs []reconcile.Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}

func TestProvisioner(t *testing.T) {
	dir := t.TempDir()
	if err := fixtures.WriteConfigMapVolume(dir, "config.yaml", []byte(testConfig)); err != nil {
		t.Fatal(err)
	}
	store, err := config.NewStore(filepath.Join(dir, "config.yaml"), time.Hour, logr.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	payments := map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"}
	namespaces := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
	for _, ns := range []*metav1.PartialObjectMetadata{
		cachedNamespace("plain", optIn, false),
		cachedNamespace("payments", payments, false),
		cachedNamespace("has-quay", payments, false),
		cachedNamespace("terminating", payments, false),
		cachedNamespace("off", map[string]string{"team": "payments"}, false),
		// The sources' own namespace, opted in: a source is never a copy of itself.
		cachedNamespace("psi", payments, false),
	} {
		if err := namespaces.Add(ns); err != nil {
			t.Fatal(err)
		}
	}
	// Terminating: its copies go with it; none is made.
	if err := namespaces.Update(cachedNamespace("terminating", payments, true)); err != nil {
		t.Fatal(err)
	}
	copies := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
	if err := copies.Add(cachedCopy("has-quay", "quay-regcred")); err != nil {
		t.Fatal(err)
	}
	p := &provisioner{config: store, namespaces: namespaces, copies: copies}

	for _, tc := range []struct {
		name string
		got  []reconcile.Request
		want []string
	}{
		{name: "an opted-in namespace gets the copies of the entries without a selector",
			got: p.inNamespace(cachedNamespace("plain", optIn, false)), want: []string{"plain/quay-regcred"}},
		{name: "an entry's selector adds its copy",
			got: p.inNamespace(cachedNamespace("payments", payments, false)), want: []string{"payments/ecr-regcred", "payments/quay-regcred"}},
		{name: "a copy in the cache is not asked for",
			got: p.inNamespace(cachedNamespace("has-quay", payments, false)), want: []string{"has-quay/ecr-regcred"}},
		{name: "a terminating namespace gets nothing",
			got: p.inNamespace(cachedNamespace("terminating", payments, true)), want: []string{}},
		{name: "a namespace not opted in gets nothing",
			got: p.inNamespace(cachedNamespace("off", map[string]string{"team": "payments"}, false)), want: []string{}},
		{name: "the sources' namespace gets no copy of its own sources",
			got: p.inNamespace(cachedNamespace("psi", payments, false)), want: []string{}},
		{name: "every namespace, every name",
			got:  p.everywhere(""),
			want: []string{"has-quay/ecr-regcred", "payments/ecr-regcred", "payments/quay-regcred", "plain/quay-regcred"}},
		{name: "every namespace, one name",
			got: p.everywhere("quay-regcred"), want: []string{"payments/quay-regcred", "plain/quay-regcred"}},
		{name: "a name no entry has",
			got: p.everywhere("other"), want: []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, keys(tc.got)); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
		})
	}

	// A reload that adds an entry: its copy is wanted at once, in every namespace it selects.
	if err := fixtures.WriteConfigMapVolume(dir, "config.yaml", []byte(testConfig+`
  - registry: ghcr.io
    secret: {namespace: psi, name: ghcr-regcred}
`)); err != nil {
		t.Fatal(err)
	}
	if !store.Reload() {
		t.Fatal("the new configuration was not taken")
	}
	want := []string{"has-quay/ghcr-regcred", "payments/ghcr-regcred", "plain/ghcr-regcred"}
	if diff := cmp.Diff(want, keys(p.everywhere("ghcr-regcred"))); diff != "" {
		t.Errorf("requests after the reload (-want +got):\n%s", diff)
	}
	// Without eager provisioning there is no provisioner, and it asks for nothing.
	var lazy *provisioner
	if got := append(lazy.everywhere(""), lazy.inNamespace(cachedNamespace("plain", optIn, false))...); len(got) != 0 {
		t.Errorf("lazy provisioning asked for %v", got)
	}
}

// BenchmarkProvisionerEverywhere measures a pass over every cached namespace (a reload, a source
// appearing, the resync) with three configured Secret names, one behind an entry selector: per pass, with
// every copy made (the steady state, which asks for nothing) and with none made (the first pass on a
// cluster, which asks for every copy).
//
//	go test -run '^$' -bench BenchmarkProvisionerEverywhere -benchmem ./internal/reconciler
func BenchmarkProvisionerEverywhere(b *testing.B) {
	for _, n := range []int{10000, 50000} {
		for _, made := range []bool{true, false} {
			name := fmt.Sprintf("namespaces=%d/copies-made=%v", n, made)
			b.Run(name, func(b *testing.B) {
				store := config.NewStaticStore(configtest.Matcher(b, testConfig+`
  - registry: ghcr.io
    secret: {namespace: psi, name: ghcr-regcred}
`))
				namespaces := toolscache.NewStore(toolscache.MetaNamespaceKeyFunc)
				copies := toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{})
				payments := map[string]string{config.InjectLabel: config.InjectEnabled, "team": "payments"}
				for i := range n {
					ns := fmt.Sprintf("team-%05d", i)
					l := optIn
					if i%2 == 0 {
						l = payments
					}
					if err := namespaces.Add(cachedNamespace(ns, l, false)); err != nil {
						b.Fatal(err)
					}
					if made {
						for _, s := range []string{"quay-regcred", "ecr-regcred", "ghcr-regcred"} {
							if err := copies.Add(cachedCopy(ns, s)); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				p := &provisioner{config: store, namespaces: namespaces, copies: copies}
				var reqs int
				b.ReportAllocs()
				for b.Loop() {
					reqs = len(p.everywhere(""))
				}
				b.ReportMetric(float64(reqs), "requests/pass")
			})
		}
	}
}
