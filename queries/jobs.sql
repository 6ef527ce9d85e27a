-- name: CreateJob :one
INSERT INTO jobs (id, org_id, kind, queue, state, payload, max_attempts, created_by, api_key_id,
                  unique_key, unique_until, run_at, task_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $1::uuid::text, $12, $12)
RETURNING *;

-- The live job of a kind with a unique key, if one was created inside its window.
-- name: GetUniqueJob :one
SELECT * FROM jobs
WHERE kind = $1 AND unique_key = $2 AND unique_until > sqlc.arg(now)
ORDER BY unique_until DESC
LIMIT 1;

-- Serialises the creators of one unique key for the rest of their transactions.
-- name: LockJobKey :exec
SELECT pg_advisory_xact_lock(hashtextextended(sqlc.arg(kind)::text || ':' || sqlc.arg(unique_key)::text, 7243011));

-- name: GetJob :one
SELECT * FROM jobs WHERE id = $1;

-- A user (created_by set) sees the jobs they created; an API key every one of its org.
-- name: GetOrgJob :one
SELECT * FROM jobs
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
  AND (sqlc.narg(user_id)::uuid IS NULL OR created_by = sqlc.narg(user_id)::uuid);

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- name: ListJobs :many
SELECT * FROM jobs
WHERE org_id = sqlc.arg(org_id)
  AND (sqlc.narg(user_id)::uuid IS NULL OR created_by = sqlc.narg(user_id)::uuid)
  AND (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind)::text)
  AND (sqlc.narg(state)::text IS NULL OR state = sqlc.narg(state)::text)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- The relay's batch: committed jobs due to run that are not in Asynq yet, marked handed
-- over before they are (a handler must not wait on the relay's row locks); the relay
-- unmarks those it could not enqueue, and the reconciler re-enqueues those of a relay
-- that died in between. SKIP LOCKED lets any number of relays share the outbox.
-- name: ClaimOutbox :many
UPDATE jobs SET enqueued_at = sqlc.arg(now)
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'queued' AND enqueued_at IS NULL AND run_at <= sqlc.arg(now)
    ORDER BY run_at
    LIMIT sqlc.arg(max_rows)
    FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: UnmarkJobsEnqueued :exec
UPDATE jobs SET enqueued_at = NULL WHERE id = ANY(sqlc.arg(ids)::uuid[]) AND state = 'queued';

-- Starts an attempt of a queued job under the task that carries it; a stale task (another
-- task id) or a job that is not queued starts nothing.
-- name: StartJob :one
UPDATE jobs
SET state = 'running', attempts = attempts + 1, started_at = sqlc.arg(now), heartbeat_at = sqlc.arg(now),
    updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND task_id = sqlc.arg(task_id) AND state = 'queued' AND cancel_requested_at IS NULL
RETURNING *;

-- name: HeartbeatJobs :exec
UPDATE jobs SET heartbeat_at = sqlc.arg(now) WHERE id = ANY(sqlc.arg(ids)::uuid[]) AND state = 'running';

-- Stores a running attempt's progress; the attempt number fences a superseded attempt.
-- name: SetJobProgress :exec
UPDATE jobs SET progress_done = $2, progress_total = $3, progress_message = $4
WHERE id = $1 AND state = 'running' AND attempts = sqlc.arg(attempt);

-- Ends an attempt: a final state, or queued again for a retry (Asynq holds the task).
-- The attempt number fences an attempt superseded by the reconciler.
-- name: EndJobAttempt :one
UPDATE jobs
SET state = sqlc.arg(state), result = sqlc.narg(result), last_error = sqlc.arg(last_error),
    progress_done = sqlc.arg(progress_done), progress_total = sqlc.arg(progress_total),
    progress_message = sqlc.arg(progress_message),
    finished_at = sqlc.narg(finished_at), heartbeat_at = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state = 'running' AND attempts = sqlc.arg(attempt)
RETURNING *;

-- name: CancelQueuedJob :one
UPDATE jobs
SET state = 'cancelled', cancel_requested_at = sqlc.arg(now), finished_at = sqlc.arg(now), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state = 'queued'
RETURNING *;

-- name: RequestJobCancel :one
UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, sqlc.arg(now))
WHERE id = sqlc.arg(id) AND state = 'running'
RETURNING *;

-- A new run of a failed or cancelled job: a new task and a new event stream.
-- name: RetryJob :one
UPDATE jobs
SET state = 'queued', run = run + 1, attempts = 0, task_id = id::text || '.' || (run + 1)::text,
    enqueued_at = NULL, heartbeat_at = NULL, cancel_requested_at = NULL, started_at = NULL,
    finished_at = NULL, result = NULL, progress_done = 0, progress_total = 0, progress_message = '', discarded_at = NULL, discarded_by = NULL,
    run_at = sqlc.arg(now), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state IN ('failed', 'cancelled')
RETURNING *;

-- The jobs Asynq should hold: queued and handed over (before handed_before: a relay may
-- be enqueueing the latest), or running.
-- name: ListActiveJobs :many
SELECT * FROM jobs
WHERE state IN ('queued', 'running') AND enqueued_at IS NOT NULL
  AND (state = 'running' OR enqueued_at < sqlc.arg(handed_before))
  AND (sqlc.narg(after)::uuid IS NULL OR id > sqlc.narg(after)::uuid)
ORDER BY id
LIMIT sqlc.arg(max_rows);

-- Puts a job whose task was lost back into the outbox under task_id, unless it changed
-- since the sweep read it (updated_at fences it).
-- name: RequeueJob :execrows
UPDATE jobs
SET state = 'queued', enqueued_at = NULL, task_id = sqlc.arg(task_id), last_error = sqlc.arg(last_error),
    heartbeat_at = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND updated_at = sqlc.arg(seen)
  AND (state = 'queued' OR (state = 'running' AND heartbeat_at < sqlc.arg(stale_before)));


-- Ended jobs past their retention: succeeded and cancelled ones finished before
-- finished_before, failed ones (kept longer for the failed-job audit) before
-- failed_before. In batches of at most max_rows.
-- name: PurgeFinishedJobs :execrows
DELETE FROM jobs WHERE id IN (
    SELECT j.id FROM jobs j
    WHERE j.finished_at IS NOT NULL
      AND ((j.state IN ('succeeded', 'cancelled') AND j.finished_at < sqlc.arg(finished_before)::timestamptz)
        OR (j.state = 'failed' AND j.finished_at < sqlc.arg(failed_before)::timestamptz))
    LIMIT sqlc.arg(max_rows));
