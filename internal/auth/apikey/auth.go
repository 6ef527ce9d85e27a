package apikey

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

const (
	// maxHits bounds the keys cached per process; past it an arbitrary entry makes room.
	maxHits = 10_000
	// maxMisses bounds the remembered unknown hashes, apart from maxHits so that a flood of
	// made-up keys cannot push real keys out of the cache.
	maxMisses = 1_000
	// missTTL is how long an unknown hash is answered from memory. It only blunts repeats of
	// one bad key (each distinct made-up key still costs a query, after passing the
	// checksum). It cannot hide a new key: a key's hash is unknown until it is created, and
	// Create evicts it everywhere.
	missTTL = 5 * time.Second
	// evictAllPayload, published instead of a hash, empties every replica's cache.
	evictAllPayload = "*"
	// flushTimeout bounds the last-used write, including the final one after Run's context ends.
	flushTimeout = 5 * time.Second
)

// entry is a cached key. pending is set while the key waits in Service.used, so that only
// the first use in each flush interval takes usedMu.
type entry struct {
	key     Key
	expires time.Time
	pending atomic.Bool
}

// invalidCredentials is the one answer to every unusable key, whatever the reason, so
// that a caller learns nothing about which keys exist.
func invalidCredentials() error { return errs.E(errs.Unauthenticated, "invalid credentials") }

// Authenticate returns the active key whose secret is secret. A malformed key, a key for
// another env, an unknown, revoked or expired key all return the same unauthenticated error
// "invalid credentials"; malformed ones are refused without I/O. A key seen before is
// answered from memory. Other errors (the database is down) are returned wrapped, so that
// they are not mistaken for a bad key.
func (s *Service) Authenticate(ctx context.Context, secret string) (Key, error) {
	p, ok := Parse(secret)
	if !ok || p.Env != s.cfg.Env {
		return Key{}, invalidCredentials()
	}
	h := hashOf(secret)
	now := s.now()

	s.mu.RLock()
	e, hit := s.hits[h]
	missUntil, miss := s.misses[h]
	gen := s.gen
	s.mu.RUnlock()
	if hit && now.Before(e.expires) {
		return s.admit(e, now)
	}
	if miss && now.Before(missUntil) {
		return Key{}, invalidCredentials()
	}

	row, err := s.st.GetAPIKeyBySecretHash(ctx, bytes.Clone(h[:])) // a copy keeps h off the heap on the warm path
	if err != nil {
		if err = store.Translate(err); errs.CodeOf(err) == errs.NotFound {
			s.remember(gen, func() { s.addMiss(h, now.Add(min(missTTL, s.cfg.CacheTTL))) })
			return Key{}, invalidCredentials()
		}
		return Key{}, fmt.Errorf("authenticate api key: %w", err)
	}
	e = &entry{key: toKey(row), expires: now.Add(s.cfg.CacheTTL)}
	s.remember(gen, func() { s.addHit(h, e) })
	return s.admit(e, now)
}

// admit returns e's key if it is active at now, and records the use for the next flush.
func (s *Service) admit(e *entry, now time.Time) (Key, error) {
	if !e.key.Active(now) {
		return Key{}, invalidCredentials()
	}
	if e.pending.CompareAndSwap(false, true) {
		s.usedMu.Lock()
		s.used[e.key.ID] = e
		s.usedMu.Unlock()
	}
	return e.key.clone(), nil
}

// remember runs add under the cache lock unless an eviction happened since gen was read:
// the row read may then predate the write that caused it.
func (s *Service) remember(gen uint64, add func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen == gen {
		add()
	}
}

func (s *Service) addHit(h [32]byte, e *entry) {
	if _, ok := s.hits[h]; !ok && len(s.hits) >= maxHits {
		for k := range s.hits { // map order is unspecified: an arbitrary victim
			delete(s.hits, k)
			break
		}
	}
	s.hits[h] = e
}

func (s *Service) addMiss(h [32]byte, until time.Time) {
	if _, ok := s.misses[h]; !ok && len(s.misses) >= maxMisses {
		for k := range s.misses {
			delete(s.misses, k)
			break
		}
	}
	s.misses[h] = until
}

// evict forgets the key with hash h.
func (s *Service) evict(h [32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hits, h)
	delete(s.misses, h)
	s.gen++
}

// evictAll empties the cache.
func (s *Service) evictAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.hits)
	clear(s.misses)
	s.gen++
}

// ForgetAll empties the cache of every replica, so that each key is read again on its next
// use. Call it after removing keys without this package, e.g. when deleting an org deletes
// its keys by cascade; writes through the Service need no such call. A failed publish is
// logged; other replicas then catch up within the cache TTL.
func (s *Service) ForgetAll(ctx context.Context) {
	s.evictAll()
	s.publish(ctx, evictAllPayload)
}

// Run keeps the cache coherent and writes last_used_at until ctx is done. It evicts each
// key whose hash another replica (or this one) publishes, and empties the cache on every
// (re)subscription, since writes made while it was not listening were missed; go-redis
// reconnects and resubscribes by itself. Every LastUsedFlushInterval it writes the keys used
// since the last flush in one statement, and once more when ctx is done. Run returns nil
// when ctx is done, or an error if the client is closed under it.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	flushCtx, stopFlush := context.WithCancel(ctx)
	defer stopFlush()
	wg.Go(func() { s.flushEvery(flushCtx) })

	err := redisclient.Listen(ctx, s.rdb,
		func(string) { s.evictAll() },
		func(_, payload string) { s.invalidated(ctx, payload) },
		s.channel)
	if err != nil {
		return fmt.Errorf("api key invalidations: %w", err)
	}
	return nil
}

// invalidated applies one published invalidation: the hash of a key to evict, or
// evictAllPayload. A payload that is neither empties the cache, to be safe.
func (s *Service) invalidated(ctx context.Context, payload string) {
	if payload == evictAllPayload {
		s.evictAll()
		return
	}
	var h [32]byte
	if n, err := hex.Decode(h[:], []byte(payload)); err != nil || n != len(h) {
		s.log.WarnContext(ctx, "malformed api key invalidation; emptying the cache", "payload_len", len(payload))
		s.evictAll()
		return
	}
	s.evict(h)
}

// flushEvery writes last_used_at every interval until ctx is done, then a last time.
// Flushes run here, apart from the subscription, so that a slow write never delays an eviction.
func (s *Service) flushEvery(ctx context.Context) {
	t := time.NewTicker(s.cfg.LastUsedFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flush(ctx)
			return
		case <-t.C:
			s.flush(ctx)
		}
	}
}

// flush writes the flush time to last_used_at of every key used since the last flush, in
// one statement; with nothing used it does nothing. On failure the ids wait for the next
// flush.
func (s *Service) flush(ctx context.Context) {
	s.usedMu.Lock()
	used := s.used
	s.used = make(map[uuid.UUID]*entry, len(used))
	s.usedMu.Unlock()
	if len(used) == 0 {
		return
	}
	ids := make([]uuid.UUID, 0, len(used))
	for id, e := range used {
		// Cleared after the swap: a use in between finds pending still set and is not
		// recorded, but this flush, later than that use, covers it.
		e.pending.Store(false)
		ids = append(ids, id)
	}
	// One lock order for every replica, so that concurrent flushes cannot deadlock.
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	// Not cancelled with Run: a shutdown completes the write in flight and the last one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if _, err := s.st.TouchAPIKeysLastUsed(ctx, db.TouchAPIKeysLastUsedParams{Ids: ids, UsedAt: s.now()}); err != nil {
		s.log.WarnContext(ctx, "write api key last_used_at; retrying at the next flush", "err", err, "keys", len(ids))
		s.usedMu.Lock()
		for id, e := range used {
			if _, ok := s.used[id]; !ok {
				e.pending.Store(true)
				s.used[id] = e
			}
		}
		s.usedMu.Unlock()
	}
}
