package main_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// kilnTestBin is the binary built with -tags kilntest: it registers the test job kinds
// (testkinds.go); the production binary has none.
var (
	kilnTestBin  string
	kilnTestOnce sync.Once
	kilnTestErr  error
)

func buildTestBinary(t *testing.T) string {
	t.Helper()
	kilnTestOnce.Do(func() {
		kilnTestBin = filepath.Join(filepath.Dir(kilnBin), "kiln-jobtest")
		out, err := exec.Command("go", "build", "-tags", "kilntest", "-o", kilnTestBin, ".").CombinedOutput()
		if err != nil {
			kilnTestErr = err
			t.Logf("%s", out)
		}
	})
	if kilnTestErr != nil {
		t.Fatalf("build kiln -tags kilntest: %v", kilnTestErr)
	}
	return kilnTestBin
}

// TestWorkerKilled: `kill -9` of a worker with 1,000 jobs in flight, then a new worker:
// no job is lost, each job's effect is made once, and every job that was running when
// the worker died (an orphan) starts again within 60 s, never beside its first run.
func TestWorkerKilled(t *testing.T) {
	t.Parallel()
	bin := buildTestBinary(t)
	dbURL := storetest.NewDatabase(t, "")
	rdb, ks := storetest.Redis(t)
	t.Cleanup(func() {
		iter := rdb.Scan(context.Background(), 0, "asynq:{"+ks.Env+".*", 1000).Iterator()
		for iter.Next(context.Background()) {
			rdb.Del(context.Background(), iter.Val())
		}
	})
	env := baseEnv("DATABASE_URL="+dbURL, "KILN_ENV="+ks.Env, "KILN_WORKER_CONCURRENCY=200", "KILN_DATABASE_MAX_CONNS=40",
		"KILN_JOBS_HEARTBEAT=300ms", "KILN_JOBS_RECONCILE_INTERVAL=300ms", "KILN_JOBS_POLL_INTERVAL=100ms", "KILN_LOG_LEVEL=warn")
	mustRun(t, env, "migrate", "up")

	pool := storetest.Pool(t, dbURL)
	st := store.New(pool)
	ctx := t.Context()
	for _, ddl := range []string{
		`CREATE TABLE test_effects (job_id uuid PRIMARY KEY, n integer NOT NULL DEFAULT 1)`,
		`CREATE TABLE test_starts (job_id uuid NOT NULL, at timestamptz NOT NULL)`,
	} {
		if _, err := pool.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	// The kind as the test binary declares it, to create its jobs here.
	reg := jobs.NewRegistry()
	jobs.Register(reg, jobs.Kind{Name: "test.effect", MaxAttempts: 10}, func(context.Context, *jobs.Run, testEffect) (any, error) { return nil, nil })
	const total = 1000
	err := st.InTx(ctx, func(q *db.Queries) error {
		for range total {
			if _, err := reg.Enqueue(ctx, q, time.Now(), jobs.New{Kind: "test.effect", Payload: testEffect{SleepMS: 1000}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func(sql string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait := func(d time.Duration, what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %s", d, what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	first := startWorker(t, bin, env)
	wait(30*time.Second, "200 jobs running", func() bool {
		return count(`SELECT count(*) FROM jobs WHERE kind = 'test.effect' AND state = 'running'`) >= 200
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	killed := time.Now()
	orphans := count(`SELECT count(*) FROM jobs WHERE kind = 'test.effect' AND state = 'running'`)
	t.Logf("killed the worker with %d jobs running, %d done", orphans, count(`SELECT count(*) FROM jobs WHERE kind = 'test.effect' AND state = 'succeeded'`))

	startWorker(t, bin, env)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		rows, err := pool.Query(context.Background(), `SELECT state, attempts, left(last_error, 120), count(*) FROM jobs GROUP BY 1, 2, 3`)
		if err != nil {
			return
		}
		defer rows.Close()
		for rows.Next() {
			var state, lastErr string
			var attempts, n int
			_ = rows.Scan(&state, &attempts, &lastErr, &n)
			t.Logf("%d jobs %s after %d attempts: %s", n, state, attempts, lastErr)
		}
	})
	wait(60*time.Second, "every job succeeded", func() bool {
		return count(`SELECT count(*) FROM jobs WHERE kind = 'test.effect' AND state = 'succeeded'`) == total
	})
	if n := count(`SELECT count(*) FROM test_effects`); n != total {
		t.Fatalf("%d effects, want %d", n, total)
	}
	// Every orphan started again after the kill (not beside its first run) and soon.
	rerun := count(`SELECT count(DISTINCT job_id) FROM test_starts WHERE at > $1`, killed.Add(-50*time.Millisecond))
	var slowest time.Duration
	if err := pool.QueryRow(ctx, `
		SELECT coalesce(max(again.at - $1::timestamptz), '0')
		FROM (SELECT job_id, min(at) AS at FROM test_starts WHERE at > $1 GROUP BY job_id) again
		JOIN (SELECT job_id FROM test_starts WHERE at < $1 GROUP BY job_id) before USING (job_id)`, killed).Scan(&slowest); err != nil {
		t.Fatal(err)
	}
	startedTwiceBefore := count(`SELECT count(*) FROM (SELECT job_id FROM test_starts WHERE at < $1 GROUP BY job_id HAVING count(*) > 1) x`, killed)
	if startedTwiceBefore != 0 {
		t.Fatalf("%d jobs started twice before the kill", startedTwiceBefore)
	}
	if slowest > 60*time.Second || slowest <= 0 {
		t.Fatalf("slowest orphan started again %s after the kill, want within 60 s", slowest)
	}
	t.Logf("%d orphans; %d jobs started after the kill; slowest orphan ran again %s after it", orphans, rerun, slowest)
}

// startWorker starts `kiln worker`, stopped (SIGTERM) when the test ends.
func startWorker(t *testing.T, bin string, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "worker")
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})
	return cmd
}

// testEffect is the payload of the test binary's test.effect kind.
type testEffect struct {
	SleepMS int `json:"sleep_ms"`
}
