// Package health runs readiness checks: each names a dependency and returns an error
// explaining why it is not ready.
package health

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// Check is one named readiness check.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Result is the outcome of one check; Err is nil when it passed.
type Result struct {
	Name string
	Err  error
}

// RunAll runs checks concurrently, each bounded by timeout, and returns results in the
// order of checks.
func RunAll(ctx context.Context, checks []Check, timeout time.Duration) []Result {
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			results[i] = Result{Name: c.Name, Err: c.Run(ctx)}
		})
	}
	wg.Wait()
	return results
}

// Postgres checks the pool can run a query.
func Postgres(pool *pgxpool.Pool) Check {
	return Check{Name: "postgres", Run: func(ctx context.Context) error {
		var one int
		return pool.QueryRow(ctx, "SELECT 1").Scan(&one)
	}}
}

// Redis checks Redis answers PING.
func Redis(c redis.UniversalClient) Check {
	return Check{Name: "redis", Run: func(ctx context.Context) error { return c.Ping(ctx).Err() }}
}

// EvictionPolicy checks Redis never evicts keys (Asynq loses task leases otherwise).
func EvictionPolicy(c redis.UniversalClient) Check {
	return Check{Name: "redis_eviction_policy", Run: func(ctx context.Context) error {
		policy, err := redisclient.EvictionPolicy(ctx, c)
		if err != nil {
			return err
		}
		if policy != "noeviction" {
			return fmt.Errorf("maxmemory-policy is %q; set it to noeviction", policy)
		}
		return nil
	}}
}

// Migrations checks the schema is at the latest embedded migration.
func Migrations(versions func(ctx context.Context) (current, latest int64, err error)) Check {
	return Check{Name: "migrations", Run: func(ctx context.Context) error {
		current, latest, err := versions(ctx)
		if err != nil {
			return err
		}
		if current != latest {
			return fmt.Errorf("schema is at version %d, latest is %d; run kiln migrate up", current, latest)
		}
		return nil
	}}
}
