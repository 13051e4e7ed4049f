package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func mustMatcher(t *testing.T, c *Config) *Matcher {
	t.Helper()
	m, err := NewMatcher(c)
	if err != nil {
		t.Fatalf("NewMatcher returned error: %v", err)
	}
	return m
}

func TestMatcherMatchImage(t *testing.T) {
	secret := SecretRef{Namespace: "ops", Name: "regcred"}
	m := mustMatcher(t, &Config{Registries: []Registry{
		{Registry: "registry.example.com/team-a", Secret: secret},
		{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}},
		{Registry: "registry.example.com", Secret: secret},
		{Registry: "*.dkr.ecr.eu-west-1.amazonaws.com", Secret: SecretRef{Namespace: "ops", Name: "ecr"}},
		{Registry: "https://index.docker.io/v1/", Secret: SecretRef{Namespace: "ops", Name: "hub"}},
	}})
	tests := []struct {
		name  string
		image string
		want  []int // Entry.Index values
	}{
		{name: "entries matching one image are returned in config order", image: "registry.example.com/team-a/app:1.0", want: []int{0, 2}},
		{name: "host entry alone matches another path", image: "registry.example.com/team-b/app", want: []int{2}},
		{name: "short docker hub name matches docker.io and index.docker.io", image: "nginx", want: []int{1, 4}},
		{name: "ecr wildcard matches an account registry", image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@" + digest, want: []int{3}},
		{name: "unconfigured registry matches nothing", image: "quay.io/team-a/app", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := m.MatchImage(tc.image)
			if err != nil {
				t.Fatalf("MatchImage(%q) returned error: %v", tc.image, err)
			}
			var got []int
			for _, e := range entries {
				got = append(got, e.Index)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("MatchImage(%q) indexes mismatch (-want +got):\n%s", tc.image, diff)
			}
		})
	}
}

func TestMatcherMatchImageUnparsable(t *testing.T) {
	m := mustMatcher(t, &Config{Registries: []Registry{
		{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}},
	}})
	for _, image := range []string{"", "Nginx", "nginx:", "nginx@sha256:abc", "https://r.io/app"} {
		t.Run("image "+image+" does not parse", func(t *testing.T) {
			entries, err := m.MatchImage(image)
			if err == nil {
				t.Fatalf("MatchImage(%q) = %d entries, want error", image, len(entries))
			}
			if !strings.Contains(err.Error(), "parse image reference") {
				t.Errorf("MatchImage(%q) error = %q, want it to come from parsing the reference", image, err)
			}
		})
	}
}

func TestMatcherEntries(t *testing.T) {
	c := validConfig()
	m := mustMatcher(t, c)
	entries := m.Entries()
	if len(entries) != 2 {
		t.Fatalf("Entries() returned %d entries, want 2", len(entries))
	}

	type summary struct {
		Index    int
		Registry Registry
		Pattern  string
	}
	var got []summary
	for _, e := range entries {
		got = append(got, summary{Index: e.Index, Registry: e.Registry, Pattern: e.Pattern.String()})
	}
	want := []summary{
		{Index: 0, Registry: c.Registries[0], Pattern: "registry.example.com:5000/team-a"},
		{Index: 1, Registry: c.Registries[1], Pattern: "*.dkr.ecr.eu-west-1.amazonaws.com"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Entries() mismatch (-want +got):\n%s", diff)
	}

	t.Run("entry without selector applies in every namespace", func(t *testing.T) {
		for _, l := range []labels.Set{nil, {"team": "payments"}, {"team": "other"}} {
			if !entries[0].NamespaceSelector.Matches(l) {
				t.Errorf("entry 0 selector %q does not match %v, want it to", entries[0].NamespaceSelector, l)
			}
		}
	})
	t.Run("entry selector selects only its namespaces", func(t *testing.T) {
		sel := entries[1].NamespaceSelector
		if !sel.Matches(labels.Set{"team": "payments", InjectLabel: InjectEnabled}) {
			t.Errorf("entry 1 selector %q does not match team=payments", sel)
		}
		for _, l := range []labels.Set{nil, {"team": "other"}} {
			if sel.Matches(l) {
				t.Errorf("entry 1 selector %q matches %v, want it not to", sel, l)
			}
		}
	})
	t.Run("matched entry exposes its selector", func(t *testing.T) {
		matched, err := m.MatchImage("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app")
		if err != nil {
			t.Fatalf("MatchImage returned error: %v", err)
		}
		if len(matched) != 1 {
			t.Fatalf("MatchImage returned %d entries, want 1", len(matched))
		}
		if matched[0].NamespaceSelector.Matches(labels.Set{"team": "other"}) {
			t.Errorf("matched entry selector %q matches team=other, want it not to", matched[0].NamespaceSelector)
		}
		if got, want := matched[0].Registry.Secret, (SecretRef{Namespace: "pullsecret-injector", Name: "ecr-regcred"}); got != want {
			t.Errorf("matched entry secret = %v, want %v", got, want)
		}
	})
	t.Run("editing the config afterwards does not change the matcher", func(t *testing.T) {
		c.Registries[1].NamespaceSelector.MatchLabels["team"] = "other"
		c.Registries[0].Registry = "quay.io"
		again := m.Entries()
		if got := again[1].Registry.NamespaceSelector.MatchLabels["team"]; got != "payments" {
			t.Errorf("entry 1 selector label = %q after editing the config, want %q", got, "payments")
		}
		if got := again[0].Registry.Registry; got != "registry.example.com:5000/team-a" {
			t.Errorf("entry 0 registry = %q after editing the config, want the original", got)
		}
	})
	t.Run("editing the returned slice does not change the matcher", func(t *testing.T) {
		entries[0].Index = 42
		if got := m.Entries()[0].Index; got != 0 {
			t.Errorf("entry 0 index = %d after editing a returned slice, want 0", got)
		}
	})
}

func TestMatcherNamespaceSelector(t *testing.T) {
	registries := []Registry{{Registry: "docker.io", Secret: SecretRef{Namespace: "ops", Name: "hub"}}}
	tests := []struct {
		name     string
		selector *metav1.LabelSelector
		labels   labels.Set
		want     bool
	}{
		{name: "nil selector selects opted-in namespaces", selector: nil, labels: labels.Set{InjectLabel: InjectEnabled}, want: true},
		{name: "nil selector does not select opted-out namespaces", selector: nil, labels: labels.Set{InjectLabel: InjectDisabled}, want: false},
		{name: "nil selector does not select unlabelled namespaces", selector: nil, labels: nil, want: false},
		{name: "empty selector selects unlabelled namespaces", selector: &metav1.LabelSelector{}, labels: nil, want: true},
		{
			name: "opt-out selector selects unlabelled namespaces",
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{InjectDisabled}},
			}},
			labels: nil,
			want:   true,
		},
		{
			name: "opt-out selector does not select opted-out namespaces",
			selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{InjectDisabled}},
			}},
			labels: labels.Set{InjectLabel: InjectDisabled},
			want:   false,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustMatcher(t, &Config{NamespaceSelector: tc.selector, Registries: registries})
			if got := m.NamespaceSelector().Matches(tc.labels); got != tc.want {
				t.Errorf("NamespaceSelector() %q matches %v = %v, want %v", m.NamespaceSelector(), tc.labels, got, tc.want)
			}
		})
	}
}

func TestNewMatcherRejects(t *testing.T) {
	tests := []struct {
		name    string
		config  *Config
		wantErr []string
	}{
		{name: "nil config is rejected", config: nil, wantErr: []string{"config is nil"}},
		{name: "empty config is rejected", config: &Config{}, wantErr: []string{"registries: Required value"}},
		{
			name: "every problem is listed",
			config: &Config{Registries: []Registry{
				{Registry: "index.docker.io/myorg", Secret: SecretRef{Namespace: "ops", Name: "hub"}},
				{Registry: "quay.io", Secret: SecretRef{Namespace: "", Name: "quay"}},
				{Registry: "ghcr.io", Secret: SecretRef{Namespace: "team-a", Name: "hub"}},
			}},
			wantErr: []string{
				"registries[0].registry",
				"registries[1].secret.namespace",
				"registries[2].secret.name",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMatcher(tc.config)
			if err == nil {
				t.Fatalf("NewMatcher = %v, want error", m)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("NewMatcher error does not contain %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestMatcherMemo(t *testing.T) {
	m := mustMatcher(t, &Config{Registries: []Registry{
		{Registry: "registry.example.com", Secret: SecretRef{Namespace: "ops", Name: "regcred"}},
	}})
	t.Run("a remembered answer equals a computed one", func(t *testing.T) {
		for _, image := range []string{"registry.example.com/app:1", "quay.io/app", "Not A Reference"} {
			first, firstErr := m.MatchImage(image)
			second, secondErr := m.MatchImage(image)
			want, wantErr := m.matchImage(image)
			// The same entries, by identity: they are the matcher's own.
			if !slices.Equal(want, first) || !slices.Equal(want, second) {
				t.Errorf("MatchImage(%q) = %v then %v, want %v", image, first, second, want)
			}
			if (firstErr == nil) != (wantErr == nil) || (secondErr == nil) != (wantErr == nil) {
				t.Errorf("MatchImage(%q) errors %v, %v; want %v", image, firstErr, secondErr, wantErr)
			}
		}
	})
	t.Run("tenant image strings never grow the memo past its bound", func(t *testing.T) {
		for i := range 3 * maxMemoImages {
			if _, err := m.MatchImage(fmt.Sprintf("registry.example.com/app-%d", i)); err != nil {
				t.Fatal(err)
			}
			if n := len(m.memo.answers); n > maxMemoImages {
				t.Fatalf("memo holds %d answers after %d images, bound %d", n, i+1, maxMemoImages)
			}
		}
	})
	t.Run("image strings longer than any reference are answered but not remembered", func(t *testing.T) {
		clear(m.memo.answers)
		image := "registry.example.com/" + strings.Repeat("a", maxMemoImageLen)
		entries, err := m.MatchImage(image)
		if err == nil {
			t.Fatalf("MatchImage(long) = %d entries, want an error: no reference is that long", len(entries))
		}
		if len(m.memo.answers) != 0 {
			t.Errorf("memo holds %d answers, want none", len(m.memo.answers))
		}
	})
}
