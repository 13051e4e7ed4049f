package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCovers(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		entry string
		want  Coverage
	}{
		{"same host", "quay.io", "quay.io", CoversAll},
		{"host key covers a path entry", "quay.io", "quay.io/team", CoversAll},
		{"longer key path covers part", "quay.io/team/app", "quay.io/team", CoversSome},
		{"key path is a plain string prefix", "quay.io/team", "quay.io/team-a", CoversAll},
		{"disjoint paths", "quay.io/a", "quay.io/b", CoversNone},
		{"ports must be equal", "quay.io", "quay.io:443", CoversNone},
		{"wildcard key covers a literal host", "*.example.com", "a.example.com", CoversAll},
		{"wildcard key covers the same wildcard", "*.example.com", "*.example.com", CoversAll},
		{"star covers any glob label", "*.example.com", "a*.example.com", CoversAll},
		{"literal key covers part of a wildcard entry", "a.example.com", "*.example.com", CoversSome},
		{"literal key outside a wildcard entry", "a.example.org", "*.example.com", CoversNone},
		{"different globs are never all", "a*.example.com", "*b.example.com", CoversSome},
		{"label counts differ", "*.example.com", "a.b.example.com", CoversNone},
		{"index.docker.io covers docker.io", "index.docker.io", "docker.io/myorg", CoversAll},
		{"index.docker.io with scheme covers docker.io", "https://index.docker.io/v1/", "docker.io", CoversAll},
		{"index.docker.io covers itself", "index.docker.io", "index.docker.io", CoversAll},
		{"docker.io covers index.docker.io", "docker.io", "index.docker.io", CoversAll},
		{"docker.io path covers part of index.docker.io", "docker.io/library", "index.docker.io", CoversSome},
		{"index.docker.io covers part of a wildcard over docker.io", "index.docker.io", "*.io", CoversSome},
		{"index.docker.io does not cover quay.io", "index.docker.io", "quay.io", CoversNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePattern(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			e, err := ParsePattern(tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Covers(e); got != tt.want {
				t.Errorf("%q.Covers(%q) = %d, want %d", tt.key, tt.entry, got, tt.want)
			}
		})
	}
}

// TestCoversAgreesWithMatches pins Covers to Matches: a key that covers all of an entry matches every image
// the entry matches, and one that covers none matches none of them.
func TestCoversAgreesWithMatches(t *testing.T) {
	keys := []string{"quay.io", "quay.io/team", "quay.io/team/app", "*.example.com", "a.example.com", "a.example.com:5000",
		"index.docker.io", "docker.io", "docker.io/library", "*.io"}
	entries := []string{"quay.io", "quay.io/team", "*.example.com", "a.example.com/x", "docker.io/library", "index.docker.io", "*.io"}
	images := []string{"quay.io/team/app", "quay.io/teamx/app", "quay.io/other/app", "a.example.com/x/y", "b.example.com/x",
		"a.example.com:5000/x", "docker.io/library/nginx", "docker.io/myorg/app", "ghcr.io/x/y"}
	for _, ks := range keys {
		k, _ := ParsePattern(ks)
		for _, es := range entries {
			e, _ := ParsePattern(es)
			c := k.Covers(e)
			for _, img := range images {
				if !e.Matches(img) {
					continue
				}
				offered := k.Matches(img)
				if c == CoversAll && !offered {
					t.Errorf("%q covers all of %q but is not offered for %q", ks, es, img)
				}
				if c == CoversNone && offered {
					t.Errorf("%q covers none of %q but is offered for %q", ks, es, img)
				}
			}
		}
	}
}

func TestExplain(t *testing.T) {
	tests := []struct {
		pattern, image string
		match          bool
		why            string
	}{
		{"registry.example.com/team", "registry.example.com/team/app", true, "host registry.example.com and path prefix team"},
		{"registry.example.com:5000/team-a", "registry.example.com:5000/team-ab/api", true,
			"host registry.example.com, port 5000 and path prefix team-a (a plain string prefix, as in the kubelet: team-ab/api has it)"},
		{"*.example.com", "a.example.com/x", true, `host a.example.com ("*" matches the one DNS label "a"), any path`},
		{"quay.io", "quay.io/x", true, "host quay.io, any path"},
		{"index.docker.io", "docker.io/library/nginx", true, "every Docker Hub image (the kubelet's index.docker.io fallback)"},
		{"index.docker.io", "quay.io/x", false, "it stands for Docker Hub images only (the kubelet's index.docker.io fallback)"},
		{"*.example.com", "a.b.example.com/x", false, "host a.b.example.com has 4 DNS labels, the pattern 3 (a '*' never crosses a dot)"},
		{"registry.example.com:5000", "registry.example.com/x", false, "the pattern has port 5000, the image none (ports must be equal)"},
		{"registry.example.com", "registry.example.com:5000/x", false, "the image has port 5000, the pattern none (ports must be equal)"},
		{"quay.io", "ghcr.io/x", false, "host ghcr.io is not quay.io"},
		{"quay.io", "eu.quay.io/x", false, "host eu.quay.io has 3 DNS labels, the pattern 2"},
		{"a*.example.com", "b.example.com/x", false, `host label "b" does not match "a*"`},
		{"quay.io/team-a", "quay.io/team-b/x", false, "path team-b/x does not start with team-a"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.image, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			match, why := p.Explain(tt.image)
			if match != tt.match || why != tt.why {
				t.Errorf("Explain = %v, %q; want %v, %q", match, why, tt.match, tt.why)
			}
			if match != p.Matches(tt.image) {
				t.Errorf("Explain says %v, Matches says %v", match, !match)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	parse := func(ss ...string) []Pattern {
		var out []Pattern
		for _, s := range ss {
			p, err := ParsePattern(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	tests := []struct {
		name       string
		keys       []string
		repository string
		want       []int
	}{
		{"every matching key is offered", []string{"quay.io", "ghcr.io", "quay.io/team"}, "quay.io/team/app", []int{0, 2}},
		{"no key matches", []string{"quay.io"}, "ghcr.io/x", nil},
		{"index.docker.io is the fallback for Docker Hub", []string{"https://index.docker.io/v1/", "quay.io"}, "docker.io/library/nginx", []int{0}},
		{"a matching key shadows the fallback", []string{"https://index.docker.io/v1/", "docker.io/myorg"}, "docker.io/myorg/app", []int{1}},
		{"the fallback is for Docker Hub only", []string{"index.docker.io"}, "quay.io/x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Lookup(parse(tt.keys...), tt.repository)); diff != "" {
				t.Errorf("Lookup (-want +got):\n%s", diff)
			}
		})
	}
}
