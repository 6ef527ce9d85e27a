-- name: UpsertProviderKey :one
INSERT INTO org_provider_keys (org_id, provider, key_sealed, hint, created_by, created_at, updated_at)
VALUES (@org_id, @provider, @key_sealed, @hint, @created_by, @now, @now)
ON CONFLICT (org_id, provider) DO UPDATE
SET key_sealed = EXCLUDED.key_sealed, hint = EXCLUDED.hint, created_by = EXCLUDED.created_by, updated_at = EXCLUDED.updated_at
RETURNING *;

-- name: ListProviderKeys :many
SELECT * FROM org_provider_keys WHERE org_id = @org_id ORDER BY provider;

-- name: GetProviderKey :one
SELECT * FROM org_provider_keys WHERE org_id = @org_id AND provider = @provider;

-- name: DeleteProviderKey :execrows
DELETE FROM org_provider_keys WHERE org_id = @org_id AND provider = @provider;

-- name: ListAllProviderKeys :many
-- Every sealed key, for re-sealing under a new master key.
SELECT org_id, provider, key_sealed FROM org_provider_keys ORDER BY org_id, provider;

-- name: ResealProviderKey :exec
UPDATE org_provider_keys SET key_sealed = @key_sealed WHERE org_id = @org_id AND provider = @provider;
