-- name: CreateJobSchedule :one
INSERT INTO job_schedules (id, name, source, cron, timezone, kind, payload, next_run_at, paused_at, created_by, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
RETURNING *;

-- Writes a schedule from config: a changed cron or timezone moves next_run_at, a pause set
-- through the admin API stays. An API schedule of the same name is left alone (the caller
-- reports the clash).
-- name: UpsertConfigJobSchedule :one
INSERT INTO job_schedules (id, name, source, cron, timezone, kind, payload, next_run_at, created_at, updated_at)
VALUES ($1, $2, 'config', $3, $4, $5, $6, $7, $8, $8)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, kind = EXCLUDED.kind, payload = EXCLUDED.payload,
    next_run_at = CASE WHEN job_schedules.cron = EXCLUDED.cron AND job_schedules.timezone = EXCLUDED.timezone
                       THEN job_schedules.next_run_at ELSE EXCLUDED.next_run_at END,
    updated_at = EXCLUDED.updated_at
WHERE job_schedules.source = 'config'
RETURNING *;

-- Schedules that came from config but are no longer in it.
-- name: DeleteStaleConfigJobSchedules :execrows
DELETE FROM job_schedules WHERE source = 'config' AND NOT (name = ANY (sqlc.arg(names)::text[]));

-- name: LockJobSchedule :one
SELECT * FROM job_schedules WHERE name = $1 FOR UPDATE;

-- name: ListJobSchedules :many
SELECT * FROM job_schedules ORDER BY name;

-- The next due schedule no other replica is running now; its row stays locked until the
-- transaction ends. A row another replica advanced meanwhile is read again and skipped.
-- name: ClaimDueJobSchedule :one
SELECT * FROM job_schedules
WHERE paused_at IS NULL AND next_run_at <= sqlc.arg(now)
ORDER BY next_run_at
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: AdvanceJobSchedule :exec
UPDATE job_schedules
SET next_run_at = sqlc.arg(next_run_at), last_run_at = sqlc.narg(last_run_at), last_job_id = sqlc.narg(last_job_id), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);

-- name: PauseJobSchedule :one
UPDATE job_schedules SET paused_at = COALESCE(paused_at, sqlc.arg(now)), updated_at = sqlc.arg(now)
WHERE name = sqlc.arg(name)
RETURNING *;

-- name: ResumeJobSchedule :one
UPDATE job_schedules
SET next_run_at = CASE WHEN paused_at IS NULL THEN next_run_at ELSE sqlc.arg(next_run_at) END,
    paused_at = NULL, updated_at = sqlc.arg(now)
WHERE name = sqlc.arg(name)
RETURNING *;

-- name: DeleteJobSchedule :one
DELETE FROM job_schedules WHERE name = $1 RETURNING *;
