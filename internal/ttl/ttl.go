// Package ttl is a bounded map whose entries expire: what the process remembers of answers it paid an API
// call for, where the keys come from objects or requests anyone can make.
package ttl

import (
	"sync"
	"time"
)

// Cache maps keys to values for TTL each, and holds at most Max entries: a full cache starts over, which
// costs a few repeated answers and cannot be grown by ever new keys. The zero value is unusable; set TTL
// and Max. It is safe for concurrent use.
type Cache[V any] struct {
	// TTL is how long an entry answers.
	TTL time.Duration
	// Max bounds the entries.
	Max int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]entry[V]
}

type entry[V any] struct {
	value   V
	expires time.Time
}

// Get returns the value of key and true while its entry has not expired.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.value, true
}

// Put sets key to v for TTL.
func (c *Cache[V]) Put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= c.Max {
		c.entries = map[string]entry[V]{}
	}
	c.entries[key] = entry[V]{value: v, expires: c.now().Add(c.TTL)}
}

// Len returns the number of entries, expired ones included.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *Cache[V]) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
