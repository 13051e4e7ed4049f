package config

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// regexpCases add, to matchCases, the forms of host the regular expression must tell apart: bracketed
// hosts with and without a port, addresses url.Parse refuses, first components reference.Parse keeps in
// the path, uppercase hosts.
var regexpCases = []matchCase{
	{"lone star matches a bracketed address without a port", "*", "[::1]/app", true},
	{"lone star does not match a bracketed address with a port", "*", "[::1]:5000/app", false},
	{"lone star does not match a bracketed non-address", "*", "[A]/app", false},
	{"lone star matches an uppercase single-label host", "*", "LOCAL/app", true},
	{"star with port matches a bracketed address", "*:5000", "[fe80::1]:5000/app", true},
	{"star with port does not match a bracketed non-address", "*:5000", "[fe80:::1]:5000/app", false},
	{"star with port does not match another port", "*:5000", "[fe80::1]:5001/app", false},
	{"star with port matches a host with that port", "*:5000", "localhost:5000/app", true},
	{"ipv6 pattern matches its own spelling only", "[::1]:5000", "[0::1]:5000/app", false},
	{"ipv6 pattern is case-sensitive", "[fe80::a]:5000", "[FE80::A]:5000/app", false},
	{"ipv6 pattern with a path", "[::1]:5000/team-a", "[::1]:5000/team-a/app", true},
	{"underscore first component keeps its labels", "*.io", "my_reg.io/app", true},
	{"underscore first component is not docker hub", "index.docker.io", "my_reg.io/app", false},
	{"underscore first component matches itself", "my_reg.io", "my_reg.io/app", true},
	{"index.docker.io matches an uppercase single-label host", "index.docker.io", "LOCAL/app", true},
	{"index.docker.io matches a bracketed non-address", "index.docker.io", "[A]/app", true},
	{"index.docker.io does not match a bracketed address", "index.docker.io", "[::1]/app", false},
	{"index.docker.io does not match a dotted host", "index.docker.io", "r.io/app", false},
	{"star label matches digits and hyphens", "*.example.com", "a-1.example.com/app", true},
	{"star label does not match an empty label", "*.example.com", "example.com/app", false},
	{"star and literal in a label", "reg*-eu.example.com", "reg-1-eu.example.com/app", true},
	{"two stars in a label", "*-*.example.com", "a-b-c.example.com/app", true},
	{"two stars in a label need the hyphen", "*-*.example.com", "abc.example.com/app", false},
	{"port is compared as a string", "r.io:05000", "r.io:5000/app", false},
	{"empty port is no port", "r.io:", "r.io/app", true},
	{"path with dots and underscores", "r.io/a.b_c", "r.io/a.b_c/app", true},
	{"path dot is literal", "r.io/a.b", "r.io/axb/app", false},
	{"host dot is literal", "r.io", "rxio/app", false},
}

// TestRegexpAgreesWithKubelet holds Pattern.Regexp to the kubelet's keyring (the transcription in
// kubelet_reference_test.go) and to Pattern.Matches for every table case.
func TestRegexpAgreesWithKubelet(t *testing.T) {
	for _, tc := range append(append([]matchCase(nil), matchCases...), regexpCases...) {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.pattern)
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
			}
			repository, err := NormalizeImage(tc.image)
			if err != nil {
				t.Fatalf("NormalizeImage(%q): %v", tc.image, err)
			}
			re, err := p.Regexp()
			if err != nil {
				t.Fatalf("ParsePattern(%q).Regexp(): %v", tc.pattern, err)
			}
			if got := regexp.MustCompile(re).MatchString(repository); got != tc.want {
				t.Errorf("%q (from %q) matches %q = %v, want %v", re, tc.pattern, repository, got, tc.want)
			}
			if got := kubeletOffers(tc.pattern, repository); got != tc.want {
				t.Errorf("kubelet keyring with only %q offers it for %q = %v, want %v", tc.pattern, repository, got, tc.want)
			}
			if got := p.Matches(repository); got != tc.want {
				t.Errorf("ParsePattern(%q).Matches(%q) = %v, want %v", tc.pattern, repository, got, tc.want)
			}
		})
	}
}

func TestRegexp(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		want    string
		wantErr string
	}{
		{name: "host", pattern: "quay.io", want: `^quay\.io(?:/|$)`},
		{name: "host port and path", pattern: "registry.example.com:5000/team-a", want: `^registry\.example\.com:5000/team-a`},
		{name: "star label", pattern: "*.dkr.ecr.eu-west-1.amazonaws.com", want: `^[\-0-9A-Z\_a-z]*\.dkr\.ecr\.eu-west-1\.amazonaws\.com(?:/|$)`},
		{name: "docker hub fallback", pattern: "https://index.docker.io/v1/",
			want: `^(?:index\.docker\.io(?:/|$)|` + defaultRegistryRegexp + `)`},
		{name: "ipv6 with port", pattern: "[::1]:5000", want: `^\[::1\]:5000(?:/|$)`},
		{name: "lone star", pattern: "*", want: `^(?:[\-0-9A-Z\_a-z]*|\[` + ipv6Regexp + `\])(?:/|$)`},
		{name: "label that cannot match", pattern: "r~.io", want: neverRegexp},

		{name: "hex glob with port is refused", pattern: "cafe*:5000", wantErr: "cannot be compiled exactly"},
		{name: "star and hex without port is refused", pattern: "*1*", wantErr: "cannot be compiled exactly"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.pattern)
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
			}
			got, err := p.Regexp()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParsePattern(%q).Regexp() = %q, %v; want error containing %q", tc.pattern, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePattern(%q).Regexp(): %v", tc.pattern, err)
			}
			if got != tc.want {
				t.Errorf("ParsePattern(%q).Regexp() = %q, want %q", tc.pattern, got, tc.want)
			}
			if _, err := regexp.Compile(got); err != nil {
				t.Errorf("%q does not compile: %v", got, err)
			}
		})
	}
}

func TestZeroPatternRegexpMatchesNothing(t *testing.T) {
	re, err := Pattern{}.Regexp()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "docker.io/library/nginx", "\n", "[::1]/x"} {
		if regexp.MustCompile(re).MatchString(s) {
			t.Errorf("%q matches %q", re, s)
		}
	}
}

// TestIPv6Regexp holds ipv6Regexp to net/netip on every string of up to 6 characters over a small
// alphabet, and on the long forms that only valid eight-group and "::" addresses reach.
func TestIPv6Regexp(t *testing.T) {
	re := regexp.MustCompile("^" + ipv6Regexp + "$")
	check := func(s string) {
		a, err := netip.ParseAddr(s)
		want := err == nil && a.Is6()
		if got := re.MatchString(s); got != want {
			t.Errorf("ipv6Regexp matches %q = %v, netip.ParseAddr valid = %v (%v)", s, got, want, err)
		}
	}
	var all func(prefix string, n int)
	all = func(prefix string, n int) {
		check(prefix)
		if n == 0 {
			return
		}
		for _, c := range "0aF:" {
			all(prefix+string(c), n-1)
		}
	}
	all("", 7)
	for _, s := range []string{
		"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7",
		"::1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::", "1::2:3:4:5:6:7", "1::2:3:4:5:6:7:8", "ffff::ffff",
		"fffff::1", "12345::", "::", ":::", "1:::2", "1::2::3", "1:2:3:4::5:6:7", "1:2:3:4::5:6:7:8",
		"0000:0000:0000:0000:0000:0000:0000:0000",
	} {
		check(s)
	}
}

// TestMatcherRegexps checks that every refused entry is named by its index, and that the others compile.
func TestMatcherRegexps(t *testing.T) {
	m, err := NewMatcher(&Config{Registries: []Registry{
		{Registry: "quay.io", Secret: SecretRef{Namespace: "ops", Name: "a"}},
		{Registry: "cafe*:5000", Secret: SecretRef{Namespace: "ops", Name: "b"}},
		{Registry: "*.example.com", Secret: SecretRef{Namespace: "ops", Name: "c"}},
		{Registry: "*1*", Secret: SecretRef{Namespace: "ops", Name: "d"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Regexps()
	if err == nil {
		t.Fatal("Regexps() returned no error for two refused entries")
	}
	for _, want := range []string{`registries[1].registry: Invalid value: "cafe*:5000"`, `registries[3].registry: Invalid value: "*1*"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Regexps() error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "registries[0]") || strings.Contains(err.Error(), "registries[2]") {
		t.Errorf("Regexps() error %q names an entry that compiles", err)
	}

	m, err = NewMatcher(&Config{Registries: []Registry{
		{Registry: "quay.io", Secret: SecretRef{Namespace: "ops", Name: "a"}},
		{Registry: "*.example.com", Secret: SecretRef{Namespace: "ops", Name: "c"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Regexps()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`^quay\.io(?:/|$)`, `^[\-0-9A-Z\_a-z]*\.example\.com(?:/|$)`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Regexps() (-want +got):\n%s", diff)
	}
}
