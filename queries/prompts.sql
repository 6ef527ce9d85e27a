-- name: CreatePrompt :one
INSERT INTO prompts (id, org_id, name, description, created_by, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
RETURNING *;

-- name: GetPrompt :one
SELECT * FROM prompts WHERE org_id = $1 AND name = $2 AND deleted_at IS NULL;

-- Serialises the writers of one prompt (new versions, label moves).
-- name: GetPromptForUpdate :one
SELECT * FROM prompts WHERE org_id = $1 AND name = $2 AND deleted_at IS NULL FOR UPDATE;

-- Newest first; ids are UUIDv7, so the cursor is the last id. deleted lists the deleted
-- prompts instead of the others.
-- name: ListPrompts :many
SELECT * FROM prompts
WHERE org_id = sqlc.arg(org_id) AND (deleted_at IS NOT NULL) = sqlc.arg(deleted)::boolean
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: DeletePrompt :execrows
UPDATE prompts SET deleted_at = sqlc.arg(deleted_at)
WHERE org_id = sqlc.arg(org_id) AND name = sqlc.arg(name) AND deleted_at IS NULL;

-- The deleted prompt named name to restore, locked: the one with id when id is given,
-- else the last deleted. expired says it was deleted longer ago than the org's retention
-- (default_days without a setting of the org).
-- name: GetDeletedPromptForUpdate :one
SELECT p.*, (p.deleted_at < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.deleted_prompts_days, sqlc.arg(default_days)::integer)))::boolean AS expired
FROM prompts p LEFT JOIN org_retention r ON r.org_id = p.org_id
WHERE p.org_id = sqlc.arg(org_id) AND p.name = sqlc.arg(name) AND p.deleted_at IS NOT NULL
  AND (sqlc.narg(id)::uuid IS NULL OR p.id = sqlc.narg(id)::uuid)
ORDER BY p.deleted_at DESC
LIMIT 1
FOR UPDATE OF p;

-- name: RestorePrompt :execrows
UPDATE prompts SET deleted_at = NULL, updated_at = sqlc.arg(updated_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NOT NULL;

-- name: TouchPrompt :exec
UPDATE prompts SET updated_at = sqlc.arg(updated_at) WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- name: CreatePromptVersion :one
INSERT INTO prompt_versions (id, org_id, prompt_id, version, messages, variables, model, parameters, tools, note, created_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING *;

-- name: GetPromptVersion :one
SELECT * FROM prompt_versions WHERE org_id = $1 AND prompt_id = $2 AND version = $3;

-- name: GetLatestPromptVersion :one
SELECT * FROM prompt_versions WHERE org_id = $1 AND prompt_id = $2 ORDER BY version DESC LIMIT 1;

-- name: ListPromptVersions :many
SELECT * FROM prompt_versions
WHERE org_id = sqlc.arg(org_id) AND prompt_id = sqlc.arg(prompt_id)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: LatestPromptVersions :many
SELECT prompt_id, max(version)::integer AS version FROM prompt_versions
WHERE org_id = sqlc.arg(org_id) AND prompt_id = ANY(sqlc.arg(prompt_ids)::uuid[])
GROUP BY prompt_id;

-- name: ExistingPromptVersions :many
SELECT version FROM prompt_versions
WHERE org_id = sqlc.arg(org_id) AND prompt_id = sqlc.arg(prompt_id) AND version = ANY(sqlc.arg(versions)::integer[]);

-- name: ListPromptLabels :many
SELECT * FROM prompt_labels
WHERE org_id = sqlc.arg(org_id) AND prompt_id = ANY(sqlc.arg(prompt_ids)::uuid[])
ORDER BY prompt_id, label;

-- name: GetPromptLabel :one
SELECT * FROM prompt_labels WHERE org_id = $1 AND prompt_id = $2 AND label = $3;

-- name: DeletePromptLabel :one
DELETE FROM prompt_labels WHERE org_id = $1 AND prompt_id = $2 AND label = $3
RETURNING *;

-- name: UpsertPromptLabel :one
INSERT INTO prompt_labels (org_id, prompt_id, label, version, split, experiment_id, updated_at, updated_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (prompt_id, label) DO UPDATE
SET version = EXCLUDED.version, split = EXCLUDED.split, experiment_id = EXCLUDED.experiment_id,
    updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
RETURNING *;

-- name: CreatePromptExperiment :exec
INSERT INTO prompt_experiments (id, org_id, prompt_id, label, split, created_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: EndPromptExperiment :exec
UPDATE prompt_experiments SET ended_at = sqlc.arg(ended_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND ended_at IS NULL;

-- name: GetPromptExperiment :one
SELECT * FROM prompt_experiments WHERE org_id = $1 AND prompt_id = $2 AND id = $3;

-- Per version of an experiment: the chat calls that used it. Percentiles over every call.
-- name: PromptExperimentStats :many
SELECT prompt_version::integer                                             AS version,
       count(*)                                                            AS requests,
       count(*) FILTER (WHERE status = 'error')                            AS errors,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::double precision  AS latency_ms_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)::double precision AS latency_ms_p95,
       coalesce(sum(prompt_tokens), 0)::bigint                             AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint                         AS completion_tokens,
       coalesce(sum(cost_usd), 0)::double precision                        AS cost_usd
FROM llm_usage
WHERE org_id = sqlc.arg(org_id) AND experiment_id = sqlc.arg(experiment_id)
  AND prompt_version IS NOT NULL AND deleted_at IS NULL
GROUP BY prompt_version
ORDER BY prompt_version;
