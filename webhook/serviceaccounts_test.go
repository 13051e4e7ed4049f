package webhook

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pullsecret-injector/pullsecret-injector/internal/managed"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

func saMeta(ns, name, rv string, enforce string) *metav1.PartialObjectMetadata {
	m := managed.PartialServiceAccount()
	m.Namespace, m.Name, m.UID, m.ResourceVersion = ns, name, "uid", rv
	if enforce != "" {
		m.Annotations = map[string]string{managed.EnforceMountableSecretsAnnotation: enforce, "big": string(make([]byte, 1024))}
	}
	return m
}

// The cache answers as the ServiceAccount admission plugin reads the annotation, through every change the
// reflector can make, and holds only the enforcing ones.
func TestEnforcingServiceAccountsFollowTheReflector(t *testing.T) {
	s := &enforcingServiceAccounts{keys: map[string]string{}}
	var store toolscache.TransformingStore = s
	if s.HasSynced() {
		t.Error("synced before the first list")
	}
	if err := store.Replace([]any{saMeta("a", "default", "1", ""), saMeta("a", "builder", "2", "true"), saMeta("b", "builder", "3", "1"),
		saMeta("b", "other", "4", "false")}, "10"); err != nil {
		t.Fatal(err)
	}
	if !s.HasSynced() {
		t.Error("not synced after the first list")
	}
	want := map[string]string{"a/builder": "2", "b/builder": "3"}
	if diff := cmp.Diff(want, s.keys); diff != "" {
		t.Errorf("after the list (-want +got):\n%s", diff)
	}
	steps := []struct {
		name string
		do   func() error
		want map[string]string
	}{
		{"a ServiceAccount starts enforcing", func() error { return store.Update(saMeta("a", "default", "11", "true")) },
			map[string]string{"a/default": "11", "a/builder": "2", "b/builder": "3"}},
		{"one stops", func() error { return store.Update(saMeta("a", "builder", "12", "false")) },
			map[string]string{"a/default": "11", "b/builder": "3"}},
		{"a new one that does not enforce costs nothing", func() error { return store.Add(saMeta("c", "default", "13", "")) },
			map[string]string{"a/default": "11", "b/builder": "3"}},
		{"a deleted one goes", func() error { return store.Delete(saMeta("b", "builder", "14", "1")) },
			map[string]string{"a/default": "11"}},
		{"a tombstone too", func() error {
			return store.Delete(toolscache.DeletedFinalStateUnknown{Key: "a/default", Obj: saMeta("a", "default", "15", "true")})
		}, map[string]string{}},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if diff := cmp.Diff(step.want, s.keys); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step.name, diff)
		}
	}
}

func TestServiceAccountReaderAnswersFromTheEnforcingOnes(t *testing.T) {
	s := &enforcingServiceAccounts{keys: map[string]string{"team/builder": "7"}}
	r := serviceAccountReader{sas: s}
	got := managed.PartialServiceAccount()
	if err := r.Get(context.Background(), types.NamespacedName{Namespace: "team", Name: "builder"}, got); err != nil {
		t.Fatal(err)
	}
	if !managed.EnforcesMountableSecrets(got) || got.ResourceVersion != "7" || got.Name != "builder" || got.Namespace != "team" {
		t.Errorf("enforcing ServiceAccount read as %+v", got.ObjectMeta)
	}
	err := r.Get(context.Background(), types.NamespacedName{Namespace: "team", Name: "default"}, managed.PartialServiceAccount())
	if !apierrors.IsNotFound(err) {
		t.Errorf("a ServiceAccount that does not enforce: %v, want not found", err)
	}
}

// Every namespace has a default ServiceAccount: those that do not enforce cost nothing, whatever their
// annotations hold.
func TestEnforcingServiceAccountsKeepNothingOfTheOthers(t *testing.T) {
	s := &enforcingServiceAccounts{keys: map[string]string{}}
	const n = 5000
	objs := make([]any, n)
	for i := range objs {
		objs[i] = saMeta(fmt.Sprintf("team-%05d", i), "default", "1", "false")
	}
	before := fixtures.HeapAlloc()
	if err := s.Replace(objs, "1"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := s.Update(saMeta(fmt.Sprintf("team-%05d", i), "default", "2", "")); err != nil {
			t.Fatal(err)
		}
	}
	if retained := fixtures.HeapAlloc() - before; retained > 64<<10 {
		t.Errorf("%d ServiceAccounts that do not enforce retain %d bytes, want next to none", n, retained)
	}
	if len(s.keys) != 0 {
		t.Errorf("%d kept", len(s.keys))
	}
}

// The handler asks the process's reader without Get, and hears what Get would say: the resourceVersion of
// an enforcing ServiceAccount, nothing for the others.
func TestEnforcingResourceVersionAgreesWithGet(t *testing.T) {
	s := &enforcingServiceAccounts{keys: map[string]string{"team/builder": "7"}}
	r := serviceAccountReader{sas: s}
	for _, tc := range []struct {
		name          string
		key           types.NamespacedName
		wantRV        string
		wantEnforcing bool
	}{
		{name: "enforcing ServiceAccount answers with its resourceVersion", key: types.NamespacedName{Namespace: "team", Name: "builder"},
			wantRV: "7", wantEnforcing: true},
		{name: "ServiceAccount that does not enforce is not enforcing", key: types.NamespacedName{Namespace: "team", Name: "default"}},
		{name: "same name in another namespace is not enforcing", key: types.NamespacedName{Namespace: "other", Name: "builder"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type answer struct {
				RV        string
				Enforcing bool
			}
			want := answer{tc.wantRV, tc.wantEnforcing}
			// Through Get, as any client.Reader answers.
			h := &Injector{Cache: struct{ client.Reader }{r}}
			rv, ok := h.enforcingResourceVersion(context.Background(), tc.key)
			if diff := cmp.Diff(want, answer{rv, ok}); diff != "" {
				t.Errorf("through Get (-want +got):\n%s", diff)
			}
			h = &Injector{Cache: r}
			rv, ok = h.enforcingResourceVersion(context.Background(), tc.key)
			if diff := cmp.Diff(want, answer{rv, ok}); diff != "" {
				t.Errorf("through the index (-want +got):\n%s", diff)
			}
		})
	}
}

// A Pod's ServiceAccount almost never enforces mountable secrets: telling so is on every admission's path
// and allocates nothing (through Get it built a metadata object and a NotFound error, 7 allocations).
func TestNonEnforcingServiceAccountAllocatesNothing(t *testing.T) {
	h := &Injector{Cache: serviceAccountReader{sas: &enforcingServiceAccounts{keys: map[string]string{"team/builder": "7"}}}}
	ctx := context.Background()
	if allocs := testing.AllocsPerRun(100, func() {
		if sa := h.enforcingServiceAccount(ctx, nil, "team", "app-runner"); sa != nil {
			t.Fatalf("got %+v, want none", sa)
		}
	}); allocs != 0 {
		t.Errorf("%v allocations per lookup, want 0", allocs)
	}
}
