-- name: CreateJob :one
INSERT INTO jobs (id, org_id, kind, queue, state, payload, max_attempts, created_by, api_key_id,
                  unique_key, unique_until, run_at, task_id, created_at, updated_at, trace_context)
VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $1::uuid::text, $12, $12, $13)
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
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR created_by = sqlc.narg(user_id)::uuid);

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- name: ListJobs :many
SELECT * FROM jobs
WHERE org_id = sqlc.arg(org_id) AND deleted_at IS NULL
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
    WHERE phase = 'live' AND state = 'queued' AND enqueued_at IS NULL AND run_at <= sqlc.arg(now)
    ORDER BY run_at
    LIMIT sqlc.arg(max_rows)
    FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: UnmarkJobsEnqueued :exec
UPDATE jobs SET enqueued_at = NULL WHERE id = ANY(sqlc.arg(ids)::uuid[]) AND state = 'queued';

-- Starts attempts of queued jobs, each under the task that carries it: one statement for
-- the starts of many concurrent handlers (grouped by the runtime). A stale task (another
-- task id) or a job that is not queued starts nothing: its row is not returned.
-- name: StartJobs :many
UPDATE jobs
SET state = 'running', attempts = jobs.attempts + 1, started_at = sqlc.arg(now), heartbeat_at = sqlc.arg(now),
    updated_at = sqlc.arg(now)
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(task_ids)::text[]) AS task_id) AS t
WHERE jobs.id = ANY(sqlc.arg(ids)::uuid[]) -- the primary key leads, whatever the statistics say
  AND jobs.id = t.id AND jobs.task_id = t.task_id AND jobs.state = 'queued' AND jobs.cancel_requested_at IS NULL
RETURNING jobs.*;

-- Rows locked by another transaction are skipped: they are being ended, and a heartbeat
-- that waited for them could deadlock with a grouped end locking the same rows in
-- another order.
-- name: HeartbeatJobs :exec
UPDATE jobs SET heartbeat_at = sqlc.arg(now)
WHERE id IN (
    SELECT id FROM jobs
    WHERE id = ANY(sqlc.arg(ids)::uuid[]) AND state = 'running'
    FOR UPDATE SKIP LOCKED);

-- Stores a running attempt's progress; the attempt number fences a superseded attempt.
-- name: SetJobProgress :exec
UPDATE jobs SET progress_done = $2, progress_total = $3, progress_message = $4
WHERE id = $1 AND state = 'running' AND attempts = sqlc.arg(attempt);

-- Ends attempts: each a final state (finished then), or queued again for a retry (Asynq
-- holds the task); one statement for the ends of many concurrent handlers. The attempt
-- number fences an attempt superseded by the reconciler: its row is not returned.
-- name: EndJobAttempts :many
UPDATE jobs
SET state = e.state, result = e.result, last_error = e.last_error,
    progress_done = e.progress_done, progress_total = e.progress_total, progress_message = e.progress_message,
    finished_at = CASE WHEN e.state IN ('succeeded', 'failed', 'cancelled') THEN sqlc.arg(now)::timestamptz END,
    heartbeat_at = NULL, updated_at = sqlc.arg(now)
FROM (SELECT unnest(sqlc.arg(ids)::uuid[]) AS id, unnest(sqlc.arg(attempts)::integer[]) AS attempt,
             unnest(sqlc.arg(states)::text[]) AS state, unnest(sqlc.arg(results)::jsonb[]) AS result,
             unnest(sqlc.arg(last_errors)::text[]) AS last_error, unnest(sqlc.arg(progress_done)::bigint[]) AS progress_done,
             unnest(sqlc.arg(progress_total)::bigint[]) AS progress_total,
             unnest(sqlc.arg(progress_messages)::text[]) AS progress_message) AS e
WHERE jobs.id = ANY(sqlc.arg(ids)::uuid[]) -- the primary key leads, whatever the statistics say
  AND jobs.id = e.id AND jobs.state = 'running' AND jobs.attempts = e.attempt
RETURNING jobs.*;

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
WHERE id = sqlc.arg(id) AND state IN ('failed', 'cancelled') AND deleted_at IS NULL
RETURNING *;

-- The jobs the reconciliation looks at: queued and handed over (before handed_before: a
-- relay may be enqueueing the latest), and running with a heartbeat older than
-- stale_before (the others are alive, whatever Asynq says).
-- name: ListActiveJobs :many
SELECT * FROM jobs
WHERE phase = 'live' AND enqueued_at IS NOT NULL
  AND ((state = 'queued' AND enqueued_at < sqlc.arg(handed_before))
    OR (state = 'running' AND heartbeat_at < sqlc.arg(stale_before)))
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


-- Ended jobs past their org's retention (finished_days for succeeded and cancelled ones,
-- failed_days for failed ones, kept longer for the failed-job audit, without a setting of
-- the org), deleted or not. The window counts from a deleted job's deletion (its restore
-- window), from an other job's end. Queued and running jobs are never purged. In batches
-- of at most max_rows.
-- name: PurgeFinishedJobs :execrows
DELETE FROM jobs WHERE id IN (
    SELECT j.id FROM jobs j LEFT JOIN org_retention r ON r.org_id = j.org_id
    WHERE j.finished_at IS NOT NULL
      AND ((j.state IN ('succeeded', 'cancelled')
            AND COALESCE(j.deleted_at, j.finished_at) < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.finished_jobs_days, sqlc.arg(finished_days)::integer)))
        OR (j.state = 'failed'
            AND COALESCE(j.deleted_at, j.finished_at) < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.failed_jobs_days, sqlc.arg(failed_days)::integer))))
    LIMIT sqlc.arg(max_rows));

-- Soft-deletes an ended job of the owner; a job that has not ended is left (0 rows).
-- name: DeleteOrgJob :one
UPDATE jobs SET deleted_at = sqlc.arg(now)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NULL
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND (sqlc.narg(user_id)::uuid IS NULL OR created_by = sqlc.narg(user_id)::uuid)
RETURNING *;

-- A deleted job of the owner, locked; expired says it was deleted longer ago than its
-- org's retention for its state (its purge is due).
-- name: GetDeletedOrgJobForUpdate :one
SELECT j.*, (COALESCE(j.deleted_at, j.finished_at) < sqlc.arg(now)::timestamptz - make_interval(days => CASE WHEN j.state = 'failed'
    THEN COALESCE(r.failed_jobs_days, sqlc.arg(failed_days)::integer)
    ELSE COALESCE(r.finished_jobs_days, sqlc.arg(finished_days)::integer) END))::boolean AS expired
FROM jobs j LEFT JOIN org_retention r ON r.org_id = j.org_id
WHERE j.org_id = sqlc.arg(org_id) AND j.id = sqlc.arg(id) AND j.deleted_at IS NOT NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR j.created_by = sqlc.narg(user_id)::uuid)
FOR UPDATE OF j;

-- name: RestoreOrgJob :one
UPDATE jobs SET deleted_at = NULL WHERE id = sqlc.arg(id) AND deleted_at IS NOT NULL
RETURNING *;
