package ttl

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pullsecret-injector/pullsecret-injector/test/fixtures"
)

func TestCacheExpires(t *testing.T) {
	now := time.Now()
	c := &Cache[bool]{TTL: time.Minute, MaxBytes: 1 << 10, Now: func() time.Time { return now }}
	c.Put("k", true)
	if v, ok := c.Get("k"); !ok || !v {
		t.Fatal("fresh entry not found")
	}
	now = now.Add(time.Minute)
	if _, ok := c.Get("k"); ok {
		t.Error("entry TTL old still answered")
	}
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Errorf("expired entry still held: %d entries, %d bytes", c.Len(), c.Bytes())
	}
}

// An expired entry is released when the cache is next used, whichever key that use is for.
func TestCacheReleasesExpiredEntries(t *testing.T) {
	now := time.Now()
	c := &Cache[string]{TTL: time.Second, MaxBytes: 1 << 20, Now: func() time.Time { return now },
		Size: func(v string) int { return len(v) }}
	for i := range 100 {
		c.Put(strconv.Itoa(i), strings.Repeat("x", 1000))
	}
	now = now.Add(time.Second)
	c.Get("other")
	if c.Len() != 0 || c.Bytes() != 0 {
		t.Errorf("after TTL: %d entries, %d bytes held, want none", c.Len(), c.Bytes())
	}
}

func TestCacheIsBoundedInBytes(t *testing.T) {
	for name, tc := range map[string]struct {
		key   func(i int) string
		value string
	}{
		"many small entries": {key: strconv.Itoa},
		"long keys":          {key: func(i int) string { return strconv.Itoa(i) + strings.Repeat("k", 4000) }},
		"large values":       {key: strconv.Itoa, value: strings.Repeat("v", 10000)},
	} {
		t.Run(name, func(t *testing.T) {
			c := &Cache[string]{TTL: time.Hour, MaxBytes: 64 << 10, Size: func(v string) int { return len(v) }}
			for i := range 10000 {
				c.Put(tc.key(i), tc.value)
				if c.Bytes() > c.MaxBytes {
					t.Fatalf("%d bytes held, bound %d", c.Bytes(), c.MaxBytes)
				}
			}
			if v, ok := c.Get(tc.key(9999)); !ok || v != tc.value {
				t.Errorf("latest entry = %.10q, %v; want it kept", v, ok)
			}
			if _, ok := c.Get(tc.key(0)); ok {
				t.Error("oldest entry still held after 10,000 newer ones")
			}
		})
	}
}

func TestCacheDropsTheOldestFirst(t *testing.T) {
	c := &Cache[int]{TTL: time.Hour}
	c.MaxBytes = 3 * (EntryOverhead + 8 + 1)
	for i := range 4 {
		c.Put(strconv.Itoa(i), i)
	}
	c.Put("1", 10) // refreshed: now the newest
	c.Put("4", 4)
	got := []string{}
	for _, k := range []string{"0", "1", "2", "3", "4"} {
		if _, ok := c.Get(k); ok {
			got = append(got, k)
		}
	}
	if strings.Join(got, ",") != "3,1,4" && strings.Join(got, ",") != "1,3,4" {
		t.Errorf("kept %v, want 1, 3 and 4", got)
	}
}

func TestCacheRefusesAnEntryLargerThanItsBound(t *testing.T) {
	c := &Cache[string]{TTL: time.Hour, MaxBytes: 1 << 10, Size: func(v string) int { return len(v) }}
	c.Put("small", "x")
	c.Put("huge", strings.Repeat("x", 2<<10))
	if _, ok := c.Get("huge"); ok {
		t.Error("entry larger than MaxBytes kept")
	}
	if _, ok := c.Get("small"); !ok {
		t.Error("an entry too large to keep evicted the others")
	}
}

// The heap a full cache holds, measured rather than counted: EntryOverhead must not understate it.
func TestCacheBytesCoverTheHeap(t *testing.T) {
	const budget = 1 << 20
	before := fixtures.HeapAlloc()
	c := &Cache[bool]{TTL: time.Hour, MaxBytes: budget}
	for i := range 100000 {
		c.Put(strconv.Itoa(i), true)
	}
	held := fixtures.HeapAlloc() - before
	runtime.KeepAlive(c)
	if held > budget {
		t.Errorf("a cache bounded at %d bytes holds %d bytes of heap", budget, held)
	}
}

func TestCacheRefusesAnEntryLargerThanMaxEntryBytes(t *testing.T) {
	c := &Cache[string]{TTL: time.Hour, MaxBytes: 64 << 10, MaxEntryBytes: 4 << 10, Size: func(v string) int { return len(v) }}
	c.Put("small", strings.Repeat("x", 1<<10))
	c.Put("large", strings.Repeat("x", 8<<10))
	if _, ok := c.Get("large"); ok {
		t.Error("entry larger than MaxEntryBytes kept")
	}
	if _, ok := c.Get("small"); !ok {
		t.Error("entry within MaxEntryBytes not kept")
	}
}
