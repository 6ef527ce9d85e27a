-- name: GetIdentityBySubject :one
SELECT * FROM identities WHERE provider = $1 AND subject = $2;

-- name: GetIdentityByUnionID :one
-- The oldest identity of the person behind a WeChat unionid.
SELECT * FROM identities WHERE union_id = $1 ORDER BY created_at, id LIMIT 1;

-- name: CreateIdentity :one
INSERT INTO identities (id, user_id, provider, subject, email, union_id, created_at, last_login_at)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(provider), sqlc.arg(subject),
        sqlc.narg(email), sqlc.narg(union_id), sqlc.arg(now), sqlc.arg(now))
RETURNING *;

-- name: TouchIdentity :one
UPDATE identities
SET last_login_at = sqlc.arg(now)::timestamptz,
    email = sqlc.narg(email),
    union_id = coalesce(sqlc.narg(union_id), union_id)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ListUserIdentities :many
SELECT * FROM identities WHERE user_id = $1 ORDER BY created_at, id;

-- name: CountUserIdentities :one
SELECT count(*) FROM identities WHERE user_id = $1;

-- name: DeleteUserIdentity :execrows
DELETE FROM identities WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id);

-- name: LockUserForIdentities :one
-- Serialises changes to a user's ways of signing in.
SELECT * FROM users WHERE id = $1 FOR UPDATE;

-- name: VerifyUserEmailByIdentity :exec
-- A provider vouched for the address: mark it verified if it still is the user's.
UPDATE users
SET email_verified_at = coalesce(email_verified_at, sqlc.arg(now)::timestamptz), updated_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id) AND email = sqlc.arg(email);
