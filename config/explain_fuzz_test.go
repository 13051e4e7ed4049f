package config

import (
	"strings"
	"testing"
)

// FuzzCovers checks Covers against Matches on concrete images: a key that covers all of an entry is
// offered for every image the entry matches, and one that covers none is offered for none of them. The
// kubelet's fallback also counts "localhost/..." as Docker Hub; Covers deliberately ignores that, so such
// images are left out for index.docker.io entries.
func FuzzCovers(f *testing.F) {
	for _, s := range [][3]string{
		{"quay.io", "quay.io/team", "quay.io/team/app"},
		{"quay.io/team/app", "quay.io/team", "quay.io/teamx/app"},
		{"*.example.com", "a*.example.com", "ab.example.com/x"},
		{"a.example.com", "*.example.com", "b.example.com/x"},
		{"index.docker.io", "docker.io/myorg", "myorg/app"},
		{"docker.io", "index.docker.io", "nginx"},
		{"docker.io/library", "index.docker.io", "myorg/app"},
		{"index.docker.io", "*.io", "quay.io/x"},
		{"registry.example.com:5000", "registry.example.com:5000/team-a", "registry.example.com:5000/team-ab/x"},
		{"[::1]:5000", "[::1]:5000/x", "[::1]:5000/x/y"},
		{"a?.example.com", "a[bc].example.com", "ab.example.com/x"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, keyStr, entryStr, image string) {
		k, err := ParsePattern(keyStr)
		if err != nil {
			return
		}
		e, err := ParsePattern(entryStr)
		if err != nil {
			return
		}
		repository, err := NormalizeImage(image)
		if err != nil || !e.Matches(repository) {
			return
		}
		if e.defaultRegistry && !strings.HasPrefix(repository, "docker.io/") {
			return
		}
		c := k.Covers(e)
		offered := k.Matches(repository)
		if c == CoversAll && !offered {
			t.Fatalf("key %q covers all of entry %q but is not offered for %q", keyStr, entryStr, repository)
		}
		if c == CoversNone && offered {
			t.Fatalf("key %q covers none of entry %q but is offered for %q", keyStr, entryStr, repository)
		}
	})
}

// FuzzExplain holds Explain's answer, a second walk through the kubelet's rules kept for its wording, to
// Matches, which the webhook uses.
func FuzzExplain(f *testing.F) {
	for _, s := range [][2]string{
		{"registry.example.com:5000/team-a", "registry.example.com:5000/team-ab/api"},
		{"*.example.com", "a.b.example.com/x"},
		{"index.docker.io", "localhost/x"},
		{"a[bc].example.com", "ab.example.com/x"},
		{"[::1]:5000/x", "[::1]:5000/x/y"},
		{"quay.io/team", "quay.io/team"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, patternStr, image string) {
		p, err := ParsePattern(patternStr)
		if err != nil {
			return
		}
		repository, err := NormalizeImage(image)
		if err != nil {
			return
		}
		if got, why := p.Explain(repository); got != p.Matches(repository) {
			t.Fatalf("pattern %q, repository %q: Explain says %v (%s), Matches says %v", patternStr, repository, got, why, !got)
		}
	})
}
