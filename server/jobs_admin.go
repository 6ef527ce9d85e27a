package server

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// JobsAdmin serves the platform-admin endpoints of jobs: schedules, queues and the
// failed-job audit.
type JobsAdmin struct {
	Schedules *jobs.Scheduler
	Jobs      *jobs.Admin
}

// nextRunsShown is how many next run times a schedule lists.
const nextRunsShown = 5

// jobsActor resolves the caller as a platform admin, with the client's address for the
// audit log.
func (s *Server) jobsActor(ctx context.Context) (audit.Actor, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return audit.Actor{}, err
	}
	if s.jobsAdmin.Jobs == nil || s.jobsAdmin.Schedules == nil {
		return audit.Actor{}, errs.E(errs.NotReady, "Jobs are not configured on this server.")
	}
	return actor(ctx), nil
}

// AdminListJobSchedules lists every schedule with its next run times.
func (s *Server) AdminListJobSchedules(ctx context.Context, _ api.AdminListJobSchedulesRequestObject) (api.AdminListJobSchedulesResponseObject, error) {
	if _, err := s.jobsActor(ctx); err != nil {
		return nil, err
	}
	list, err := s.jobsAdmin.Schedules.Schedules(ctx)
	if err != nil {
		return nil, err
	}
	data := make([]api.JobSchedule, len(list))
	for i, sc := range list {
		data[i] = toAPIJobSchedule(sc)
	}
	return api.AdminListJobSchedules200JSONResponse{Data: data}, nil
}

// AdminCreateJobSchedule creates a schedule.
func (s *Server) AdminCreateJobSchedule(ctx context.Context, req api.AdminCreateJobScheduleRequestObject) (api.AdminCreateJobScheduleResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	var payload json.RawMessage
	if req.Body.Payload != nil {
		if payload, err = json.Marshal(*req.Body.Payload); err != nil {
			return nil, errs.E(errs.Invalid, "The payload cannot be encoded.")
		}
	}
	sc, err := s.jobsAdmin.Schedules.Create(ctx, by, jobs.ScheduleSpec{
		Name: req.Body.Name, Cron: req.Body.Cron, Timezone: orZero(req.Body.Timezone), Kind: req.Body.Kind, Payload: payload,
	}, orZero(req.Body.Paused))
	if err != nil {
		return nil, err
	}
	return api.AdminCreateJobSchedule201JSONResponse(toAPIJobSchedule(sc)), nil
}

// AdminDeleteJobSchedule deletes a schedule made through the API.
func (s *Server) AdminDeleteJobSchedule(ctx context.Context, req api.AdminDeleteJobScheduleRequestObject) (api.AdminDeleteJobScheduleResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.jobsAdmin.Schedules.Delete(ctx, by, req.Name); err != nil {
		return nil, err
	}
	return api.AdminDeleteJobSchedule204Response{}, nil
}

// AdminPauseJobSchedule pauses a schedule.
func (s *Server) AdminPauseJobSchedule(ctx context.Context, req api.AdminPauseJobScheduleRequestObject) (api.AdminPauseJobScheduleResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := s.jobsAdmin.Schedules.Pause(ctx, by, req.Name)
	if err != nil {
		return nil, err
	}
	return api.AdminPauseJobSchedule200JSONResponse(toAPIJobSchedule(sc)), nil
}

// AdminResumeJobSchedule resumes a schedule.
func (s *Server) AdminResumeJobSchedule(ctx context.Context, req api.AdminResumeJobScheduleRequestObject) (api.AdminResumeJobScheduleResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := s.jobsAdmin.Schedules.Resume(ctx, by, req.Name)
	if err != nil {
		return nil, err
	}
	return api.AdminResumeJobSchedule200JSONResponse(toAPIJobSchedule(sc)), nil
}

// AdminListJobQueues lists the queues with their counts.
func (s *Server) AdminListJobQueues(ctx context.Context, _ api.AdminListJobQueuesRequestObject) (api.AdminListJobQueuesResponseObject, error) {
	if _, err := s.jobsActor(ctx); err != nil {
		return nil, err
	}
	queues, err := s.jobsAdmin.Jobs.Queues(ctx)
	if err != nil {
		return nil, err
	}
	data := make([]api.JobQueue, len(queues))
	for i, q := range queues {
		data[i] = toAPIJobQueue(q)
	}
	return api.AdminListJobQueues200JSONResponse{Data: data}, nil
}

// AdminPauseJobQueue pauses a queue.
func (s *Server) AdminPauseJobQueue(ctx context.Context, req api.AdminPauseJobQueueRequestObject) (api.AdminPauseJobQueueResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	q, err := s.jobsAdmin.Jobs.PauseQueue(ctx, by, req.Name)
	if err != nil {
		return nil, err
	}
	return api.AdminPauseJobQueue200JSONResponse(toAPIJobQueue(q)), nil
}

// AdminResumeJobQueue resumes a queue.
func (s *Server) AdminResumeJobQueue(ctx context.Context, req api.AdminResumeJobQueueRequestObject) (api.AdminResumeJobQueueResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	q, err := s.jobsAdmin.Jobs.ResumeQueue(ctx, by, req.Name)
	if err != nil {
		return nil, err
	}
	return api.AdminResumeJobQueue200JSONResponse(toAPIJobQueue(q)), nil
}

// AdminListJobs lists jobs of every org, failed ones by default, redacted.
func (s *Server) AdminListJobs(ctx context.Context, req api.AdminListJobsRequestObject) (api.AdminListJobsResponseObject, error) {
	if _, err := s.jobsActor(ctx); err != nil {
		return nil, err
	}
	limit, before, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	state := jobs.Failed
	if req.Params.State != nil {
		state = jobs.State(*req.Params.State)
	}
	list, err := s.jobsAdmin.Jobs.Jobs(ctx, jobs.AdminFilter{
		State: state, Discarded: orZero(req.Params.Discarded), Kind: orZero(req.Params.Kind), Queue: orZero(req.Params.Queue),
		OrgID: req.Params.OrgId, Before: before, Limit: limit + 1,
	})
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(j jobs.AdminJob) uuid.UUID { return j.ID }, toAPIAdminJob)
	return api.AdminListJobs200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminRetryJobs retries the selected failed jobs.
func (s *Server) AdminRetryJobs(ctx context.Context, req api.AdminRetryJobsRequestObject) (api.AdminRetryJobsResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	done, err := s.jobsAdmin.Jobs.Retry(ctx, by, toJobSelection(*req.Body))
	if err != nil {
		return nil, err
	}
	return api.AdminRetryJobs200JSONResponse(toAPIBulkResult(done)), nil
}

// AdminDiscardJobs discards the selected failed jobs.
func (s *Server) AdminDiscardJobs(ctx context.Context, req api.AdminDiscardJobsRequestObject) (api.AdminDiscardJobsResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	done, err := s.jobsAdmin.Jobs.Discard(ctx, by, toJobSelection(*req.Body))
	if err != nil {
		return nil, err
	}
	return api.AdminDiscardJobs200JSONResponse(toAPIBulkResult(done)), nil
}

// AdminRetryJob retries one failed job.
func (s *Server) AdminRetryJob(ctx context.Context, req api.AdminRetryJobRequestObject) (api.AdminRetryJobResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	j, err := s.jobsAdmin.Jobs.RetryOne(ctx, by, req.Id)
	if err != nil {
		return nil, err
	}
	return api.AdminRetryJob200JSONResponse(toAPIAdminJob(j)), nil
}

// AdminDiscardJob discards one failed job.
func (s *Server) AdminDiscardJob(ctx context.Context, req api.AdminDiscardJobRequestObject) (api.AdminDiscardJobResponseObject, error) {
	by, err := s.jobsActor(ctx)
	if err != nil {
		return nil, err
	}
	j, err := s.jobsAdmin.Jobs.DiscardOne(ctx, by, req.Id)
	if err != nil {
		return nil, err
	}
	return api.AdminDiscardJob200JSONResponse(toAPIAdminJob(j)), nil
}

func toJobSelection(b api.JobSelection) jobs.Selection {
	return jobs.Selection{IDs: orZero(b.Ids), Kind: orZero(b.Kind), Queue: orZero(b.Queue), OrgID: b.OrgId, All: orZero(b.All)}
}

func toAPIJobSchedule(sc jobs.Schedule) api.JobSchedule {
	var payload map[string]any
	_ = json.Unmarshal(sc.Payload, &payload) // stored payloads are objects (the API takes objects; config too)
	if payload == nil {
		payload = map[string]any{}
	}
	return api.JobSchedule{
		Id: sc.ID, Name: sc.Name, Source: api.JobScheduleSource(sc.Source), Cron: sc.Cron, Timezone: sc.Timezone,
		Kind: sc.Kind, Payload: payload, Paused: sc.PausedAt != nil, PausedAt: store.UTC(sc.PausedAt),
		NextRunAt: sc.NextRunAt.UTC(), NextRuns: jobs.NextRuns(sc, nextRunsShown), LastRunAt: store.UTC(sc.LastRunAt),
		LastJobId: sc.LastJobID, CreatedAt: sc.CreatedAt.UTC(), UpdatedAt: sc.UpdatedAt.UTC(),
	}
}

func toAPIJobQueue(q jobs.QueueStats) api.JobQueue {
	out := api.JobQueue{
		Name: q.Name, AsynqQueue: q.Asynq, Paused: q.Paused, StaleRunning: q.StaleRunning,
		OldestPendingSeconds: float32(q.OldestPending.Seconds()),
		ProcessedPerMinute:   float32(q.ProcessedPerMinute), FailedPerMinute: float32(q.FailedPerMinute),
	}
	out.Jobs.Queued, out.Jobs.Running, out.Jobs.Failed = q.Jobs[jobs.Queued], q.Jobs[jobs.Running], q.Jobs[jobs.Failed]
	t := q.Tasks
	out.Tasks.Pending, out.Tasks.Active, out.Tasks.Scheduled, out.Tasks.Retry = t.Pending, t.Active, t.Scheduled, t.Retry
	out.Tasks.Archived, out.Tasks.Completed, out.Tasks.ProcessedToday, out.Tasks.FailedToday = t.Archived, t.Completed, t.ProcessedToday, t.FailedToday
	return out
}

func toAPIAdminJob(j jobs.AdminJob) api.AdminJob {
	out := api.AdminJob{
		Id: j.ID, OrgId: j.OrgID, Kind: j.Kind, Queue: j.Queue, State: api.AdminJobState(j.State),
		Payload: j.Payload, Attempts: j.Attempts, MaxAttempts: j.MaxAttempts, LastError: j.LastError, Run: j.Run,
		CreatedBy: j.CreatedBy, ApiKeyId: j.APIKeyID, RunAt: j.RunAt.UTC(), CreatedAt: j.CreatedAt.UTC(),
		StartedAt: store.UTC(j.StartedAt), FinishedAt: store.UTC(j.FinishedAt), UpdatedAt: j.UpdatedAt.UTC(),
		DiscardedAt: store.UTC(j.DiscardedAt), DiscardedBy: j.DiscardedBy,
	}
	if j.Result != nil {
		out.Result = j.Result
	}
	out.Progress.Done, out.Progress.Total, out.Progress.Message = j.Progress.Done, j.Progress.Total, j.Progress.Message
	return out
}

func toAPIBulkResult(done []jobs.AdminJob) api.AdminJobBulkResult {
	data := make([]api.AdminJob, len(done))
	for i, j := range done {
		data[i] = toAPIAdminJob(j)
	}
	return api.AdminJobBulkResult{Count: len(done), Data: data}
}
