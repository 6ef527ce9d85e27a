-- name: GetOrgRetention :one
SELECT * FROM org_retention WHERE org_id = $1;

-- name: UpsertOrgRetention :one
INSERT INTO org_retention (org_id, deleted_prompts_days, deleted_conversations_days, finished_jobs_days, failed_jobs_days, usage_days, updated_at, updated_by)
VALUES (sqlc.arg(org_id), sqlc.narg(deleted_prompts_days), sqlc.narg(deleted_conversations_days), sqlc.narg(finished_jobs_days),
        sqlc.narg(failed_jobs_days), sqlc.narg(usage_days), sqlc.arg(updated_at), sqlc.narg(updated_by))
ON CONFLICT (org_id) DO UPDATE
SET deleted_prompts_days = EXCLUDED.deleted_prompts_days, deleted_conversations_days = EXCLUDED.deleted_conversations_days,
    finished_jobs_days = EXCLUDED.finished_jobs_days, failed_jobs_days = EXCLUDED.failed_jobs_days,
    usage_days = EXCLUDED.usage_days, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
RETURNING *;

-- Usage rows older than their org's usage retention (default_days without a setting of
-- the org; null: kept). Driven by the orgs so each org's rows are a range of the
-- (org_id, created_at) index; rows of orgs deleted since are the erasure's.
-- name: PurgeOldUsage :execrows
DELETE FROM llm_usage WHERE id IN (
    SELECT u.id FROM orgs o
    LEFT JOIN org_retention r ON r.org_id = o.id
    JOIN llm_usage u ON u.org_id = o.id
     AND u.created_at < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.usage_days, sqlc.narg(default_days)::integer))
    LIMIT sqlc.arg(max_rows));
