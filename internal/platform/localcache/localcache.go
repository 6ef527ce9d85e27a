// Package localcache keeps, per replica, values read from PostgreSQL on a hot path (a
// subscription, an API key's budget, an org's deletion state), each trusted for a TTL: a
// change made on another replica reaches this one within it.
package localcache

import (
	"sync"
	"time"
)

// maxEntries bounds a Map: past it, the Map starts again empty (a bound on memory, not an
// eviction policy; the values are re-read on their next use).
const maxEntries = 100_000

// Map holds values by key, each for the Map's TTL from when it was put.
type Map[K comparable, V any] struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[K]entry[V]
}

type entry[V any] struct {
	v       V
	expires time.Time
}

// New returns an empty Map whose values are trusted for ttl.
func New[K comparable, V any](ttl time.Duration) *Map[K, V] {
	return &Map[K, V]{ttl: ttl, m: map[K]entry[V]{}}
}

// Get returns k's value when it was put less than the TTL before now.
func (c *Map[K, V]) Get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Put keeps v for k from now for the TTL.
func (c *Map[K, V]) Put(k K, v V, now time.Time) {
	c.mu.Lock()
	if len(c.m) >= maxEntries {
		c.m = map[K]entry[V]{}
	}
	c.m[k] = entry[V]{v: v, expires: now.Add(c.ttl)}
	c.mu.Unlock()
}

// Forget drops k's value, after this replica changed what it caches.
func (c *Map[K, V]) Forget(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}
