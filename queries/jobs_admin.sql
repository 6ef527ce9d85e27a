-- Jobs across every org for platform admins, newest first. Discarded jobs show only when
-- asked for; jobs their org deleted never (they are hidden from every read until restored
-- or purged).
-- name: AdminListJobs :many
SELECT * FROM jobs
WHERE deleted_at IS NULL
  AND (sqlc.narg(state)::text IS NULL OR state = sqlc.narg(state)::text)
  AND (discarded_at IS NOT NULL) = sqlc.arg(discarded)::boolean
  AND (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind)::text)
  AND (sqlc.narg(queue)::text IS NULL OR queue = sqlc.narg(queue)::text)
  AND (sqlc.narg(org_id)::uuid IS NULL OR org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(row_limit);

-- The failed, not discarded (nor deleted) jobs a bulk action applies to: the ids given, or
-- those matching the filter; locked for the rest of the transaction.
-- name: LockFailedJobs :many
SELECT * FROM jobs
WHERE phase = 'failed' AND deleted_at IS NULL
  AND (sqlc.narg(ids)::uuid[] IS NULL OR id = ANY (sqlc.narg(ids)::uuid[]))
  AND (sqlc.narg(kind)::text IS NULL OR kind = sqlc.narg(kind)::text)
  AND (sqlc.narg(queue)::text IS NULL OR queue = sqlc.narg(queue)::text)
  AND (sqlc.narg(org_id)::uuid IS NULL OR org_id = sqlc.narg(org_id)::uuid)
ORDER BY id
LIMIT sqlc.arg(row_limit)
FOR UPDATE;

-- name: DiscardJob :exec
UPDATE jobs SET discarded_at = sqlc.arg(now)::timestamptz, discarded_by = sqlc.narg(discarded_by), updated_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id);

-- Jobs to run, running and failed (not discarded) by queue, kind and state, for metrics and
-- queue monitoring, through the partial index jobs_live: the live jobs are read from the
-- table (there are few), the failed ones counted from the index alone, however many
-- finished jobs the table keeps.
-- name: CountLiveJobs :many
SELECT queue, kind, state, count(*)::bigint AS jobs,
       COALESCE(EXTRACT(EPOCH FROM sqlc.arg(now)::timestamptz - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= sqlc.arg(now)::timestamptz)), 0)::float8 AS oldest_pending_seconds,
       count(*) FILTER (WHERE state = 'running' AND COALESCE(heartbeat_at, started_at, updated_at) < sqlc.arg(stale_before)::timestamptz)::bigint AS stale_running
FROM jobs
WHERE phase = 'live'
GROUP BY queue, kind, state
UNION ALL
SELECT queue, kind, 'failed', count(*)::bigint, 0::float8, 0::bigint
FROM jobs
WHERE phase = 'failed'
GROUP BY queue, kind;

-- Jobs that ended since a time, per queue and final state, for processed and failed rates.
-- name: CountFinishedJobs :many
SELECT queue, state, count(*)::bigint AS jobs
FROM jobs
WHERE finished_at >= sqlc.arg(since)::timestamptz
GROUP BY queue, state;
