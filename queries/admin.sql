-- name: AdminListUsers :many
-- Every tenant's users, for platform admins. Newest first: ids are UUIDv7, so id order
-- is creation order and the cursor is the last id.
-- pattern is an ILIKE pattern whose wildcards the caller escaped with a backslash.
SELECT * FROM users
WHERE (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
  AND (sqlc.narg(pattern)::text IS NULL
       OR email ILIKE sqlc.narg(pattern)::text ESCAPE '\'
       OR name ILIKE sqlc.narg(pattern)::text ESCAPE '\')
ORDER BY id DESC
LIMIT sqlc.arg(row_limit);

-- name: AdminListOrgs :many
-- Every org, for platform admins; newest first, as AdminListUsers.
SELECT * FROM orgs
WHERE (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
  AND (sqlc.narg(pattern)::text IS NULL OR name ILIKE sqlc.narg(pattern)::text ESCAPE '\')
ORDER BY id DESC
LIMIT sqlc.arg(row_limit);

-- name: AdminListAuditEvents :many
-- The whole log across every org, for platform admins; newest first; each filter
-- applies when given.
SELECT * FROM audit_events
WHERE (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before)::uuid)
  AND (sqlc.narg(org_id)::uuid IS NULL OR org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(actor_id)::uuid IS NULL OR actor_id = sqlc.narg(actor_id)::uuid)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)::text)
ORDER BY id DESC
LIMIT sqlc.arg(row_limit);

-- name: DisableUser :one
-- Keeps the first disable time when the user is already disabled.
UPDATE users SET disabled_at = coalesce(disabled_at, sqlc.arg(now)::timestamptz), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: EnableUser :one
UPDATE users SET disabled_at = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetUserPlatformAdmin :one
UPDATE users SET platform_admin = sqlc.arg(platform_admin), updated_at = sqlc.arg(now)
WHERE email = sqlc.arg(email)
RETURNING *;
