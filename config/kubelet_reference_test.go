package config

import (
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// This file transcribes the parts of the kubelet's credential keyring
// (k8s.io/kubernetes pkg/credentialprovider/keyring.go, v1.37: Add,
// isDefaultRegistryMatch, URLsMatchStr, Lookup) that decide whether a
// credential is offered, as literally as possible. Importing
// k8s.io/kubernetes is not supported, so the tests instead check Pattern
// against this copy; keep it a transcription, not a re-implementation.

// kubeletKey is the key BasicDockerKeyring.Add stores for registry, and
// false when Add would ignore the entry.
func kubeletKey(registry string) (string, bool) {
	if !strings.HasPrefix(registry, "https://") && !strings.HasPrefix(registry, "http://") {
		registry = "https://" + registry
	}
	parsed, err := url.Parse(registry)
	if err != nil {
		return "", false
	}
	effectivePath := parsed.Path
	if strings.HasPrefix(effectivePath, "/v2/") || strings.HasPrefix(effectivePath, "/v1/") {
		effectivePath = effectivePath[3:]
	}
	var key string
	if (len(effectivePath) > 0) && (effectivePath != "/") {
		key = parsed.Host + effectivePath
	} else {
		key = parsed.Host
	}
	return key, true
}

// kubeletOffers reports whether a keyring holding only registry offers its
// credential for image (already normalised, as the kubelet passes it).
func kubeletOffers(registry, image string) bool {
	key, ok := kubeletKey(registry)
	if !ok {
		return false
	}
	if matched, _ := kubeletURLsMatchStr(key, image); matched {
		return true
	}
	return kubeletIsDefaultRegistryMatch(image) && key == "index.docker.io"
}

func kubeletIsDefaultRegistryMatch(image string) bool {
	parts := strings.SplitN(image, "/", 2)
	if len(parts[0]) == 0 {
		return false
	}
	if len(parts) == 1 {
		return true
	}
	if parts[0] == "docker.io" || parts[0] == "index.docker.io" {
		return true
	}
	return !strings.ContainsAny(parts[0], ".:")
}

func kubeletParseSchemelessURL(schemelessURL string) (*url.URL, error) {
	parsed, err := url.Parse("https://" + schemelessURL)
	if err != nil {
		return nil, err
	}
	parsed.Scheme = ""
	return parsed, nil
}

func kubeletSplitURL(url *url.URL) (parts []string, port string) {
	host, port, err := net.SplitHostPort(url.Host)
	if err != nil {
		host, port = url.Host, ""
	}
	return strings.Split(host, "."), port
}

func kubeletURLsMatchStr(glob string, target string) (bool, error) {
	globURL, err := kubeletParseSchemelessURL(glob)
	if err != nil {
		return false, err
	}
	targetURL, err := kubeletParseSchemelessURL(target)
	if err != nil {
		return false, err
	}
	return kubeletURLsMatch(globURL, targetURL)
}

func kubeletURLsMatch(globURL *url.URL, targetURL *url.URL) (bool, error) {
	globURLParts, globPort := kubeletSplitURL(globURL)
	targetURLParts, targetPort := kubeletSplitURL(targetURL)
	if globPort != targetPort {
		return false, nil
	}
	if len(globURLParts) != len(targetURLParts) {
		return false, nil
	}
	if !strings.HasPrefix(targetURL.Path, globURL.Path) {
		return false, nil
	}
	for k, globURLPart := range globURLParts {
		targetURLPart := targetURLParts[k]
		matched, err := filepath.Match(globURLPart, targetURLPart)
		if err != nil {
			return false, err
		}
		if !matched {
			return false, nil
		}
	}
	return true, nil
}

// FuzzMatch checks that every pattern ParsePattern accepts keeps the
// kubelet's key and agrees with the kubelet on every image. Without -fuzz
// it runs only the seeds, which are the table cases.
func FuzzMatch(f *testing.F) {
	for _, tc := range matchCases {
		f.Add(tc.pattern, tc.image)
	}
	for _, tc := range parsePatternCases {
		f.Add(tc.pattern, "registry.example.com:5000/team-a/app")
	}
	f.Fuzz(func(t *testing.T, registry, image string) {
		p, err := ParsePattern(registry)
		if err != nil {
			return
		}
		if key, ok := kubeletKey(registry); !ok || key != p.String() {
			t.Fatalf("ParsePattern(%q).String() = %q, kubelet key = %q (stored: %v)", registry, p.String(), key, ok)
		}
		repository, err := NormalizeImage(image)
		if err != nil {
			return
		}
		if got, want := p.Matches(repository), kubeletOffers(registry, repository); got != want {
			t.Errorf("ParsePattern(%q).Matches(%q) = %v, kubelet offers = %v", registry, repository, got, want)
		}
	})
}
