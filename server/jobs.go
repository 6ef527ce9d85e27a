package server

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
)

// jobOwner is who acts on jobs: the caller's org, and the user for a user token (users see
// the jobs they created; API keys see their org's).
func (c caller) jobOwner() jobs.Owner {
	o := jobs.Owner{Org: c.org}
	if c.key == uuid.Nil {
		o.User = &c.user
	}
	return o
}

func (s *Server) jobOwnerFor(ctx context.Context, requested *uuid.UUID) (jobs.Owner, error) {
	who, err := s.callerOf(ctx, requested)
	return who.jobOwner(), err
}

// ListJobs lists the caller's jobs, newest first.
func (s *Server) ListJobs(ctx context.Context, req api.ListJobsRequestObject) (api.ListJobsResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.jobs.List(ctx, o, jobs.Filter{Kind: deref(req.Params.Kind), State: jobs.State(deref(req.Params.State)), After: after, Limit: limit + 1})
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(j jobs.Job) uuid.UUID { return j.ID }, toAPIJob)
	return api.ListJobs200JSONResponse{Data: data, NextCursor: next}, nil
}

// GetJob returns one of the caller's jobs.
func (s *Server) GetJob(ctx context.Context, req api.GetJobRequestObject) (api.GetJobResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	j, err := s.jobs.Get(ctx, o, req.Id)
	if err != nil {
		return nil, err
	}
	return api.GetJob200JSONResponse(toAPIJob(j)), nil
}

// DeleteJob soft-deletes an ended job.
func (s *Server) DeleteJob(ctx context.Context, req api.DeleteJobRequestObject) (api.DeleteJobResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.jobs.Delete(ctx, o, req.Id, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeleteJob204Response{}, nil
}

// RestoreJob undoes the delete of a job.
func (s *Server) RestoreJob(ctx context.Context, req api.RestoreJobRequestObject) (api.RestoreJobResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	j, err := s.jobs.Restore(ctx, o, req.Id, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.RestoreJob200JSONResponse(toAPIJob(j)), nil
}

// CancelJob cancels a job, at once or cooperatively.
func (s *Server) CancelJob(ctx context.Context, req api.CancelJobRequestObject) (api.CancelJobResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	j, err := s.jobs.Cancel(ctx, o, req.Id)
	if err != nil {
		return nil, err
	}
	return api.CancelJob200JSONResponse(toAPIJob(j)), nil
}

// RetryJob starts a new run of a failed or cancelled job.
func (s *Server) RetryJob(ctx context.Context, req api.RetryJobRequestObject) (api.RetryJobResponseObject, error) {
	o, err := s.jobOwnerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	j, err := s.jobs.Retry(ctx, o, req.Id)
	if err != nil {
		return nil, err
	}
	return api.RetryJob200JSONResponse(toAPIJob(j)), nil
}

// streamJobEvents serves GET /v1/jobs/{id}/events: the current run's events after the
// client's last one, stored then live, until the final one.
func (s *Server) streamJobEvents(w http.ResponseWriter, r *http.Request) {
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		s.respondError(w, r, errs.E(errs.NotFound, "No such job."))
		return
	}
	after, err := lastEventID(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	o := who.jobOwner()
	if _, err := s.jobs.Get(r.Context(), o, id); err != nil {
		s.respondError(w, r, err)
		return
	}
	s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
		if err := st.open(); err != nil {
			return err
		}
		return s.jobs.Follow(ctx, o, id, after, func(ev jobs.Event) error {
			return st.SendStored(ev.ID, ev.Type, ev.Data)
		})
	})
}

func toAPIJob(j jobs.Job) api.Job {
	out := api.Job{
		Id: j.ID, Kind: j.Kind, Queue: j.Queue, State: api.JobState(j.State),
		Progress: api.JobProgress{Done: j.Progress.Done, Total: j.Progress.Total, Message: j.Progress.Message},
		Attempts: j.Attempts, MaxAttempts: j.MaxAttempts, CreatedBy: j.CreatedBy, Run: j.Run,
		CancelRequested: j.CancelRequestedAt != nil && !j.State.Final(),
		RunAt:           j.RunAt, CreatedAt: j.CreatedAt, StartedAt: j.StartedAt, FinishedAt: j.FinishedAt, UpdatedAt: j.UpdatedAt,
	}
	if j.LastError != "" {
		out.LastError = &j.LastError
	}
	if j.Result != nil {
		var obj map[string]any
		if json.Unmarshal(j.Result, &obj) == nil && obj != nil {
			out.Result = &obj
		} else {
			out.Result = &map[string]any{"value": j.Result}
		}
	}
	return out
}
