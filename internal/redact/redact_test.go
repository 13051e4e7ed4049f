package redact

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

func TestText(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "a host is kept", in: "quay.io", want: "quay.io"},
		{name: "scheme, host, port and path are kept", in: "https://registry.example.com:5000/v1/team-a", want: "https://registry.example.com:5000/v1/team-a"},
		{name: "user and password after a scheme", in: "https://robot:hunter2@quay.io", want: "https://<redacted>@quay.io"},
		{name: "user and password without a scheme, as the kubelet reads it", in: "robot:hunter2@quay.io", want: "<redacted>@quay.io"},
		{name: "a user alone", in: "robot@quay.io", want: "<redacted>@quay.io"},
		{name: "with a port and a path", in: "robot:hunter2@registry.example.com:5000/team-a", want: "<redacted>@registry.example.com:5000/team-a"},
		{name: "percent-encoded password", in: "https://robot:hunt%65r%402@quay.io", want: "https://<redacted>@quay.io"},
		{name: "several '@': the last ends the user information, as in url.Parse", in: "https://a@b:hunter2@quay.io", want: "https://<redacted>@quay.io"},
		{name: "an '@' in the password", in: "robot:hun@ter2@quay.io", want: "<redacted>@quay.io"},
		{name: "an encoded '@' as the separator", in: "robot:hunter2%40quay.io", want: "<redacted>%40quay.io"},
		{name: "a password with '/' that url.Parse refuses", in: "https://robot:hun/ter2@quay.io", want: "https://<redacted>@quay.io"},
		{name: "a password with '?' that url.Parse refuses: the host may be a query", in: "robot:hun?ter2@quay.io", want: "<redacted>"},
		{name: "a password with a space and a quote that url.Parse refuses", in: `robot:hun "ter2@quay.io`, want: "<redacted>@quay.io"},
		{name: "a password with a newline", in: "robot:hun\nter2@quay.io", want: "<redacted>@quay.io"},
		{name: "a scheme that is not http", in: "ftp://robot:hunter2@quay.io", want: "ftp://<redacted>@quay.io"},
		{name: "a scheme inside the user information is not kept", in: "robot:hunter2://x@quay.io", want: "<redacted>@quay.io"},
		{name: "a second scheme after the user information", in: "https://robot:hunter2@x://y@quay.io", want: "https://<redacted>@quay.io"},
		{name: "a query", in: "quay.io/team?token=hunter2", want: "quay.io/team?<redacted>"},
		{name: "an empty query", in: "quay.io/team?", want: "quay.io/team?<redacted>"},
		{name: "a fragment", in: "quay.io/team#hunter2", want: "quay.io/team#<redacted>"},
		{name: "user information and a query", in: "https://robot:hunter2@quay.io/team?token=hunter2", want: "https://<redacted>@quay.io/team?<redacted>"},
		{name: "an '@' in the query: what follows may be a query or a host", in: "quay.io/team?email=robot@example.com", want: "<redacted>"},
		{name: "an '@' in the fragment", in: "https://quay.io#a@hunter2", want: "https://<redacted>"},
		{name: "an error that quotes a path with an '@'", in: `path "/a:hunter2@b" never matches`, want: `<redacted>@b" never matches`},
		{name: "control characters are escaped", in: "quay.io\n\x1b[31m\t\x7f", want: `quay.io\n\x1b[31m\t\x7f`},
		{name: "invalid UTF-8 is escaped", in: "quay\xff.io", want: `quay\xff.io`},
		{name: "bidirectional overrides are escaped", in: "quay.io\u202eoi.yauq", want: `quay.io\u202eoi.yauq`},
		{name: "printable non-ASCII is kept", in: "régistry.example.com", want: "régistry.example.com"},
		{name: "quotes and backslashes are kept", in: `a"b\c`, want: `a"b\c`},
		{name: "long text is cut with an ellipsis", in: strings.Repeat("a", 300), want: strings.Repeat("a", MaxLen-3) + "..."},
		{name: "text of exactly the bound is kept", in: strings.Repeat("a", MaxLen), want: strings.Repeat("a", MaxLen)},
		{name: "a long password before the host is removed, not cut", in: "robot:" + strings.Repeat("p", 1000) + "@quay.io", want: "<redacted>@quay.io"},
		{name: "a cut never splits a rune", in: strings.Repeat("a", MaxLen-4) + "é" + strings.Repeat("b", 10), want: strings.Repeat("a", MaxLen-4) + "..."},
		{name: "a cut never leaves half an escape of a split rune", in: strings.Repeat("a", MaxLen) + "é", want: strings.Repeat("a", MaxLen-3) + "..."},
		{name: "empty", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Text(tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Text(%q) (-want +got):\n%s", tt.in, diff)
			}
			checkText(t, got)
		})
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{name: "short text is kept", in: "abc", n: 3, want: "abc"},
		{name: "long text ends with an ellipsis", in: "abcdef", n: 5, want: "ab..."},
		{name: "a rune is never split", in: "aé€€", n: 7, want: "aé..."},
		{name: "a rune that fits is kept", in: "é€xyzw", n: 8, want: "é€..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Cut(tt.in, tt.n)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Cut(%q, %d) (-want +got):\n%s", tt.in, tt.n, diff)
			}
			if len(got) > tt.n || !utf8.ValidString(got) {
				t.Errorf("Cut(%q, %d) = %q: longer than %d bytes or not UTF-8", tt.in, tt.n, got, tt.n)
			}
		})
	}
}

// FuzzText checks that Text removes a password planted in the user information or the query of a key of
// any shape, and that what it returns is always bounded, printable, UTF-8 and a fixed point of Text.
func FuzzText(f *testing.F) {
	f.Add("https://", "robot", "pw", "quay.io", "/team", "")
	f.Add("", "robot", "pw", "registry.example.com:5000", "/v2/team-a", "x=1")
	f.Add("", "", "p@ss/w?rd", "quay.io", "", "")
	f.Add("http://", "a@b", "%40", "[::1]:5000", "/", "token=")
	f.Add("", "r\x00bot", "p\xffw\u202e", "quay.io", "/a@b", "#frag")
	f.Fuzz(func(t *testing.T, scheme, user, password, host, path, query string) {
		password = fixtures.PlantSecret(t, password, scheme, user, host, path, query)
		for _, key := range []string{
			scheme + user + ":" + password + "@" + host + path,
			scheme + url.UserPassword(user, password).String() + "@" + host + path,
			scheme + host + path + "?" + query + password,
			scheme + host + path + "#" + password,
			scheme + user + ":" + password + "@" + host + path + "?" + query + password,
		} {
			got := Text(key)
			if strings.Contains(got, fixtures.SecretMarker) {
				t.Fatalf("Text(%q) = %q shows the password", key, got)
			}
			checkText(t, got)
		}
		// Any text at all, such as an error that quotes a key.
		checkText(t, Text(scheme+user+password+host+path+query))
	})
}

// checkText fails unless s has the properties of every result of Text.
func checkText(t *testing.T, s string) {
	t.Helper()
	if len(s) > MaxLen {
		t.Errorf("Text returned %d bytes, more than MaxLen", len(s))
	}
	if !utf8.ValidString(s) {
		t.Errorf("Text returned %q, which is not UTF-8", s)
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') {
			t.Errorf("Text returned %q, which has the control character %U", s, r)
		}
	}
	// Every separator left is the one after the marker, which nothing but a scheme precedes.
	if i := lastSeparator(s); i >= 0 {
		before := s[:i]
		if !strings.HasSuffix(before, Marker) || scheme.FindString(s)+Marker != before {
			t.Errorf("Text returned %q, which keeps something before an '@'", s)
		}
	}
	if again := Text(s); again != s {
		t.Errorf("Text(%q) = %q, want it unchanged", s, again)
	}
}
