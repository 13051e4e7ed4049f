package policy

import (
	"fmt"
	"strings"
)

// The grammar of github.com/distribution/reference (v0.6.0, regexp.go), which config.NormalizeImage
// parses with, split where ParseNormalizedNamed splits the image: the domain, then the rest.
const (
	// pathComponent is one path component: lowercase alphanumerics joined by '.', '_', "__" or dashes.
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
	// domainAndPort is a domain name or a bracketed IPv6 address, with an optional port.
	domainAndPort = `(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?`
	// tag is a tag, at most 128 characters.
	tag = `[\w][\w.-]{0,127}`
	// digest is the digests go-digest parses: a registered algorithm and its lowercase hex encoding
	// of the right length. The grammar allows more, but digest.Parse refuses the rest.
	digest = `sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}`
	// maxPath is reference.RepositoryNameTotalLengthMax, the limit on the path (the name without its
	// domain).
	maxPath = 255
)

// maxSuffix is the longest tag and digest: ':', 128 characters, '@', "sha512:" and 128 hex digits.
const maxSuffix = 1 + 128 + 1 + len("sha512:") + 128

// pathRegexp matches a remote name; suffixRegexp what may follow it: an optional tag, then an optional
// digest.
var (
	pathRegexp   = `^` + pathComponent + `(?:/` + pathComponent + `)*$`
	suffixRegexp = `^(?::` + tag + `)?(?:@(?:` + digest + `))?$`
)

// referencesExpression splits every image of variables.images as ParseNormalizedNamed does, into
// [domain, path, suffix] where suffix is the tag and digest, leaving out the image IDs it refuses (64
// lowercase hex digits):
//
//   - a name without '/' is docker.io/library/<name>;
//   - otherwise the first component is the domain if it is localhost, contains '.' or ':', or is not
//     lowercase, with index.docker.io read as docker.io; any other first component puts the whole image
//     on docker.io;
//   - a Docker Hub name of one component gets library/;
//   - the path ends at the first ':' or '@', which a remote name cannot hold.
//
// Only cutting happens here, each string scanned a fixed number of times; repositoriesExpression
// validates the parts.
var referencesExpression = strings.Join([]string{
	`variables.images.filter(s, !(size(s) == 64 && s.matches('^[a-f0-9]{64}$')))`,
	// [first component or docker.io, the rest, image]
	`.map(s, s.indexOf('/') < 0 ? ['docker.io', 'library/' + s, s] : [s.substring(0, s.indexOf('/')), s.substring(s.indexOf('/') + 1), s])`,
	// [domain, remainder]
	`.map(p, p[0] == 'localhost' || p[0] == 'index.docker.io' || p[0].contains('.') || p[0].contains(':') || p[0].lowerAscii() != p[0] ?
  [p[0] == 'index.docker.io' ? 'docker.io' : p[0], (p[0] == 'index.docker.io' || p[0] == 'docker.io') && !p[1].contains('/') ? 'library/' + p[1] : p[1]] :
  ['docker.io', p[2].contains('/') ? p[2] : 'library/' + p[2]])`,
	// [domain, path, remainder], then [domain, path, suffix]
	`.map(r, [r[0], r[1].find('^[^:@]*'), r[1]])`,
	`.map(r, [r[0], r[1], r[2].substring(size(r[1]))])`,
}, "\n")

// repositoriesExpression lists the repositories of variables.references as config.NormalizeImage
// returns them, leaving out the images it refuses, which match nothing. An image is kept when its path
// is a remote name of at most 255 characters (reference.RepositoryNameTotalLengthMax), its suffix a tag
// and a digest go-digest accepts, and its domain a domain, or a path component (reference.Parse then
// reads the whole name as the path, "my_reg.io/app", and the limit applies to all of it). Uppercase in
// the remote name is refused by the path's grammar, as ParseNormalizedNamed refuses it.
//
// Lengths are checked before patterns, so every pattern but the domain's runs on a bounded string: the
// cost of a Pod grows with its images' domains only.
var repositoriesExpression = fmt.Sprintf(`variables.references.filter(r, size(r[1]) <= %d && size(r[2]) <= %d &&
  r[1].matches(%s) && r[2].matches(%s) &&
  (r[0].matches(%s) || size(r[0]) + 1 + size(r[1]) <= %d && r[0].matches(%s)))
.map(r, r[0] + '/' + r[1])`, maxPath, maxSuffix, quote(pathRegexp), quote(suffixRegexp),
	quote(`^`+domainAndPort+`$`), maxPath, quote(`^`+pathComponent+`$`))
