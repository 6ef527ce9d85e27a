package flags

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

const (
	// loadTimeout bounds one snapshot load; requests wait for it when the snapshot is stale.
	loadTimeout = 2 * time.Second
	// maxRetryDelay spaces reload attempts after a failure so a database outage costs one
	// query and one log line per replica per interval, not one per request.
	maxRetryDelay = time.Second
)

// Evaluator answers whether a flag is on for a subject from an in-memory snapshot, and
// manages flags and overrides in the database, telling every replica when they change.
// It is safe for concurrent use.
type Evaluator struct {
	st       *store.Store
	rdb      redis.UniversalClient
	channel  string
	defaults map[string]bool
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time

	snap atomic.Pointer[snapshot]
	// gen counts invalidations; a snapshot loaded at an older generation is stale.
	gen atomic.Uint64
	// retryAt (Unix ns on the injected clock) holds reloads back after a failed load.
	retryAt atomic.Int64
	// loadMu lets one goroutine load while the others wait for its result.
	loadMu sync.Mutex
}

// New returns an Evaluator over st that publishes and listens for invalidations on rdb in
// key space ks. defaults answer for keys absent from the database; ttl (positive) bounds how
// long a snapshot is trusted without an invalidation; now is the clock, time.Now in
// production. Call [Evaluator.Run] to receive other replicas' invalidations.
func New(st *store.Store, rdb redis.UniversalClient, ks redisclient.Keyspace, defaults map[string]bool, ttl time.Duration, log *slog.Logger, now func() time.Time) *Evaluator {
	if ttl <= 0 {
		panic(fmt.Sprintf("flags.New: ttl must be positive, got %s", ttl))
	}
	return &Evaluator{
		st:       st,
		rdb:      rdb,
		channel:  ks.Key("flags", 1, "invalidate"),
		defaults: maps.Clone(defaults),
		ttl:      ttl,
		log:      log,
		now:      now,
	}
}

// Enabled reports whether flag key is on for s. It reads the in-memory snapshot, loading it
// first when it is absent, invalidated or older than the TTL; if that load fails it answers
// from the last snapshot (or from the configured defaults when there is none) and logs.
func (e *Evaluator) Enabled(ctx context.Context, key string, s Subject) bool {
	now := e.now()
	return e.evaluate(e.current(ctx, now), key, s, now)
}

func (e *Evaluator) evaluate(sn *snapshot, key string, s Subject, now time.Time) bool {
	if sn != nil {
		if ent := sn.flags[key]; ent != nil {
			if on, ok := ent.users.lookup(s.UserID, now); ok {
				return on
			}
			if on, ok := ent.orgs.lookup(s.OrgID, now); ok {
				return on
			}
			if ent.stored {
				return ent.flag.Enabled && inRollout(ent.flag, s)
			}
		}
	}
	return e.defaults[key]
}

// snapshot is an immutable view of the flag tables; it is replaced, never changed.
type snapshot struct {
	flags    map[string]*entry
	gen      uint64
	loadedAt time.Time
}

// entry holds one flag key's row and overrides. stored is false when the snapshot saw
// overrides for a key whose flag row it did not see (deleted between the two queries).
type entry struct {
	flag   Flag
	stored bool
	users  overrides
	orgs   overrides
}

type overrides map[uuid.UUID]override

type override struct {
	enabled   bool
	expiresAt time.Time // zero: never
}

// lookup returns the unexpired override for id, if any.
func (m overrides) lookup(id uuid.UUID, now time.Time) (enabled, ok bool) {
	if id == uuid.Nil {
		return false, false
	}
	o, ok := m[id]
	if !ok || (!o.expiresAt.IsZero() && !now.Before(o.expiresAt)) {
		return false, false
	}
	return o.enabled, true
}

// current returns a snapshot fresh enough to evaluate with, loading one if needed; nil when
// no load has succeeded yet.
func (e *Evaluator) current(ctx context.Context, now time.Time) *snapshot {
	if sn := e.snap.Load(); e.usable(sn, now) {
		return sn
	}
	e.loadMu.Lock()
	defer e.loadMu.Unlock()
	sn := e.snap.Load()
	if e.usable(sn, now) { // another goroutine loaded, or failed, while this one waited
		return sn
	}
	// Read the generation before querying: an invalidation during the load leaves the new
	// snapshot stale, so the next call reloads and sees the write.
	gen := e.gen.Load()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer cancel()
	next, err := e.load(ctx)
	if err != nil {
		e.retryAt.Store(now.Add(min(e.ttl, maxRetryDelay)).UnixNano())
		e.log.ErrorContext(ctx, "load feature flags; evaluating with the last snapshot", "err", err, "has_snapshot", sn != nil)
		return sn
	}
	next.gen, next.loadedAt = gen, now
	e.snap.Store(next)
	return next
}

// usable reports whether sn may be evaluated as is: it is fresh, or a failed load asked
// for a pause before the next attempt.
func (e *Evaluator) usable(sn *snapshot, now time.Time) bool {
	fresh := sn != nil && sn.gen == e.gen.Load() && now.Sub(sn.loadedAt) < e.ttl
	return fresh || now.UnixNano() < e.retryAt.Load()
}

// load reads every flag and every override the database considers active. The two reads
// are not one transaction: a flag deleted in between leaves orphan overrides, which still
// apply until the invalidation of that delete triggers the next load.
func (e *Evaluator) load(ctx context.Context) (*snapshot, error) {
	rows, err := e.st.ListFeatureFlags(ctx)
	if err != nil {
		return nil, fmt.Errorf("list feature flags: %w", err)
	}
	ovs, err := e.st.ListActiveFeatureFlagOverrides(ctx)
	if err != nil {
		return nil, fmt.Errorf("list feature flag overrides: %w", err)
	}
	sn := &snapshot{flags: make(map[string]*entry, len(rows))}
	for _, r := range rows {
		sn.flags[r.Key] = &entry{flag: toFlag(r), stored: true}
	}
	for _, r := range ovs {
		ent := sn.flags[r.FlagKey]
		if ent == nil {
			ent = &entry{}
			sn.flags[r.FlagKey] = ent
		}
		m := &ent.orgs
		if SubjectType(r.SubjectType) == SubjectUser {
			m = &ent.users
		}
		if *m == nil {
			*m = overrides{}
		}
		o := override{enabled: r.Enabled}
		if r.ExpiresAt != nil {
			o.expiresAt = *r.ExpiresAt
		}
		(*m)[r.SubjectID] = o
	}
	return sn, nil
}

// inRollout reports whether s falls in f's rollout; a subject with no id is only in a 100 %
// rollout.
func inRollout(f Flag, s Subject) bool {
	switch {
	case f.RolloutPercent >= 100:
		return true
	case f.RolloutPercent <= 0:
		return false
	}
	id, other := s.OrgID, s.UserID
	if f.StickyBy == SubjectUser {
		id, other = other, id
	}
	if id == uuid.Nil {
		id = other
	}
	if id == uuid.Nil {
		return false
	}
	return bucket(f.Key, id) < uint64(f.RolloutPercent)
}

// bucket places (key, id) in [0, 100); see the package documentation. It does not allocate.
func bucket(key string, id uuid.UUID) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := range len(key) {
		h ^= uint64(key[i])
		h *= prime64
	}
	for _, b := range id { // fixed length, so key ‖ id needs no separator
		h ^= uint64(b)
		h *= prime64
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h % 100
}

// invalidate marks the local snapshot stale. It is kept, not dropped, so that a failed
// reload can still answer from it.
func (e *Evaluator) invalidate() { e.gen.Add(1) }

// Run listens for invalidations published by any replica and marks the snapshot stale on
// each, so the next evaluation reloads. It also does so on every (re)subscription, since
// writes made while it was not listening were missed; go-redis reconnects and resubscribes
// by itself. Run returns nil when ctx is done, or an error if the client is closed under it.
func (e *Evaluator) Run(ctx context.Context) error {
	err := redisclient.Listen(ctx, e.rdb,
		func(string) { e.invalidate() },
		func(string, string) { e.invalidate() },
		e.channel)
	if err != nil {
		return fmt.Errorf("feature flag invalidations: %w", err)
	}
	return nil
}

// changed invalidates the local snapshot and tells the other replicas. A failed publish is
// logged, not returned: the write is committed, and other replicas catch up within the TTL.
func (e *Evaluator) changed(ctx context.Context, key string) {
	e.invalidate()
	if err := e.rdb.Publish(ctx, e.channel, key).Err(); err != nil {
		e.log.WarnContext(ctx, "publish feature flag invalidation; other replicas will catch up within the cache TTL", "flag", key, "err", err, "ttl", e.ttl)
	}
}
