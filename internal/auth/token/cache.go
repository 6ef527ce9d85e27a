package token

import (
	"hash/maphash"
	"strings"
	"sync"
	"time"
)

const cacheShards = 64

// verifiedCache remembers tokens whose signature and claims verified, keyed by their exact
// bytes: no other string can hit an entry, so a hit proves what the signature check proved.
// It is sharded so that concurrent requests rarely share a lock, and bounded: a full shard
// first drops expired entries, then arbitrary ones.
type verifiedCache struct {
	seed     maphash.Seed
	perShard int
	shards   [cacheShards]cacheShard
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]verified
}

func newVerifiedCache(size int) *verifiedCache {
	c := &verifiedCache{seed: maphash.MakeSeed(), perShard: max(size/cacheShards, 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]verified)
	}
	return c
}

func (c *verifiedCache) shard(raw string) *cacheShard {
	return &c.shards[maphash.String(c.seed, raw)%cacheShards]
}

func (c *verifiedCache) get(raw string) (verified, bool) {
	sh := c.shard(raw)
	sh.mu.RLock()
	v, ok := sh.m[raw]
	sh.mu.RUnlock()
	return v, ok
}

func (c *verifiedCache) put(raw string, v verified, now time.Time) {
	sh := c.shard(raw)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.m) >= c.perShard {
		sh.dropExpired(now)
	}
	if len(sh.m) >= c.perShard {
		// Still full of live tokens: forget half, in map order, which is random enough.
		for k := range sh.m {
			if len(sh.m) <= c.perShard/2 {
				break
			}
			delete(sh.m, k)
		}
	}
	sh.m[strings.Clone(raw)] = v // not a slice of a larger request buffer
}

// sweep drops every expired entry.
func (c *verifiedCache) sweep(now time.Time) {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.dropExpired(now)
		sh.mu.Unlock()
	}
}

func (sh *cacheShard) dropExpired(now time.Time) {
	for k, v := range sh.m {
		if !now.Before(v.claims.ExpiresAt.Add(leeway)) {
			delete(sh.m, k)
		}
	}
}
