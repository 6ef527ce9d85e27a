-- name: CreateEvaluation :one
INSERT INTO kb_evaluations (id, org_id, kb_id, name, status, request, query_count, created_at)
VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7)
RETURNING *;

-- name: SetEvaluationJob :exec
UPDATE kb_evaluations SET job_id = sqlc.arg(job_id) WHERE id = sqlc.arg(id);

-- An evaluation's status is its row's unless its job ended without finishing it.
-- name: GetEvaluation :one
SELECT sqlc.embed(e), j.state AS job_state, j.last_error AS job_error
FROM kb_evaluations e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.org_id = sqlc.arg(org_id) AND e.kb_id = sqlc.arg(kb_id) AND e.id = sqlc.arg(id);

-- name: ListEvaluations :many
SELECT e.id, e.org_id, e.kb_id, e.name, e.status, e.error, e.query_count, e.job_id, e.created_at, e.finished_at,
       (e.request -> 'modes')::jsonb AS modes, j.state AS job_state, j.last_error AS job_error
FROM kb_evaluations e LEFT JOIN jobs j ON j.id = e.job_id
WHERE e.org_id = sqlc.arg(org_id) AND e.kb_id = sqlc.arg(kb_id)
  AND (sqlc.narg(after)::uuid IS NULL OR e.id < sqlc.narg(after)::uuid)
ORDER BY e.id DESC
LIMIT sqlc.arg(max_rows);

-- name: GetEvaluationForJob :one
SELECT * FROM kb_evaluations WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- name: StartEvaluation :exec
UPDATE kb_evaluations SET status = 'running' WHERE id = sqlc.arg(id) AND status IN ('queued', 'running');

-- name: FinishEvaluation :exec
UPDATE kb_evaluations SET status = sqlc.arg(status), result = sqlc.narg(result), error = sqlc.narg(error), finished_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);
