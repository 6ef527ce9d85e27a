package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
)

// jobsFixture is a server whose job service runs test.steps: it reports progress, waits
// for the test's go-ahead (or its cancellation), then succeeds.
type jobsFixture struct {
	b     *bundle
	reg   *jobs.Registry
	st    *store.Store
	ts    *httptest.Server
	step  chan struct{}
	alice api.TokenPair
	me    api.Me
}

func newJobsFixture(t *testing.T) *jobsFixture {
	t.Helper()
	f := &jobsFixture{reg: jobs.NewRegistry(), step: make(chan struct{})}
	jobs.Register(f.reg, jobs.Kind{Name: "test.steps"}, func(ctx context.Context, run *jobs.Run, _ struct{}) (any, error) {
		for i := int64(1); i <= 2; i++ {
			if err := run.Report(ctx, jobs.Progress{Done: i, Total: 2, Message: "step"}); err != nil {
				return nil, err
			}
			select {
			case <-f.step:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return map[string]string{"answer": "42"}, nil
	})
	f.b = setup(t)
	f.st = store.New(f.b.pool)
	bus := streams.New(f.b.rdb, f.b.ks, streams.Config{TTL: time.Hour})
	t.Cleanup(bus.Close)
	f.b.srv.jobs = jobs.NewService(jobs.Deps{Registry: f.reg, Store: f.st, Redis: f.b.rdb, Bus: bus},
		jobs.Config{Env: f.b.ks.Env, Concurrency: 2, PollInterval: 50 * time.Millisecond, Heartbeat: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.b.srv.jobs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		iter := f.b.rdb.Scan(context.Background(), 0, "asynq:{"+f.b.ks.Env+".*", 1000).Iterator()
		for iter.Next(context.Background()) {
			f.b.rdb.Del(context.Background(), iter.Val())
		}
	})
	f.ts = httptest.NewServer(f.b.srv)
	t.Cleanup(f.ts.Close)
	f.alice = f.b.signUp(t, "alice@example.com")
	wantStatus(t, f.b.call(t, "GET", "/v1/me", f.alice.AccessToken, nil, &f.me), 200)
	return f
}

// enqueue creates a test.steps job as the user (or, with user nil, as an API key) of org.
func (f *jobsFixture) enqueue(t *testing.T, org uuid.UUID, user *uuid.UUID) uuid.UUID {
	t.Helper()
	var j jobs.Job
	err := f.st.InTx(t.Context(), func(q *db.Queries) error {
		var err error
		j, err = f.reg.Enqueue(t.Context(), q, time.Now(), jobs.New{Kind: "test.steps", OrgID: &org, CreatedBy: user, Payload: struct{}{}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

// events follows a job's events over the live server.
func (f *jobsFixture) events(t *testing.T, credential string, id uuid.UUID, header ...string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	return openEvents(t, f.ts, credential, "/v1/jobs/"+id.String()+"/events", header...)
}

func TestJobs(t *testing.T) {
	t.Parallel()
	f := newJobsFixture(t)
	org, alice := f.me.PersonalOrgId, f.me.Id

	t.Run("ProgressReachesTheClientThenTheEnd", func(t *testing.T) {
		id := f.enqueue(t, org, &alice)
		_, events := f.events(t, f.alice.AccessToken, id)
		first := next(t, events)
		var p api.JobProgressEvent
		if err := json.Unmarshal([]byte(first.data), &p); err != nil || first.event != "job.progress" || first.id != "1" || p.Done != 1 || p.Total != 2 || p.JobId != id {
			t.Fatalf("first event %+v (%v)", first, err)
		}
		f.step <- struct{}{}
		if ev := next(t, events); ev.event != "job.progress" || ev.id != "2" {
			t.Fatalf("second event %+v", ev)
		}
		f.step <- struct{}{}
		end := next(t, events)
		var e api.JobEndEvent
		if err := json.Unmarshal([]byte(end.data), &e); err != nil || end.event != "job.succeeded" || e.State != api.JobSucceeded || e.Attempts != 1 {
			t.Fatalf("end event %+v (%v)", end, err)
		}
		var j api.Job
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs/"+id.String(), f.alice.AccessToken, nil, &j), 200)
		if j.State != api.JobSucceeded || j.Progress.Done != 2 || j.Result == nil || j.FinishedAt == nil {
			t.Fatalf("job %+v", j)
		}

		// Resuming after the last event id sends nothing more; from 1, the rest.
		_, resumed := f.events(t, f.alice.AccessToken, id, "Last-Event-ID", "1")
		if ev := next(t, resumed); ev.id != "2" || ev.event != "job.progress" {
			t.Fatalf("resumed with %+v", ev)
		}
		if ev := next(t, resumed); ev.event != "job.succeeded" {
			t.Fatalf("resumed end %+v", ev)
		}
	})

	t.Run("CancelQueuedThenRetry", func(t *testing.T) {
		// No handler runs it before the cancel: it was created to run in an hour.
		var j jobs.Job
		if err := f.st.InTx(t.Context(), func(q *db.Queries) error {
			var err error
			j, err = f.reg.Enqueue(t.Context(), q, time.Now(), jobs.New{Kind: "test.steps", OrgID: &org, CreatedBy: &alice, Payload: struct{}{}, RunAt: time.Now().Add(time.Hour)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var got api.Job
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+j.ID.String()+"/cancel", f.alice.AccessToken, nil, &got), 200)
		if got.State != api.JobCancelled {
			t.Fatalf("cancelled job %+v", got)
		}
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+j.ID.String()+"/cancel", f.alice.AccessToken, nil, nil), 409)
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+j.ID.String()+"/retry", f.alice.AccessToken, nil, &got), 200)
		if got.State != api.JobQueued || got.Run != 2 || got.Attempts != 0 {
			t.Fatalf("retried job %+v", got)
		}
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+j.ID.String()+"/retry", f.alice.AccessToken, nil, nil), 409)
	})

	t.Run("CancelRunning", func(t *testing.T) {
		id := f.enqueue(t, org, &alice)
		_, events := f.events(t, f.alice.AccessToken, id)
		if ev := next(t, events); ev.event != "job.progress" {
			t.Fatalf("first event %+v", ev)
		}
		var got api.Job
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+id.String()+"/cancel", f.alice.AccessToken, nil, &got), 200)
		if ev := next(t, events); ev.event != "job.cancelled" {
			t.Fatalf("end event %+v", ev)
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs/"+id.String(), f.alice.AccessToken, nil, &got), 200)
		if got.State != api.JobCancelled || got.CancelRequested {
			t.Fatalf("job %+v", got)
		}
	})

	t.Run("ListFiltersAndPages", func(t *testing.T) {
		var page1, page2 api.JobList
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs?limit=2", f.alice.AccessToken, nil, &page1), 200)
		if len(page1.Data) != 2 || page1.NextCursor == nil {
			t.Fatalf("page 1: %d jobs, next %v", len(page1.Data), page1.NextCursor)
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs?limit=2&cursor="+*page1.NextCursor, f.alice.AccessToken, nil, &page2), 200)
		if len(page2.Data) != 1 || page2.NextCursor != nil || page2.Data[0].Id == page1.Data[1].Id {
			t.Fatalf("page 2: %+v", page2)
		}
		var cancelled api.JobList
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs?state=cancelled&kind=test.steps", f.alice.AccessToken, nil, &cancelled), 200)
		if len(cancelled.Data) != 1 {
			t.Fatalf("%d cancelled jobs, want 1", len(cancelled.Data))
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs?state=lost", f.alice.AccessToken, nil, nil), 400)
	})

	t.Run("VisibilityFollowsOrgAndCreator", func(t *testing.T) {
		keyJob := f.enqueue(t, org, nil) // an API key's job: the org's, not alice's
		bob := f.b.signUp(t, "bob@example.com")
		var list api.JobList
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs", bob.AccessToken, nil, &list), 200)
		if len(list.Data) != 0 {
			t.Fatalf("bob sees %d of alice's jobs", len(list.Data))
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs/"+keyJob.String(), bob.AccessToken, nil, nil), 404)
		wantStatus(t, f.b.call(t, "POST", "/v1/jobs/"+keyJob.String()+"/cancel", bob.AccessToken, nil, nil), 404)
		if res, _ := f.events(t, bob.AccessToken, keyJob); res.StatusCode != 404 {
			t.Fatalf("bob follows alice's job: %d", res.StatusCode)
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs/"+keyJob.String(), f.alice.AccessToken, nil, nil), 404)
		key := f.b.createKey(t, f.alice.AccessToken, []string{"jobs"})
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs/"+keyJob.String(), key.Key, nil, nil), 200)
		chatOnly := f.b.createKey(t, f.alice.AccessToken, []string{"chat"})
		wantStatus(t, f.b.call(t, "GET", "/v1/jobs", chatOnly.Key, nil, nil), 403)
		f.step <- struct{}{}
		f.step <- struct{}{}
	})
}
