-- name: CreateAPIKey :one
INSERT INTO api_keys (id, org_id, name, display, secret_hash, scopes, created_by, created_at, expires_at, token_budget)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: GetAPIKeyTokenBudget :one
SELECT token_budget FROM api_keys WHERE id = $1;

-- name: GetAPIKey :one
SELECT * FROM api_keys WHERE org_id = $1 AND id = $2;

-- name: GetAPIKeyForUpdate :one
SELECT * FROM api_keys WHERE org_id = $1 AND id = $2 FOR UPDATE;

-- Authentication knows only the secret, so this is the one lookup not scoped by org_id:
-- the hash is unique and the row names its org.
-- A key stops working while the user who created it is disabled; a key whose creator was
-- deleted (created_by NULL) belongs to its org alone.
-- name: GetAPIKeyBySecretHash :one
SELECT * FROM api_keys WHERE secret_hash = $1
  AND NOT EXISTS (SELECT 1 FROM users WHERE users.id = api_keys.created_by AND users.disabled_at IS NOT NULL);

-- Newest first; ids are UUIDv7, so id order is creation order and the cursor is the last id.
-- name: ListAPIKeys :many
SELECT * FROM api_keys
WHERE org_id = sqlc.arg(org_id)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- Keeps the first revocation time when the key is already revoked.
-- name: RevokeAPIKey :one
UPDATE api_keys SET revoked_at = coalesce(revoked_at, sqlc.arg(revoked_at)::timestamptz)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
RETURNING *;

-- name: SetAPIKeyRotated :one
UPDATE api_keys
SET rotated_to = sqlc.arg(rotated_to), expires_at = sqlc.narg(expires_at), revoked_at = sqlc.narg(revoked_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
RETURNING *;

-- One statement per flush for every key used since the last one. GREATEST keeps the
-- column from moving back when replicas flush out of order (it ignores NULL).
-- name: TouchAPIKeysLastUsed :execrows
UPDATE api_keys SET last_used_at = GREATEST(last_used_at, sqlc.arg(used_at)::timestamptz)
WHERE id = ANY(sqlc.arg(ids)::uuid[]);
