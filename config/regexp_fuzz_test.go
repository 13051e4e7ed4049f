package config

import (
	"regexp"
	"strings"
	"testing"
)

// FuzzPatternRegexp checks that Pattern.Regexp matches a normalised repository exactly when
// Pattern.Matches does, and when the kubelet's keyring would offer the credential. Besides the fuzzed
// image it tries images built from the pattern itself, its stars replaced by fill, so that the fuzzer
// reaches the names a pattern does match and not only ones that fail at the first label. A refused
// pattern must be a single host label, the one case Regexp does not compile. Without -fuzz it runs only
// the seeds: the table cases, the configuration documentation's patterns, and testdata/fuzz, which
// holds FuzzMatchImage's corpus with each of its registries a seed of its own.
func FuzzPatternRegexp(f *testing.F) {
	for _, tc := range append(append([]matchCase(nil), matchCases...), regexpCases...) {
		f.Add(tc.pattern, tc.image, "x")
	}
	for _, tc := range parsePatternCases {
		f.Add(tc.pattern, "registry.example.com:5000/team-a/app", "a-b")
	}
	// The patterns of docs/configuration.md, "Matching".
	for _, p := range []string{"docker.io", "docker.io/myorg", "index.docker.io", "registry.example.com:5000/team-a",
		"localhost:5000", "*.dkr.ecr.eu-west-1.amazonaws.com"} {
		f.Add(p, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app@sha256:"+strings.Repeat("a", 64), "123456789012")
	}
	f.Fuzz(func(t *testing.T, registry, image, fill string) {
		p, err := ParsePattern(registry)
		if err != nil {
			return
		}
		re, err := p.Regexp()
		if err != nil {
			if len(p.hostLabels) != 1 {
				t.Fatalf("ParsePattern(%q).Regexp() refused a host of %d labels: %v", registry, len(p.hostLabels), err)
			}
			return
		}
		compiled, err := regexp.Compile(re)
		if err != nil {
			t.Fatalf("ParsePattern(%q).Regexp() = %q, which does not compile: %v", registry, re, err)
		}
		built := strings.ReplaceAll(p.String(), "*", fill)
		for _, candidate := range []string{image, built + "/" + image, built + "/app", "[" + fill + "]" + strings.TrimPrefix(built, "*") + "/app"} {
			repository, err := NormalizeImage(candidate)
			if err != nil {
				continue
			}
			want := p.Matches(repository)
			if got := compiled.MatchString(repository); got != want {
				t.Errorf("%q (from %q) matches %q = %v, Matches = %v", re, registry, repository, got, want)
			}
			if kubelet := kubeletOffers(registry, repository); kubelet != want {
				t.Errorf("ParsePattern(%q).Matches(%q) = %v, kubelet offers = %v", registry, repository, want, kubelet)
			}
		}
	})
}
