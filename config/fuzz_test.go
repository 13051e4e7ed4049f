package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fuzzRegistries are compiled into every FuzzMatchImage matcher, so that an image is checked against
// hosts, ports, paths, globs and the Docker Hub fallback even when the fuzzed registries are all invalid.
var fuzzRegistries = []string{
	"docker.io",
	"index.docker.io",
	"docker.io/myorg",
	"registry.example.com:5000/team-a",
	"*.dkr.ecr.eu-west-1.amazonaws.com",
	"localhost",
	"[::1]:5000",
	"r.io/team-a/",
}

// FuzzMatchImage checks Matcher.MatchImage on arbitrary images against the kubelet's keyring: the image is
// refused exactly when NormalizeImage refuses it, and otherwise the entries returned are, in config order,
// exactly those whose registry alone the kubelet would offer for the normalised repository. registries
// holds extra registries, one a line; those ParsePattern refuses are left out, and the rest must compile.
// Without -fuzz it runs only the seeds: the table cases here, and hostile images in
// testdata/fuzz/FuzzMatchImage.
func FuzzMatchImage(f *testing.F) {
	for _, tc := range matchCases {
		f.Add(tc.image, tc.pattern)
	}
	f.Fuzz(func(t *testing.T, image, registries string) {
		all := append([]string(nil), fuzzRegistries...)
		for _, r := range strings.Split(registries, "\n") {
			if _, err := ParsePattern(r); err == nil {
				all = append(all, r)
			}
		}
		c := &Config{}
		for i, r := range all {
			// One Secret per entry: Validate refuses two sources under one name, and the name carries no meaning here.
			c.Registries = append(c.Registries, Registry{Registry: r, Secret: SecretRef{Namespace: "ops", Name: fmt.Sprintf("s%d", i)}})
		}
		m, err := NewMatcher(c)
		if err != nil {
			t.Fatalf("NewMatcher refused registries ParsePattern accepts %q: %v", all, err)
		}

		entries, err := m.MatchImage(image)
		repository, normErr := NormalizeImage(image)
		if (err != nil) != (normErr != nil) {
			t.Fatalf("MatchImage(%q) error = %v, NormalizeImage error = %v: want both or neither", image, err, normErr)
		}
		if err != nil {
			if entries != nil {
				t.Errorf("MatchImage(%q) = %d entries with error %v, want none", image, len(entries), err)
			}
			return
		}
		var got, want []int
		for _, e := range entries {
			got = append(got, e.Index)
		}
		for i, r := range all {
			if kubeletOffers(r, repository) {
				want = append(want, i)
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("MatchImage(%q) (repository %q) against %q: indexes mismatch with the kubelet (-want +got):\n%s", image, repository, all, diff)
		}
	})
}
