package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
)

// mailPayload is the payload of the test job kinds; its password must never show.
type mailPayload struct {
	To       string `json:"to"`
	Password string `json:"password"`
}

// withJobsAdmin wires the jobs admin endpoints on the bundle's database and Redis, with
// kinds test.mail (queue "mail") and test.report, and returns the registry.
func (b *bundle) withJobsAdmin(t *testing.T) *jobs.Registry {
	t.Helper()
	reg := jobs.NewRegistry()
	noop := func(context.Context, *jobs.Run, mailPayload) (any, error) { return nil, nil }
	jobs.Register(reg, jobs.Kind{Name: "test.mail", Queue: "mail"}, noop)
	jobs.Register(reg, jobs.Kind{Name: "test.report"}, noop)
	st := store.New(b.pool)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := jobs.NewService(jobs.Deps{Registry: reg, Store: st, Redis: b.rdb, Bus: streams.New(b.rdb, b.ks, streams.Config{}), Log: log, Now: time.Now},
		jobs.Config{Env: b.ks.Env})
	b.srv.jobsAdmin = JobsAdmin{Schedules: jobs.NewScheduler(st, reg, log, time.Second, time.Now), Jobs: jobs.NewAdmin(svc)}
	t.Cleanup(func() { b.rdb.Del(context.Background(), "asynq:{"+b.ks.Env+".mail}:paused") })
	return reg
}

// failedJob creates a job of kind for org and fails it, as the runtime does after its
// last attempt.
func (b *bundle) failedJob(t *testing.T, reg *jobs.Registry, kind string, org uuid.UUID) uuid.UUID {
	t.Helper()
	j, err := reg.Enqueue(t.Context(), store.New(b.pool).Queries, time.Now(), jobs.New{Kind: kind, OrgID: &org,
		Payload: mailPayload{To: "ada@example.com", Password: "hunter2"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.pool.Exec(t.Context(), `UPDATE jobs SET state = 'failed', attempts = max_attempts, finished_at = now(),
		last_error = 'dial smtp://mailer:s3cret@mail.internal: refused' WHERE id = $1`, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	return j.ID
}

func TestJobsAdminSchedules(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.withJobsAdmin(t)
	admin, _ := b.signUpAdmin(t, "root@example.com")
	user := b.signUp(t, "user@example.com")

	t.Run("ErrNotAdmin", func(t *testing.T) {
		res := b.call(t, "GET", "/v1/admin/schedules", user.AccessToken, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 403 || p.Code != api.PermissionDenied {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})

	var sc api.JobSchedule
	res := b.call(t, "POST", "/v1/admin/schedules", admin.AccessToken, map[string]any{
		"name": "nightly-report", "cron": "0 3 * * *", "timezone": "Asia/Shanghai", "kind": "test.report", "payload": map[string]any{"format": "csv"},
	}, &sc)
	if res.StatusCode != 201 || sc.Source != api.ScheduleFromAPI || sc.Paused || len(sc.NextRuns) != 5 || sc.NextRunAt.Hour() != 19 {
		t.Fatalf("create: %d %+v", res.StatusCode, sc)
	}
	for name, tc := range map[string]struct {
		body   map[string]any
		status int
	}{
		"ErrDuplicate":   {map[string]any{"name": "nightly-report", "cron": "@daily", "kind": "test.report"}, 409},
		"ErrCron":        {map[string]any{"name": "x", "cron": "every day", "kind": "test.report"}, 400},
		"ErrUnknownKind": {map[string]any{"name": "x", "cron": "@daily", "kind": "nope"}, 400},
		"ErrName":        {map[string]any{"name": "Bad Name", "cron": "@daily", "kind": "test.report"}, 400},
	} {
		if res := b.call(t, "POST", "/v1/admin/schedules", admin.AccessToken, tc.body, nil); res.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", name, res.StatusCode, readAll(res), tc.status)
		}
	}

	if res := b.call(t, "POST", "/v1/admin/schedules/nightly-report/pause", admin.AccessToken, nil, &sc); res.StatusCode != 200 || !sc.Paused || len(sc.NextRuns) != 0 {
		t.Fatalf("pause: %d %+v", res.StatusCode, sc)
	}
	var list api.JobScheduleList
	if res := b.call(t, "GET", "/v1/admin/schedules", admin.AccessToken, nil, &list); res.StatusCode != 200 || len(list.Data) != 1 || !list.Data[0].Paused {
		t.Fatalf("list: %d %+v", res.StatusCode, list)
	}
	if res := b.call(t, "POST", "/v1/admin/schedules/nightly-report/resume", admin.AccessToken, nil, &sc); res.StatusCode != 200 || sc.Paused {
		t.Fatalf("resume: %d %+v", res.StatusCode, sc)
	}
	if res := b.call(t, "DELETE", "/v1/admin/schedules/nightly-report", admin.AccessToken, nil, nil); res.StatusCode != 204 {
		t.Fatalf("delete: %d %s", res.StatusCode, readAll(res))
	}
	if res := b.call(t, "DELETE", "/v1/admin/schedules/nightly-report", admin.AccessToken, nil, nil); res.StatusCode != 404 {
		t.Fatalf("delete again: %d", res.StatusCode)
	}
	var events api.AuditEventList
	b.call(t, "GET", "/v1/admin/audit-events?action=job_schedule.pause", admin.AccessToken, nil, &events)
	if len(events.Data) != 1 || events.Data[0].TargetId != "nightly-report" || events.Data[0].UserAgent != "kiln-test/1.0" {
		t.Fatalf("pause audit events = %+v", events.Data)
	}
}

func TestJobsAdminFailedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := b.withJobsAdmin(t)
	admin, _ := b.signUpAdmin(t, "root@example.com")
	alice, bob := b.currentUser(t, b.signUp(t, "alice@example.com").AccessToken), b.currentUser(t, b.signUp(t, "bob@example.com").AccessToken)
	mailA1, mailA2 := b.failedJob(t, reg, "test.mail", alice.PersonalOrgId), b.failedJob(t, reg, "test.mail", alice.PersonalOrgId)
	report := b.failedJob(t, reg, "test.report", bob.PersonalOrgId)

	var page api.AdminJobList
	if res := b.call(t, "GET", "/v1/admin/jobs?limit=2", admin.AccessToken, nil, &page); res.StatusCode != 200 || len(page.Data) != 2 || page.NextCursor == nil {
		t.Fatalf("first page: %d %+v", res.StatusCode, page)
	}
	all := walkPages(t, b, "/v1/admin/jobs?state=failed&limit=2", admin.AccessToken, func(p api.AdminJobList) ([]api.AdminJob, *string) { return p.Data, p.NextCursor })
	if len(all) != 3 {
		t.Fatalf("failed jobs of both orgs = %d, want 3", len(all))
	}
	for _, j := range all {
		enc, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		raw := string(enc)
		if strings.Contains(raw, "hunter2") || strings.Contains(raw, "s3cret") || !strings.Contains(raw, "[REDACTED]") || j.Attempts != j.MaxAttempts {
			t.Fatalf("job not redacted: %s", raw)
		}
	}

	var bulk api.AdminJobBulkResult
	res := b.call(t, "POST", "/v1/admin/jobs/discard", admin.AccessToken, map[string]any{"queue": "mail", "org_id": alice.PersonalOrgId}, &bulk)
	if res.StatusCode != 200 || bulk.Count != 2 || bulk.Data[0].DiscardedAt == nil {
		t.Fatalf("bulk discard: %d %+v", res.StatusCode, bulk)
	}
	if res := b.call(t, "POST", "/v1/admin/jobs/retry", admin.AccessToken, map[string]any{}, nil); res.StatusCode != 400 {
		t.Fatalf("retry of nothing named: %d, want 400", res.StatusCode)
	}
	var left api.AdminJobList
	b.call(t, "GET", "/v1/admin/jobs", admin.AccessToken, nil, &left)
	if len(left.Data) != 1 || left.Data[0].Id != report {
		t.Fatalf("failed after the discard = %+v", left.Data)
	}
	var discarded api.AdminJobList
	b.call(t, "GET", "/v1/admin/jobs?discarded=true&queue=mail", admin.AccessToken, nil, &discarded)
	if len(discarded.Data) != 2 {
		t.Fatalf("discarded = %+v", discarded.Data)
	}

	var j api.AdminJob
	if res := b.call(t, "POST", "/v1/admin/jobs/"+report.String()+"/retry", admin.AccessToken, nil, &j); res.StatusCode != 200 || j.State != api.AdminJobQueued || j.Run != 2 {
		t.Fatalf("retry: %d %+v", res.StatusCode, j)
	}
	for _, id := range []uuid.UUID{report, mailA1} { // queued now; discarded
		if res := b.call(t, "POST", "/v1/admin/jobs/"+id.String()+"/retry", admin.AccessToken, nil, nil); res.StatusCode != 409 {
			t.Fatalf("retry of %s: %d, want 409", id, res.StatusCode)
		}
	}
	if res := b.call(t, "POST", "/v1/admin/jobs/"+uuid.NewString()+"/discard", admin.AccessToken, nil, nil); res.StatusCode != 404 {
		t.Fatalf("discard of no job: %d", res.StatusCode)
	}
	if res := b.call(t, "POST", "/v1/admin/jobs/retry", b.nonAdmin(t), map[string]any{"all": true}, nil); res.StatusCode != 403 {
		t.Fatalf("bulk retry by a user: %d", res.StatusCode)
	}

	var events api.AuditEventList
	b.call(t, "GET", "/v1/admin/audit-events?action=job.discard", admin.AccessToken, nil, &events)
	got := map[string]bool{}
	for _, e := range events.Data {
		if e.OrgId == nil || *e.OrgId != alice.PersonalOrgId {
			t.Errorf("job.discard event in org %v, want alice's", e.OrgId)
		}
		got[e.TargetId] = true
	}
	if len(got) != 2 || !got[mailA1.String()] || !got[mailA2.String()] {
		t.Fatalf("job.discard events = %v", got)
	}
	b.call(t, "GET", "/v1/admin/audit-events?action=job.retry", admin.AccessToken, nil, &events)
	if len(events.Data) != 1 || events.Data[0].TargetId != report.String() {
		t.Fatalf("job.retry events = %+v", events.Data)
	}
}

func TestJobsAdminQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	reg := b.withJobsAdmin(t)
	admin, _ := b.signUpAdmin(t, "root@example.com")
	org := b.currentUser(t, admin.AccessToken).PersonalOrgId
	b.failedJob(t, reg, "test.mail", org)

	var list api.JobQueueList
	if res := b.call(t, "GET", "/v1/admin/queues", admin.AccessToken, nil, &list); res.StatusCode != 200 || len(list.Data) != 2 {
		t.Fatalf("queues: %d %+v", res.StatusCode, list)
	}
	if m := list.Data[1]; m.Name != "mail" || m.Jobs.Failed != 1 || m.FailedPerMinute != 0.2 || m.Paused {
		t.Fatalf("mail = %+v", m)
	}
	var q api.JobQueue
	if res := b.call(t, "POST", "/v1/admin/queues/mail/pause", admin.AccessToken, nil, &q); res.StatusCode != 200 || !q.Paused {
		t.Fatalf("pause: %d %+v", res.StatusCode, q)
	}
	if res := b.call(t, "POST", "/v1/admin/queues/mail/resume", admin.AccessToken, nil, &q); res.StatusCode != 200 || q.Paused {
		t.Fatalf("resume: %d %+v", res.StatusCode, q)
	}
	if res := b.call(t, "POST", "/v1/admin/queues/nope/pause", admin.AccessToken, nil, nil); res.StatusCode != 404 {
		t.Fatalf("pause of no queue: %d", res.StatusCode)
	}
	var events api.AuditEventList
	b.call(t, "GET", "/v1/admin/audit-events?action=job_queue.pause", admin.AccessToken, nil, &events)
	if len(events.Data) != 1 || events.Data[0].TargetId != "mail" {
		t.Fatalf("job_queue.pause events = %+v", events.Data)
	}
}

// nonAdmin signs up a user who is not an admin and returns their access token.
func (b *bundle) nonAdmin(t *testing.T) string {
	t.Helper()
	return b.signUp(t, uuid.NewString()+"@example.com").AccessToken
}
