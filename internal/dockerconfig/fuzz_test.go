package dockerconfig

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

// FuzzCheck checks that Check never panics, returns a Reason from reasons, and never puts a credential into
// its message, its keys, QuoteKeys or ForImage, or makes them unbounded. The document is a template:
// @PASSWORD@, @AUTH@, @TOKEN@ and @USERINFO@ are replaced by credentials built from secret, JSON-escaped,
// so that mutations of the document keep secrets in credential places: the auths values, and the user
// information and query of the keys. A credential that a mutation moves into a key's host or path is shown
// by design (see shownByDesign), and the input is skipped.
func FuzzCheck(f *testing.F) {
	seeds := []struct{ doc, pattern, secret string }{
		{`{"auths":{"quay.io":{"auth":"@AUTH@"}}}`, "quay.io", "pw"},
		{`{"auths":{"quay.io":{"username":"u","password":"@PASSWORD@"}}}`, "quay.io/team", "pw"},
		{`{"auths":{"quay.io":{"identitytoken":"@TOKEN@"}}}`, "quay.io", "tok"},
		{`{"auths":{"quay.io":{"auth":"@PASSWORD@"}}}`, "quay.io", "not-base64!"},
		{`{"auths":{"quay.io":{"password":@PASSWORD@}}}`, "quay.io", "unquoted"},
		{`{"auths":{"quay.io":{"password":"@PASSWORD@"@PASSWORD@}}}`, "quay.io", "syntax"},
		{`["@PASSWORD@"]`, "quay.io", "array"},
		{`{"auths":{"*.example.com":{"auth":"@AUTH@"},"a.example.com":{}}}`, "*.example.com", "pw"},
		{`{"auths":{"https://index.docker.io/v1/":{"auth":"@AUTH@"}}}`, "docker.io/myorg", "pw"},
		{`{"auths":{"registry.example.com:5000/team-a":{"auth":"@AUTH@"}}}`, "registry.example.com:5000", "pw"},
		{`{"auths":{"quay.io":{"auth":"@AUTH@"}},"HttpHeaders":{"X":"@PASSWORD@"}}`, "quay.io", "hdr"},
		{`{"auths":{"quay.io":{"password":12345678901234567890}}}`, "quay.io", ""},
		{``, "quay.io", ""},
		{`null`, "quay.io", ""},
		{"{\"auths\":{\"\xff\":{\"auth\":\"@AUTH@\"}}}", "quay.io", "utf8"},
		{`{"auths":{"https://@USERINFO@@quay.io":{"auth":"@AUTH@"}}}`, "quay.io", "pw"},
		{`{"auths":{"@USERINFO@@other.example.com:5000/team":{}}}`, "quay.io", "pw"},
		{`{"auths":{"robot:@PASSWORD@@quay.io":{"auth":"!"}}}`, "quay.io", "p/w?x y"},
		{`{"auths":{"https://a@b:@PASSWORD@@quay.io/Team":{"password":1}}}`, "quay.io", "pw"},
		{`{"auths":{"quay.io/team?token=@PASSWORD@":{"auth":"@AUTH@"}}}`, "ghcr.io", "tok"},
		{`{"auths":{"quay.io#@PASSWORD@":{},"a.example.com":{"auth":"@AUTH@"}}}`, "*.example.com", "frag"},
		{`{"auths":{"@PASSWORD@%40quay.io":{"auth":"@AUTH@"}}}`, "quay.io", "pct"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.doc), s.pattern, s.secret)
	}
	f.Fuzz(func(t *testing.T, doc []byte, pattern, secret string) {
		secret = fixtures.PlantSecret(t, secret, pattern, string(doc))
		escaped, _ := json.Marshal(secret)
		auth := base64.StdEncoding.EncodeToString([]byte("robot:" + secret))
		s := string(doc)
		s = strings.ReplaceAll(s, "@PASSWORD@", strings.Trim(string(escaped), `"`))
		s = strings.ReplaceAll(s, "@TOKEN@", strings.Trim(string(escaped), `"`))
		s = strings.ReplaceAll(s, "@AUTH@", auth)
		userinfo, _ := json.Marshal(url.UserPassword("robot", secret).String())
		s = strings.ReplaceAll(s, "@USERINFO@", strings.Trim(string(userinfo), `"`))
		data := map[string][]byte{corev1.DockerConfigJsonKey: []byte(s)}
		var keys dockerConfigJSON
		if json.Unmarshal([]byte(s), &keys) == nil {
			for k := range keys.Auths {
				if shownByDesign(k) {
					t.Skip("a key's host or path holds the marker")
				}
			}
		}

		var patterns []config.Pattern
		if p, err := config.ParsePattern(pattern); err == nil {
			patterns = append(patterns, p)
		}
		got := Check(corev1.SecretTypeDockerConfigJson, data, patterns)
		if !slices.Contains(reasons, got.Reason) {
			t.Fatalf("Reason %q is not one of reasons", got.Reason)
		}
		if got.OK != (got.Reason == ReasonOK || got.Reason == ReasonPartial) {
			t.Fatalf("OK = %v with Reason %q", got.OK, got.Reason)
		}
		texts := append([]string{got.Message, QuoteKeys(got.Keys)}, got.Keys...)
		if repository, err := config.NormalizeImage(pattern + "/app"); err == nil {
			offered, _ := ForImage(corev1.SecretTypeDockerConfigJson, data, repository)
			texts = append(append(texts, QuoteKeys(offered)), offered...)
		}
		for _, text := range texts {
			if strings.Contains(text, fixtures.SecretMarker) {
				t.Fatalf("a credential is shown: %s", text)
			}
			if len(auth) >= 12 && strings.Contains(text, auth) {
				t.Fatalf("an auth value is shown: %s", text)
			}
			if !utf8.ValidString(text) || strings.ContainsFunc(text, func(r rune) bool { return !strconv.IsPrint(r) }) {
				t.Fatalf("text is not printable UTF-8: %q", text)
			}
		}
		for _, k := range got.Keys {
			if len(k) > redact.MaxLen {
				t.Fatalf("key %q is longer than redact.MaxLen", k)
			}
		}
		// One pattern: at most maxKeysShown keys, each quoted and explained within bounds.
		if len(got.Message) > 8000 {
			t.Fatalf("message is %d bytes long, want it bounded", len(got.Message))
		}
	})
}

// shownByDesign reports whether the marker is in a part of the auths key k that Check names by design: the
// host or path of the URL the kubelet reads k as (decoded, as parse errors quote them). Anywhere else, in
// the user information, the query or the fragment, it must never be shown. Of a key that url.Parse
// refuses, what comes before the last '@' (or "%40") is taken for user information and what follows a '?'
// or '#' for a query, as its author presumably meant, and when a '?' or '#' comes first, all of it.
func shownByDesign(k string) bool {
	withScheme := k
	if !strings.HasPrefix(k, "https://") && !strings.HasPrefix(k, "http://") {
		withScheme = "https://" + k
	}
	if u, err := url.Parse(withScheme); err == nil {
		return strings.Contains(u.Host, fixtures.SecretMarker) || strings.Contains(u.Path, fixtures.SecretMarker) ||
			strings.Contains(u.EscapedPath(), fixtures.SecretMarker)
	}
	sep := max(strings.LastIndex(k, "@"), strings.LastIndex(k, "%40"))
	query := strings.IndexAny(k, "?#")
	if query >= 0 && query < sep {
		return false
	}
	for i := 0; ; {
		j := strings.Index(k[i:], fixtures.SecretMarker)
		if j < 0 {
			return false
		}
		at := i + j
		if at > sep && (query < 0 || at < query) {
			return true
		}
		i = at + 1
	}
}
