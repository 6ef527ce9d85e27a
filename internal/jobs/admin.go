package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/store"
)

// MaxBulk is how many jobs one bulk retry or discard changes at most; a larger selection
// is taken in several calls.
const MaxBulk = 1000

// rateWindow is the past over which processed and failed per minute are averaged.
const rateWindow = 5 * time.Minute

// Admin is what platform admins do with jobs across every org: the failed-job audit
// (list with redacted payloads, retry, discard) and queue monitoring (counts, latency,
// rates, pause and resume). Every change is audited.
type Admin struct {
	svc *Service
}

// NewAdmin returns the admin operations over svc.
func NewAdmin(svc *Service) *Admin { return &Admin{svc: svc} }

// AdminJob is a job as an admin sees it: its payload redacted, and whether it was discarded.
type AdminJob struct {
	Job
	DiscardedAt *time.Time
	DiscardedBy *uuid.UUID
}

// AdminFilter narrows Admin.Jobs; zero fields do not filter.
type AdminFilter struct {
	State State
	// Discarded lists the discarded jobs instead of the others.
	Discarded bool
	Kind      string
	Queue     string
	OrgID     *uuid.UUID
	Before    *uuid.UUID // cursor: jobs older than this one
	Limit     int
}

// Jobs lists jobs of every org, newest first, narrowed by f, with their payloads redacted
// (secret-like members and credential-looking strings masked, as in the logs).
func (a *Admin) Jobs(ctx context.Context, f AdminFilter) ([]AdminJob, error) {
	rows, err := a.svc.Store.AdminListJobs(ctx, db.AdminListJobsParams{
		State: store.Text(string(f.State)), Discarded: f.Discarded, Kind: store.Text(f.Kind), Queue: store.Text(f.Queue),
		OrgID: store.NullUUID(f.OrgID), Before: store.NullUUID(f.Before), RowLimit: int32(min(max(f.Limit, 1), MaxBulk)), //nolint:gosec // bounded
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", store.Translate(err))
	}
	out := make([]AdminJob, len(rows))
	for i, r := range rows {
		out[i] = toAdminJob(r)
	}
	return out, nil
}

// Selection names the failed jobs a bulk action applies to: the jobs IDs (at most
// MaxBulk), or every failed job matching Kind, Queue and OrgID (All with no filter: every
// failed job), up to MaxBulk per call. Discarded jobs are never selected.
type Selection struct {
	IDs   []uuid.UUID
	Kind  string
	Queue string
	OrgID *uuid.UUID
	All   bool
}

func (s Selection) validate() error {
	filtered := s.Kind != "" || s.Queue != "" || s.OrgID != nil || s.All
	switch {
	case len(s.IDs) == 0 && !filtered:
		return errs.E(errs.Invalid, "Name the jobs: ids, or a filter (kind, queue, org_id, or all).")
	case len(s.IDs) > 0 && filtered:
		return errs.E(errs.Invalid, "Name the jobs either by ids or by a filter, not both.")
	case len(s.IDs) > MaxBulk:
		return errs.E(errs.Invalid, "At most %d ids at once.", MaxBulk)
	}
	return nil
}

// Retry starts a new run of each selected failed job (attempts from zero, a new event
// stream: what Service.RetryJob does), audited as job.retry per job. It returns the jobs
// it retried; selected ids that are not failed jobs are left out.
func (a *Admin) Retry(ctx context.Context, by audit.Actor, sel Selection) ([]AdminJob, error) {
	return a.bulk(ctx, by, sel, "job.retry", func(q *db.Queries, now time.Time, j db.Job) (db.Job, error) {
		return q.RetryJob(ctx, db.RetryJobParams{ID: j.ID, Now: now})
	})
}

// Discard marks each selected failed job discarded, audited as job.discard per job: the
// row stays (for the record) but no longer counts nor lists as failed. It returns the
// jobs it discarded; selected ids that are not failed jobs are left out.
func (a *Admin) Discard(ctx context.Context, by audit.Actor, sel Selection) ([]AdminJob, error) {
	return a.bulk(ctx, by, sel, "job.discard", func(q *db.Queries, now time.Time, j db.Job) (db.Job, error) {
		if err := q.DiscardJob(ctx, db.DiscardJobParams{ID: j.ID, Now: now, DiscardedBy: store.NullUUID(by.UserID())}); err != nil {
			return db.Job{}, err
		}
		j.DiscardedAt, j.DiscardedBy, j.UpdatedAt = &now, store.NullUUID(by.UserID()), now
		return j, nil
	})
}

// RetryOne retries the failed job id. Errors: not_found; conflict when it is not failed
// (or was discarded).
func (a *Admin) RetryOne(ctx context.Context, by audit.Actor, id uuid.UUID) (AdminJob, error) {
	return a.one(ctx, id, func() ([]AdminJob, error) { return a.Retry(ctx, by, Selection{IDs: []uuid.UUID{id}}) })
}

// DiscardOne discards the failed job id. Errors: not_found; conflict when it is not
// failed (or was discarded already).
func (a *Admin) DiscardOne(ctx context.Context, by audit.Actor, id uuid.UUID) (AdminJob, error) {
	return a.one(ctx, id, func() ([]AdminJob, error) { return a.Discard(ctx, by, Selection{IDs: []uuid.UUID{id}}) })
}

func (a *Admin) one(ctx context.Context, id uuid.UUID, do func() ([]AdminJob, error)) (AdminJob, error) {
	done, err := do()
	if err != nil {
		return AdminJob{}, err
	}
	if len(done) == 1 {
		return done[0], nil
	}
	cur, err := a.svc.Store.GetJob(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return AdminJob{}, notFound(id)
	} else if err != nil {
		return AdminJob{}, fmt.Errorf("get job: %w", err)
	}
	if cur.DiscardedAt != nil {
		return AdminJob{}, errs.E(errs.Conflict, "Job %s was discarded.", id)
	}
	return AdminJob{}, errs.E(errs.Conflict, "Only a failed job can be retried or discarded here; job %s is %s.", id, cur.State)
}

// bulk locks the selected failed jobs and applies change to each, with its audit event,
// in one transaction that a client's disconnect cannot cancel.
func (a *Admin) bulk(ctx context.Context, by audit.Actor, sel Selection, action string, change func(q *db.Queries, now time.Time, j db.Job) (db.Job, error)) ([]AdminJob, error) {
	if err := sel.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	now := a.svc.Now().UTC()
	var out []AdminJob
	err := a.svc.Store.InTx(ctx, func(q *db.Queries) error {
		p := db.LockFailedJobsParams{Kind: store.Text(sel.Kind), Queue: store.Text(sel.Queue), OrgID: store.NullUUID(sel.OrgID), RowLimit: MaxBulk}
		if len(sel.IDs) > 0 {
			p.Ids = sel.IDs
		}
		rows, err := q.LockFailedJobs(ctx, p)
		if err != nil {
			return fmt.Errorf("select failed jobs: %w", err)
		}
		out = make([]AdminJob, 0, len(rows))
		for _, r := range rows {
			changed, err := change(q, now, r)
			if err != nil {
				return fmt.Errorf("%s %s: %w", action, r.ID, store.Translate(err))
			}
			e := event(action, "job", r.ID.String(), map[string]any{
				"kind": r.Kind, "queue": r.Queue, "attempts": r.Attempts, "last_error": logging.RedactString(r.LastError), "bulk": len(sel.IDs) != 1,
			})
			e.OrgID = store.UUIDPtr(r.OrgID)
			if err := audit.Write(ctx, q, by, e); err != nil {
				return err
			}
			out = append(out, toAdminJob(changed))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func toAdminJob(r db.Job) AdminJob {
	j := toJob(r)
	j.Payload = logging.RedactJSON(j.Payload)
	j.LastError = logging.RedactString(j.LastError)
	if j.Result != nil {
		j.Result = logging.RedactJSON(j.Result)
	}
	return AdminJob{Job: j, DiscardedAt: r.DiscardedAt, DiscardedBy: store.UUIDPtr(r.DiscardedBy)}
}

// QueueStats is one queue's state. Job counts, the oldest pending job and the rates come
// from PostgreSQL (the source of truth); the task counts and Paused from Asynq.
type QueueStats struct {
	Name  string // the kinds' queue name, e.g. "default"
	Asynq string // the Asynq queue, "<env>.<name>"
	// Jobs counts the queued, running and failed (not discarded) jobs.
	Jobs map[State]int64
	// OldestPending is how long the oldest queued job whose time has come has waited.
	OldestPending time.Duration
	// StaleRunning counts running jobs whose heartbeat stopped (orphans the reconciler
	// will run again).
	StaleRunning int64
	// ProcessedPerMinute counts jobs that ended (succeeded, failed or cancelled) and
	// FailedPerMinute those that failed, per minute over the last five minutes.
	ProcessedPerMinute float64
	FailedPerMinute    float64
	Tasks              TaskCounts
	Paused             bool
}

// TaskCounts are Asynq's counts for a queue: its tasks by state, and the attempts it
// processed and failed today (UTC).
type TaskCounts struct {
	Pending, Active, Scheduled, Retry, Archived, Completed int
	ProcessedToday, FailedToday                            int
}

// StaleAfter is how long a running job's heartbeat may be silent before it is an orphan.
func (s *Service) StaleAfter() time.Duration { return staleBeats * s.cfg.Heartbeat }

// Queues returns the state of every queue of a registered kind and of every queue jobs
// are in, by name.
func (a *Admin) Queues(ctx context.Context) ([]QueueStats, error) {
	now := a.svc.Now().UTC()
	live, err := a.svc.Store.CountLiveJobs(ctx, db.CountLiveJobsParams{Now: now, StaleBefore: now.Add(-a.svc.StaleAfter())})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	finished, err := a.svc.Store.CountFinishedJobs(ctx, now.Add(-rateWindow))
	if err != nil {
		return nil, fmt.Errorf("count finished jobs: %w", err)
	}
	byName := map[string]*QueueStats{}
	get := func(name string) *QueueStats {
		if q, ok := byName[name]; ok {
			return q
		}
		q := &QueueStats{Name: name, Asynq: a.svc.Queue(name), Jobs: map[State]int64{Queued: 0, Running: 0, Failed: 0}}
		byName[name] = q
		return q
	}
	for _, name := range a.queueNames() {
		get(name)
	}
	for _, r := range live {
		q := get(r.Queue)
		q.Jobs[State(r.State)] += r.Jobs
		q.StaleRunning += r.StaleRunning
		q.OldestPending = max(q.OldestPending, time.Duration(r.OldestPendingSeconds*float64(time.Second)))
	}
	perMinute := float64(rateWindow) / float64(time.Minute)
	for _, r := range finished {
		q := get(r.Queue)
		if State(r.State).Final() {
			q.ProcessedPerMinute += float64(r.Jobs) / perMinute
		}
		if State(r.State) == Failed {
			q.FailedPerMinute += float64(r.Jobs) / perMinute
		}
	}
	out := make([]QueueStats, 0, len(byName))
	for _, q := range byName {
		if err := a.taskCounts(ctx, q); err != nil {
			return nil, err
		}
		out = append(out, *q)
	}
	slices.SortFunc(out, func(x, y QueueStats) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// queueNames are the queues of the registered kinds, without the deployment prefix.
func (a *Admin) queueNames() []string {
	var out []string
	for _, name := range a.svc.Registry.Names() {
		k, _ := a.svc.Registry.Kind(name)
		if !slices.Contains(out, k.Queue) {
			out = append(out, k.Queue)
		}
	}
	return out
}

// taskCounts fills in Asynq's view of q. A queue Asynq has not seen a task of yet has
// no counts; its pause is then read from the key Asynq keeps it under.
func (a *Admin) taskCounts(ctx context.Context, q *QueueStats) error {
	info, err := a.svc.inspector.GetQueueInfo(q.Asynq)
	if err != nil {
		paused, perr := a.svc.Redis.Exists(ctx, "asynq:{"+q.Asynq+"}:paused").Result()
		if perr != nil {
			return fmt.Errorf("read queue %s: %w", q.Asynq, errors.Join(err, perr))
		}
		q.Paused = paused == 1
		return nil
	}
	q.Paused = info.Paused
	q.Tasks = TaskCounts{
		Pending: info.Pending, Active: info.Active, Scheduled: info.Scheduled, Retry: info.Retry,
		Archived: info.Archived, Completed: info.Completed, ProcessedToday: info.Processed, FailedToday: info.Failed,
	}
	return nil
}

// PauseQueue stops every worker from taking tasks of queue name (jobs keep being
// created and relayed; they wait). Pausing a paused queue changes nothing. Audited as
// job_queue.pause. Errors: not_found for a queue no kind uses.
func (a *Admin) PauseQueue(ctx context.Context, by audit.Actor, name string) (QueueStats, error) {
	return a.setPaused(ctx, by, name, true)
}

// ResumeQueue lets workers take the tasks of queue name again. Audited as
// job_queue.resume. Errors: not_found for a queue no kind uses.
func (a *Admin) ResumeQueue(ctx context.Context, by audit.Actor, name string) (QueueStats, error) {
	return a.setPaused(ctx, by, name, false)
}

func (a *Admin) setPaused(ctx context.Context, by audit.Actor, name string, pause bool) (QueueStats, error) {
	if !slices.Contains(a.queueNames(), name) {
		return QueueStats{}, errs.E(errs.NotFound, "No queue %s (the queues: %v).", name, a.queueNames())
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	q := QueueStats{Name: name, Asynq: a.svc.Queue(name)}
	if err := a.taskCounts(ctx, &q); err != nil {
		return QueueStats{}, err
	}
	action := "job_queue.resume"
	if pause {
		action = "job_queue.pause"
	}
	if q.Paused != pause {
		var err error
		if pause {
			err = a.svc.inspector.PauseQueue(q.Asynq)
		} else {
			err = a.svc.inspector.UnpauseQueue(q.Asynq)
		}
		// Another admin may have done it meanwhile: the queue is then as asked.
		if err != nil {
			if err2 := a.taskCounts(ctx, &q); err2 != nil || q.Paused != pause {
				return QueueStats{}, fmt.Errorf("%s %s: %w", action, q.Asynq, err)
			}
		}
	}
	// Redis cannot share PostgreSQL's transaction: the event is written once the pause is.
	if err := audit.Write(ctx, a.svc.Store.Queries, by, event(action, "job_queue", name, map[string]any{"asynq_queue": q.Asynq})); err != nil {
		return QueueStats{}, err
	}
	all, err := a.Queues(ctx)
	if err != nil {
		return QueueStats{}, err
	}
	for _, s := range all {
		if s.Name == name {
			return s, nil
		}
	}
	return q, nil
}
