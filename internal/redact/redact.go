// Package redact turns text derived from a source Secret's bytes (an auths key of a dockerconfigjson, the
// error of parsing one, the Secret's type) into text fit for an admission warning, an Event, a log line, a
// metric label, an error or the report of `pullsecret-injector check`.
//
// An auths key is a URL to the kubelet, which silently drops its user information, query and fragment; a
// key such as "https://robot:pw@quay.io" works, and quoting it whole would show the password to every
// tenant whose Pod gets a warning about it. Text is the one path such strings take into any output.
package redact

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds, in bytes, what Text returns: an auths key, or the reason one is never used, in full in
// practice, while ten of them keep a message within a few kilobytes.
const MaxLen = 256

// Marker stands in for what Text removes.
const Marker = "<redacted>"

// ellipsis ends text that Text or Cut shortened.
const ellipsis = "..."

// scheme is a URL scheme at the start of a key (RFC 3986 section 3.1), kept by Text because it is no
// credential and says how the kubelet reads the rest.
var scheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://`)

// Text returns s with anything that may be user information or a query removed, non-printable characters
// escaped, and cut to at most MaxLen bytes of valid UTF-8. Text(Text(s)) == Text(s).
//
// User information is everything before the last '@' (or "%40"), after a leading scheme if there is one:
// that covers what url.Parse, and so the kubelet, takes as user information in "https://u:p@host",
// "u:p@host:5000/path" (the kubelet puts "https://" in front of a key without a scheme), several '@' (the
// last one ends it) and percent-encoded passwords, and also keys url.Parse refuses because the password
// has a character user information may not hold (a space, a quote, '/'): a person wrote a password there
// all the same. A query or a fragment, which the kubelet drops and which may carry a token, goes from its
// '?' or '#' on. When a '?' or '#' comes before the last '@', the '@' may be in a query or the '?' in a
// password, so only the scheme is left. Text thus removes more than user information from a key, or an
// error that quotes one, with an '@' in its path; such a key never matches an image anyway.
func Text(s string) string {
	// Everything that removes text runs before the cut, which could otherwise cut a separator off and
	// leave the password in front of it.
	if sep := lastSeparator(s); sep >= 0 {
		start := len(scheme.FindString(s))
		if q := strings.IndexAny(s, "?#"); q >= 0 && q < sep {
			// Either the '@' is in a query ("host?x=a@b") or the '?' in a password ("u:p?w@host"): what
			// follows the '@' may be either, so nothing but the scheme is shown.
			s = s[:start] + Marker
		} else {
			s = s[:start] + Marker + s[sep:]
		}
	}
	if q := strings.IndexAny(s, "?#"); q >= 0 {
		s = s[:q+1] + Marker
	}
	// Escaping never shortens, so MaxLen+1 bytes of s are enough to know that the result must be cut.
	if len(s) > MaxLen+1 {
		s = s[:MaxLen+1]
	}
	return Cut(escape(s), MaxLen)
}

// lastSeparator returns the index of the last '@' or "%40" in s, or -1.
func lastSeparator(s string) int {
	return max(strings.LastIndexByte(s, '@'), strings.LastIndex(s, "%40"))
}

// escape writes every rune that is not printable (control characters, line and paragraph separators,
// bidirectional overrides) and every byte that is not UTF-8 as a Go escape, so that the text cannot
// break a log line or reorder what a terminal shows. Quotes and backslashes are kept, so that escaping
// twice changes nothing.
func escape(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(s[i])&0xf, 16))
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

// Cut returns s if it has at most n bytes, and otherwise its longest prefix that, followed by "...", has at
// most n bytes and does not end inside a UTF-8 sequence. n must be at least 3.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	end := n - len(ellipsis)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + ellipsis
}
