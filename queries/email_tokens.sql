-- name: CreateEmailToken :one
INSERT INTO email_tokens (id, user_id, purpose, email, token_hash, created_at, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(purpose), sqlc.arg(email), sqlc.arg(token_hash),
        sqlc.arg(now), sqlc.arg(expires_at))
RETURNING *;

-- Serialises the issuing of a user's tokens of one purpose until the transaction ends, so
-- that of two requests at once only the token issued last stays valid.
-- name: LockEmailTokenIssue :exec
SELECT pg_advisory_xact_lock(hashtextextended('email_tokens:' || sqlc.arg(user_id)::uuid::text || ':' || sqlc.arg(purpose)::text, 0));

-- Run before a new token is issued: earlier tokens of the purpose, used or not, are deleted,
-- so that only the newest one works and the table holds at most a few rows per user.
-- name: DeleteUserEmailTokens :execrows
DELETE FROM email_tokens WHERE user_id = sqlc.arg(user_id) AND purpose = sqlc.arg(purpose);

-- Spends a token in one statement. The row stays locked until the transaction ends, so a
-- concurrent attempt with the same token waits, then finds it used (or, if this transaction
-- rolled back, unused).
-- name: ConsumeEmailToken :one
UPDATE email_tokens SET used_at = sqlc.arg(now)::timestamptz
WHERE token_hash = sqlc.arg(token_hash) AND purpose = sqlc.arg(purpose)
  AND used_at IS NULL AND expires_at > sqlc.arg(now)::timestamptz
RETURNING *;

-- Marks the user's address verified, only while it is still email: a token sent to an
-- address the user has since replaced verifies nothing. Keeps the first verification time.
-- name: MarkUserEmailVerified :execrows
UPDATE users
SET email_verified_at = coalesce(email_verified_at, sqlc.arg(now)::timestamptz), updated_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id) AND email = sqlc.arg(email);

-- Signs a user out everywhere but on one device (a password change keeps the session that
-- made it).
-- name: RevokeOtherUserSessions :many
UPDATE sessions SET revoked_at = sqlc.arg(now)::timestamptz
WHERE user_id = sqlc.arg(user_id) AND id <> sqlc.arg(keep_id) AND revoked_at IS NULL
RETURNING id;
