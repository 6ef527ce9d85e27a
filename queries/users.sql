-- name: CreateUser :one
INSERT INTO users (id, email, name, password_hash, personal_org_id, created_at, updated_at)
VALUES (sqlc.arg(id), sqlc.arg(email), sqlc.arg(name), sqlc.arg(password_hash),
        sqlc.arg(personal_org_id), sqlc.arg(now), sqlc.arg(now))
RETURNING *;

-- name: GetUser :one
SELECT * FROM users WHERE id = $1;

-- name: GetUserByEmail :one
SELECT * FROM users WHERE email = $1;

-- name: UpdateUserPasswordHash :exec
UPDATE users SET password_hash = sqlc.arg(password_hash), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);

-- name: LockUserForSignIn :one
-- Taken in the transaction that starts a session: a disable either waits for it (and then
-- revokes the new session) or has committed first (and the sign-in sees it).
SELECT disabled_at FROM users WHERE id = $1 FOR SHARE;
