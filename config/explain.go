package config

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// Coverage says for how many of the images an entry pattern matches a credential key offers its
// credential.
type Coverage int

const (
	// CoversNone means the key is offered for none of the entry's images.
	CoversNone Coverage = iota
	// CoversSome means the key is offered for some of the entry's images, or may be: two different
	// host globs are not compared beyond that.
	CoversSome
	// CoversAll means the key is offered for every image the entry matches.
	CoversAll
)

// dockerHubLabels is the host every Docker Hub image normalises to, as host labels.
var dockerHubLabels = []string{"docker", "io"}

// Covers reports whether the kubelet, holding a credential under key k alone (an auths key of a
// dockerconfigjson, parsed with ParsePattern), would offer it for all, some or none of the images that the
// entry pattern e matches.
//
// Both are kubelet patterns, so the comparison is the kubelet's URLsMatch lifted from one image to the set
// of images e matches: equal ports and label counts, k's path a prefix of e's path (then every image of e
// has it too; the other way round only some do), and each key label matching each entry label. A key
// "index.docker.io" also covers every Docker Hub image, as the kubelet's Lookup falls back to it. A
// Docker Hub image-set is compared as host docker.io, which is where NormalizeImage puts every Docker Hub
// image; the kubelet's looser fallback for "localhost/..." images is not modelled.
func (k Pattern) Covers(e Pattern) Coverage {
	if k.key == "" || e.key == "" {
		return CoversNone
	}
	labels, port, entryPath := e.hostLabels, e.port, e.path
	if e.defaultRegistry {
		labels, port, entryPath = dockerHubLabels, "", ""
	}
	c := k.coversURL(labels, port, entryPath)
	if k.defaultRegistry && c != CoversAll && port == "" && len(labels) == len(dockerHubLabels) {
		all, some := true, true
		for i, l := range labels {
			all = all && l == dockerHubLabels[i]
			ok, err := path.Match(l, dockerHubLabels[i])
			some = some && err == nil && ok
		}
		switch {
		case all:
			return CoversAll
		case some:
			return CoversSome
		}
	}
	return c
}

func (k Pattern) coversURL(labels []string, port, entryPath string) Coverage {
	if k.port != port || len(k.hostLabels) != len(labels) {
		return CoversNone
	}
	c := CoversAll
	switch {
	case strings.HasPrefix(entryPath, k.path):
	case strings.HasPrefix(k.path, entryPath):
		// The entry also matches images outside the key's longer path.
		c = CoversSome
	default:
		return CoversNone
	}
	for i, kl := range k.hostLabels {
		c = min(c, labelCoverage(kl, labels[i]))
	}
	return c
}

func labelCoverage(key, entry string) Coverage {
	match := func(pattern, s string) bool {
		ok, err := path.Match(pattern, s)
		return err == nil && ok
	}
	switch {
	case !isGlob(entry):
		if match(key, entry) {
			return CoversAll
		}
		return CoversNone
	case key == entry || key == "*":
		return CoversAll
	case !isGlob(key):
		if match(entry, key) {
			return CoversSome
		}
		return CoversNone
	default:
		// Two different globs: whether one includes the other is not worth deciding here; say "some"
		// so that the answer is never "all" when it might not be.
		return CoversSome
	}
}

func isGlob(label string) bool {
	return strings.ContainsAny(label, `*?[\`)
}

// Explain reports whether p matches repository, a NormalizeImage result, and says why in the kubelet's
// terms: for a match, what matched ("host registry.example.com and path prefix team"); otherwise the first
// rule that failed.
func (p Pattern) Explain(repository string) (bool, string) {
	if p.key == "" {
		return false, "the pattern is empty"
	}
	t := parseTarget(repository)
	if t.parsed {
		if why, ok := p.explainURL(t); ok || !p.defaultRegistry {
			return ok, why
		}
	}
	switch {
	case p.defaultRegistry && isDefaultRegistryMatch(t.repository):
		return true, "every Docker Hub image (the kubelet's index.docker.io fallback)"
	case p.defaultRegistry:
		return false, "it stands for Docker Hub images only (the kubelet's index.docker.io fallback)"
	default:
		return false, "the repository does not parse as a URL"
	}
}

// explainURL says why p matches t as a URL, or the first reason it does not.
func (p Pattern) explainURL(t target) (string, bool) {
	host := strings.Join(t.labels, ".")
	if p.port != t.port {
		switch {
		case p.port == "":
			return fmt.Sprintf("the image has port %s, the pattern none (ports must be equal)", t.port), false
		case t.port == "":
			return fmt.Sprintf("the pattern has port %s, the image none (ports must be equal)", p.port), false
		default:
			return fmt.Sprintf("port %s is not %s", t.port, p.port), false
		}
	}
	if len(p.hostLabels) != len(t.labels) {
		why := fmt.Sprintf("host %s has %d DNS labels, the pattern %d", host, len(t.labels), len(p.hostLabels))
		if slices.ContainsFunc(p.hostLabels, isGlob) {
			why += " (a '*' never crosses a dot)"
		}
		return why, false
	}
	var globs []string
	for i, label := range p.hostLabels {
		if ok, err := path.Match(label, t.labels[i]); err != nil || !ok {
			if !isGlob(label) {
				return fmt.Sprintf("host %s is not %s", host, strings.Join(p.hostLabels, ".")), false
			}
			return fmt.Sprintf("host label %q does not match %q", t.labels[i], label), false
		}
		if isGlob(label) {
			globs = append(globs, fmt.Sprintf("%q matches the one DNS label %q", label, t.labels[i]))
		}
	}
	if !strings.HasPrefix(t.path, p.path) {
		return fmt.Sprintf("path %s does not start with %s", strings.TrimPrefix(t.path, "/"), strings.TrimPrefix(p.path, "/")), false
	}
	return p.urlMatch(t, host, globs), true
}

// urlMatch says why p matches t as a URL: the host, with what its globs matched (globs), then the port and
// the path prefix the pattern requires.
func (p Pattern) urlMatch(t target, host string, globs []string) string {
	why := "host " + host
	if len(globs) > 0 {
		why += " (" + strings.Join(globs, ", ") + ")"
	}
	var parts []string
	if p.port != "" {
		parts = append(parts, "port "+p.port)
	}
	if p.path != "" {
		prefix := "path prefix " + strings.TrimPrefix(p.path, "/")
		if rest := strings.TrimPrefix(t.path, p.path); rest != "" && !strings.HasPrefix(rest, "/") && !strings.HasSuffix(p.path, "/") {
			prefix += " (a plain string prefix, as in the kubelet: " + strings.TrimPrefix(t.path, "/") + " has it)"
		}
		parts = append(parts, prefix)
	}
	switch len(parts) {
	case 0:
		if p.path == "" {
			why += ", any path"
		}
	case 1:
		why += " and " + parts[0]
	default:
		why += ", " + parts[0] + " and " + parts[1]
	}
	return why
}

// Lookup returns the indexes of the keys whose credentials the kubelet offers for repository, a
// NormalizeImage result, when a pull secret holds exactly these keys: those that match it as URLs, or, when
// none does, the index.docker.io keys for a Docker Hub image (the kubelet's BasicDockerKeyring.Lookup).
func Lookup(keys []Pattern, repository string) []int {
	t := parseTarget(repository)
	var matched, fallback []int
	for i, k := range keys {
		switch {
		case k.key == "":
		case t.parsed && k.matchesURL(t):
			matched = append(matched, i)
		case k.defaultRegistry && isDefaultRegistryMatch(t.repository):
			fallback = append(fallback, i)
		}
	}
	if len(matched) > 0 {
		return matched
	}
	return fallback
}
