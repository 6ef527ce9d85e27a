package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// secretPayload is a job payload holding what must never show in the admin API.
type secretPayload struct {
	To       string `json:"to"`
	Password string `json:"password"`
	Note     string `json:"note"`
}

// adminSetup is a test bundle for the admin operations: a database, a Redis key space,
// two orgs, an admin, and a Service whose kinds are test.ok, test.fail (one attempt,
// always fails) and test.mail (on queue "mail").
type adminSetup struct {
	st         *store.Store
	rdb        redis.UniversalClient
	ks         redisclient.Keyspace
	reg        *jobs.Registry
	svc        *jobs.Service
	admin      *jobs.Admin
	by         audit.Actor
	orgA, orgB uuid.UUID
}

func setupAdmin(t testing.TB) *adminSetup {
	t.Helper()
	a := &adminSetup{st: storetest.New(t), reg: jobs.NewRegistry()}
	a.rdb, a.ks = storetest.Redis(t)
	jobs.Register(a.reg, jobs.Kind{Name: "test.ok"}, func(context.Context, *jobs.Run, secretPayload) (any, error) { return "done", nil })
	jobs.Register(a.reg, jobs.Kind{Name: "test.fail", MaxAttempts: 1}, func(context.Context, *jobs.Run, secretPayload) (any, error) {
		return nil, errors.New("smtp said no to Bearer abc.def.ghi")
	})
	jobs.Register(a.reg, jobs.Kind{Name: "test.mail", Queue: "mail"}, func(context.Context, *jobs.Run, secretPayload) (any, error) { return nil, nil })
	a.svc = jobs.NewService(jobs.Deps{
		Registry: a.reg, Store: a.st, Redis: a.rdb, Bus: streams.New(a.rdb, a.ks, streams.Config{}), Log: schedLog(), Now: time.Now,
	}, jobs.Config{Env: a.ks.Env, Concurrency: 2, PollInterval: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
	a.admin = jobs.NewAdmin(a.svc)
	a.by = userActor(schedUser(t, a.st), "192.0.2.7")
	a.orgA, a.orgB = newOrg(t, a.st), newOrg(t, a.st)
	t.Cleanup(func() { // Asynq's keys of the test's queues
		ctx := context.Background()
		iter := a.rdb.Scan(ctx, 0, "asynq:{"+a.ks.Env+".*", 1000).Iterator()
		for iter.Next(ctx) {
			a.rdb.Del(ctx, iter.Val())
		}
	})
	return a
}

func newOrg(t testing.TB, st *store.Store) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	if _, err := st.CreateOrg(t.Context(), db.CreateOrgParams{ID: id, Name: "org", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (a *adminSetup) enqueue(t *testing.T, kind string, org uuid.UUID) jobs.Job {
	t.Helper()
	j, err := a.reg.Enqueue(t.Context(), a.st.Queries, time.Now(), jobs.New{Kind: kind, OrgID: &org, Payload: secretPayload{
		To: "ada@example.com", Password: "hunter2", Note: "key sk-abcdefghijklmnopqrstuvwx inside",
	}})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// runUntilEnded runs the real runtime until every job is in a final state.
func (a *adminSetup) runUntilEnded(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var open int
		if err := a.st.Pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')").Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("jobs did not end within 20 s")
}

func (a *adminSetup) audit(t *testing.T, action string) map[string]string {
	t.Helper()
	rows, err := a.st.Pool.Query(t.Context(), "SELECT target_id, coalesce(org_id::text, ''), ip FROM audit_events WHERE action = $1", action)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var target, org, ip string
		if err := rows.Scan(&target, &org, &ip); err != nil {
			t.Fatal(err)
		}
		if ip != "192.0.2.7" {
			t.Errorf("%s event for %s has ip %q", action, target, ip)
		}
		out[target] = org
	}
	return out
}

func TestAdminFailedJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setupAdmin(t)
	failA1, failA2, failB := a.enqueue(t, "test.fail", a.orgA), a.enqueue(t, "test.fail", a.orgA), a.enqueue(t, "test.fail", a.orgB)
	ok := a.enqueue(t, "test.ok", a.orgA)
	a.runUntilEnded(t)

	t.Run("ListRedacted", func(t *testing.T) {
		failed, err := a.admin.Jobs(ctx, jobs.AdminFilter{State: jobs.Failed, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(failed) != 3 {
			t.Fatalf("failed jobs = %d, want 3 (both orgs)", len(failed))
		}
		for _, j := range failed {
			p := string(j.Payload)
			if strings.Contains(p, "hunter2") || strings.Contains(p, "sk-abc") || !strings.Contains(p, `"password":"[REDACTED]"`) || !strings.Contains(p, "ada@example.com") {
				t.Errorf("payload not redacted as it should be: %s", p)
			}
			if j.Attempts != 1 || !strings.Contains(j.LastError, "smtp said no") || strings.Contains(j.LastError, "abc.def.ghi") {
				t.Errorf("job %s: attempts %d, error %q", j.ID, j.Attempts, j.LastError)
			}
		}
		onlyB, err := a.admin.Jobs(ctx, jobs.AdminFilter{State: jobs.Failed, OrgID: &a.orgB, Limit: 10})
		if err != nil || len(onlyB) != 1 || onlyB[0].ID != failB.ID {
			t.Fatalf("org filter: %v, %v", onlyB, err)
		}
	})

	t.Run("ErrSelection", func(t *testing.T) {
		for _, sel := range []jobs.Selection{{}, {IDs: []uuid.UUID{failA1.ID}, Kind: "test.fail"}, {IDs: make([]uuid.UUID, jobs.MaxBulk+1)}} {
			if _, err := a.admin.Retry(ctx, a.by, sel); errs.CodeOf(err) != errs.Invalid {
				t.Errorf("selection %+v: err = %v, want invalid_request", sel, err)
			}
		}
	})

	t.Run("SingleErrors", func(t *testing.T) {
		if _, err := a.admin.RetryOne(ctx, a.by, ok.ID); errs.CodeOf(err) != errs.Conflict {
			t.Errorf("retry of a succeeded job: err = %v, want conflict", err)
		}
		if _, err := a.admin.DiscardOne(ctx, a.by, uuid.Must(uuid.NewV7())); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("discard of no job: err = %v, want not_found", err)
		}
	})

	t.Run("BulkDiscardByOrgThenRetryByIDs", func(t *testing.T) {
		discarded, err := a.admin.Discard(ctx, a.by, jobs.Selection{Kind: "test.fail", OrgID: &a.orgA})
		if err != nil || len(discarded) != 2 {
			t.Fatalf("discard: %d jobs, %v; want org A's 2", len(discarded), err)
		}
		for _, j := range discarded {
			if j.DiscardedAt == nil || j.DiscardedBy == nil || *j.DiscardedBy != *a.by.ID || j.State != jobs.Failed {
				t.Errorf("discarded job %+v", j)
			}
		}
		events := a.audit(t, "job.discard")
		if len(events) != 2 || events[failA1.ID.String()] != a.orgA.String() || events[failA2.ID.String()] != a.orgA.String() {
			t.Fatalf("job.discard events = %v", events)
		}
		failed, _ := a.admin.Jobs(ctx, jobs.AdminFilter{State: jobs.Failed, Limit: 10})
		if len(failed) != 1 || failed[0].ID != failB.ID {
			t.Fatalf("failed after the discard = %v, want org B's only", failed)
		}
		kept, _ := a.admin.Jobs(ctx, jobs.AdminFilter{Discarded: true, Limit: 10})
		if len(kept) != 2 {
			t.Fatalf("discarded list = %d jobs, want 2 (rows are kept)", len(kept))
		}
		if _, err := a.admin.RetryOne(ctx, a.by, failA1.ID); errs.CodeOf(err) != errs.Conflict {
			t.Errorf("retry of a discarded job: err = %v, want conflict", err)
		}

		// One id failed, one discarded, one succeeded: only the failed one is retried.
		retried, err := a.admin.Retry(ctx, a.by, jobs.Selection{IDs: []uuid.UUID{failB.ID, failA2.ID, ok.ID}})
		if err != nil || len(retried) != 1 || retried[0].ID != failB.ID {
			t.Fatalf("retry: %v, %v; want failB only", retried, err)
		}
		if r := retried[0]; r.State != jobs.Queued || r.Run != 2 || r.Attempts != 0 {
			t.Fatalf("retried job = state %s, run %d, attempts %d", r.State, r.Run, r.Attempts)
		}
		if events := a.audit(t, "job.retry"); len(events) != 1 || events[failB.ID.String()] != a.orgB.String() {
			t.Fatalf("job.retry events = %v", events)
		}

		// Its creator may still retry a discarded job: the new run is no longer discarded.
		if again, err := a.svc.RetryJob(ctx, failA1.ID); err != nil || again.State != jobs.Queued {
			t.Fatalf("retry of a discarded job by its creator: %+v, %v; want queued", again, err)
		}
		if kept, _ := a.admin.Jobs(ctx, jobs.AdminFilter{Discarded: true, Limit: 10}); len(kept) != 1 || kept[0].ID != failA2.ID {
			t.Fatalf("discarded after the creator's retry = %v, want failA2 only", kept)
		}
	})
}

func TestAdminQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := setupAdmin(t)
	a.enqueue(t, "test.mail", a.orgA)
	a.enqueue(t, "test.mail", a.orgB)
	if _, err := a.st.Pool.Exec(ctx, "UPDATE jobs SET run_at = now() - interval '90 seconds'"); err != nil {
		t.Fatal(err)
	}

	queues, err := a.admin.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(queues) != 2 || queues[0].Name != "default" || queues[1].Name != "mail" {
		t.Fatalf("queues = %+v, want default and mail", queues)
	}
	mail := queues[1]
	if mail.Jobs[jobs.Queued] != 2 || mail.OldestPending < 89*time.Second || mail.OldestPending > 120*time.Second || mail.Asynq != a.ks.Env+".mail" {
		t.Fatalf("mail = %+v: want 2 queued, the oldest waiting 90 s", mail)
	}

	paused, err := a.admin.PauseQueue(ctx, a.by, "mail")
	if err != nil || !paused.Paused {
		t.Fatalf("pause: %+v, %v", paused, err)
	}
	if again, err := a.admin.PauseQueue(ctx, a.by, "mail"); err != nil || !again.Paused {
		t.Fatalf("pause twice: %+v, %v", again, err)
	}
	// While paused, the relay hands the jobs over but no worker takes them.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.svc.Run(runCtx) }()
	time.Sleep(time.Second)
	var ran int
	_ = a.st.Pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state <> 'queued'").Scan(&ran)
	if ran != 0 {
		t.Errorf("%d jobs ran in a paused queue", ran)
	}
	resumed, err := a.admin.ResumeQueue(ctx, a.by, "mail")
	if err != nil || resumed.Paused {
		t.Fatalf("resume: %+v, %v", resumed, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var succeeded int
		_ = a.st.Pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE state = 'succeeded'").Scan(&succeeded)
		if succeeded == 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	queues, _ = a.admin.Queues(ctx)
	if m := queues[1]; m.Jobs[jobs.Queued] != 0 || m.ProcessedPerMinute != 2.0/5 || m.Tasks.ProcessedToday != 2 {
		t.Fatalf("mail after the resume = %+v: want none queued, 2 processed in the last 5 minutes", m)
	}
	if len(a.audit(t, "job_queue.pause")) != 1 || len(a.audit(t, "job_queue.resume")) != 1 {
		t.Fatal("queue pause and resume are not audited")
	}
	if _, err := a.admin.PauseQueue(ctx, a.by, "nope"); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("pause of no queue: err = %v", err)
	}
}

func TestCollector(t *testing.T) {
	t.Parallel()
	a := setupAdmin(t)
	for range 2 {
		a.enqueue(t, "test.ok", a.orgA)
	}
	a.enqueue(t, "test.fail", a.orgA)
	a.runUntilEnded(t)
	a.enqueue(t, "test.mail", a.orgB) // stays queued: nothing runs now

	reg := prometheus.NewRegistry()
	reg.MustRegister(jobs.NewCollector(a.svc, time.Minute))
	got := gather(t, reg)
	for series, want := range map[string]float64{
		`kiln_jobs{kind="test.fail",queue="default",state="failed"}`: 1,
		`kiln_jobs{kind="test.ok",queue="default",state="failed"}`:   0,
		`kiln_jobs{kind="test.mail",queue="mail",state="queued"}`:    1,
		`kiln_jobs{kind="test.mail",queue="mail",state="running"}`:   0,
		`kiln_jobs_stale_running{kind="test.ok",queue="default"}`:    0,
		`kiln_jobs_processed_total{queue="default"}`:                 3,
		`kiln_jobs_failed_total{queue="default"}`:                    1,
		`kiln_jobs_queue_latency_seconds{queue="default"}`:           0,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	// A running job whose heartbeat stopped is stale; the cache holds the last figures.
	if _, err := a.st.Pool.Exec(t.Context(), "UPDATE jobs SET state = 'running', heartbeat_at = now() - interval '1 hour' WHERE kind = 'test.mail'"); err != nil {
		t.Fatal(err)
	}
	if v := gather(t, reg)[`kiln_jobs_stale_running{kind="test.mail",queue="mail"}`]; v != 0 {
		t.Fatalf("stale read inside the cache ttl = %v, want the cached 0", v)
	}
	fresh := prometheus.NewRegistry()
	fresh.MustRegister(jobs.NewCollector(a.svc, time.Minute))
	if v := gather(t, fresh)[`kiln_jobs_stale_running{kind="test.mail",queue="mail"}`]; v != 1 {
		t.Fatalf("stale running = %v, want 1", v)
	}
}

// gather returns every sample of reg as name{labels sorted} → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}
