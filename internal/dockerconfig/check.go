// Package dockerconfig decides whether a source Secret can give the kubelet a credential for the images of
// the configuration entries that name it. It reads the Secret the way the kubelet does (pkg/credentialprovider:
// the dockerconfigjson "auths" map, each key a credential pattern, each value's "auth" or
// "username"/"password") and matches keys with the project's kubelet-compatible patterns.
//
// It is pure and meant for when a source changes, not for every admission. Messages name entries and the
// auths keys (registry hosts) but never a credential: every string taken from the Secret (a key, the
// error of parsing one, the Secret's type) goes through redact.Text, which removes a key's user
// information and query (the kubelet drops both and uses the rest, so "https://robot:pw@quay.io" is a
// working key), and JSON errors are reduced to their kind and offset, because encoding/json messages can
// quote the input.
package dockerconfig

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/pullsecret-injector/pullsecret-injector/config"
	"github.com/pullsecret-injector/pullsecret-injector/internal/redact"
)

// Reason is a machine-friendly outcome of Check, from the fixed set reasons: fit for a metric label.
type Reason string

const (
	// ReasonOK means every entry's images get a non-empty credential from the Secret.
	ReasonOK Reason = "ok"
	// ReasonPartial means every entry gets a non-empty credential for some of its images but not, or not
	// provably, for all: a key narrower than its entry, such as "a.example.com" for "*.example.com". The
	// result is still OK, since such a Secret is a common and deliberate setup.
	ReasonPartial Reason = "partial_match"
	// ReasonWrongType means the Secret is not of type kubernetes.io/dockerconfigjson.
	ReasonWrongType Reason = "wrong_type"
	// ReasonMissingData means the Secret has no .dockerconfigjson key, or an empty one.
	ReasonMissingData Reason = "missing_data"
	// ReasonInvalidJSON means .dockerconfigjson does not decode as a Docker config; the kubelet refuses
	// the whole Secret, and with it every pull of a Pod that references it.
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonInvalidAuth means an "auth" value is not base64 of "username:password"; the kubelet refuses
	// the whole Secret too.
	ReasonInvalidAuth Reason = "invalid_auth"
	// ReasonNoMatchingKey means an entry's images match no auths key: the kubelet offers nothing.
	ReasonNoMatchingKey Reason = "no_matching_key"
	// ReasonEmptyCredentials means the keys that match an entry's images carry no username or password,
	// so the kubelet pulls as if anonymously.
	ReasonEmptyCredentials Reason = "empty_credentials"
)

// reasons is every Reason Check returns; the tests hold Check to it.
var reasons = []Reason{
	ReasonOK, ReasonPartial, ReasonWrongType, ReasonMissingData, ReasonInvalidJSON, ReasonInvalidAuth,
	ReasonNoMatchingKey, ReasonEmptyCredentials,
}

// maxKeysShown bounds how many auths keys a message lists, so that a Secret with thousands of keys does
// not make an unbounded Event or log line. redact.Text bounds each key, and why it is never used.
const maxKeysShown = 10

// Result is the outcome of Check.
type Result struct {
	// OK is true when the kubelet would get a non-empty credential from the Secret for the entries' images
	// (for ReasonPartial, for some of them).
	OK bool
	// Reason is one of reasons.
	Reason Reason
	// Message says what is wrong, naming the entry patterns and the Secret's auths keys, never a
	// credential.
	Message string
	// Keys are the Secret's auths keys, sorted, as redact.Text shows them: registry hosts and paths,
	// without the user information or query a key may carry.
	Keys []string
}

// Refused reports whether the kubelet uses nothing of the Secret: wrong type, no data, or data it cannot
// decode. Otherwise the Secret's keys are offered as usual, whatever the Reason.
func (r Result) Refused() bool {
	switch r.Reason {
	case ReasonWrongType, ReasonMissingData, ReasonInvalidJSON, ReasonInvalidAuth:
		return true
	default:
		return false
	}
}

// dockerConfigJSON is the kubelet's DockerConfigJSON with the entries kept raw, so that a bad entry can be
// named; the kubelet decodes it with encoding/json too, so field names match case-insensitively alike.
type dockerConfigJSON struct {
	Auths       map[string]json.RawMessage `json:"auths"`
	HTTPHeaders map[string]string          `json:"HttpHeaders,omitempty"`
}

// dockerConfigEntry is the kubelet's dockerConfigEntryWithAuth. The kubelet reads no token fields from a
// pull secret; they are kept raw only to say so.
type dockerConfigEntry struct {
	Username      string          `json:"username,omitempty"`
	Password      string          `json:"password,omitempty"`
	Email         string          `json:"email,omitempty"`
	Auth          string          `json:"auth,omitempty"`
	IdentityToken json.RawMessage `json:"identitytoken,omitempty"`
	RegistryToken json.RawMessage `json:"registrytoken,omitempty"`
}

// authKey is one auths key as the kubelet would use it.
type authKey struct {
	name    string
	pattern config.Pattern
	// parseErr is set for a key the kubelet ignores or that never matches a normalised image.
	parseErr error
	// hasCredential is true when the key yields a non-empty username or password.
	hasCredential bool
	// tokenOnly is true when the key has an identity or registry token but no username or password.
	tokenOnly bool
}

// Check decides whether a Secret of type typ with data gives the kubelet a usable credential for the
// images that patterns match (the registry patterns of the entries that name the Secret). The first
// problem found decides the Reason: a problem with the whole Secret first, then the entries in order.
func Check(typ corev1.SecretType, data map[string][]byte, patterns []config.Pattern) Result {
	keys, failed := parse(typ, data)
	if failed != nil {
		return *failed
	}
	names := shown(keyNames(keys))
	res := Result{OK: true, Reason: ReasonOK, Keys: names}
	var partial []string
	for _, p := range patterns {
		reason, msg := checkPattern(p, keys)
		switch reason {
		case ReasonOK:
		case ReasonPartial:
			partial = append(partial, msg)
		default:
			return fail(reason, names, msg)
		}
	}
	if len(partial) > 0 {
		res.Reason = ReasonPartial
		res.Message = strings.Join(partial, "; ")
	}
	return res
}

// ForImage returns the auths keys whose credentials the kubelet offers for repository (a
// config.NormalizeImage result), as redact.Text shows them, and whether any of them carries a username or
// password. It returns nothing for a Secret that Check fails as a whole (type, data, JSON, auth), since the
// kubelet uses none of it then.
func ForImage(typ corev1.SecretType, data map[string][]byte, repository string) (offered []string, credential bool) {
	keys, failed := parse(typ, data)
	if failed != nil {
		return nil, false
	}
	var usable []authKey
	var patterns []config.Pattern
	for _, k := range keys {
		if k.parseErr == nil {
			usable = append(usable, k)
			patterns = append(patterns, k.pattern)
		}
	}
	for _, i := range config.Lookup(patterns, repository) {
		offered = append(offered, redact.Text(usable[i].name))
		credential = credential || usable[i].hasCredential
	}
	return offered, credential
}

// parse reads the Secret as the kubelet does. A non-nil Result means the kubelet uses none of it.
func parse(typ corev1.SecretType, data map[string][]byte) ([]authKey, *Result) {
	if typ != corev1.SecretTypeDockerConfigJson {
		r := fail(ReasonWrongType, nil, fmt.Sprintf("the Secret has type %s, not %q; the kubelet reads pull secrets of type %q only here",
			quote(string(typ)), corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockerConfigJson))
		return nil, &r
	}
	raw := data[corev1.DockerConfigJsonKey]
	if len(raw) == 0 {
		r := fail(ReasonMissingData, nil, fmt.Sprintf("the Secret has no %s data; the kubelet ignores it", corev1.DockerConfigJsonKey))
		return nil, &r
	}
	var doc dockerConfigJSON
	if err := json.Unmarshal(raw, &doc); err != nil {
		r := fail(ReasonInvalidJSON, nil, fmt.Sprintf("%s is %s; the kubelet refuses the whole Secret and every pull of a Pod that references it",
			corev1.DockerConfigJsonKey, redact.Text(describeJSONError(err))))
		return nil, &r
	}
	names := slices.Sorted(maps.Keys(doc.Auths))
	keys := make([]authKey, 0, len(names))
	for _, name := range names {
		k, reason, msg := parseKey(name, doc.Auths[name])
		if reason != "" {
			r := fail(reason, shown(names), msg)
			return nil, &r
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// shown returns auths keys as redact.Text shows them, for Result.Keys.
func shown(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = redact.Text(n)
	}
	return out
}

func keyNames(keys []authKey) []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.name
	}
	return names
}

// PatternsFor returns the patterns of the entries of m that name ref, in configuration order: what Check
// needs for that source.
func PatternsFor(m *config.Matcher, ref config.SecretRef) []config.Pattern {
	var out []config.Pattern
	for _, e := range m.Entries() {
		if e.Registry.Secret == ref {
			out = append(out, e.Pattern)
		}
	}
	return out
}

func fail(reason Reason, names []string, msg string) Result {
	return Result{Reason: reason, Message: msg, Keys: names}
}

// parseKey decodes one auths entry as the kubelet does. A non-empty reason means the kubelet refuses the
// whole Secret because of it.
func parseKey(name string, raw json.RawMessage) (authKey, Reason, string) {
	k := authKey{name: name}
	var e dockerConfigEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return k, ReasonInvalidJSON, fmt.Sprintf("auths key %s is %s; the kubelet refuses the whole Secret and every pull of a Pod that references it",
			quote(name), redact.Text(describeJSONError(err)))
	}
	username, password := e.Username, e.Password
	if e.Auth != "" {
		var err error
		if username, password, err = decodeAuth(e.Auth); err != nil {
			return k, ReasonInvalidAuth, fmt.Sprintf("the auth value of auths key %s %v; the kubelet refuses the whole Secret and every pull of a Pod that references it",
				quote(name), err)
		}
	}
	k.hasCredential = username != "" || password != ""
	k.tokenOnly = !k.hasCredential && (len(e.IdentityToken) > 0 || len(e.RegistryToken) > 0)
	k.pattern, k.parseErr = config.ParseCredentialKey(name)
	return k, "", ""
}

// decodeAuth is the kubelet's decodeDockerConfigFieldAuth. Its errors never contain the value.
func decodeAuth(field string) (username, password string, err error) {
	var decoded []byte
	// As the kubelet: padded base64 when the value ends in '=', unpadded otherwise.
	if strings.HasSuffix(strings.TrimSpace(field), "=") {
		decoded, err = base64.StdEncoding.DecodeString(field)
	} else {
		decoded, err = base64.RawStdEncoding.DecodeString(field)
	}
	if err != nil {
		return "", "", errors.New("is not valid base64")
	}
	username, password, ok := strings.Cut(string(decoded), ":")
	if !ok {
		return "", "", errors.New("does not decode to username:password")
	}
	return username, password, nil
}

// checkPattern decides for one entry pattern; the message names it.
func checkPattern(p config.Pattern, keys []authKey) (Reason, string) {
	var all, some []authKey
	for _, k := range keys {
		if k.parseErr != nil {
			continue
		}
		switch k.pattern.Covers(p) {
		case config.CoversAll:
			all = append(all, k)
		case config.CoversSome:
			some = append(some, k)
		}
	}
	if len(all) == 0 && len(some) == 0 {
		return ReasonNoMatchingKey, fmt.Sprintf("entry %q: no auths key is used by the kubelet for its images; the keys are %s",
			p.String(), listKeys(keys))
	}
	withCredential := func(ks []authKey) bool {
		return slices.ContainsFunc(ks, func(k authKey) bool { return k.hasCredential })
	}
	switch {
	case withCredential(all):
		return ReasonOK, ""
	case withCredential(some):
		return ReasonPartial, fmt.Sprintf("entry %q: only auths keys %s carry a credential, and they are used for some of its images only",
			p.String(), listKeys(filter(some, func(k authKey) bool { return k.hasCredential })))
	}
	matching := slices.Concat(all, some)
	msg := fmt.Sprintf("entry %q: auths keys %s match its images but carry no username or password", p.String(), listKeys(matching))
	if slices.ContainsFunc(matching, func(k authKey) bool { return k.tokenOnly }) {
		msg += " (the kubelet ignores identitytoken and registrytoken in a pull secret)"
	}
	return ReasonEmptyCredentials, msg
}

func filter(ks []authKey, keep func(authKey) bool) []authKey {
	var out []authKey
	for _, k := range ks {
		if keep(k) {
			out = append(out, k)
		}
	}
	return out
}

// listKeys lists keys for a message: quoted, bounded in number and length, keys the kubelet cannot use
// marked with why, which can quote the key too.
func listKeys(keys []authKey) string {
	if len(keys) == 0 {
		return "none (auths is empty)"
	}
	return quoteList(len(keys), func(i int) string {
		s := quote(keys[i].name)
		if keys[i].parseErr != nil {
			s += " (never used: " + redact.Text(keys[i].parseErr.Error()) + ")"
		}
		return s
	})
}

// QuoteKeys lists auths keys, such as Result.Keys, for a message or a report: through redact.Text, quoted,
// and bounded in number as Check's messages are.
func QuoteKeys(names []string) string {
	return quoteList(len(names), func(i int) string { return quote(names[i]) })
}

// quoteList joins the first maxKeysShown of n items and says how many more there are.
func quoteList(n int, item func(i int) string) string {
	parts := make([]string, 0, min(n, maxKeysShown)+1)
	for i := range min(n, maxKeysShown) {
		parts = append(parts, item(i))
	}
	if n > maxKeysShown {
		parts = append(parts, fmt.Sprintf("and %d more", n-maxKeysShown))
	}
	return strings.Join(parts, ", ")
}

// quote quotes text from the Secret, such as an auths key or a key that redact.Text already showed: Text
// changes nothing the second time. Only the quote is escaped, so that a key cannot pass for several keys
// in a list, and the escapes of Text read as they are.
func quote(name string) string {
	return `"` + strings.ReplaceAll(redact.Text(name), `"`, `\"`) + `"`
}

// describeJSONError describes err without its text, which can quote the input (a SyntaxError names the
// offending character, an UnmarshalTypeError the number it could not store).
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("not valid JSON (syntax error at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("not a Docker config (a JSON %s of the wrong kind at byte %d)", jsonKind(typ.Value), typ.Offset)
	default:
		return "not valid JSON"
	}
}

// jsonKind keeps the kind out of an UnmarshalTypeError's Value, which for a number carries its digits.
func jsonKind(value string) string {
	kind, _, _ := strings.Cut(value, " ")
	switch kind {
	case "string", "number", "bool", "array", "object", "null":
		return kind
	default:
		return "value"
	}
}
