package dockerconfig

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
)

// secretPassword is the password of every credential below; no message may contain it.
const secretPassword = "hunter2-do-not-print"

// encodedPassword is secretPassword percent-encoded as in a key's user information; no message may contain
// it either.
const encodedPassword = "hunt%65r2-do-not-print"

var goodAuth = base64.StdEncoding.EncodeToString([]byte("robot:" + secretPassword))

func dockerConfig(auths string) map[string][]byte {
	return map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{` + auths + `}}`)}
}

func entry(key string) string {
	return `"` + key + `":{"auth":"` + goodAuth + `"}`
}

func patterns(t *testing.T, ss ...string) []config.Pattern {
	t.Helper()
	out := make([]config.Pattern, 0, len(ss))
	for _, s := range ss {
		p, err := config.ParsePattern(s)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", s, err)
		}
		out = append(out, p)
	}
	return out
}

// checkCase is a case of TestCheck or TestNoCredentialInOutput.
type checkCase struct {
	name     string
	typ      corev1.SecretType
	data     map[string][]byte
	patterns []string
	want     Reason
	// wantInMessage are substrings the message must have.
	wantInMessage []string
}

// run checks the case's Reason and message, and that neither the message, nor the keys, nor what
// QuoteKeys and ForImage make of them, shows a credential or a character that is not printable.
func (tt checkCase) run(t *testing.T) {
	t.Helper()
	typ := tt.typ
	if typ == "" {
		typ = corev1.SecretTypeDockerConfigJson
	}
	got := Check(typ, tt.data, patterns(t, tt.patterns...))
	if got.Reason != tt.want {
		t.Fatalf("Reason = %q, want %q; message: %s", got.Reason, tt.want, got.Message)
	}
	wantOK := tt.want == ReasonOK || tt.want == ReasonPartial
	if got.OK != wantOK {
		t.Errorf("OK = %v, want %v", got.OK, wantOK)
	}
	if !got.OK && got.Message == "" {
		t.Error("a failed check has no message")
	}
	for _, s := range tt.wantInMessage {
		if !strings.Contains(got.Message, s) {
			t.Errorf("message %q does not contain %q", got.Message, s)
		}
	}
	texts := append([]string{got.Message, QuoteKeys(got.Keys)}, got.Keys...)
	for _, p := range tt.patterns {
		offered, _ := ForImage(typ, tt.data, strings.ReplaceAll(p, "*", "a")+"/app")
		texts = append(append(texts, QuoteKeys(offered)), offered...)
	}
	for _, text := range texts {
		assertNoSecret(t, text, secretPassword, encodedPassword, "hunter2", goodAuth)
		assertPrintable(t, text)
	}
}

func TestCheck(t *testing.T) {
	tests := []checkCase{
		{name: "host key serves a host entry", data: dockerConfig(entry("registry.example.com")),
			patterns: []string{"registry.example.com"}, want: ReasonOK},
		{name: "host key serves a path-prefixed entry", data: dockerConfig(entry("registry.example.com:5000")),
			patterns: []string{"registry.example.com:5000/team-a"}, want: ReasonOK},
		{name: "scheme and /v1/ on the key are ignored as by the kubelet", data: dockerConfig(entry("https://registry.example.com/v1/")),
			patterns: []string{"registry.example.com/team"}, want: ReasonOK},
		{name: "only one leading /v2/ or /v1/ is cut, as by the kubelet", data: dockerConfig(entry("https://registry.example.com/v2/v1/team")),
			patterns: []string{"registry.example.com/team"}, want: ReasonNoMatchingKey, wantInMessage: []string{`"https://registry.example.com/v2/v1/team"`}},
		{name: "a key with the same path serves the entry", data: dockerConfig(entry("registry.example.com/team")),
			patterns: []string{"registry.example.com/team"}, want: ReasonOK},
		{name: "a key with a longer path serves part of the entry", data: dockerConfig(entry("registry.example.com/team/app")),
			patterns: []string{"registry.example.com/team"}, want: ReasonPartial, wantInMessage: []string{`"registry.example.com/team/app"`}},
		{name: "a key with another path serves nothing", data: dockerConfig(entry("registry.example.com/other")),
			patterns: []string{"registry.example.com/team"}, want: ReasonNoMatchingKey,
			wantInMessage: []string{`entry "registry.example.com/team"`, `"registry.example.com/other"`}},
		{name: "a key without the entry's port serves nothing", data: dockerConfig(entry("registry.example.com")),
			patterns: []string{"registry.example.com:5000"}, want: ReasonNoMatchingKey},
		{name: "a key with a port serves nothing for an entry without one", data: dockerConfig(entry("registry.example.com:5000")),
			patterns: []string{"registry.example.com"}, want: ReasonNoMatchingKey},
		{name: "a wildcard key serves a literal entry", data: dockerConfig(entry("*.example.com")),
			patterns: []string{"registry.example.com/team"}, want: ReasonOK},
		{name: "the same wildcard key serves a wildcard entry", data: dockerConfig(entry("*.dkr.ecr.eu-west-1.amazonaws.com")),
			patterns: []string{"*.dkr.ecr.eu-west-1.amazonaws.com"}, want: ReasonOK},
		{name: "a literal key serves part of a wildcard entry", data: dockerConfig(entry("123456789012.dkr.ecr.eu-west-1.amazonaws.com")),
			patterns: []string{"*.dkr.ecr.eu-west-1.amazonaws.com"}, want: ReasonPartial},
		{name: "a wildcard never crosses a dot", data: dockerConfig(entry("*.example.com")),
			patterns: []string{"a.b.example.com"}, want: ReasonNoMatchingKey},
		{name: "a literal key outside a wildcard entry serves nothing", data: dockerConfig(entry("registry.example.org")),
			patterns: []string{"*.example.com"}, want: ReasonNoMatchingKey},
		{name: "index.docker.io serves a docker.io entry", data: dockerConfig(entry("https://index.docker.io/v1/")),
			patterns: []string{"docker.io/myorg"}, want: ReasonOK},
		{name: "index.docker.io serves an index.docker.io entry", data: dockerConfig(entry("index.docker.io")),
			patterns: []string{"index.docker.io"}, want: ReasonOK},
		{name: "docker.io serves an index.docker.io entry", data: dockerConfig(entry("docker.io")),
			patterns: []string{"https://index.docker.io/v1/"}, want: ReasonOK},
		{name: "index.docker.io serves nothing outside Docker Hub", data: dockerConfig(entry("index.docker.io")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey},
		{name: "docker.io with another org serves nothing", data: dockerConfig(entry("docker.io/otherorg")),
			patterns: []string{"docker.io/myorg"}, want: ReasonNoMatchingKey},
		{name: "every entry must be served", data: dockerConfig(entry("quay.io")),
			patterns: []string{"quay.io", "ghcr.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`entry "ghcr.io"`}},
		{name: "user information in a key is dropped as by the kubelet", data: dockerConfig(entry("robot@registry.example.com")),
			patterns: []string{"registry.example.com"}, want: ReasonOK},
		{name: "a query in a key is dropped as by the kubelet", data: dockerConfig(entry("registry.example.com/team?x=1")),
			patterns: []string{"registry.example.com/team"}, want: ReasonOK},
		{name: "a key the kubelet cannot parse is listed as never used", data: dockerConfig(entry("registry example.com")),
			patterns: []string{"registry.example.com"}, want: ReasonNoMatchingKey, wantInMessage: []string{"never used: the kubelet cannot parse it as a URL"}},
		{name: "a key the kubelet cannot use is listed as such", data: dockerConfig(entry("ftp://registry.example.com")),
			patterns: []string{"registry.example.com"}, want: ReasonNoMatchingKey, wantInMessage: []string{"never used"}},
		{name: "empty auths serves nothing", data: dockerConfig(""),
			patterns: []string{"registry.example.com"}, want: ReasonNoMatchingKey, wantInMessage: []string{"auths is empty"}},
		{name: "null document serves nothing", data: map[string][]byte{corev1.DockerConfigJsonKey: []byte("null")},
			patterns: []string{"registry.example.com"}, want: ReasonNoMatchingKey},
		{name: "username and password count as a credential", data: dockerConfig(`"quay.io":{"username":"robot","password":"` + secretPassword + `"}`),
			patterns: []string{"quay.io"}, want: ReasonOK},
		{name: "unpadded auth is accepted like the kubelet does",
			data:     dockerConfig(`"quay.io":{"auth":"` + strings.TrimRight(goodAuth, "=") + `"}`),
			patterns: []string{"quay.io"}, want: ReasonOK},
		{name: "an empty entry is no credential", data: dockerConfig(`"quay.io":{}`),
			patterns: []string{"quay.io"}, want: ReasonEmptyCredentials, wantInMessage: []string{`"quay.io"`}},
		{name: "an identity token alone is no credential for the kubelet", data: dockerConfig(`"quay.io":{"identitytoken":"` + secretPassword + `"}`),
			patterns: []string{"quay.io"}, want: ReasonEmptyCredentials, wantInMessage: []string{"ignores identitytoken"}},
		{name: "auth of a bare colon is no credential", data: dockerConfig(`"quay.io":{"auth":"` + base64.StdEncoding.EncodeToString([]byte(":")) + `"}`),
			patterns: []string{"quay.io"}, want: ReasonEmptyCredentials},
		{name: "a narrow key with a credential beats a wide empty one",
			data:     dockerConfig(`"*.example.com":{},` + entry("a.example.com")),
			patterns: []string{"*.example.com"}, want: ReasonPartial},
		{name: "auth that is not base64 breaks the whole secret",
			data:     dockerConfig(entry("quay.io") + `,"other.example.com":{"auth":"` + secretPassword + `!"}`),
			patterns: []string{"quay.io"}, want: ReasonInvalidAuth, wantInMessage: []string{`"other.example.com"`, "not valid base64"}},
		{name: "auth without a colon breaks the whole secret",
			data:     dockerConfig(`"quay.io":{"auth":"` + base64.StdEncoding.EncodeToString([]byte(secretPassword)) + `"}`),
			patterns: []string{"quay.io"}, want: ReasonInvalidAuth, wantInMessage: []string{"username:password"}},
		{name: "an auths value of the wrong type is invalid JSON",
			data:     dockerConfig(`"quay.io":{"password":12345678901234567890}`),
			patterns: []string{"quay.io"}, want: ReasonInvalidJSON, wantInMessage: []string{`"quay.io"`, "number"}},
		{name: "a syntax error is reported by offset only",
			data:     map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"quay.io":{"password":"` + secretPassword + `"` + secretPassword + `}}}`)},
			patterns: []string{"quay.io"}, want: ReasonInvalidJSON, wantInMessage: []string{"syntax error at byte"}},
		{name: "a document that is not an object is invalid JSON",
			data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`["` + secretPassword + `"]`)}, want: ReasonInvalidJSON},
		{name: "HttpHeaders of the wrong type is invalid as for the kubelet",
			data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{},"HttpHeaders":1}`)}, want: ReasonInvalidJSON},
		{name: "missing .dockerconfigjson", data: map[string][]byte{"token": []byte(secretPassword)},
			want: ReasonMissingData, wantInMessage: []string{corev1.DockerConfigJsonKey}},
		{name: "legacy dockercfg type is the wrong type", typ: corev1.SecretTypeDockercfg,
			data: map[string][]byte{corev1.DockerConfigKey: []byte(`{"quay.io":{"auth":"` + goodAuth + `"}}`)},
			want: ReasonWrongType, wantInMessage: []string{string(corev1.SecretTypeDockercfg)}},
		{name: "opaque is the wrong type", typ: corev1.SecretTypeOpaque, data: dockerConfig(entry("quay.io")),
			patterns: []string{"quay.io"}, want: ReasonWrongType},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

func TestCheckKeysAreSortedAndBounded(t *testing.T) {
	var auths []string
	for _, host := range []string{"c.example.com", "a.example.com", "b.example.com"} {
		auths = append(auths, `"`+host+`":{}`)
	}
	got := Check(corev1.SecretTypeDockerConfigJson, dockerConfig(strings.Join(auths, ",")), patterns(t, "quay.io"))
	if diff := cmp.Diff([]string{"a.example.com", "b.example.com", "c.example.com"}, got.Keys); diff != "" {
		t.Errorf("Keys (-want +got):\n%s", diff)
	}

	auths = auths[:0]
	for i := range 50 {
		auths = append(auths, `"r`+strings.Repeat("x", 200)+string(rune('a'+i%26))+string(rune('a'+i/26))+`.example.com":{}`)
	}
	got = Check(corev1.SecretTypeDockerConfigJson, dockerConfig(strings.Join(auths, ",")), patterns(t, "quay.io"))
	if got.Reason != ReasonNoMatchingKey || !strings.Contains(got.Message, "and 40 more") {
		t.Errorf("got %q %q, want no_matching_key listing 10 keys and 40 more", got.Reason, got.Message)
	}
	// Ten keys of at most redact.MaxLen bytes, quoted, and the text around them.
	if bound := maxKeysShown*(redact.MaxLen+4) + 200; len(got.Message) > bound {
		t.Errorf("message is %d bytes long, want at most %d", len(got.Message), bound)
	}

	// Why a key is never used quotes its path, which must not make the message unbounded either.
	auths = auths[:0]
	for i := range 10 {
		auths = append(auths, `"r.example.com/`+string(rune('a'+i))+strings.Repeat("X", 10000)+`":{}`)
	}
	got = Check(corev1.SecretTypeDockerConfigJson, dockerConfig(strings.Join(auths, ",")), patterns(t, "quay.io"))
	if got.Reason != ReasonNoMatchingKey || !strings.Contains(got.Message, "never used: path") {
		t.Errorf("got %q %q, want no_matching_key saying why the keys are never used", got.Reason, got.Message)
	}
	// Ten keys and why each is never used, both of at most redact.MaxLen bytes, and the text around them.
	if bound := maxKeysShown*(2*redact.MaxLen+20) + 200; len(got.Message) > bound {
		t.Errorf("message is %d bytes long, want at most %d", len(got.Message), bound)
	}
}

func TestPatternsFor(t *testing.T) {
	m, err := config.NewMatcher(&config.Config{Registries: []config.Registry{
		{Registry: "quay.io", Secret: config.SecretRef{Namespace: "src", Name: "quay"}},
		{Registry: "ghcr.io", Secret: config.SecretRef{Namespace: "src", Name: "ghcr"}},
		{Registry: "quay.io:443", Secret: config.SecretRef{Namespace: "src", Name: "quay"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range PatternsFor(m, config.SecretRef{Namespace: "src", Name: "quay"}) {
		got = append(got, p.String())
	}
	if diff := cmp.Diff([]string{"quay.io", "quay.io:443"}, got); diff != "" {
		t.Errorf("PatternsFor (-want +got):\n%s", diff)
	}
}

func TestReasonsAreComplete(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range reasons {
		if seen[r] {
			t.Errorf("reason %q listed twice", r)
		}
		seen[r] = true
	}
	if len(seen) != 8 {
		t.Errorf("reasons has %d entries, want 8", len(seen))
	}
}

// assertNoSecret fails when msg contains any of the secrets.
func assertNoSecret(t *testing.T, msg string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("message contains secret data %q: %s", s, msg)
		}
	}
}

func TestForImage(t *testing.T) {
	tests := []struct {
		name           string
		typ            corev1.SecretType
		data           map[string][]byte
		repository     string
		wantOffered    []string
		wantCredential bool
	}{
		{name: "matching key with a credential", data: dockerConfig(entry("quay.io") + "," + entry("ghcr.io")),
			repository: "quay.io/team/app", wantOffered: []string{"quay.io"}, wantCredential: true},
		{name: "narrow key does not serve another image of a wildcard entry", data: dockerConfig(entry("a.example.com")),
			repository: "b.example.com/app"},
		{name: "matching key without a credential", data: dockerConfig(`"quay.io":{"identitytoken":"` + secretPassword + `"}`),
			repository: "quay.io/app", wantOffered: []string{"quay.io"}},
		{name: "a matching key shadows the index.docker.io fallback",
			data:       dockerConfig(`"docker.io/myorg":{},` + entry("https://index.docker.io/v1/")),
			repository: "docker.io/myorg/app", wantOffered: []string{"docker.io/myorg"}},
		{name: "the fallback serves other Docker Hub images", data: dockerConfig(`"docker.io/myorg":{},` + entry("https://index.docker.io/v1/")),
			repository: "docker.io/library/nginx", wantOffered: []string{"https://index.docker.io/v1/"}, wantCredential: true},
		{name: "a refused secret offers nothing", data: dockerConfig(entry("quay.io") + `,"x.io":{"auth":"!"}`),
			repository: "quay.io/app"},
		{name: "the wrong type offers nothing", typ: corev1.SecretTypeOpaque, data: dockerConfig(entry("quay.io")),
			repository: "quay.io/app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := tt.typ
			if typ == "" {
				typ = corev1.SecretTypeDockerConfigJson
			}
			offered, credential := ForImage(typ, tt.data, tt.repository)
			if diff := cmp.Diff(tt.wantOffered, offered); diff != "" {
				t.Errorf("offered (-want +got):\n%s", diff)
			}
			if credential != tt.wantCredential {
				t.Errorf("credential = %v, want %v", credential, tt.wantCredential)
			}
		})
	}
}

func TestRefused(t *testing.T) {
	refused := map[Reason]bool{ReasonWrongType: true, ReasonMissingData: true, ReasonInvalidJSON: true, ReasonInvalidAuth: true}
	for _, r := range reasons {
		if got := (Result{Reason: r}).Refused(); got != refused[r] {
			t.Errorf("Result{Reason: %q}.Refused() = %v, want %v", r, got, refused[r])
		}
	}
}

func TestQuoteKeys(t *testing.T) {
	names := []string{strings.Repeat("a", 300) + ".example.com"}
	for i := range 11 {
		names = append(names, string(rune('b'+i))+".example.com")
	}
	want := `"` + strings.Repeat("a", redact.MaxLen-3) + `...", "b.example.com", "c.example.com", "d.example.com", "e.example.com", ` +
		`"f.example.com", "g.example.com", "h.example.com", "i.example.com", "j.example.com", and 2 more`
	if diff := cmp.Diff(want, QuoteKeys(names)); diff != "" {
		t.Errorf("QuoteKeys (-want +got):\n%s", diff)
	}
	if got := QuoteKeys(names[1:3]); got != `"b.example.com", "c.example.com"` {
		t.Errorf("QuoteKeys of two keys = %s", got)
	}
	// A quote in a key is escaped, so that one key cannot pass for two.
	if got := QuoteKeys([]string{`a.io", "b.io`}); got != `"a.io\", \"b.io"` {
		t.Errorf("QuoteKeys of a key with quotes = %s", got)
	}
}

// TestNoCredentialInOutput plants credentials where a Secret's author can put them besides the auths values:
// in a key's user information (which the kubelet drops and uses the rest of the key) and its query, in
// every shape url.Parse or a person would take for one. No message, key list or QuoteKeys text may show
// them, whatever the outcome of the check.
func TestNoCredentialInOutput(t *testing.T) {
	tests := []checkCase{
		{name: "user information in a key that serves the entry", data: dockerConfig(entry("https://robot:" + secretPassword + "@quay.io")),
			patterns: []string{"quay.io"}, want: ReasonOK},
		{name: "user information in a key listed as not matching", data: dockerConfig(entry("https://robot:" + secretPassword + "@other.example.com")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`"https://<redacted>@other.example.com"`}},
		{name: "user information in a key without a scheme", data: dockerConfig(entry("robot:" + secretPassword + "@other.example.com:5000/team")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`"<redacted>@other.example.com:5000/team"`}},
		{name: "a user name alone", data: dockerConfig(entry(secretPassword + "@other.example.com")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey},
		{name: "a percent-encoded password", data: dockerConfig(entry("https://robot:" + encodedPassword + "@other.example.com")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey},
		{name: "several '@'", data: dockerConfig(entry("https://robot@x:" + secretPassword + "@other.example.com")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey},
		{name: "a password with '/' makes a key the kubelet cannot parse", data: dockerConfig(entry("robot:" + secretPassword + "/x@quay.io")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{"never used"}},
		{name: "a password with a space makes a key the kubelet cannot parse", data: dockerConfig(entry("https://robot:" + secretPassword + " x@quay.io")),
			patterns: []string{"quay.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{"never used: the kubelet cannot parse it as a URL"}},
		{name: "user information in a key whose path never matches", data: dockerConfig(entry("https://robot:" + secretPassword + "@quay.io/Team")),
			patterns: []string{"ghcr.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`"https://<redacted>@quay.io/Team" (never used: path "/Team" never matches`}},
		{name: "a token in a key's query", data: dockerConfig(entry("quay.io/team?token=" + secretPassword)),
			patterns: []string{"ghcr.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`"quay.io/team?<redacted>"`}},
		{name: "a key with user information and no credential", data: dockerConfig(`"https://robot:` + secretPassword + `@quay.io":{}`),
			patterns: []string{"quay.io"}, want: ReasonEmptyCredentials},
		{name: "a key with user information and a bad auth value", data: dockerConfig(`"https://robot:` + secretPassword + `@quay.io":{"auth":"!"}`),
			patterns: []string{"quay.io"}, want: ReasonInvalidAuth, wantInMessage: []string{`"https://<redacted>@quay.io"`}},
		{name: "a key with user information and a value of the wrong type", data: dockerConfig(`"https://robot:` + secretPassword + `@quay.io":{"password":1}`),
			patterns: []string{"quay.io"}, want: ReasonInvalidJSON},
		{name: "a narrow key with user information", data: dockerConfig(entry("robot:" + secretPassword + "@a.example.com")),
			patterns: []string{"*.example.com"}, want: ReasonPartial, wantInMessage: []string{`"<redacted>@a.example.com"`}},
		{name: "a Secret type with user information", typ: corev1.SecretType("robot:" + secretPassword + "@example.com/x"),
			data: dockerConfig(entry("quay.io")), patterns: []string{"quay.io"}, want: ReasonWrongType},
		{name: "control characters in a key are escaped", data: dockerConfig(entry(`quay.io\n\u001b[2K\u202eevil`)),
			patterns: []string{"ghcr.io"}, want: ReasonNoMatchingKey, wantInMessage: []string{`\n\x1b[2K\u202eevil`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// assertPrintable fails when text is not UTF-8 or has a character that can break a log line or reorder
// what a terminal shows.
func assertPrintable(t *testing.T, text string) {
	t.Helper()
	if !utf8.ValidString(text) {
		t.Errorf("text is not UTF-8: %q", text)
	}
	for _, r := range text {
		if !strconv.IsPrint(r) {
			t.Errorf("text has the character %U: %q", r, text)
		}
	}
}
