package metrics

import (
	"crypto/sha256"
	"time"

	"github.com/pullsecret-injector/pullsecret-injector/internal/ttl"
)

// digest is what a cache key is made of: the SHA-256 of a token, or of an encoded access question. Keys
// never hold the token itself, and they are the same size whatever the caller sent.
type digest = [sha256.Size]byte

// maxEntryShare is the share of a cache one answer may take at most: an answer over a sixteenth of its
// bound is not kept, so that no one answer pushes out most of the others.
const maxEntryShare = 16

// newAnswerCache returns a cache of review answers for reviewTTL each, keyed by a digest as a string,
// holding at most maxBytes as ttl counts them (its EntryOverhead, the 32-byte key, and size of a value).
func newAnswerCache[V any](maxBytes int, size func(V) int, now func() time.Time) *ttl.Cache[V] {
	return &ttl.Cache[V]{TTL: reviewTTL, MaxBytes: maxBytes, MaxEntryBytes: maxBytes / maxEntryShare, Size: size, Now: now}
}
