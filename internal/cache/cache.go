// Package cache is Kiln's exact-match response cache in Redis: values stored under the
// SHA-256 of a request's canonical JSON, scoped to an org, with a TTL.
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// Cache stores replies in Redis.
type Cache struct {
	rdb redis.UniversalClient
	ks  redisclient.Keyspace
	ttl time.Duration
}

// New returns a cache whose entries live ttl.
func New(rdb redis.UniversalClient, ks redisclient.Keyspace, ttl time.Duration) *Cache {
	return &Cache{rdb: rdb, ks: ks, ttl: ttl}
}

// Key is the SHA-256 (hex) of v's canonical JSON: encoding/json writes struct fields in
// declaration order and map keys sorted, so equal values give equal keys whatever the
// field order or whitespace of the request they came from. Raw JSON inside v must be
// canonicalised first (Canonical).
func Key(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("cache key: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Canonical re-encodes raw JSON with sorted keys and no insignificant whitespace.
func Canonical(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return raw
	}
	b, err := json.Marshal(v)
	if err != nil {
		return raw
	}
	return b
}

func (c *Cache) redisKey(org uuid.UUID, key string) string {
	return c.ks.Key("cache", 1, org.String()+":"+key)
}

// Get returns the value stored for org and key; ok is false on a miss. A Redis failure is
// returned as an error (callers treat it as a miss).
func (c *Cache) Get(ctx context.Context, org uuid.UUID, key string) ([]byte, bool, error) {
	b, err := c.rdb.Get(ctx, c.redisKey(org, key)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache get: %w", err)
	}
	return b, true, nil
}

// Put stores value for org and key for the cache's TTL.
func (c *Cache) Put(ctx context.Context, org uuid.UUID, key string, value []byte) error {
	if err := c.rdb.Set(ctx, c.redisKey(org, key), value, c.ttl).Err(); err != nil {
		return fmt.Errorf("cache put: %w", err)
	}
	return nil
}
