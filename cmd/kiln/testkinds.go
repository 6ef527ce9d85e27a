//go:build kilntest

package main

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// testEffect is the payload of test.effect: sleep, then record the effect.
type testEffect struct {
	SleepMS int `json:"sleep_ms"`
}

// registerTestKinds registers test.effect, for the durability tests that kill a worker:
// it records its effect idempotently, one row per job id in test_effects (created by the
// test): a worker killed after the effect but before the job's end runs it again, and
// the second run must change nothing. test_starts records every attempt.
func registerTestKinds(reg *jobs.Registry, st *store.Store) {
	jobs.Register(reg, jobs.Kind{Name: "test.effect", MaxAttempts: 10, Timeout: time.Minute, Backoff: jobs.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}},
		func(ctx context.Context, run *jobs.Run, p testEffect) (any, error) {
			if _, err := st.Pool.Exec(ctx, `INSERT INTO test_starts (job_id, at) VALUES ($1, clock_timestamp())`, run.ID); err != nil {
				return nil, err
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Duration(p.SleepMS) * time.Millisecond):
			}
			_, err := st.Pool.Exec(ctx, `INSERT INTO test_effects (job_id) VALUES ($1) ON CONFLICT (job_id) DO NOTHING`, run.ID)
			return nil, err
		})
}
