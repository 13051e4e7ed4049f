package config

import (
	"strings"
	"testing"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

type matchCase struct {
	name    string
	pattern string
	image   string
	want    bool
}

// matchCases are shared with FuzzMatch as seeds.
var matchCases = []matchCase{
	// Docker Hub.
	{"short docker hub name matches docker.io", "docker.io", "nginx", true},
	{"library name matches docker.io", "docker.io", "library/nginx", true},
	{"user repository matches docker.io", "docker.io", "myorg/app", true},
	{"qualified docker hub name matches docker.io", "docker.io", "docker.io/library/nginx:1.27", true},
	{"legacy index.docker.io image matches docker.io", "docker.io", "index.docker.io/myorg/app", true},
	{"docker.io does not match another registry", "docker.io", "quay.io/myorg/app", false},
	{"docker.io does not match a host ending in docker.io", "docker.io", "notdocker.io/myorg/app", false},
	{"docker.io does not match a subdomain of docker.io", "docker.io", "mirror.docker.io/myorg/app", false},
	{"docker.io/myorg matches its repositories", "docker.io/myorg", "myorg/app", true},
	{"docker.io/myorg does not match official images", "docker.io/myorg", "nginx", false},
	{"docker.io/myorg does not match another user", "docker.io/myorg", "otherorg/app", false},
	{"docker.io/myorg matches a user sharing its prefix like the kubelet", "docker.io/myorg", "myorg2/app", true},
	{"docker.io/library matches official images", "docker.io/library", "nginx:1.27", true},
	{"index.docker.io matches short names through the default registry fallback", "index.docker.io", "nginx", true},
	{"index.docker.io matches user repositories", "index.docker.io", "myorg/app", true},
	{"index.docker.io matches legacy qualified names", "index.docker.io", "index.docker.io/myorg/app", true},
	{"index.docker.io does not match another registry", "index.docker.io", "quay.io/myorg/app", false},
	{"index.docker.io matches localhost images like the kubelet fallback", "index.docker.io", "localhost/app", true},
	{"index.docker.io does not match localhost with a port", "index.docker.io", "localhost:5000/app", false},
	{"https://index.docker.io/v1/ matches short names", "https://index.docker.io/v1/", "nginx", true},
	{"https://index.docker.io/v1/ matches user repositories", "https://index.docker.io/v1/", "myorg/app", true},
	{"https://index.docker.io/v1/ does not match another registry", "https://index.docker.io/v1/", "ghcr.io/myorg/app", false},
	{"wildcard top-level domain matches docker hub", "*.io", "nginx", true},

	// localhost.
	{"localhost:5000 matches its images", "localhost:5000", "localhost:5000/x", true},
	{"localhost does not match localhost with a port", "localhost", "localhost:5000/x", false},
	{"localhost matches localhost without a port", "localhost", "localhost/x", true},
	{"localhost:5000 does not match localhost without a port", "localhost:5000", "localhost/x", false},
	{"localhost:5000 does not match another port", "localhost:5000", "localhost:5001/x", false},

	// Ports.
	{"host without port does not match an image with a port", "r.io", "r.io:5000/app", false},
	{"host without port does not match an explicit default port", "r.io", "r.io:443/app", false},
	{"explicit default port does not match an image without a port", "r.io:443", "r.io/app", false},
	{"same port matches", "r.io:5000", "r.io:5000/app", true},
	{"different port does not match", "r.io:5000", "r.io:5001/app", false},
	{"ipv6 host with port matches", "[::1]:5000", "[::1]:5000/app", true},
	{"ipv6 host with port does not match another port", "[::1]:5000", "[::1]:5001/app", false},

	// Tags and digests.
	{"tag is dropped before matching", "r.io/team-a/app", "r.io/team-a/app:1.0", true},
	{"digest is dropped before matching", "r.io/team-a/app", "r.io/team-a/app@" + digest, true},
	{"tag and digest are dropped before matching", "r.io/team-a/app", "r.io/team-a/app:1.0@" + digest, true},
	{"tag does not make another repository match", "r.io/team-a/app", "r.io/team-a/other:app", false},

	// Host wildcards.
	{"ecr wildcard matches an account registry", "*.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", true},
	{"ecr wildcard matches with a tag", "*.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:v1", true},
	{"ecr wildcard does not match an extra label", "*.dkr.ecr.eu-west-1.amazonaws.com", "a.b.dkr.ecr.eu-west-1.amazonaws.com/app", false},
	{"ecr wildcard does not match without the wildcard label", "*.dkr.ecr.eu-west-1.amazonaws.com", "dkr.ecr.eu-west-1.amazonaws.com/app", false},
	{"ecr wildcard does not match another region", "*.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-2.amazonaws.com/app", false},
	{"ecr wildcard with port does not match without it", "*.dkr.ecr.eu-west-1.amazonaws.com:443", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", false},
	{"star does not cross dots", "*.example.com", "a.b.example.com/app", false},
	{"star matches within one label", "reg-*.example.com", "reg-eu.example.com/app", true},
	{"star within a label does not match another prefix", "reg-*.example.com", "mirror-eu.example.com/app", false},
	{"lone star matches a single-label host", "*", "localhost/app", true},
	{"lone star does not match a dotted host", "*", "r.io/app", false},
	{"star in the middle of the host matches one label", "registry.*.example.com", "registry.eu.example.com/app", true},
	{"star in the middle of the host does not match two labels", "registry.*.example.com", "registry.eu.west.example.com/app", false},

	// Case.
	{"host matching is case-sensitive", "registry.example.com", "Registry.Example.com/app", false},
	{"uppercase host pattern matches the same uppercase host", "Registry.Example.com", "Registry.Example.com/app", true},
	{"uppercase host pattern does not match a lowercase host", "Registry.Example.com", "registry.example.com/app", false},

	// Schemes and API version paths.
	{"https scheme is removed", "https://r.io", "r.io/app", true},
	{"http scheme is removed", "http://r.io", "r.io/app", true},
	{"https scheme with path is removed", "https://r.io/team-a", "r.io/team-a/app", true},
	{"v2 suffix is cut", "https://r.io/v2/", "r.io/app", true},
	{"v1 suffix is cut", "r.io/v1/", "r.io/app", true},
	{"v2 before a path is cut", "https://r.io/v2/team-a", "r.io/team-a/app", true},
	{"v2 before a path does not match the literal v2 path", "https://r.io/v2/team-a", "r.io/v2/team-a/app", false},
	{"v2 without trailing slash is a path", "r.io/v2", "r.io/v2/app", true},
	{"v2 without trailing slash does not match other paths", "r.io/v2", "r.io/app", false},
	{"trailing slash alone is the host", "r.io/", "r.io/app", true},

	// Paths.
	{"path matches repositories below it", "registry.example.com/team-a", "registry.example.com/team-a/app", true},
	{"path matches the repository itself", "registry.example.com/team-a", "registry.example.com/team-a", true},
	{"path matches a longer component sharing its prefix like the kubelet", "registry.example.com/team-a", "registry.example.com/team-ab/app", true},
	{"path with trailing slash matches repositories below it", "registry.example.com/team-a/", "registry.example.com/team-a/app", true},
	{"path with trailing slash does not match a longer component", "registry.example.com/team-a/", "registry.example.com/team-ab/app", false},
	{"path with trailing slash does not match the repository itself", "registry.example.com/team-a/", "registry.example.com/team-a", false},
	{"path does not match a sibling", "registry.example.com/team-a", "registry.example.com/team-b/app", false},
	{"path does not match its parent", "registry.example.com/team-a", "registry.example.com/team/app", false},
	{"path does not match another host", "registry.example.com/team-a", "quay.io/team-a/app", false},
	{"path with port matches", "registry.example.com:5000/team-a", "registry.example.com:5000/team-a/app:1.0", true},
	{"path with port does not match without the port", "registry.example.com:5000/team-a", "registry.example.com/team-a/app", false},
	{"host alone matches any depth", "r.io", "r.io/a/b/c/d", true},
	{"wildcard host with path matches", "*.example.com/team-a", "eu.example.com/team-a/app", true},
	{"wildcard host with path does not match another path", "*.example.com/team-a", "eu.example.com/team-b/app", false},
}

func TestPatternMatches(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.pattern)
			if err != nil {
				t.Fatalf("ParsePattern(%q) returned error: %v", tc.pattern, err)
			}
			repository, err := NormalizeImage(tc.image)
			if err != nil {
				t.Fatalf("NormalizeImage(%q) returned error: %v", tc.image, err)
			}
			if got := p.Matches(repository); got != tc.want {
				t.Errorf("ParsePattern(%q).Matches(%q) = %v, want %v", tc.pattern, repository, got, tc.want)
			}
			// Pins the expectation itself to the kubelet's code, so a wrong
			// belief about the kubelet fails here rather than in production.
			if got := kubeletOffers(tc.pattern, repository); got != tc.want {
				t.Errorf("kubelet keyring with only %q offers it for %q = %v, want %v", tc.pattern, repository, got, tc.want)
			}
		})
	}
}

func TestPatternZeroValueMatchesNothing(t *testing.T) {
	var p Pattern
	for _, repository := range []string{"docker.io/library/nginx", "r.io/app", "localhost/app", ""} {
		if p.Matches(repository) {
			t.Errorf("Pattern{}.Matches(%q) = true, want false", repository)
		}
	}
}

type parsePatternCase struct {
	name    string
	pattern string
	want    string // String() on success
	wantErr string // substring of the error; empty means success
}

// parsePatternCases are shared with FuzzMatch as seeds.
var parsePatternCases = []parsePatternCase{
	{name: "host and port and path are kept", pattern: "registry.example.com:5000/team-a", want: "registry.example.com:5000/team-a"},
	{name: "https scheme is removed", pattern: "https://registry.example.com:5000/team-a", want: "registry.example.com:5000/team-a"},
	{name: "http scheme is removed", pattern: "http://r.io", want: "r.io"},
	{name: "docker hub v1 url becomes index.docker.io", pattern: "https://index.docker.io/v1/", want: "index.docker.io"},
	{name: "v2 suffix is cut", pattern: "http://r.io/v2/", want: "r.io"},
	{name: "v2 before a path is cut", pattern: "r.io/v2/team-a", want: "r.io/team-a"},
	{name: "v1 without trailing slash is kept", pattern: "r.io/v1", want: "r.io/v1"},
	{name: "lone slash is dropped", pattern: "r.io/", want: "r.io"},
	{name: "trailing slash after a path is kept", pattern: "r.io/team-a/", want: "r.io/team-a/"},
	{name: "host wildcard is kept", pattern: "*.dkr.ecr.eu-west-1.amazonaws.com", want: "*.dkr.ecr.eu-west-1.amazonaws.com"},
	{name: "ipv6 host with port is kept", pattern: "[::1]:5000", want: "[::1]:5000"},
	{name: "uppercase host is kept", pattern: "Registry.Example.com", want: "Registry.Example.com"},
	{name: "docker.io with path is kept", pattern: "docker.io/myorg", want: "docker.io/myorg"},

	{name: "empty registry is rejected", pattern: "", wantErr: "must not be empty"},
	{name: "surrounding whitespace is rejected", pattern: " r.io", wantErr: "whitespace"},
	{name: "other scheme is rejected", pattern: "ftp://r.io", wantErr: "scheme"},
	{name: "uppercase scheme is rejected", pattern: "HTTPS://r.io", wantErr: "scheme"},
	{name: "scheme without host is rejected", pattern: "https://", wantErr: "must have a host"},
	{name: "path without host is rejected", pattern: "/team-a", wantErr: "must have a host"},
	{name: "bracket in a host label is rejected", pattern: "r[.io", wantErr: "parse registry as a URL"},
	{name: "unclosed bracket is rejected", pattern: "[", wantErr: "parse registry as a URL"},
	{name: "non-numeric port is rejected", pattern: "r.io:http", wantErr: "parse registry as a URL"},
	{name: "wildcard port is rejected", pattern: "r.io:*", wantErr: "parse registry as a URL"},
	{name: "space in host is rejected", pattern: "r io", wantErr: "parse registry as a URL"},
	{name: "query is rejected", pattern: "r.io?x=1", wantErr: "query"},
	{name: "question mark glob is rejected as a query", pattern: "r?.io", wantErr: "query"},
	{name: "empty query is rejected", pattern: "r.io/team-a?", wantErr: "query"},
	{name: "fragment is rejected", pattern: "r.io/team-a#x", wantErr: "fragment"},
	{name: "empty fragment is rejected", pattern: "r.io#", wantErr: "fragment"},
	{name: "user information is rejected", pattern: "https://user:pass@r.io", wantErr: "user information"},
	{name: "percent-encoding is rejected", pattern: "r.io/team%2Fa", wantErr: "percent-encoding"},
	{name: "empty host label is rejected", pattern: "r..io", wantErr: "empty dot-separated labels"},
	{name: "trailing dot in host is rejected", pattern: "r.io.", wantErr: "empty dot-separated labels"},
	{name: "port without host is rejected", pattern: ":5000", wantErr: "empty dot-separated labels"},
	{name: "ipv6 host without port is rejected", pattern: "[::1]", wantErr: "IPv6"},
	{name: "uppercase path is rejected", pattern: "r.io/Team-A", wantErr: "never matches"},
	{name: "wildcard in path is rejected", pattern: "r.io/team-*", wantErr: "wildcards are only allowed in the host"},
	{name: "tag in path is rejected", pattern: "r.io/team-a/app:1.0", wantErr: "never matches"},
	{name: "empty path component is rejected", pattern: "r.io//team-a", wantErr: "no empty components"},
	{name: "doubled scheme is rejected", pattern: "https://https://r.io", wantErr: "no empty components"},
	{name: "index.docker.io with path suggests docker.io", pattern: "index.docker.io/myorg", wantErr: `use "docker.io/myorg"`},
	{name: "docker hub v1 url with path suggests docker.io", pattern: "https://index.docker.io/v1/myorg/app", wantErr: `use "docker.io/myorg/app"`},
}

func TestParsePattern(t *testing.T) {
	for _, tc := range parsePatternCases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePattern(tc.pattern)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("ParsePattern(%q) = %q, want error containing %q", tc.pattern, p, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("ParsePattern(%q) error = %q, want it to contain %q", tc.pattern, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePattern(%q) returned error: %v", tc.pattern, err)
			}
			if got := p.String(); got != tc.want {
				t.Errorf("ParsePattern(%q).String() = %q, want %q", tc.pattern, got, tc.want)
			}
			if key, _ := kubeletKey(tc.pattern); key != tc.want {
				t.Errorf("kubelet stores %q under key %q, want %q", tc.pattern, key, tc.want)
			}
		})
	}
}

func TestNormalizeImage(t *testing.T) {
	tests := []struct {
		name    string
		image   string
		want    string
		wantErr bool
	}{
		{name: "short name gets docker hub and library", image: "nginx", want: "docker.io/library/nginx"},
		{name: "tag is dropped", image: "nginx:1.27", want: "docker.io/library/nginx"},
		{name: "digest is dropped", image: "nginx@" + digest, want: "docker.io/library/nginx"},
		{name: "tag and digest are dropped", image: "nginx:1.27@" + digest, want: "docker.io/library/nginx"},
		{name: "user repository gets docker hub", image: "myorg/app", want: "docker.io/myorg/app"},
		{name: "legacy docker hub host becomes docker.io", image: "index.docker.io/myorg/app", want: "docker.io/myorg/app"},
		{name: "docker.io short name gets library", image: "docker.io/nginx", want: "docker.io/library/nginx"},
		{name: "localhost is a registry", image: "localhost/app", want: "localhost/app"},
		{name: "host with port is a registry", image: "localhost:5000/app:v1", want: "localhost:5000/app"},
		{name: "dotted host is a registry", image: "registry.example.com/team-a/app:1.0", want: "registry.example.com/team-a/app"},
		{name: "uppercase host is kept", image: "Registry.Example.com/app", want: "Registry.Example.com/app"},

		{name: "empty image does not parse", image: "", wantErr: true},
		{name: "uppercase repository does not parse", image: "Nginx", wantErr: true},
		{name: "empty tag does not parse", image: "nginx:", wantErr: true},
		{name: "short digest does not parse", image: "nginx@sha256:abc", wantErr: true},
		{name: "tag without name does not parse", image: ":latest", wantErr: true},
		{name: "scheme does not parse", image: "https://r.io/app", wantErr: true},
		{name: "bare 64-hex identifier does not parse", image: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NormalizeImage(tc.image)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NormalizeImage(%q) = %q, want error", tc.image, got)
				}
				if !strings.Contains(err.Error(), tc.image) {
					t.Errorf("NormalizeImage(%q) error = %q, want it to name the image", tc.image, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeImage(%q) returned error: %v", tc.image, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeImage(%q) = %q, want %q", tc.image, got, tc.want)
			}
		})
	}
}

func TestParseCredentialKey(t *testing.T) {
	tests := []struct {
		name, key string
		// want is the stored key, empty when the key is refused.
		want string
	}{
		{name: "scheme and /v1/ are dropped", key: "https://index.docker.io/v1/", want: "index.docker.io"},
		{name: "only one leading /v2/ or /v1/ is cut", key: "https://r.example.com/v2/v1/team", want: "r.example.com/v1/team"},
		{name: "user information is dropped, not refused", key: "https://robot@r.example.com/team", want: "r.example.com/team"},
		{name: "a query and a fragment are dropped, not refused", key: "r.example.com/team?x=1#y", want: "r.example.com/team"},
		{name: "a key without a host is refused", key: "https:///team"},
		{name: "a key that never matches is refused", key: "r.example.com/Team"},
		{name: "a key the kubelet cannot parse is refused", key: "r.example.com:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseCredentialKey(tt.key)
			switch {
			case tt.want == "" && err == nil:
				t.Errorf("ParseCredentialKey(%q) = %q, want an error", tt.key, p.String())
			case tt.want != "" && err != nil:
				t.Errorf("ParseCredentialKey(%q): %v", tt.key, err)
			case p.String() != tt.want:
				t.Errorf("ParseCredentialKey(%q) = %q, want %q", tt.key, p.String(), tt.want)
			}
		})
	}
}
