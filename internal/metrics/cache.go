package metrics

import (
	"crypto/sha256"
	"sync"
	"time"
)

// digest is a cache key: the SHA-256 of a token, or of an encoded access question. Keys never hold the
// token itself, and they are the same size whatever the caller sent.
type digest = [sha256.Size]byte

// entryOverhead is what the caches count for an entry beyond its value's own bytes: the 32-byte key, the
// expiry, the counted size and the map's slot for them, rounded up.
const entryOverhead = 128

// answerCache maps digests to answers for TTL each and holds at most MaxBytes, counting entryOverhead plus
// Size(value) for an entry. A Put that would pass MaxBytes first drops the expired entries and, if that is
// not enough, starts the cache over: ever new keys cost some repeated answers, never memory. A value larger
// than a sixteenth of MaxBytes is not kept. An entry goes away when it expires and is looked up, when the
// cache starts over, or when a Put drops expired entries. The zero value is unusable; set TTL and MaxBytes.
// It is safe for concurrent use.
type answerCache[V any] struct {
	// TTL is how long an entry answers.
	TTL time.Duration
	// MaxBytes bounds the bytes counted for the entries.
	MaxBytes int
	// Size returns the bytes a value holds beyond its fixed size (the strings it refers to); nil counts none.
	Size func(V) int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	used    int
	entries map[digest]cached[V]
}

type cached[V any] struct {
	value   V
	size    int
	expires time.Time
}

// Get returns the value of key and true while its entry has not expired.
func (c *answerCache[V]) Get(key digest) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && c.now().Before(e.expires) {
		return e.value, true
	}
	if ok {
		delete(c.entries, key)
		c.used -= e.size
	}
	var zero V
	return zero, false
}

// Put sets key to v for TTL.
func (c *answerCache[V]) Put(key digest, v V) {
	size := entryOverhead
	if c.Size != nil {
		size += c.Size(v)
	}
	if size > c.MaxBytes/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if old, ok := c.entries[key]; ok {
		delete(c.entries, key)
		c.used -= old.size
	}
	if c.entries == nil || c.used+size > c.MaxBytes {
		c.dropExpired(now)
	}
	if c.entries == nil || c.used+size > c.MaxBytes {
		c.entries, c.used = map[digest]cached[V]{}, 0
	}
	c.entries[key] = cached[V]{value: v, size: size, expires: now.Add(c.TTL)}
	c.used += size
}

// Bytes returns the bytes counted for the entries, expired ones included.
func (c *answerCache[V]) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

func (c *answerCache[V]) dropExpired(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
			c.used -= e.size
		}
	}
}

func (c *answerCache[V]) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
