-- name: LockSigningKeys :exec
-- Serialises key creation and rotation across replicas until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended('kiln.signing_keys', 0));

-- name: SigningKeyInUse :one
-- Whether a key that signs exists: neither superseded nor retired.
SELECT EXISTS (
    SELECT 1 FROM signing_keys WHERE superseded_at IS NULL AND retired_at IS NULL
);

-- name: SigningKeyCreatedAt :one
-- When the key that signs was made; no rows when none signs.
SELECT created_at FROM signing_keys WHERE superseded_at IS NULL AND retired_at IS NULL
ORDER BY created_at DESC LIMIT 1;

-- name: ListSigningKeys :many
-- Every key, retired ones too: the key that signs first, then the most recently superseded.
SELECT kid, created_at, superseded_at, retired_at FROM signing_keys
ORDER BY superseded_at DESC NULLS FIRST, created_at DESC, kid;

-- name: InsertSigningKey :exec
INSERT INTO signing_keys (kid, algorithm, private_key_enc, public_key, created_at)
VALUES (sqlc.arg(kid), sqlc.arg(algorithm), sqlc.arg(private_key_enc), sqlc.arg(public_key), sqlc.arg(now));

-- name: SupersedeSigningKeys :execrows
UPDATE signing_keys SET superseded_at = sqlc.arg(now)::timestamptz
WHERE superseded_at IS NULL AND retired_at IS NULL;

-- name: RetireSigningKeys :execrows
-- Retires the keys superseded at or before superseded_before: no unexpired token can carry them.
UPDATE signing_keys SET retired_at = sqlc.arg(now)::timestamptz
WHERE retired_at IS NULL AND superseded_at <= sqlc.arg(superseded_before)::timestamptz;

-- name: ListUnretiredSigningKeys :many
-- The key that signs first, then the others, most recently superseded first.
SELECT * FROM signing_keys WHERE retired_at IS NULL
ORDER BY superseded_at DESC NULLS FIRST, created_at DESC, kid;

-- name: MarkSessionsRevoked :many
-- Keeps an earlier revocation time; returns the sessions that exist.
UPDATE sessions SET revoked_at = COALESCE(revoked_at, sqlc.arg(now)::timestamptz)
WHERE id = ANY (sqlc.arg(ids)::uuid[])
RETURNING id, revoked_at;

-- name: ListSessionsRevokedSince :many
SELECT id, revoked_at FROM sessions WHERE revoked_at > sqlc.arg(since)::timestamptz;
