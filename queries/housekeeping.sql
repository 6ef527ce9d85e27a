-- name: PurgeEndedSessions :execrows
-- Sessions revoked or expired before the cutoff; their refresh tokens go with them. Spent
-- refresh tokens of live sessions stay: reuse detection needs them.
DELETE FROM sessions WHERE revoked_at < sqlc.arg(cutoff) OR expires_at < sqlc.arg(cutoff);

-- name: PurgeExpiredEmailTokens :execrows
DELETE FROM email_tokens WHERE expires_at < sqlc.arg(cutoff);

-- name: PurgeClosedInvitations :execrows
DELETE FROM invitations
WHERE expires_at < sqlc.arg(cutoff) OR accepted_at < sqlc.arg(cutoff) OR revoked_at < sqlc.arg(cutoff);
