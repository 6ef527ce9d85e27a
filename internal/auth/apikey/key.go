// Package apikey issues, stores and authenticates organisation API keys.
//
// A key reads kiln_<env>_<random>_<checksum>: env names the deployment (^[a-z0-9]{1,8}$,
// e.g. "live", "test"), random is 32 base62 characters from crypto/rand (≈190 bits) and
// checksum the CRC32 (IEEE) of kiln_<env>_<random> in base62, zero-padded to 6 characters.
// The checksum lets [Parse] reject typos, truncations and random garbage with no I/O, and
// lets secret scanners recognise a key. Only the SHA-256 of a key and a short display form
// are stored; the secret is shown once, when the key is created or rotated.
//
// [Service.Authenticate] answers from an in-process cache keyed by the hash, so a warm key
// costs no I/O. Every write (create, revoke, rotate) evicts the key locally and publishes its
// hash on the Redis channel kiln:<env>:apikeys:v1:invalidate; [Service.Run] listens and
// evicts, so a revocation takes effect on every replica as fast as Redis delivers the
// message. Expiry needs no message: it is checked against the clock on every call. If Redis
// is unreachable, cache entries still expire after Config.CacheTTL. A hash that matched no
// key is remembered for 5 s, so that a client retrying a deleted key in a loop costs one
// query per replica per 5 s; keys removed behind the package's back (an org deleted by
// cascade) need [Service.ForgetAll].
//
// last_used_at is not written per request: used key ids are collected in memory and
// [Service.Run] writes them in one statement every Config.LastUsedFlushInterval, with the
// flush time, so the column is accurate to one interval.
package apikey

import (
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// Key is an API key as stored, without its secret.
type Key struct {
	ID    uuid.UUID
	OrgID uuid.UUID
	// Name is the owner's label, 1 to 100 characters.
	Name string
	// Display identifies the key to humans, e.g. "kiln_live_AbC123…"; see [Display].
	Display string
	Scopes  []string
	// CreatedBy is the user who created the key; nil when unknown or since deleted.
	CreatedBy *uuid.UUID
	CreatedAt time.Time
	// ExpiresAt, when set, ends the key; a rotated key's grace period ends here too.
	ExpiresAt *time.Time
	// RevokedAt, when set, is when the key stopped working.
	RevokedAt *time.Time
	// LastUsedAt is when the key last authenticated, to within the flush interval.
	LastUsedAt *time.Time
	// RotatedTo is the key that replaced this one.
	RotatedTo *uuid.UUID
	// TokenBudget is the most tokens the key's model calls may use per billing period of
	// its org; nil: no budget of its own.
	TokenBudget *int64
}

// Active reports whether the key authenticates at now: it is not revoked and not expired.
func (k Key) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// clone returns a deep copy, so that callers cannot change a key the cache shares.
func (k Key) clone() Key {
	c := k
	c.Scopes = append([]string(nil), k.Scopes...)
	c.CreatedBy = clonePtr(k.CreatedBy)
	c.ExpiresAt = clonePtr(k.ExpiresAt)
	c.RevokedAt = clonePtr(k.RevokedAt)
	c.LastUsedAt = clonePtr(k.LastUsedAt)
	c.RotatedTo = clonePtr(k.RotatedTo)
	return c
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func toKey(r db.ApiKey) Key {
	k := Key{
		ID:         r.ID,
		OrgID:      r.OrgID,
		Name:       r.Name,
		Display:    r.Display,
		Scopes:     r.Scopes,
		CreatedBy:  store.UUIDPtr(r.CreatedBy),
		CreatedAt:  r.CreatedAt.UTC(),
		ExpiresAt:  store.UTC(r.ExpiresAt),
		RevokedAt:  store.UTC(r.RevokedAt),
		LastUsedAt: store.UTC(r.LastUsedAt),
		RotatedTo:  store.UUIDPtr(r.RotatedTo),
	}
	if r.TokenBudget.Valid {
		k.TokenBudget = &r.TokenBudget.Int64
	}
	return k
}

func toKeys(rows []db.ApiKey) []Key {
	out := make([]Key, len(rows))
	for i, r := range rows {
		out[i] = toKey(r)
	}
	return out
}
