package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The alphabets below are every character a host label of a NormalizeImage result can hold, by the form
// of its host. A glob is compiled against the alphabet of each form, so that what a '*' or a class may
// match there is spelled out rather than left to a negated class that would also match a '.', ':' or '/'.
const (
	// domainLabelChars: a distribution/reference domain component, and the '_' of a first path
	// component that reference.Parse reads as part of the path (so "my_reg.io/app" keeps "my_reg.io").
	domainLabelChars = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
	// ipv6Chars: the address of a bracketed host, which the kubelet's SplitHostPort strips of its
	// brackets when a port follows.
	ipv6Chars = "0123456789:ABCDEFabcdef"
	// bracketedChars: a bracketed host without a port, which SplitHostPort leaves whole, brackets
	// included.
	bracketedChars = "0123456789:ABCDEF[]abcdef"
)

// neverRegexp matches no string: an empty character class.
const neverRegexp = `^[^\x00-\x{10FFFF}]`

// ipv6Regexp matches exactly the strings of hex digits and colons that net/netip parses as an IPv6
// address, which is what url.Parse demands of a bracketed host: eight groups of one to four hex digits,
// or fewer around one "::" that stands for at least one group of zeros.
var ipv6Regexp = func() string {
	const h = `[0-9A-Fa-f]{1,4}`
	alts := []string{fmt.Sprintf(`(?:%s:){7}%s`, h, h), ":(?::|(?::" + h + "){1,7})"}
	// before groups, then "::", then after groups, before >= 1, before+after <= 7.
	for before := 1; before <= 7; before++ {
		alt := fmt.Sprintf("(?:%s:){%d}", h, before)
		if before < 7 {
			alt += fmt.Sprintf("(?::|(?::%s){1,%d})", h, 7-before)
		} else {
			alt += ":"
		}
		alts = append(alts, alt)
	}
	return "(?:" + strings.Join(alts, "|") + ")"
}()

// defaultRegistryRegexp is the kubelet's isDefaultRegistryMatch: a name without '/', or one whose first
// component is docker.io, index.docker.io or has neither '.' nor ':'.
const defaultRegistryRegexp = `[^/]+$|[^./:]+/|docker\.io/|index\.docker\.io/`

// Regexp returns an RE2 expression (the syntax of Go's regexp and of CEL's matches()) that matches a
// NormalizeImage result exactly when p.Matches does: one glob per host label that never crosses a '.',
// equal label counts, the port compared as a string, a plain string prefix on the path, bracketed IPv6
// hosts only when they parse, and the index.docker.io fallback. It returns an error, with the reason,
// for a pattern whose matches it cannot express exactly; the zero Pattern compiles to an expression that
// matches nothing.
func (p Pattern) Regexp() (string, error) {
	if p.key == "" {
		return neverRegexp, nil
	}
	var alts []string
	hosts, err := p.hostRegexps()
	if err != nil {
		return "", err
	}
	if len(hosts) > 0 {
		alt := strings.Join(hosts, "|")
		if len(hosts) > 1 {
			alt = "(?:" + alt + ")"
		}
		if p.port != "" {
			alt += ":" + regexp.QuoteMeta(p.port)
		}
		if p.path == "" {
			// Only a name without a path has a host not followed by '/'; no NormalizeImage result is one.
			alt += "(?:/|$)"
		} else {
			alt += regexp.QuoteMeta(p.path)
		}
		alts = append(alts, alt)
	}
	if p.defaultRegistry {
		alts = append(alts, defaultRegistryRegexp)
	}
	switch {
	case len(alts) == 0:
		return neverRegexp, nil
	case len(alts) == 1 && !p.defaultRegistry:
		// One host form, or several already grouped: no alternation at the top.
		return "^" + alts[0], nil
	}
	return "^(?:" + strings.Join(alts, "|") + ")", nil
}

// hostRegexps returns an expression for every form of host the pattern's labels can match: dot-separated
// labels, and for a single label also a bracketed IPv6 address. None when no host can match.
func (p Pattern) hostRegexps() ([]string, error) {
	globs := make([][]globElement, len(p.hostLabels))
	for i, label := range p.hostLabels {
		var err error
		if globs[i], err = globElements(label); err != nil {
			return nil, fmt.Errorf("host label %q is not a valid glob: %w", label, err)
		}
	}
	var out []string
	labels := make([]string, len(globs))
	possible := true
	for i, g := range globs {
		labels[i], possible = globRegexp(g, domainLabelChars)
		if !possible {
			break
		}
	}
	if possible {
		out = append(out, strings.Join(labels, `\.`))
	}
	if len(globs) == 1 {
		re, err := bracketedRegexp(globs[0], p.port != "")
		if err != nil {
			return nil, fmt.Errorf("host %q: %w", p.hostLabels[0], err)
		}
		if re != "" {
			out = append(out, re)
		}
	}
	return out, nil
}

// bracketedRegexp returns the expression for the bracketed IPv6 hosts that glob, a pattern's only host
// label, matches; "" when it matches none. With a port the kubelet compares the address without its
// brackets, without one the whole bracketed host. url.Parse refuses a bracketed host that is not a valid
// IPv6 address, and the kubelet then matches nothing by URL, so what the glob matches must also be an
// address. That intersection is written out for a glob of stars only (any address) and for a fixed
// string; any other glob that could match an address is refused.
func bracketedRegexp(glob []globElement, port bool) (string, error) {
	alphabet := ipv6Chars
	if !port {
		alphabet = bracketedChars
	}
	stars, literal := 0, ""
	for _, e := range glob {
		if e.star {
			stars++
			continue
		}
		set := e.matching(alphabet)
		if set == "" {
			return "", nil
		}
		if len(set) == 1 {
			literal += set
		}
	}
	if !port {
		// The label starts with '[' and ends with ']', which no star-free element other than '[' and ']'
		// can match.
		if first := glob[0]; !first.star && !strings.Contains(first.matching(alphabet), "[") {
			return "", nil
		}
		if last := glob[len(glob)-1]; !last.star && !strings.Contains(last.matching(alphabet), "]") {
			return "", nil
		}
	}
	switch {
	case stars == len(glob):
		return `\[` + ipv6Regexp + `\]`, nil
	case stars == 0 && len(literal) == len(glob):
		address := literal
		if !port {
			if len(literal) < 2 || literal[0] != '[' || literal[len(literal)-1] != ']' {
				return "", nil
			}
			address = literal[1 : len(literal)-1]
		}
		if a, err := netip.ParseAddr(address); err != nil || !a.Is6() || a.Zone() != "" {
			return "", nil
		}
		return `\[` + regexp.QuoteMeta(address) + `\]`, nil
	}
	return "", errors.New("a single host label that mixes '*' with hex digits, ':' or brackets (or uses '?' or a class) " +
		"also matches bracketed IPv6 hosts, but only those that are valid addresses, and that cannot be compiled exactly: " +
		"give the host a second label or drop the wildcard")
}

// globElement is one element of a path.Match pattern: a star, or the text of an element that matches
// exactly one character (a literal byte, an escaped byte, '?' or a class).
type globElement struct {
	star bool
	text string
}

// matching returns the characters of alphabet, an ASCII string, that e matches, in alphabet's order.
func (e globElement) matching(alphabet string) string {
	var b strings.Builder
	for i := 0; i < len(alphabet); i++ {
		c := alphabet[i]
		var ok bool
		switch {
		case e.text == "?":
			ok = c != '/'
		case e.text[0] == '[':
			// A class matches one rune; an ASCII character is one. The glob's syntax was checked.
			ok, _ = path.Match(e.text, string(c))
		case e.text[0] == '\\':
			ok = e.text[1] == c
		default:
			ok = e.text[0] == c
		}
		if ok {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// globElements splits glob as path.Match reads it: runs of stars collapse into one, a literal counts
// byte by byte (path.Match compares bytes), and an escape or a class is one element.
func globElements(glob string) ([]globElement, error) {
	if _, err := path.Match(glob, ""); err != nil {
		return nil, err
	}
	var out []globElement
	for i := 0; i < len(glob); {
		switch glob[i] {
		case '*':
			if len(out) == 0 || !out[len(out)-1].star {
				out = append(out, globElement{star: true})
			}
			i++
		case '\\':
			out = append(out, globElement{text: glob[i : i+2]})
			i += 2
		case '[':
			end := classEnd(glob, i)
			out = append(out, globElement{text: glob[i:end]})
			i = end
		default:
			out = append(out, globElement{text: glob[i : i+1]})
			i++
		}
	}
	return out, nil
}

// classEnd returns the index just past the class that starts at glob[start], which path.Match has found
// well formed.
func classEnd(glob string, start int) int {
	i := start + 1
	if i < len(glob) && glob[i] == '^' {
		i++
	}
	for n := 0; ; n++ {
		if glob[i] == ']' && n > 0 {
			return i + 1
		}
		i = escEnd(glob, i)
		if glob[i] == '-' {
			i = escEnd(glob, i+1)
		}
	}
}

// escEnd returns the index just past the possibly escaped rune at glob[i].
func escEnd(glob string, i int) int {
	if glob[i] == '\\' {
		i++
	}
	_, n := utf8.DecodeRuneInString(glob[i:])
	return i + n
}

// globRegexp returns the expression for the strings over alphabet that glob matches, and false when
// there are none.
func globRegexp(glob []globElement, alphabet string) (string, bool) {
	var b strings.Builder
	for _, e := range glob {
		if e.star {
			b.WriteString(classRegexp(alphabet) + "*")
			continue
		}
		set := e.matching(alphabet)
		if set == "" {
			return "", false
		}
		b.WriteString(classRegexp(set))
	}
	return b.String(), true
}

// classRegexp returns an expression matching one character of set, a sorted ASCII string, as ranges.
func classRegexp(set string) string {
	if len(set) == 1 {
		return regexp.QuoteMeta(set)
	}
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(set); {
		j := i
		for j+1 < len(set) && set[j+1] == set[j]+1 {
			j++
		}
		b.WriteString(classChar(set[i]))
		if j > i+1 {
			b.WriteByte('-')
		}
		if j > i {
			b.WriteString(classChar(set[j]))
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}

func classChar(c byte) string {
	if c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
		return string(c)
	}
	return `\` + string(c)
}

// Regexps returns, in config order, the Regexp of every entry's pattern. The error names every entry
// whose pattern has none, as registries[i].registry, so that a configuration is refused at load rather
// than compiled into something that matches differently from the webhook.
func (m *Matcher) Regexps() ([]string, error) {
	out := make([]string, len(m.entries))
	var errs field.ErrorList
	for i, e := range m.entries {
		re, err := e.Pattern.Regexp()
		if err != nil {
			errs = append(errs, field.Invalid(field.NewPath("registries").Index(e.Index).Child("registry"), e.Registry.Registry, err.Error()))
			continue
		}
		out[i] = re
	}
	if len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return out, nil
}
