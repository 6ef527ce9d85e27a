-- name: InsertPaymentOrder :one
INSERT INTO payment_orders (id, org_id, provider, purpose, plan_id, billing_interval, amount_minor, currency,
    status, provider_order_id, created_by, created_at, updated_at)
VALUES (sqlc.arg(id), sqlc.arg(org_id), sqlc.arg(provider), sqlc.arg(purpose), sqlc.narg(plan_id),
    sqlc.narg(billing_interval), sqlc.arg(amount_minor), sqlc.arg(currency), 'created', sqlc.narg(provider_order_id),
    sqlc.narg(created_by), sqlc.arg(now), sqlc.arg(now))
RETURNING *;

-- name: GetPaymentOrder :one
SELECT * FROM payment_orders WHERE id = $1;

-- name: GetPaymentOrderForUpdate :one
SELECT * FROM payment_orders WHERE id = $1 FOR UPDATE;

-- name: GetPaymentOrderByProviderID :one
SELECT * FROM payment_orders WHERE provider = $1 AND provider_order_id = $2;

-- name: GetPaymentOrderByPaymentID :one
SELECT * FROM payment_orders WHERE provider = $1 AND provider_payment_id = $2;

-- name: SetPaymentOrderRefs :one
-- Fills the provider's ids an order does not have yet; an id it has stays.
UPDATE payment_orders SET
    provider_order_id = COALESCE(provider_order_id, sqlc.narg(provider_order_id)),
    provider_payment_id = COALESCE(provider_payment_id, sqlc.narg(provider_payment_id)),
    provider_customer_id = COALESCE(provider_customer_id, sqlc.narg(provider_customer_id)),
    provider_subscription_id = COALESCE(provider_subscription_id, sqlc.narg(provider_subscription_id)),
    status = CASE WHEN status = 'created' AND sqlc.arg(pending)::boolean THEN 'pending' ELSE status END,
    updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetPaymentOrderStatus :one
UPDATE payment_orders SET status = sqlc.arg(status), updated_at = sqlc.arg(now),
    paid_at = CASE WHEN sqlc.arg(status) = 'paid' THEN sqlc.arg(now) ELSE paid_at END
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: SetPaymentOrderRefunded :one
UPDATE payment_orders SET refunded_minor = sqlc.arg(refunded_minor),
    status = CASE WHEN sqlc.arg(refunded_minor) = amount_minor THEN 'refunded' ELSE status END,
    updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: ListOpenPaymentOrders :many
-- Orders of provider still unpaid, created before before: for a query-then-close job.
SELECT * FROM payment_orders
WHERE provider = $1 AND status IN ('created', 'pending') AND created_at < sqlc.arg(before)
ORDER BY created_at
LIMIT sqlc.arg(lim);

-- name: InsertPaymentEvent :one
-- Records an event once: a second one with the same (provider, provider_event_id) inserts
-- nothing (no row returned), and waits for the first's transaction to end.
INSERT INTO payment_events (id, org_id, order_id, provider, provider_event_id, type, amount_minor, currency,
    payload, occurred_at, received_at)
VALUES (sqlc.arg(id), sqlc.narg(org_id), sqlc.narg(order_id), sqlc.arg(provider), sqlc.arg(provider_event_id),
    sqlc.arg(type), sqlc.arg(amount_minor), sqlc.arg(currency), sqlc.arg(payload), sqlc.arg(occurred_at), sqlc.arg(received_at))
ON CONFLICT (provider, provider_event_id) DO NOTHING
RETURNING id;

-- name: ListPaymentEvents :many
SELECT * FROM payment_events WHERE org_id = $1 ORDER BY received_at DESC, id DESC LIMIT sqlc.arg(lim);

-- name: AddOrgCredit :one
INSERT INTO org_credits (org_id, currency, balance_minor, updated_at)
VALUES (sqlc.arg(org_id), sqlc.arg(currency), sqlc.arg(amount), sqlc.arg(now))
ON CONFLICT (org_id, currency) DO UPDATE SET balance_minor = org_credits.balance_minor + EXCLUDED.balance_minor,
    updated_at = EXCLUDED.updated_at
RETURNING balance_minor;

-- name: ListOrgCredits :many
SELECT * FROM org_credits WHERE org_id = $1 ORDER BY currency;

-- name: UpsertPaymentCustomer :exec
INSERT INTO payment_customers (org_id, provider, customer_id, created_at)
VALUES (sqlc.arg(org_id), sqlc.arg(provider), sqlc.arg(customer_id), sqlc.arg(now))
ON CONFLICT (org_id, provider) DO NOTHING;

-- name: GetPaymentCustomer :one
SELECT customer_id FROM payment_customers WHERE org_id = $1 AND provider = $2;

-- name: GetPaymentCustomerOrg :one
SELECT org_id FROM payment_customers WHERE provider = $1 AND customer_id = $2;

-- name: LockBillingOrg :one
-- Serialises the subscription changes of one org (a row of orgs, present or not).
SELECT id FROM orgs WHERE id = $1 FOR NO KEY UPDATE;

-- name: ApplyProviderSubscription :one
INSERT INTO subscriptions (org_id, plan_id, status, billing_interval, currency, current_period_start,
    current_period_end, provider, provider_subscription_id, past_due_since, state_at, created_at, updated_at)
VALUES (sqlc.arg(org_id), sqlc.arg(plan_id), sqlc.arg(status), sqlc.arg(billing_interval), sqlc.arg(currency),
    sqlc.arg(current_period_start), sqlc.arg(current_period_end), sqlc.arg(provider), sqlc.narg(provider_subscription_id),
    sqlc.narg(past_due_since), sqlc.arg(state_at)::timestamptz, sqlc.arg(now), sqlc.arg(now))
ON CONFLICT (org_id) DO UPDATE SET plan_id = EXCLUDED.plan_id, status = EXCLUDED.status,
    billing_interval = EXCLUDED.billing_interval, currency = EXCLUDED.currency,
    current_period_start = EXCLUDED.current_period_start, current_period_end = EXCLUDED.current_period_end,
    provider = EXCLUDED.provider,
    provider_subscription_id = COALESCE(EXCLUDED.provider_subscription_id, subscriptions.provider_subscription_id),
    past_due_since = EXCLUDED.past_due_since, state_at = EXCLUDED.state_at, updated_at = EXCLUDED.updated_at
RETURNING *;
