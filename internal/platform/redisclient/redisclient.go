// Package redisclient opens Kiln's Redis client and names keys in Kiln's key space,
// kiln:<env>:<area>:v<N>:<key> (see docs/redis-keys.md).
package redisclient

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/tracing"
)

// Open connects to the Redis at url (redis:// or rediss://; a comma-separated list of
// addresses in the host part selects a cluster) and checks it answers. poolSize, when
// positive, sets the connections per node (else the URL's pool_size, else go-redis's
// default of 10 per CPU).
func Open(ctx context.Context, url string, poolSize int) (redis.UniversalClient, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("parse redis url: %w", err)
	}
	if poolSize > 0 {
		opts.PoolSize = poolSize
	}
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:     strings.Split(opts.Addr, ","),
		DB:        opts.DB,
		Username:  opts.Username,
		Password:  opts.Password,
		TLSConfig: opts.TLSConfig,
		PoolSize:  opts.PoolSize,
	})
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("ping redis: %w", err)
	}
	return client, nil
}

// Trace makes a client span of every command c runs inside a traced request or job (none
// for background loops). Command arguments are never recorded: they hold cached replies,
// stream events and other personal data.
func Trace(c redis.UniversalClient, tp trace.TracerProvider) error {
	if err := redisotel.InstrumentTracing(c,
		redisotel.WithTracerProvider(tracing.ChildrenOnly(tp)),
		redisotel.WithDBStatement(false),
		redisotel.WithCallerEnabled(false),
		redisotel.WithDialFilter(true),
	); err != nil {
		return fmt.Errorf("trace redis: %w", err)
	}
	return nil
}

// Keyspace builds keys and channel names for one deployment (env).
type Keyspace struct{ Env string }

// Key returns kiln:<env>:<area>:v<version>:<key>.
func (k Keyspace) Key(area string, version int, key string) string {
	return fmt.Sprintf("kiln:%s:%s:v%d:%s", k.Env, area, version, key)
}

// EvictionPolicy returns Redis's maxmemory-policy; Kiln requires "noeviction".
func EvictionPolicy(ctx context.Context, c redis.UniversalClient) (string, error) {
	res, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", fmt.Errorf("read maxmemory-policy: %w", err)
	}
	return res["maxmemory-policy"], nil
}
