// Package ttl is a map whose entries expire and whose memory is bounded in bytes: what the process
// remembers of answers it paid an API call for, where the keys and values come from objects or requests
// anyone can make.
package ttl

import (
	"container/list"
	"sync"
	"time"
	"unsafe"
)

// EntryOverhead is what the cache counts for an entry besides its key and its value: the map slot (with
// the room a growing map keeps spare), the list element and the expiry measure about 190 bytes
// (TestCacheBytesCoverTheHeap), and counting them keeps a flood of tiny entries bounded too.
const EntryOverhead = 256

// Cache maps keys to values for TTL each and holds at most MaxBytes of them, as Size and EntryOverhead
// count them. An entry goes away when it has expired and the cache is next used, or, oldest first, when a
// new entry would not fit: ever new keys cost a few repeated answers, never memory past MaxBytes. The
// zero value holds nothing; set TTL and MaxBytes. It is safe for concurrent use.
type Cache[V any] struct {
	// TTL is how long an entry answers.
	TTL time.Duration
	// MaxBytes bounds the bytes the entries hold: their keys, what Size says of their values, and
	// EntryOverhead each. An entry larger than MaxBytes is not kept.
	MaxBytes int
	// MaxEntryBytes, when set, is the most one entry may take, counted as for MaxBytes: a larger one is not
	// kept, so that no one entry pushes out most of the others.
	MaxEntryBytes int
	// Size returns the bytes a value holds outside its fixed part (the strings and slices it points to);
	// nil counts none, which is right for values without pointers (bool, int, small structs of them).
	Size func(V) int
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]*list.Element
	// order holds the entries oldest first: every entry lives TTL, so the oldest expires first.
	order list.List
	used  int
}

type entry[V any] struct {
	key     string
	value   V
	expires time.Time
	cost    int
}

// Get returns the value of key and true while its entry has not expired.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.expire(now)
	var zero V
	el, ok := c.entries[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*entry[V])
	if !now.Before(e.expires) {
		c.remove(el)
		return zero, false
	}
	return e.value, true
}

// Put sets key to v for TTL, making room by dropping expired entries, then the oldest.
func (c *Cache[V]) Put(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	cost := EntryOverhead + int(unsafe.Sizeof(v)) + len(key)
	if c.Size != nil {
		cost += c.Size(v)
	}
	if cost > c.MaxBytes || (c.MaxEntryBytes > 0 && cost > c.MaxEntryBytes) {
		return
	}
	now := c.now()
	c.expire(now)
	for c.used+cost > c.MaxBytes {
		c.remove(c.order.Front())
	}
	if c.entries == nil {
		c.entries = map[string]*list.Element{}
	}
	c.entries[key] = c.order.PushBack(&entry[V]{key: key, value: v, expires: now.Add(c.TTL), cost: cost})
	c.used += cost
}

// Len returns the number of entries, expired ones not yet dropped included.
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Bytes returns the bytes the entries hold as the cache counts them; never more than MaxBytes.
func (c *Cache[V]) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used
}

// Clear drops every entry.
func (c *Cache[V]) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = nil
	c.order.Init()
	c.used = 0
}

// expire drops the expired entries at the front.
func (c *Cache[V]) expire(now time.Time) {
	for el := c.order.Front(); el != nil && !now.Before(el.Value.(*entry[V]).expires); el = c.order.Front() {
		c.remove(el)
	}
}

func (c *Cache[V]) remove(el *list.Element) {
	e := el.Value.(*entry[V])
	c.order.Remove(el)
	delete(c.entries, e.key)
	c.used -= e.cost
}

func (c *Cache[V]) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
