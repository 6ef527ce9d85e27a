package jobs_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// BenchmarkCountLiveJobs measures the query behind every kiln_jobs_* scrape and queue
// listing on a jobs table of 1,000,000 finished jobs (1 % failed) and 1,000 live ones:
// "Indexed" as it runs once (auto)vacuum has seen the table, "SeqScan" (the baseline, same
// run) with index scans turned off, as it would run without the partial index jobs_live.
func BenchmarkCountLiveJobs(b *testing.B) {
	a := setupAdmin(b)
	ctx := context.Background()
	_, err := a.st.Pool.Exec(ctx, `
		INSERT INTO jobs (id, kind, queue, state, payload, max_attempts, run_at, task_id, created_at, updated_at, started_at, finished_at)
		SELECT gen_random_uuid(), 'k' || (i % 5), 'default', CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, '{}', 5,
		       now(), i::text, now(), now(), now(), now() - make_interval(secs => i)
		FROM generate_series(1, 1000000) i;
		INSERT INTO jobs (id, kind, queue, state, payload, max_attempts, run_at, task_id, created_at, updated_at, enqueued_at)
		SELECT gen_random_uuid(), 'k' || (i % 5), 'default', CASE WHEN i % 2 = 0 THEN 'queued' ELSE 'running' END, '{}', 5,
		       now(), 'live' || i, now(), now(), now()
		FROM generate_series(1, 1000) i`)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := a.st.Pool.Exec(ctx, "VACUUM ANALYZE jobs"); err != nil {
		b.Fatal(err)
	}
	// Planned at every run (no prepared statement whose cached plan would ignore the
	// baseline's settings).
	cfg, err := pgxpool.ParseConfig(a.st.Pool.Config().ConnString())
	if err != nil {
		b.Fatal(err)
	}
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	st := store.New(pool)
	now := time.Now()
	for _, bc := range []struct {
		name     string
		settings string
	}{
		{"Indexed", ""},
		{"SeqScan", "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if os.Getenv("KILN_BENCH_EXPLAIN") != "" { // the plan, to see which scan ran
				_ = pgx.BeginFunc(ctx, a.st.Pool, func(tx pgx.Tx) error {
					if bc.settings != "" {
						_, _ = tx.Exec(ctx, bc.settings)
					}
					rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) SELECT queue, kind, state, count(*),
						min(run_at) FILTER (WHERE state = 'queued'), count(*) FILTER (WHERE COALESCE(heartbeat_at, started_at, updated_at) < now())
						FROM jobs WHERE state IN ('queued', 'running') OR (state = 'failed' AND discarded_at IS NULL) GROUP BY 1, 2, 3`)
					if err != nil {
						return err
					}
					defer rows.Close()
					for rows.Next() {
						var line string
						_ = rows.Scan(&line)
						b.Log(line)
					}
					return nil
				})
			}
			for b.Loop() {
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if bc.settings != "" {
						if _, err := tx.Exec(ctx, bc.settings); err != nil {
							return err
						}
					}
					rows, err := st.WithTx(tx).CountLiveJobs(ctx, db.CountLiveJobsParams{Now: now, StaleBefore: now.Add(-time.Minute)})
					if err == nil && len(rows) != 11 { // 5 kinds × queued and running, 1 kind failed
						b.Fatalf("%d groups, want 11", len(rows))
					}
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
