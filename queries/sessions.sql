-- name: CreateSession :one
INSERT INTO sessions (id, user_id, name, user_agent, ip, created_at, last_seen_at, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(user_id), sqlc.arg(name), sqlc.arg(user_agent), sqlc.arg(ip),
        sqlc.arg(now), sqlc.arg(now), sqlc.arg(expires_at))
RETURNING *;

-- name: TouchSession :one
-- Records the client seen last; an empty user agent or IP keeps the previous one.
UPDATE sessions
SET last_seen_at = sqlc.arg(now),
    user_agent = CASE WHEN sqlc.arg(user_agent)::text = '' THEN user_agent ELSE sqlc.arg(user_agent)::text END,
    ip = CASE WHEN sqlc.arg(ip)::text = '' THEN ip ELSE sqlc.arg(ip)::text END
WHERE id = sqlc.arg(id)
RETURNING *;

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- name: ListActiveSessions :many
SELECT * FROM sessions
WHERE user_id = sqlc.arg(user_id) AND revoked_at IS NULL AND expires_at > sqlc.arg(now)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: SessionActive :one
-- A session is active while it is neither revoked nor expired and its user is not disabled.
SELECT EXISTS (
    SELECT 1 FROM sessions
    JOIN users ON users.id = sessions.user_id
    WHERE sessions.id = sqlc.arg(id)
      AND sessions.revoked_at IS NULL
      AND sessions.expires_at > sqlc.arg(now)
      AND users.disabled_at IS NULL
);

-- name: RevokeUserSession :execrows
UPDATE sessions SET revoked_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id)
  AND revoked_at IS NULL AND expires_at > sqlc.arg(now);

-- name: RevokeSession :exec
UPDATE sessions SET revoked_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id) AND revoked_at IS NULL;

-- name: RevokeUserSessions :many
UPDATE sessions SET revoked_at = sqlc.arg(now)::timestamptz
WHERE user_id = sqlc.arg(user_id) AND revoked_at IS NULL
RETURNING id;

-- name: CreateRefreshToken :exec
INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(session_id), sqlc.arg(token_hash), sqlc.arg(now), sqlc.arg(expires_at));

-- name: LockRefreshToken :one
-- Locks the token and its session so that concurrent refreshes of one token, and a refresh
-- racing a revocation, run one after the other.
SELECT sqlc.embed(refresh_tokens),
       sessions.user_id,
       sessions.expires_at AS session_expires_at,
       sessions.revoked_at AS session_revoked_at
FROM refresh_tokens
JOIN sessions ON sessions.id = refresh_tokens.session_id
WHERE refresh_tokens.token_hash = $1
FOR UPDATE OF refresh_tokens, sessions;

-- name: MarkRefreshTokenUsed :exec
-- Keeps the first use: the reuse grace counts from it.
UPDATE refresh_tokens SET used_at = sqlc.arg(now)::timestamptz
WHERE id = sqlc.arg(id) AND used_at IS NULL;
