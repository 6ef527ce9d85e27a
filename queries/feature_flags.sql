-- name: ListFeatureFlags :many
SELECT * FROM feature_flags ORDER BY key;

-- name: GetFeatureFlag :one
SELECT * FROM feature_flags WHERE key = $1;

-- name: UpsertFeatureFlag :one
INSERT INTO feature_flags (key, description, enabled, rollout_percent, sticky_by)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (key) DO UPDATE
SET description = EXCLUDED.description,
    enabled = EXCLUDED.enabled,
    rollout_percent = EXCLUDED.rollout_percent,
    sticky_by = EXCLUDED.sticky_by,
    updated_at = now()
RETURNING *;

-- name: DeleteFeatureFlag :execrows
DELETE FROM feature_flags WHERE key = $1;

-- name: ListActiveFeatureFlagOverrides :many
SELECT * FROM feature_flag_overrides
WHERE expires_at IS NULL OR expires_at > now()
ORDER BY flag_key, subject_type, subject_id;

-- name: UpsertFeatureFlagOverride :one
INSERT INTO feature_flag_overrides (flag_key, subject_type, subject_id, enabled, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (flag_key, subject_type, subject_id) DO UPDATE
SET enabled = EXCLUDED.enabled, expires_at = EXCLUDED.expires_at
RETURNING *;

-- name: DeleteFeatureFlagOverride :execrows
DELETE FROM feature_flag_overrides
WHERE flag_key = $1 AND subject_type = $2 AND subject_id = $3;

-- name: PurgeExpiredFeatureFlagOverrides :execrows
DELETE FROM feature_flag_overrides WHERE expires_at <= $1;
