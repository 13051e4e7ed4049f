package credcheck

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/pullsecret-injector/pullsecret-injector/config"
)

// secretMarker starts every credential the fuzz target plants; a message must never contain it.
const secretMarker = "s3cr3t-"

// FuzzCheck checks that Check never panics, returns a Reason from reasons, and never puts a credential into
// its message or makes it unbounded. The document is a template: @PASSWORD@, @AUTH@ and @TOKEN@ are replaced by credentials
// built from secret, JSON-escaped, so that mutations of the document keep secrets in credential places.
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
	}
	for _, s := range seeds {
		f.Add([]byte(s.doc), s.pattern, s.secret)
	}
	f.Fuzz(func(t *testing.T, doc []byte, pattern, secret string) {
		secret = secretMarker + secret
		if strings.Contains(pattern, secretMarker) || strings.Contains(string(doc), secretMarker) {
			t.Skip("the marker must appear only where the target plants it")
		}
		escaped, _ := json.Marshal(secret)
		auth := base64.StdEncoding.EncodeToString([]byte("robot:" + secret))
		s := string(doc)
		s = strings.ReplaceAll(s, "@PASSWORD@", strings.Trim(string(escaped), `"`))
		s = strings.ReplaceAll(s, "@TOKEN@", strings.Trim(string(escaped), `"`))
		s = strings.ReplaceAll(s, "@AUTH@", auth)

		var patterns []config.Pattern
		if p, err := config.ParsePattern(pattern); err == nil {
			patterns = append(patterns, p)
		}
		got := Check(corev1.SecretTypeDockerConfigJson, map[string][]byte{corev1.DockerConfigJsonKey: []byte(s)}, patterns)
		if !slices.Contains(reasons, got.Reason) {
			t.Fatalf("Reason %q is not one of reasons", got.Reason)
		}
		if got.OK != (got.Reason == ReasonOK || got.Reason == ReasonPartial) {
			t.Fatalf("OK = %v with Reason %q", got.OK, got.Reason)
		}
		for _, k := range got.Keys {
			if strings.Contains(k, secretMarker) {
				// An auths key is printed by design; a fuzzer that moved a credential into a key made it one.
				t.Skip("a key holds the marker")
			}
		}
		if strings.Contains(got.Message, secretMarker) {
			t.Fatalf("message contains a credential: %s", got.Message)
		}
		if len(auth) >= 12 && strings.Contains(got.Message, auth) {
			t.Fatalf("message contains an auth value: %s", got.Message)
		}
		// One pattern: at most maxKeysShown keys, each quoted and explained within bounds.
		if len(got.Message) > 8000 {
			t.Fatalf("message is %d bytes long, want it bounded", len(got.Message))
		}
	})
}
