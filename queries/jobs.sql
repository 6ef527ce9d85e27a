-- name: CreateJob :one
INSERT INTO jobs (id, org_id, kind, queue, state, payload, max_attempts, created_by, api_key_id,
                  unique_key, unique_until, run_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, $12)
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
