package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"strings"

	"github.com/distribution/reference"
)

const (
	// defaultRegistryHost is the only credential key the kubelet offers for
	// Docker Hub images that do not otherwise match (its Lookup fallback).
	defaultRegistryHost = "index.docker.io"

	// repositoryPathChars is every character a normalised repository path
	// can contain (distribution/reference path components are lowercase
	// alphanumerics joined by '.', '_' and '-'). A pattern path with any other
	// character can never be a prefix of one.
	repositoryPathChars = "abcdefghijklmnopqrstuvwxyz0123456789._-/"
)

// NormalizeImage returns the repository the kubelet looks credentials up for:
// the fully qualified name of image with tag and digest dropped, for example
// "nginx:1.27" becomes "docker.io/library/nginx". The kubelet does the same
// (reference.ParseNormalizedNamed, then Name) before consulting its keyring,
// so matching against anything else would disagree with it.
func NormalizeImage(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("parse image reference %q: %w", image, err)
	}
	return named.Name(), nil
}

// Pattern is one parsed kubelet credential key, such as the key of an
// "auths" entry in a kubernetes.io/dockerconfigjson Secret. The zero value
// matches nothing.
type Pattern struct {
	// key is the registry as the kubelet stores it after
	// BasicDockerKeyring.Add: no scheme, /v1/ and /v2/ cut to /.
	key string
	// host, port and path are the kubelet's re-parse of key
	// (ParseSchemelessURL + SplitURL), computed once instead of per image.
	hostLabels []string
	port       string
	path       string
	// defaultRegistry records that key is exactly index.docker.io, which the
	// kubelet also offers for any image that isDefaultRegistryMatch accepts.
	defaultRegistry bool
}

// ParsePattern parses s the way the kubelet parses a credential key and
// rejects keys the kubelet would ignore or that could never match a
// normalised repository, so that a typo fails at load time instead of
// silently leaving pods without credentials.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("registry must not be empty")
	}
	if strings.TrimSpace(s) != s {
		return Pattern{}, errors.New("registry must not have leading or trailing whitespace")
	}
	// The kubelet only recognises these two schemes, case-sensitively; any
	// other scheme would be prefixed with https:// and parse into a host that
	// cannot match.
	if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") {
		if strings.Contains(s, "://") {
			return Pattern{}, errors.New("scheme must be http:// or https://")
		}
		s = "https://" + s
	}
	// Percent-encoding is decoded by url.Parse and then re-parsed by the
	// kubelet at match time, which can change the key's meaning (%3F becomes
	// a query). Repository names never need it.
	if strings.Contains(s, "%") {
		return Pattern{}, errors.New("registry must not contain percent-encoding")
	}
	parsed, err := url.Parse(s)
	if err != nil {
		return Pattern{}, fmt.Errorf("parse registry as a URL: %w", err)
	}
	// The kubelet drops these parts silently; reject them so the operator
	// does not believe they restrict anything.
	switch {
	case parsed.User != nil:
		return Pattern{}, errors.New("registry must not contain user information")
	case parsed.RawQuery != "" || parsed.ForceQuery:
		return Pattern{}, errors.New("registry must not contain a query")
	case parsed.Fragment != "" || strings.Contains(s, "#"):
		return Pattern{}, errors.New("registry must not contain a fragment")
	case parsed.Host == "":
		return Pattern{}, errors.New("registry must have a host")
	}

	return patternFromURL(parsed)
}

// ParseCredentialKey parses s, an auths key of a pull secret, the way the kubelet's
// BasicDockerKeyring.Add stores it: scheme, user information, query and fragment dropped, a leading /v1/ or
// /v2/ cut once. Unlike ParsePattern it accepts those parts, because in a Secret the kubelet silently uses
// the rest of the key; it still rejects a key the kubelet skips or that never matches a normalised
// repository.
func ParseCredentialKey(s string) (Pattern, error) {
	if !strings.HasPrefix(s, "https://") && !strings.HasPrefix(s, "http://") {
		s = "https://" + s
	}
	parsed, err := url.Parse(s)
	if err != nil {
		// url.Parse errors quote the input; the key is named by the caller.
		return Pattern{}, errors.New("the kubelet cannot parse it as a URL")
	}
	if parsed.Host == "" {
		return Pattern{}, errors.New("registry must have a host")
	}
	return patternFromURL(parsed)
}

// patternFromURL builds the Pattern of parsed, a key with a scheme and a host, as BasicDockerKeyring.Add
// stores it and URLsMatchStr re-parses it at match time.
func patternFromURL(parsed *url.URL) (Pattern, error) {
	effectivePath := parsed.Path
	if strings.HasPrefix(effectivePath, "/v2/") || strings.HasPrefix(effectivePath, "/v1/") {
		effectivePath = effectivePath[3:]
	}
	key := parsed.Host
	if effectivePath != "" && effectivePath != "/" {
		key += effectivePath
	}

	// Mirror the kubelet's match-time parse of the stored key so matching
	// uses exactly what the kubelet would compare.
	globURL, err := url.Parse("https://" + key)
	if err != nil {
		return Pattern{}, fmt.Errorf("parse credential key %q as a URL: %w", key, err)
	}
	labels, port := splitURL(globURL)
	p := Pattern{
		key:             key,
		hostLabels:      labels,
		port:            port,
		path:            globURL.Path,
		defaultRegistry: key == defaultRegistryHost,
	}
	if err := p.checkCanMatch(); err != nil {
		return Pattern{}, err
	}
	return p, nil
}

// checkCanMatch rejects keys the kubelet accepts but that can never match
// any normalised repository.
func (p Pattern) checkCanMatch() error {
	if strings.HasPrefix(p.hostLabels[0], "[") && p.port == "" {
		// SplitURL only strips the brackets together with a port, so the
		// kubelet compares "[::1]" as a glob character class.
		return errors.New("an IPv6 host never matches without a port")
	}
	for _, label := range p.hostLabels {
		if label == "" {
			return errors.New("host must not have empty dot-separated labels")
		}
		// path.Match checks the whole pattern's syntax whatever the input.
		if _, err := path.Match(label, ""); err != nil {
			return fmt.Errorf("host label %q is not a valid glob: %w", label, err)
		}
	}
	if strings.Trim(p.path, repositoryPathChars) != "" {
		return fmt.Errorf("path %q never matches: repository paths contain only lowercase letters, digits, '.', '_', '-' and '/', and wildcards are only allowed in the host", p.path)
	}
	if strings.Contains(p.path, "//") {
		return fmt.Errorf("path %q never matches: repository paths have no empty components", p.path)
	}
	if strings.Join(p.hostLabels, ".") == defaultRegistryHost && p.port == "" && p.path != "" {
		// Docker Hub images normalise to docker.io, and the kubelet's
		// index.docker.io fallback applies only to the bare host.
		return fmt.Errorf("index.docker.io with a path never matches because Docker Hub images normalise to docker.io: use %q", "docker.io"+p.path)
	}
	return nil
}

// String returns the key as the kubelet stores it, without scheme and with
// a leading /v1/ or /v2/ removed, e.g. "registry.example.com:5000/team-a".
func (p Pattern) String() string {
	return p.key
}

// Matches reports whether the kubelet, holding a credential under this key
// alone, would offer it when pulling repository. repository must be a
// NormalizeImage result, as the kubelet normalises before looking up.
//
// The rules are the kubelet's (pkg/credentialprovider/keyring.go URLsMatch
// and Lookup), quirks included: equal ports, equal host label counts, one
// glob per host label, and a plain string prefix on the path, so
// "r.io/team-a" matches "r.io/team-ab/app" too.
func (p Pattern) Matches(repository string) bool {
	return p.matches(parseTarget(repository))
}

// target is a repository as the kubelet's URLsMatchStr sees it. MatchImage
// parses it once and compares it with every pattern.
type target struct {
	repository string
	// parsed is false when url.Parse rejects the repository, which then
	// matches by the Docker Hub fallback only, as in the kubelet.
	parsed bool
	labels []string
	port   string
	path   string
}

func parseTarget(repository string) target {
	t := target{repository: repository}
	u, err := url.Parse("https://" + repository)
	if err != nil {
		return t
	}
	t.parsed = true
	t.labels, t.port = splitURL(u)
	t.path = u.Path
	return t
}

func (p Pattern) matches(t target) bool {
	if p.key == "" {
		return false
	}
	if t.parsed && p.matchesURL(t) {
		return true
	}
	return p.defaultRegistry && isDefaultRegistryMatch(t.repository)
}

// matchesURL is the kubelet's URLsMatch with both sides parsed beforehand.
func (p Pattern) matchesURL(t target) bool {
	if p.port != t.port || len(p.hostLabels) != len(t.labels) {
		return false
	}
	if !strings.HasPrefix(t.path, p.path) {
		return false
	}
	for i, label := range p.hostLabels {
		// The kubelet uses filepath.Match, which is path.Match on every
		// platform it runs Linux pods on; host labels contain no separator.
		if ok, err := path.Match(label, t.labels[i]); err != nil || !ok {
			return false
		}
	}
	return true
}

// splitURL is the kubelet's SplitURL: a host without a parsable port is
// compared whole, with an empty port.
func splitURL(u *url.URL) (labels []string, port string) {
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, ""
	}
	return strings.Split(host, "."), port
}

// isDefaultRegistryMatch is the kubelet's test for images pulled from
// Docker Hub, used for the index.docker.io fallback. It deliberately keeps
// the kubelet's looseness: a first component without '.' or ':' (such as
// "localhost") counts as Docker Hub.
func isDefaultRegistryMatch(image string) bool {
	parts := strings.SplitN(image, "/", 2)
	if parts[0] == "" {
		return false
	}
	if len(parts) == 1 {
		return true
	}
	if parts[0] == "docker.io" || parts[0] == defaultRegistryHost {
		return true
	}
	return !strings.ContainsAny(parts[0], ".:")
}
