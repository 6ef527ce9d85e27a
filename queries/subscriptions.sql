-- name: GetSubscription :one
SELECT * FROM subscriptions WHERE org_id = $1;

-- name: UpsertSubscription :one
INSERT INTO subscriptions (org_id, plan_id, status, billing_interval, currency, current_period_start,
    current_period_end, provider, past_due_since, state_at, created_at, updated_at)
VALUES (sqlc.arg(org_id), sqlc.arg(plan_id), sqlc.arg(status), sqlc.arg(billing_interval), sqlc.arg(currency),
    sqlc.arg(current_period_start), sqlc.arg(current_period_end), sqlc.arg(provider),
    CASE WHEN sqlc.arg(status) = 'past_due' THEN sqlc.arg(now)::timestamptz END, sqlc.arg(now)::timestamptz,
    sqlc.arg(now)::timestamptz, sqlc.arg(now)::timestamptz)
ON CONFLICT (org_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, status = EXCLUDED.status,
    billing_interval = EXCLUDED.billing_interval, currency = EXCLUDED.currency,
    current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
    provider = EXCLUDED.provider, updated_at = EXCLUDED.updated_at,
    provider_subscription_id = NULL, state_at = EXCLUDED.updated_at,
    past_due_since = CASE WHEN EXCLUDED.status = 'past_due' THEN COALESCE(subscriptions.past_due_since, EXCLUDED.updated_at) END
RETURNING *;

-- name: BillingOrgExists :one
SELECT EXISTS (SELECT 1 FROM orgs WHERE id = $1);

-- Claims a quota alert: a row back means this caller sends it, none that it was sent.
-- name: ClaimQuotaAlert :one
INSERT INTO quota_alerts (org_id, limit_name, threshold, period_start, used, limit_value, created_at)
VALUES (sqlc.arg(org_id), sqlc.arg(limit_name), sqlc.arg(threshold), sqlc.arg(period_start),
    sqlc.arg(used), sqlc.arg(limit_value), sqlc.arg(now))
ON CONFLICT DO NOTHING
RETURNING org_id;

-- The members told of the org's billing: its owners and admins (bounded: an org has few).
-- name: ListBillingRecipients :many
SELECT org_members.user_id, orgs.name AS org_name
FROM org_members
JOIN orgs ON orgs.id = org_members.org_id
WHERE org_members.org_id = $1 AND org_members.role IN ('owner', 'admin')
ORDER BY org_members.user_id
LIMIT 1000;

-- Serialises the changes that count against an org's plan limits (members, invitations,
-- knowledge bases, documents) for the rest of the transaction: a transaction-level
-- advisory lock, so the rows the changes reference (the org's) are not locked.
-- name: LockOrgPlanLimits :exec
SELECT pg_advisory_xact_lock(hashtextextended('kiln.plan_limits:' || sqlc.arg(org_id)::uuid::text, 0));

-- What an org has of each count limit: seats (members and invitations still open),
-- knowledge bases, documents and the bytes of their extracted text.
-- name: OrgPlanUsage :one
SELECT
    ((SELECT count(*) FROM org_members m WHERE m.org_id = sqlc.arg(org_id))
      + (SELECT count(*) FROM invitations i WHERE i.org_id = sqlc.arg(org_id)
           AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > sqlc.arg(now)))::bigint AS seats,
    (SELECT count(*) FROM knowledge_bases k WHERE k.org_id = sqlc.arg(org_id)) AS knowledge_bases,
    d.documents::bigint AS documents,
    d.storage_bytes::bigint AS storage_bytes
FROM (SELECT count(*) AS documents, coalesce(sum(bytes), 0) AS storage_bytes
      FROM kb_documents WHERE org_id = sqlc.arg(org_id)) d;
