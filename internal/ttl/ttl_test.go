package ttl

import (
	"strconv"
	"testing"
	"time"
)

func TestCacheExpires(t *testing.T) {
	now := time.Now()
	c := &Cache[bool]{TTL: time.Minute, Max: 10, Now: func() time.Time { return now }}
	c.Put("k", true)
	if v, ok := c.Get("k"); !ok || !v {
		t.Fatal("fresh entry not found")
	}
	now = now.Add(time.Minute)
	if _, ok := c.Get("k"); ok {
		t.Error("entry TTL old still answered")
	}
}

func TestCacheIsBounded(t *testing.T) {
	c := &Cache[int]{TTL: time.Minute, Max: 100}
	for i := range 1000 {
		c.Put(strconv.Itoa(i), i)
		if c.Len() > c.Max {
			t.Fatalf("%d entries, bound %d", c.Len(), c.Max)
		}
	}
	if v, ok := c.Get("999"); !ok || v != 999 {
		t.Errorf("latest entry = %v, %v; want 999", v, ok)
	}
}
