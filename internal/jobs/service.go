package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
)

// Owner is who reads and acts on jobs: an org, and the user when the caller is a user (a
// user sees the jobs they created; an API key sees its org's).
type Owner struct {
	Org  uuid.UUID
	User *uuid.UUID
}

// Filter narrows List.
type Filter struct {
	Kind  string // "": any
	State State  // "": any
	After *uuid.UUID
	Limit int
}

func notFound(id uuid.UUID) error { return errs.E(errs.NotFound, "No such job: %s.", id) }

// Get returns a job the owner may see; others (other orgs', other users') are not_found.
func (s *Service) Get(ctx context.Context, o Owner, id uuid.UUID) (Job, error) {
	row, err := s.Store.GetOrgJob(ctx, db.GetOrgJobParams{OrgID: uuid.NullUUID{UUID: o.Org, Valid: true}, ID: id, UserID: store.NullUUID(o.User)})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Job{}, notFound(id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("get job: %w", err)
	}
	return toJob(row), nil
}

// List returns up to f.Limit (at most 1000) of the owner's jobs, newest first, after the
// cursor id f.After.
func (s *Service) List(ctx context.Context, o Owner, f Filter) ([]Job, error) {
	p := db.ListJobsParams{OrgID: uuid.NullUUID{UUID: o.Org, Valid: true}, UserID: store.NullUUID(o.User), After: store.NullUUID(f.After), MaxRows: int32(min(max(f.Limit, 1), 1000))} //nolint:gosec // bounded
	if f.Kind != "" {
		p.Kind = pgtype.Text{String: f.Kind, Valid: true}
	}
	if f.State != "" {
		p.State = pgtype.Text{String: string(f.State), Valid: true}
	}
	rows, err := s.Store.ListJobs(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]Job, len(rows))
	for i, r := range rows {
		out[i] = toJob(r)
	}
	return out, nil
}

// Cancel cancels a job: one that has not started is cancelled at once; a running one is
// asked to stop (its handler's context is cancelled, on whichever replica runs it) and
// ends cancelled unless it completes first. A finished job is a conflict.
func (s *Service) Cancel(ctx context.Context, o Owner, id uuid.UUID) (Job, error) {
	j, err := s.Get(ctx, o, id)
	if err != nil {
		return Job{}, err
	}
	return s.cancel(ctx, j)
}

// CancelJob cancels job id whoever created it (for administrators and system callers).
func (s *Service) CancelJob(ctx context.Context, id uuid.UUID) (Job, error) {
	row, err := s.Store.GetJob(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Job{}, notFound(id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("get job: %w", err)
	}
	return s.cancel(ctx, toJob(row))
}

func (s *Service) cancel(ctx context.Context, j Job) (Job, error) {
	ctx = context.WithoutCancel(ctx) // a cancel asked for is carried out whatever the client does
	if j.State == Queued {
		ended, err := s.cancelQueued(ctx, j)
		if err != nil || ended != nil {
			return deref(ended, j), err
		}
		// It started meanwhile: cancel it running.
	}
	row, err := s.Store.RequestJobCancel(ctx, db.RequestJobCancelParams{ID: j.ID, Now: ptr(s.Now().UTC())})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		cur, gerr := s.Store.GetJob(ctx, j.ID)
		if gerr != nil {
			return Job{}, fmt.Errorf("get job: %w", gerr)
		}
		if State(cur.State) == Queued { // back in the queue for a retry meanwhile
			ended, err := s.cancelQueued(ctx, toJob(cur))
			if err != nil || ended != nil {
				return deref(ended, j), err
			}
		}
		return Job{}, errs.E(errs.Conflict, "Job %s has already ended (%s).", j.ID, cur.State)
	}
	if err != nil {
		return Job{}, fmt.Errorf("request job cancel: %w", err)
	}
	if err := s.Bus.Cancel(ctx, StreamID(row.ID, int(row.Run))); err != nil {
		return Job{}, fmt.Errorf("cancel job %s: %w", row.ID, err)
	}
	return toJob(row), nil
}

func deref(j *Job, or Job) Job {
	if j == nil {
		return or
	}
	return *j
}

// cancelQueued cancels a job that is not running, with the Finished hook, and publishes its
// final event; nil when it was no longer queued.
func (s *Service) cancelQueued(ctx context.Context, j Job) (*Job, error) {
	var ended Job
	err := s.Store.InTx(ctx, func(q *db.Queries) error {
		row, err := q.CancelQueuedJob(ctx, db.CancelQueuedJobParams{ID: j.ID, Now: ptr(s.Now().UTC())})
		if err != nil {
			return err
		}
		ended = toJob(row)
		if err := s.finished(ctx, q, ended); err != nil {
			return fmt.Errorf("finished hook: %w", err)
		}
		return nil
	})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil //nolint:nilnil // not queued any more
	}
	if err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", j.ID, err)
	}
	s.publishEnds(ctx, []Job{ended})
	return &ended, nil
}

// Retry starts a new run of a failed or cancelled job (attempts from zero, a new event
// stream); any other state is a conflict.
func (s *Service) Retry(ctx context.Context, o Owner, id uuid.UUID) (Job, error) {
	if _, err := s.Get(ctx, o, id); err != nil {
		return Job{}, err
	}
	return s.RetryJob(ctx, id)
}

// RetryJob is Retry whoever created the job (for administrators and system callers); a
// deleted job is not_found.
func (s *Service) RetryJob(ctx context.Context, id uuid.UUID) (Job, error) {
	row, err := s.Store.RetryJob(ctx, db.RetryJobParams{ID: id, Now: s.Now().UTC()})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		cur, gerr := s.Store.GetJob(ctx, id)
		if gerr != nil || cur.DeletedAt != nil {
			return Job{}, notFound(id)
		}
		return Job{}, errs.E(errs.Conflict, "Only a failed or cancelled job can be retried; job %s is %s.", id, cur.State)
	}
	if err != nil {
		return Job{}, fmt.Errorf("retry job: %w", err)
	}
	return toJob(row), nil
}

// Delete soft-deletes an ended job of the owner, audited (job.delete) by by: it is hidden
// from every read and cannot be retried until restored. A queued or running job is a
// conflict (cancel it first); another owner's is not_found.
func (s *Service) Delete(ctx context.Context, o Owner, id uuid.UUID, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	return s.Store.InTx(ctx, func(q *db.Queries) error {
		p := db.DeleteOrgJobParams{Now: ptr(s.Now().UTC()), OrgID: uuid.NullUUID{UUID: o.Org, Valid: true}, ID: id, UserID: store.NullUUID(o.User)}
		row, err := q.DeleteOrgJob(ctx, p)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			cur, gerr := q.GetOrgJob(ctx, db.GetOrgJobParams{OrgID: p.OrgID, ID: id, UserID: p.UserID})
			if gerr != nil {
				return notFound(id)
			}
			return errs.E(errs.Conflict, "Job %s is %s; only an ended job can be deleted: cancel it first.", id, cur.State)
		}
		if err != nil {
			return fmt.Errorf("delete job: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &o.Org, Action: "job.delete", TargetType: "job", TargetID: id.String(),
			Data: map[string]any{"kind": row.Kind, "state": row.State}})
	})
}

// Restore undoes the delete of a job of the owner, audited (job.restore) by by. It returns
// not_found when the owner has no such deleted job, and retention_expired when the job
// ended longer ago than its org's retention for its state (its purge is due).
func (s *Service) Restore(ctx context.Context, o Owner, id uuid.UUID, by audit.Actor) (Job, error) {
	var out Job
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.Store.InTx(ctx, func(q *db.Queries) error {
		row, err := q.GetDeletedOrgJobForUpdate(ctx, db.GetDeletedOrgJobForUpdateParams{
			Now: s.Now(), FinishedDays: int32(s.cfg.Retention.FinishedJobs), FailedDays: int32(s.cfg.Retention.FailedJobs), //nolint:gosec // bounded by retention.Days.Check
			OrgID: uuid.NullUUID{UUID: o.Org, Valid: true}, ID: id, UserID: store.NullUUID(o.User),
		})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errs.E(errs.NotFound, "No such deleted job: %s.", id)
		}
		if err != nil {
			return err
		}
		if row.Expired {
			return errs.E(errs.RetentionExpired, "Job %s was deleted longer ago than this org's retention for %s jobs; it can no longer be restored.", id, row.State)
		}
		restored, err := q.RestoreOrgJob(ctx, id)
		if err != nil {
			return err
		}
		out = toJob(restored)
		return audit.Write(ctx, q, by, audit.Event{OrgID: &o.Org, Action: "job.restore", TargetType: "job", TargetID: id.String(),
			Data: map[string]any{"kind": row.Kind, "state": row.State}})
	})
	if err != nil {
		return Job{}, fmt.Errorf("restore job: %w", err)
	}
	return out, nil
}

// Event is one event of a job's run.
type Event = streams.Event

// Follow calls fn with the events of the job's current run after event id after, stored
// then live, until its final event. The runtime publishes a run's final event only when
// someone follows the job, so Follow marks the job followed (and keeps the mark while it
// follows) before it reads the job: a run that ends later sees the mark; a finished run
// whose final event is not stored (nobody followed it, or its events expired) yields it
// built from the row, after the stored events, under the next id.
func (s *Service) Follow(ctx context.Context, o Owner, id uuid.UUID, after uint64, fn func(Event) error) error {
	if err := s.Bus.MarkFollowed(ctx, followKey(id), followTTL); err != nil {
		return err
	}
	j, err := s.Get(ctx, o, id)
	if err != nil {
		return err
	}
	stream := StreamID(j.ID, j.Run)
	if j.State.Final() {
		events, finished, err := s.Bus.Read(ctx, stream, after, 0)
		if err != nil {
			return err
		}
		last := after
		for _, ev := range events {
			if err := fn(ev); err != nil {
				return err
			}
			if ev.Final {
				return nil
			}
			last = ev.ID
		}
		if finished { // at or before after
			return nil
		}
		typ, ev := endEvent(j)
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode job event: %w", err)
		}
		return fn(Event{ID: last + 1, Type: typ, Data: data, Final: true})
	}
	renew := time.NewTicker(followTTL / 2)
	defer renew.Stop()
	following, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			select {
			case <-following.Done():
				return
			case <-renew.C:
				if err := s.Bus.MarkFollowed(following, followKey(id), followTTL); err != nil && following.Err() == nil {
					s.Log.WarnContext(following, "renew job follower mark", "job", id, "error", err)
				}
			}
		}
	}()
	err = s.Bus.Follow(ctx, stream, after, fn)
	if errors.Is(err, streams.ErrFinished) {
		return nil
	}
	return err
}

// Load returns job id through q (inside the caller's transaction), whoever owns it: for a
// domain that keeps the id of the job it created. Errors: not_found.
func Load(ctx context.Context, q *db.Queries, id uuid.UUID) (Job, error) {
	row, err := q.GetJob(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Job{}, notFound(id)
	}
	if err != nil {
		return Job{}, fmt.Errorf("get job: %w", err)
	}
	return toJob(row), nil
}
