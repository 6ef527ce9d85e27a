package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// effect is the payload of the test kind that records its effect: one row per job id,
// counting the times it ran.
type effect struct {
	Fail int `json:"fail,omitempty"` // fail this many attempts first
}

const effectsTable = `CREATE TABLE test_effects (job_id uuid PRIMARY KEY, n integer NOT NULL DEFAULT 1)`

// recordEffect is the test kind's handler: idempotent by job id, it counts duplicates.
func recordEffect(st *store.Store) func(ctx context.Context, run *jobs.Run, p effect) (any, error) {
	return func(ctx context.Context, run *jobs.Run, p effect) (any, error) {
		if run.Attempts <= p.Fail {
			return nil, fmt.Errorf("attempt %d fails on purpose", run.Attempts)
		}
		_, err := st.Pool.Exec(ctx, `INSERT INTO test_effects (job_id) VALUES ($1) ON CONFLICT (job_id) DO UPDATE SET n = test_effects.n + 1`, run.ID)
		return map[string]int{"attempts": run.Attempts}, err
	}
}

// bundle is one test's database, Redis key space and job kinds.
type bundle struct {
	st  *store.Store
	rdb redis.UniversalClient
	ks  redisclient.Keyspace
	reg *jobs.Registry
}

func setup(t testing.TB, register func(b *bundle)) *bundle {
	t.Helper()
	// A pool of its own, larger than storetest's: the test's transactions and the
	// replicas' handlers share it.
	pool, err := store.Open(t.Context(), storetest.New(t).Pool.Config().ConnString(), 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b := &bundle{st: store.New(pool), reg: jobs.NewRegistry()}
	b.rdb, b.ks = storetest.Redis(t)
	if _, err := b.st.Pool.Exec(t.Context(), effectsTable); err != nil {
		t.Fatal(err)
	}
	jobs.Register(b.reg, jobs.Kind{Name: "test.effect", Backoff: jobs.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}}, recordEffect(b.st))
	if register != nil {
		register(b)
	}
	t.Cleanup(func() { // Asynq's keys of the test's queues
		ctx := context.Background()
		iter := b.rdb.Scan(ctx, 0, "asynq:{"+b.ks.Env+".*", 1000).Iterator()
		for iter.Next(ctx) {
			b.rdb.Del(ctx, iter.Val())
		}
	})
	return b
}

// testConfig is a runtime with short intervals, so durability tests take seconds.
func (b *bundle) config(concurrency int) jobs.Config {
	return jobs.Config{Env: b.ks.Env, Concurrency: concurrency, PollInterval: 50 * time.Millisecond,
		ReconcileInterval: 100 * time.Millisecond, Heartbeat: 500 * time.Millisecond, BatchSize: 500, ShutdownTimeout: time.Second}
}

// replica returns a Service with a Redis client and bus of its own, as another replica has.
func (b *bundle) replica(t testing.TB, cfg jobs.Config, finished jobs.Finished) *jobs.Service {
	t.Helper()
	rdb, err := redisclient.Open(t.Context(), storetest.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	bus := streams.New(rdb, b.ks, streams.Config{})
	t.Cleanup(bus.Close)
	return jobs.NewService(jobs.Deps{Registry: b.reg, Store: b.st, Redis: rdb, Bus: bus, Finished: finished}, cfg)
}

// run runs s until the test ends.
func run(t testing.TB, s *jobs.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (b *bundle) enqueue(t testing.TB, n jobs.New) jobs.Job {
	t.Helper()
	var j jobs.Job
	err := b.st.InTx(t.Context(), func(q *db.Queries) error {
		var err error
		j, err = b.reg.Enqueue(t.Context(), q, time.Now(), n)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(t *testing.T, st *store.Store, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := st.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOutbox: of 10,000 transactions that each create a job, the 10 % that roll back
// leave no job (0 phantoms) and every committed one runs exactly once (0 lost).
func TestOutbox(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	run(t, b.replica(t, b.config(20), nil))
	run(t, b.replica(t, b.config(20), nil)) // a second replica shares the outbox

	const total, workers = 10_000, 8
	errRollback := errors.New("rollback")
	var committed, rolledBack sync.Map
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				var id uuid.UUID
				err := b.st.InTx(t.Context(), func(q *db.Queries) error {
					j, err := b.reg.Enqueue(t.Context(), q, time.Now(), jobs.New{Kind: "test.effect", Payload: effect{}})
					id = j.ID
					if err == nil && i%10 == 0 {
						return errRollback
					}
					return err
				})
				switch {
				case errors.Is(err, errRollback):
					rolledBack.Store(id, true)
				case err != nil:
					t.Error(err)
					return
				default:
					committed.Store(id, true)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("created in %s", time.Since(start))
	want := total - total/10
	waitFor(t, 60*time.Second, "every committed job ran", func() bool {
		return count(t, b.st, `SELECT count(*) FROM jobs WHERE state = 'succeeded'`) == want
	})
	t.Logf("all ran after %s", time.Since(start))
	if n := count(t, b.st, `SELECT count(*) FROM jobs`); n != want {
		t.Fatalf("%d jobs stored, want %d (phantoms)", n, want)
	}
	if n := count(t, b.st, `SELECT count(*) FROM test_effects`); n != want {
		t.Fatalf("%d effects, want %d", n, want)
	}
	if n := count(t, b.st, `SELECT count(*) FROM test_effects WHERE n <> 1`); n != 0 {
		t.Fatalf("%d jobs ran more than once", n)
	}
	rows, err := b.st.Pool.Query(t.Context(), `SELECT job_id FROM test_effects`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if _, ok := committed.Load(id); !ok {
			t.Fatalf("effect of job %s, which was not committed (rolled back: %v)", id, func() bool { _, ok := rolledBack.Load(id); return ok }())
		}
	}
}

// TestRedisLost: 300 jobs handed to Asynq, then Asynq's keys are deleted (a Redis
// restarted empty): the reconciliation puts them back and all complete, once each.
func TestRedisLost(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	// The property is that each job runs exactly once, not how fast: a busy machine gets a
	// long deadline (the throughput is BenchmarkThroughput's).
	const n = 300
	relayOnly := b.replica(t, b.config(0), nil)
	for range n {
		b.enqueue(t, jobs.New{Kind: "test.effect", Payload: effect{}})
	}
	for {
		n, err := relayOnly.RelayOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if got := count(t, b.st, `SELECT count(*) FROM jobs WHERE enqueued_at IS NOT NULL`); got != n {
		t.Fatalf("%d jobs handed to Asynq, want %d", got, n)
	}
	keys, err := b.rdb.Keys(t.Context(), "asynq:{"+b.ks.Env+".*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("asynq keys: %v %v", keys, err)
	}
	if err := b.rdb.Del(t.Context(), keys...).Err(); err != nil {
		t.Fatal(err)
	}

	run(t, b.replica(t, b.config(20), nil))
	waitFor(t, 3*time.Minute, "every job completed", func() bool {
		return count(t, b.st, `SELECT count(*) FROM jobs WHERE state = 'succeeded'`) == n
	})
	if got := count(t, b.st, `SELECT count(*) FROM test_effects WHERE n = 1`); got != n {
		t.Fatalf("%d jobs ran exactly once, want %d", got, n)
	}
}

// TestOrphan: a running job whose heartbeat stopped (its worker died) runs again soon,
// under a new task; the dead worker's task is skipped.
func TestOrphan(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	j := b.enqueue(t, jobs.New{Kind: "test.effect", Payload: effect{}})
	// As a worker that started it and died: running, attempt 1, heartbeat long stopped,
	// its task still in Asynq.
	relay := b.replica(t, b.config(0), nil)
	if _, err := relay.RelayOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.st.Pool.Exec(t.Context(), `UPDATE jobs SET state = 'running', attempts = 1, heartbeat_at = now() - interval '1 hour' WHERE id = $1`, j.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, b.replica(t, b.config(4), nil))
	waitFor(t, 10*time.Second, "the orphan ran again", func() bool {
		return count(t, b.st, `SELECT count(*) FROM jobs WHERE state = 'succeeded'`) == 1
	})
	t.Logf("orphan ran again after %s", time.Since(start))
	if n := count(t, b.st, `SELECT n FROM test_effects WHERE job_id = $1`, j.ID); n != 1 {
		t.Fatalf("effect ran %d times", n)
	}
	if n := count(t, b.st, `SELECT attempts FROM jobs WHERE id = $1`, j.ID); n != 2 {
		t.Fatalf("attempts = %d, want 2 (the lost one counts)", n)
	}
}

// TestRetries: failing attempts are retried with the kind's backoff until one succeeds;
// a permanent error and exhausted attempts fail the job, telling the Finished hook.
func TestRetries(t *testing.T) {
	t.Parallel()
	b := setup(t, func(b *bundle) {
		jobs.Register(b.reg, jobs.Kind{Name: "test.permanent"}, func(context.Context, *jobs.Run, struct{}) (any, error) {
			return nil, jobs.Permanent(errors.New("no such thing"))
		})
	})
	if err := b.reg.Override("test.effect", jobs.Kind{MaxAttempts: 3}); err != nil {
		t.Fatal(err)
	}
	var finished sync.Map
	hook := func(_ context.Context, _ *db.Queries, j jobs.Job) error { finished.Store(j.ID, j.State); return nil }
	run(t, b.replica(t, b.config(4), hook))

	ok := b.enqueue(t, jobs.New{Kind: "test.effect", Payload: effect{Fail: 2}})
	exhausted := b.enqueue(t, jobs.New{Kind: "test.effect", Payload: effect{Fail: 5}})
	permanent := b.enqueue(t, jobs.New{Kind: "test.permanent", Payload: struct{}{}})
	undecodable := b.enqueue(t, jobs.New{Kind: "test.effect", Payload: "not an object"})
	for _, c := range []struct {
		name     string
		id       uuid.UUID
		state    jobs.State
		attempts int
	}{
		{"SucceedsOnThirdAttempt", ok.ID, jobs.Succeeded, 3},
		{"FailsWhenAttemptsRunOut", exhausted.ID, jobs.Failed, 3},
		{"FailsAtOnceOnPermanent", permanent.ID, jobs.Failed, 1},
		{"FailsAtOnceUndecodable", undecodable.ID, jobs.Failed, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			waitFor(t, 10*time.Second, "the job ended", func() bool {
				_, ok := finished.Load(c.id)
				return ok
			})
			row, err := b.st.GetJob(t.Context(), c.id)
			if err != nil {
				t.Fatal(err)
			}
			if jobs.State(row.State) != c.state || int(row.Attempts) != c.attempts {
				t.Fatalf("state %s after %d attempts (%s), want %s after %d", row.State, row.Attempts, row.LastError, c.state, c.attempts)
			}
		})
	}
}

// blocking registers test.block: it reports progress, then waits for its context.
func blocking(started chan<- uuid.UUID) func(b *bundle) {
	return func(b *bundle) {
		jobs.Register(b.reg, jobs.Kind{Name: "test.block"}, func(ctx context.Context, run *jobs.Run, _ struct{}) (any, error) {
			if err := run.Report(ctx, jobs.Progress{Done: 1, Total: 2, Message: "half"}); err != nil {
				return nil, err
			}
			started <- run.ID
			<-ctx.Done()
			return nil, context.Cause(ctx)
		})
	}
}

// TestCancel: a cancel made on another replica reaches the handler's context; followers on
// either replica see the progress and the cancellation; a retry starts a new run.
func TestCancel(t *testing.T) {
	t.Parallel()
	started := make(chan uuid.UUID, 1)
	b := setup(t, blocking(started))
	worker := b.replica(t, b.config(2), nil)
	run(t, worker)
	api := b.replica(t, b.config(0), nil) // another replica, not running handlers
	org := b.org(t)
	owner := jobs.Owner{Org: org}
	j := b.enqueue(t, jobs.New{Kind: "test.block", OrgID: &org, Payload: struct{}{}})

	events := make(chan jobs.Event, 10)
	go func() {
		_ = api.Follow(context.Background(), owner, j.ID, 0, func(ev jobs.Event) error { events <- ev; return nil })
		close(events)
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not start")
	}
	if _, err := api.Cancel(t.Context(), owner, j.ID); err != nil {
		t.Fatal(err)
	}
	var types []string
	for ev := range events {
		types = append(types, ev.Type)
	}
	if fmt.Sprint(types) != "[job.progress job.cancelled]" {
		t.Fatalf("events = %v", types)
	}
	got, err := api.Get(t.Context(), owner, j.ID)
	if err != nil || got.State != jobs.Cancelled {
		t.Fatalf("job = %+v, %v", got, err)
	}
	if _, err := api.Get(t.Context(), jobs.Owner{Org: uuid.Must(uuid.NewV7())}, j.ID); err == nil {
		t.Fatal("another org sees the job")
	}

	again, err := api.Retry(t.Context(), owner, j.ID)
	if err != nil || again.Run != 2 || again.State != jobs.Queued {
		t.Fatalf("retry = %+v, %v", again, err)
	}
	select {
	case id := <-started:
		if id != j.ID {
			t.Fatalf("started %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the retried job did not start")
	}
	if _, err := api.Cancel(t.Context(), owner, j.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the second run ended cancelled", func() bool {
		got, _ := api.Get(t.Context(), owner, j.ID)
		return got.State == jobs.Cancelled
	})
}

// TestCancelQueued: a job that never started is cancelled at once and never runs.
func TestCancelQueued(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	api := b.replica(t, b.config(0), nil)
	org := uuid.Must(uuid.NewV7())
	if _, err := b.st.Pool.Exec(t.Context(), `INSERT INTO orgs (id, name) VALUES ($1, 'o')`, org); err != nil {
		t.Fatal(err)
	}
	j := b.enqueue(t, jobs.New{Kind: "test.effect", OrgID: &org, Payload: effect{}})
	got, err := api.Cancel(t.Context(), jobs.Owner{Org: org}, j.ID)
	if err != nil || got.State != jobs.Cancelled {
		t.Fatalf("cancel = %+v, %v", got, err)
	}
	run(t, b.replica(t, b.config(2), nil))
	time.Sleep(500 * time.Millisecond)
	if n := count(t, b.st, `SELECT count(*) FROM test_effects`); n != 0 {
		t.Fatal("a cancelled job ran")
	}
	var last jobs.Event
	if err := api.Follow(t.Context(), jobs.Owner{Org: org}, j.ID, 0, func(ev jobs.Event) error { last = ev; return nil }); err != nil || last.Type != jobs.EventCancelled {
		t.Fatalf("follow: %+v, %v", last, err)
	}
}

// org creates an org for jobs that need one.
func (b *bundle) org(t testing.TB) uuid.UUID {
	t.Helper()
	org := uuid.Must(uuid.NewV7())
	if _, err := b.st.Pool.Exec(t.Context(), `INSERT INTO orgs (id, name) VALUES ($1, 'o')`, org); err != nil {
		t.Fatal(err)
	}
	return org
}

// TestFollowEnded: the final event of a run nobody followed is not published; a follower
// that comes later gets the run's stored progress, then the final event built from the
// row under the next id, and one that resumes after it gets it again.
func TestFollowEnded(t *testing.T) {
	t.Parallel()
	b := setup(t, func(b *bundle) {
		jobs.Register(b.reg, jobs.Kind{Name: "test.report"}, func(ctx context.Context, run *jobs.Run, _ struct{}) (any, error) {
			return map[string]bool{"ok": true}, run.Report(ctx, jobs.Progress{Done: 1, Total: 1})
		})
	})
	run(t, b.replica(t, b.config(2), nil))
	api := b.replica(t, b.config(0), nil)
	org := b.org(t)
	j := b.enqueue(t, jobs.New{Kind: "test.report", OrgID: &org, Payload: struct{}{}})
	waitFor(t, 10*time.Second, "the job succeeded", func() bool {
		return count(t, b.st, `SELECT count(*) FROM jobs WHERE id = $1 AND state = 'succeeded'`, j.ID) == 1
	})
	stream := b.ks.Key("stream", 1, jobs.StreamID(j.ID, 1))
	if n, err := b.rdb.XLen(t.Context(), stream).Result(); err != nil || n != 1 {
		t.Fatalf("%d events stored (%v), want the progress only", n, err)
	}
	follow := func(after uint64) []jobs.Event {
		var got []jobs.Event
		if err := api.Follow(t.Context(), jobs.Owner{Org: org}, j.ID, after, func(ev jobs.Event) error { got = append(got, ev); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := follow(0)
	if len(got) != 2 || got[0].Type != jobs.EventProgress || got[0].ID != 1 ||
		got[1].Type != jobs.EventSucceeded || got[1].ID != 2 || !got[1].Final || !strings.Contains(string(got[1].Data), `"ok":true`) {
		t.Fatalf("events %+v, want job.progress 1, then job.succeeded 2 (final, with the result)", got)
	}
	if again := follow(2); len(again) != 1 || again[0].Type != jobs.EventSucceeded || again[0].ID != 3 {
		t.Fatalf("resumed after the final event: %+v", again)
	}
}
