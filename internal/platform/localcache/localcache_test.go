package localcache

import (
	"testing"
	"time"
)

func TestMap(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	c := New[string, int](5 * time.Second)
	if _, ok := c.Get("a", t0); ok {
		t.Fatal("a value before any Put")
	}
	c.Put("a", 1, t0)
	if v, ok := c.Get("a", t0.Add(4*time.Second)); !ok || v != 1 {
		t.Fatalf("within the TTL: %d %v, want 1", v, ok)
	}
	if _, ok := c.Get("a", t0.Add(5*time.Second)); ok {
		t.Fatal("a value at the end of its TTL")
	}
	c.Put("b", 2, t0)
	c.Forget("b")
	if _, ok := c.Get("b", t0); ok {
		t.Fatal("a forgotten value")
	}
	full := New[int, int](time.Second)
	for i := range maxEntries {
		full.Put(i, i, t0)
	}
	if full.len() != maxEntries {
		t.Fatalf("%d entries, want %d", full.len(), maxEntries)
	}
	full.Put(-1, 0, t0)
	if full.len() != 1 {
		t.Fatalf("%d entries past the bound, want the Map started again", full.len())
	}
}

func (c *Map[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
