-- Every plan of the admin API, archived ones too (bounded: operators create them).
-- name: ListBillingPlans :many
SELECT * FROM billing_plans ORDER BY id;

-- name: GetBillingPlanForUpdate :one
SELECT * FROM billing_plans WHERE id = $1 FOR UPDATE;

-- name: CreateBillingPlan :one
INSERT INTO billing_plans (id, name, prices, features, limits, created_at, updated_at)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(prices), sqlc.arg(features), sqlc.arg(limits), sqlc.arg(now), sqlc.arg(now))
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: UpdateBillingPlan :one
UPDATE billing_plans
SET name = sqlc.arg(name), prices = sqlc.arg(prices), features = sqlc.arg(features), limits = sqlc.arg(limits), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ArchiveBillingPlan :one
UPDATE billing_plans SET archived_at = COALESCE(archived_at, sqlc.arg(now)), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;
