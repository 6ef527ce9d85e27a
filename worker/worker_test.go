package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// bundle is what a worker test works with: Redis, a deployment env of the test's own, an
// asynq client and inspector on it, and the captured log.
type bundle struct {
	rdb       redis.UniversalClient
	env       string
	queue     string
	client    *asynq.Client
	inspector *asynq.Inspector
	logs      *logtest.Buffer
	log       *slog.Logger
}

func setup(t *testing.T) bundle {
	t.Helper()
	rdb, ks := storetest.Redis(t)
	b := bundle{
		rdb:       rdb,
		env:       ks.Env,
		queue:     Queue(ks.Env),
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		logs:      &logtest.Buffer{},
	}
	b.log = logging.New(b.logs, "debug")
	// Asynq's keys are outside Kiln's key space; the queue is removed with its tasks.
	t.Cleanup(func() {
		if err := b.inspector.DeleteQueue(b.queue, true); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Errorf("delete queue %s: %v", b.queue, err)
		}
	})
	return b
}

func (b bundle) enqueue(t *testing.T, task *asynq.Task, opts ...asynq.Option) {
	t.Helper()
	if _, err := b.client.Enqueue(task, append([]asynq.Option{asynq.Queue(b.queue)}, opts...)...); err != nil {
		t.Fatalf("enqueue %s: %v", task.Type(), err)
	}
}

// start runs the job service until the test ends; stop cancels it and checks Run returns
// in time.
func start(t *testing.T, w *jobs.Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil after cancel", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("Run did not return within 15s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newWorker runs the housekeeping kind on a job service of the test's own database and
// Redis env, and returns it with the registry that declares the kind.
func newWorker(t *testing.T, b bundle, st *store.Store, purgers []Purger) (*jobs.Service, *jobs.Registry) {
	t.Helper()
	reg := jobs.NewRegistry()
	RegisterHousekeeping(reg, purgers, b.log)
	bus := streams.New(b.rdb, redisclient.Keyspace{Env: b.env}, streams.Config{})
	t.Cleanup(bus.Close)
	svc := jobs.NewService(jobs.Deps{Registry: reg, Store: st, Redis: b.rdb, Bus: bus, Log: b.log},
		jobs.Config{Env: b.env, Concurrency: 2, PollInterval: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
	return svc, reg
}

func TestRunPurgesExpiredOverrides(t *testing.T) {
	t.Parallel()
	b := setup(t)
	st := storetest.New(t)
	ctx := t.Context()

	if _, err := st.UpsertFeatureFlag(ctx, db.UpsertFeatureFlagParams{Key: "beta", Enabled: true, RolloutPercent: 100, StickyBy: "org"}); err != nil {
		t.Fatalf("create flag: %v", err)
	}
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	expired, unexpired, permanent := uuid.New(), uuid.New(), uuid.New()
	for id, expiresAt := range map[uuid.UUID]*time.Time{expired: &past, unexpired: &future, permanent: nil} {
		if _, err := st.UpsertFeatureFlagOverride(ctx, db.UpsertFeatureFlagOverrideParams{
			FlagKey: "beta", SubjectType: "org", SubjectID: id, Enabled: true, ExpiresAt: expiresAt,
		}); err != nil {
			t.Fatalf("create override: %v", err)
		}
	}
	exists := func(id uuid.UUID) bool {
		t.Helper()
		var ok bool
		if err := st.Pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM feature_flag_overrides WHERE subject_id = $1)", id).Scan(&ok); err != nil {
			t.Fatalf("query override: %v", err)
		}
		return ok
	}

	var runs atomic.Int32
	w, reg := newWorker(t, b, st, []Purger{{
		Name: "feature_flag_overrides",
		Purge: func(ctx context.Context) (int64, error) {
			runs.Add(1)
			now := time.Now()
			return st.PurgeExpiredFeatureFlagOverrides(ctx, &now)
		},
	}})
	// Schedules create housekeeping jobs (internal/jobs tests the scheduler); here one.
	if _, err := reg.Enqueue(ctx, st.Queries, time.Now(), jobs.New{Kind: KindHousekeeping.Name, Payload: PurgeExpiredPayload{}}); err != nil {
		t.Fatal(err)
	}
	stop := start(t, w)

	eventually(t, 10*time.Second, "expired override purged", func() bool { return !exists(expired) })
	if !exists(unexpired) || !exists(permanent) {
		t.Errorf("unexpired override kept = %t, permanent kept = %t; want both kept", exists(unexpired), exists(permanent))
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("purger ran %d times, want 1", n)
	}
	eventually(t, 5*time.Second, "purge logged", func() bool { return strings.Contains(b.logs.String(), `"msg":"purged expired rows"`) })

	stop()
	logs := b.logs.String()
	var state string
	if err := st.Pool.QueryRow(ctx, "SELECT string_agg(state, ',') FROM jobs WHERE kind = $1", KindHousekeeping.Name).Scan(&state); err != nil || state != "succeeded" {
		t.Errorf("housekeeping jobs: %q, %v; want one succeeded", state, err)
	}
	for _, want := range []string{`"msg":"jobs started"`, `"` + b.queue + `"`, `"purger":"feature_flag_overrides","rows":1`, `"msg":"jobs stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
	// A clean run and shutdown logs nothing at error level.
	if strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("clean run logged an error:\n%s", logs)
	}
}

func TestPurgeHandler(t *testing.T) {
	t.Parallel()
	errPurge := errors.New("table locked")

	tests := []struct {
		name    string
		payload PurgeExpiredPayload
		failing string // purger that returns errPurge
		wantRan []string
		wantErr error
	}{
		{
			name:    "RunsEveryPurger",
			wantRan: []string{"a", "b", "c"},
		},
		{
			name:    "RunsOnlyNamedPurgers",
			payload: PurgeExpiredPayload{Only: []string{"c", "a"}},
			wantRan: []string{"a", "c"},
		},
		{
			name:    "UnknownNameRunsNothing",
			payload: PurgeExpiredPayload{Only: []string{"nope"}},
		},
		{
			name:    "ErrPurgerFailsIsRetried",
			failing: "b",
			wantRan: []string{"a", "b"},
			wantErr: errPurge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var ran []string
			var purgers []Purger
			for _, name := range []string{"a", "b", "c"} {
				purgers = append(purgers, Purger{Name: name, Purge: func(context.Context) (int64, error) {
					mu.Lock()
					ran = append(ran, name)
					mu.Unlock()
					if name == tt.failing {
						return 0, errPurge
					}
					return 0, nil
				}})
			}
			_, err := purge(t.Context(), purgers, tt.payload, slog.New(slog.DiscardHandler))
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error = %v, want it to wrap %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && err != nil {
				t.Errorf("error = %v, want nil", err)
			}
			if strings.Join(ran, ",") != strings.Join(tt.wantRan, ",") {
				t.Errorf("purgers ran %v, want %v", ran, tt.wantRan)
			}
		})
	}
}

func TestQueueCollector(t *testing.T) {
	t.Parallel()

	t.Run("NothingBeforeTheFirstTask", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if n := testutil.CollectAndCount(NewQueueCollector(b.rdb, b.env)); n != 0 {
			t.Errorf("collected %d metrics for a queue that does not exist, want 0", n)
		}
	})

	t.Run("ReportsPendingTasks", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for range 2 {
			b.enqueue(t, asynq.NewTask(KindHousekeeping.Name, []byte(`{}`)))
		}

		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(NewQueueCollector(b.rdb, b.env))
		want := strings.NewReader(`
# HELP kiln_worker_queue_size Tasks in a worker queue by state.
# TYPE kiln_worker_queue_size gauge
kiln_worker_queue_size{queue="` + b.queue + `",state="active"} 0
kiln_worker_queue_size{queue="` + b.queue + `",state="archived"} 0
kiln_worker_queue_size{queue="` + b.queue + `",state="pending"} 2
kiln_worker_queue_size{queue="` + b.queue + `",state="retry"} 0
kiln_worker_queue_size{queue="` + b.queue + `",state="scheduled"} 0
`)
		if err := testutil.GatherAndCompare(reg, want, "kiln_worker_queue_size"); err != nil {
			t.Error(err)
		}
	})
}

// Queues of two deployments on one Redis do not mix.
func TestQueueIsPerEnv(t *testing.T) {
	t.Parallel()
	if Queue("staging") == Queue("production") {
		t.Fatal("two envs share a queue")
	}
	if got := Queue("production"); !strings.HasPrefix(got, "production") {
		t.Errorf("Queue(production) = %q, want it named after the env", got)
	}
}

func TestIdentityPurgers(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := context.Background()
	now := time.Now()
	old, recent := now.Add(-40*24*time.Hour), now.Add(-time.Hour)
	user := storetest.User(t, st, storetest.Org(t, st))
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := st.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	sessions := map[string]time.Time{"ended_long_ago": old, "ended_recently": recent}
	ids := map[string]uuid.UUID{}
	for name, revoked := range sessions {
		ids[name] = uuid.Must(uuid.NewV7())
		exec(`INSERT INTO sessions (id, user_id, expires_at, revoked_at) VALUES ($1, $2, $3, $4)`, ids[name], user, now.Add(time.Hour), revoked)
	}
	ids["live"] = uuid.Must(uuid.NewV7())
	exec(`INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, $3)`, ids["live"], user, now.Add(time.Hour))
	exec(`INSERT INTO refresh_tokens (id, session_id, token_hash, expires_at) VALUES ($1, $2, 'h1', $3)`, uuid.Must(uuid.NewV7()), ids["ended_long_ago"], now)
	exec(`INSERT INTO email_tokens (id, user_id, purpose, email, token_hash, expires_at) VALUES ($1, $2, 'verify_email', 'u@example.com', 'e1', $3), ($4, $2, 'verify_email', 'u@example.com', 'e2', $5)`,
		uuid.Must(uuid.NewV7()), user, old, uuid.Must(uuid.NewV7()), recent)

	for _, p := range IdentityPurgers(st, func() time.Time { return now }) {
		if _, err := p.Purge(ctx); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	count := func(sql string, args ...any) (n int) {
		t.Helper()
		if err := st.Pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM sessions WHERE id = $1`, ids["ended_long_ago"]); n != 0 {
		t.Error("a session ended 40 days ago was kept")
	}
	if n := count(`SELECT count(*) FROM sessions WHERE id = ANY($1)`, []uuid.UUID{ids["ended_recently"], ids["live"]}); n != 2 {
		t.Errorf("%d of the recent and live sessions kept, want 2", n)
	}
	if n := count(`SELECT count(*) FROM refresh_tokens`); n != 0 {
		t.Error("the purged session's refresh token was kept")
	}
	if n := count(`SELECT count(*) FROM email_tokens`); n != 1 {
		t.Errorf("%d email tokens left, want the recent one", n)
	}
}
