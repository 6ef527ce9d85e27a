-- name: EnsureInvoiceCounter :exec
INSERT INTO invoice_counters (issuer, next_number) VALUES (@issuer, 1) ON CONFLICT (issuer) DO NOTHING;

-- name: LockInvoiceCounter :one
-- The issuer's next number, its row locked until the transaction ends: issuance is
-- serialised per issuer, and a rollback gives the number back.
SELECT next_number FROM invoice_counters WHERE issuer = @issuer FOR UPDATE;

-- name: SetInvoiceCounter :exec
UPDATE invoice_counters SET next_number = @next_number WHERE issuer = @issuer;

-- name: InvoiceForPeriodExists :one
SELECT EXISTS (SELECT 1 FROM invoices WHERE org_id = @org_id AND period_start = @period_start AND currency = @currency AND kind = 'invoice');

-- name: CreditNoteForPeriodExists :one
SELECT EXISTS (SELECT 1 FROM invoices WHERE org_id = @org_id AND period_start = @period_start AND credits_invoice_id = @credits_invoice_id AND kind = 'credit_note');

-- name: InsertInvoice :exec
INSERT INTO invoices (id, org_id, issuer, sequence, number, kind, credits_invoice_id, status, currency, period_start,
    period_end, plan_id, subtotal_minor, tax_rate_bp, tax_minor, total_minor, seller_name, seller_address, seller_tax_id,
    buyer_name, buyer_address, buyer_tax_id, provider_invoice_url, issued_at)
VALUES (@id, @org_id, @issuer, @sequence, @number, @kind, @credits_invoice_id, @status, @currency, @period_start,
    @period_end, @plan_id, @subtotal_minor, @tax_rate_bp, @tax_minor, @total_minor, @seller_name, @seller_address, @seller_tax_id,
    @buyer_name, @buyer_address, @buyer_tax_id, @provider_invoice_url, @issued_at);

-- name: InsertInvoiceLine :exec
INSERT INTO invoice_lines (invoice_id, position, kind, description, quantity, unit_amount_minor, amount_minor, order_id)
VALUES (@invoice_id, @position, @kind, @description, @quantity, @unit_amount_minor, @amount_minor, @order_id);

-- name: ListInvoices :many
-- An org's invoices and credit notes, newest first, after the cursor (an id).
SELECT * FROM invoices
WHERE org_id = @org_id AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before))
ORDER BY id DESC
LIMIT @lim;

-- name: GetInvoice :one
SELECT * FROM invoices WHERE org_id = @org_id AND id = @id;

-- name: ListInvoiceLines :many
SELECT * FROM invoice_lines WHERE invoice_id = ANY(@invoice_ids::uuid[]) ORDER BY invoice_id, position;

-- name: OrgTokensInPeriod :one
-- Prompt and completion tokens of the org's calls in [start, end): what the token limit counts.
SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint
FROM llm_usage
WHERE org_id = @org_id AND created_at >= @period_start AND created_at < @period_end AND deleted_at IS NULL;

-- name: PaidTopupsInPeriod :many
-- The org's top-ups paid in [start, end), refunded since or not.
SELECT id, amount_minor, currency, paid_at::timestamptz AS paid_at
FROM payment_orders
WHERE org_id = @org_id AND purpose = 'topup' AND status IN ('paid', 'refunded')
  AND paid_at >= @period_start::timestamptz AND paid_at < @period_end::timestamptz
ORDER BY paid_at, id;

-- name: UncreditedRefunds :many
-- The org's orders paid before end with refunds not yet on a credit note: what the ledger
-- refunded (refunded_minor) less what credit notes have credited.
SELECT o.id, o.currency, o.paid_at::timestamptz AS paid_at,
       (o.refunded_minor + coalesce((SELECT sum(l.amount_minor) FROM invoice_lines l WHERE l.order_id = o.id AND l.kind = 'refund'), 0))::bigint AS uncredited_minor
FROM payment_orders o
WHERE o.org_id = @org_id AND o.refunded_minor > 0 AND o.paid_at < @period_end::timestamptz
  AND o.refunded_minor + coalesce((SELECT sum(l.amount_minor) FROM invoice_lines l WHERE l.order_id = o.id AND l.kind = 'refund'), 0) > 0
ORDER BY o.paid_at, o.id;

-- name: InvoiceCrediting :one
-- The invoice a refund of an order credits: the one with the order's line, else the org's
-- invoice in the order's currency of the period the order was paid in.
SELECT i.id FROM invoices i
WHERE i.org_id = @org_id AND i.kind = 'invoice'
  AND (EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = i.id AND l.order_id = @order_id)
       OR (i.currency = @currency AND i.period_start <= @paid_at AND @paid_at < i.period_end))
ORDER BY EXISTS (SELECT 1 FROM invoice_lines l WHERE l.invoice_id = i.id AND l.order_id = @order_id) DESC, i.id
LIMIT 1;

-- name: OrgIDsAfter :many
SELECT id FROM orgs WHERE id > @after ORDER BY id LIMIT @lim;

-- name: GetInvoiceBuyer :one
-- What an invoice says of the org as buyer: its billing profile, else its name.
SELECT coalesce(nullif(p.legal_name, ''), o.name)::text AS name, coalesce(p.address, '')::text AS address, coalesce(p.tax_id, '')::text AS tax_id
FROM orgs o LEFT JOIN org_billing_profiles p ON p.org_id = o.id
WHERE o.id = @org_id;

-- name: UpsertOrgBillingProfile :one
INSERT INTO org_billing_profiles (org_id, legal_name, address, tax_id, updated_at)
VALUES (@org_id, @legal_name, @address, @tax_id, @updated_at)
ON CONFLICT (org_id) DO UPDATE SET legal_name = excluded.legal_name, address = excluded.address, tax_id = excluded.tax_id, updated_at = excluded.updated_at
RETURNING *;

-- name: GetOrgBillingProfile :one
SELECT * FROM org_billing_profiles WHERE org_id = @org_id;

-- The hosted page of the Stripe invoice that paid org's subscription for the period that
-- starts at period_start (Unix seconds), from the ledger's invoice.paid events.
-- name: StripeInvoiceURL :one
SELECT coalesce(payload #>> '{data,object,hosted_invoice_url}', '')::text AS url FROM payment_events
WHERE org_id = @org_id AND provider = 'stripe' AND payload ->> 'type' = 'invoice.paid'
  AND payload #>> '{data,object,lines,data,0,period,start}' = @period_start_unix::text
ORDER BY occurred_at DESC
LIMIT 1;

-- name: RevenueByPlan :many
-- What invoices and credit notes issued in [from, to) billed before tax, by the plan the
-- org was on and currency.
SELECT coalesce(plan_id, '')::text AS plan_id, currency, sum(subtotal_minor)::bigint AS billed_minor,
       count(*) FILTER (WHERE kind = 'invoice')::bigint AS invoices, count(*) FILTER (WHERE kind = 'credit_note')::bigint AS credit_notes
FROM invoices
WHERE issued_at >= @from_at AND issued_at < @to_at
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: UsageByPlan :many
-- Calls, tokens and provider cost in [from, to) by the plan each org is on now (the
-- default plan without a subscription or with a cancelled one).
SELECT (CASE WHEN s.plan_id IS NULL OR s.status = 'cancelled' THEN @default_plan::text ELSE s.plan_id END)::text AS plan_id,
       count(*)::bigint AS requests, coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)::bigint AS tokens,
       coalesce(sum(u.cost_usd), 0)::float8 AS cost_usd
FROM llm_usage u LEFT JOIN subscriptions s ON s.org_id = u.org_id
WHERE u.created_at >= @from_at AND u.created_at < @to_at AND u.deleted_at IS NULL
GROUP BY 1
ORDER BY 1;

-- name: OrgsByPlan :many
-- How many orgs each plan has now.
SELECT (CASE WHEN s.plan_id IS NULL OR s.status = 'cancelled' THEN @default_plan::text ELSE s.plan_id END)::text AS plan_id, count(*)::bigint AS orgs
FROM orgs o LEFT JOIN subscriptions s ON s.org_id = o.id
GROUP BY 1
ORDER BY 1;

-- name: SubscriptionsByStatus :many
-- Stored subscriptions by the status they read as at now: a provider's subscription whose
-- period ended unrenewed is past_due from its end, and past_due turns frozen after grace
-- (as billing.Service reads one subscription).
SELECT (CASE
    WHEN provider <> 'manual' AND status IN ('active', 'trialing') AND current_period_end <= @now::timestamptz THEN
        CASE WHEN current_period_end + make_interval(secs => @grace_seconds::float8) <= @now::timestamptz THEN 'frozen' ELSE 'past_due' END
    WHEN status = 'past_due' AND past_due_since IS NOT NULL AND past_due_since + make_interval(secs => @grace_seconds::float8) <= @now::timestamptz THEN 'frozen'
    ELSE status END)::text AS status,
    count(*)::bigint AS subscriptions
FROM subscriptions
GROUP BY 1
ORDER BY 1;

-- name: CountOrgsWithoutSubscription :one
SELECT count(*)::bigint FROM orgs o WHERE NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.org_id = o.id);

-- name: TopOrgsByUsage :many
-- The orgs with usage or invoices in [from, to), most tokens first.
SELECT x.org_id FROM (
    SELECT u.org_id, (u.prompt_tokens + u.completion_tokens)::bigint AS tokens FROM llm_usage u
    WHERE u.created_at >= @from_at AND u.created_at < @to_at AND u.deleted_at IS NULL
    UNION ALL
    SELECT i.org_id, 0::bigint FROM invoices i WHERE i.issued_at >= @from_at AND i.issued_at < @to_at
) x
GROUP BY x.org_id
ORDER BY sum(x.tokens) DESC, x.org_id
LIMIT @lim;

-- name: UsageOfOrgs :many
SELECT u.org_id, count(*)::bigint AS requests, coalesce(sum(u.prompt_tokens + u.completion_tokens), 0)::bigint AS tokens,
       coalesce(sum(u.cost_usd), 0)::float8 AS cost_usd
FROM llm_usage u
WHERE u.org_id = ANY(@org_ids::uuid[]) AND u.created_at >= @from_at AND u.created_at < @to_at AND u.deleted_at IS NULL
GROUP BY u.org_id;

-- name: RevenueOfOrgs :many
SELECT i.org_id, i.currency, sum(i.subtotal_minor)::bigint AS billed_minor
FROM invoices i
WHERE i.org_id = ANY(@org_ids::uuid[]) AND i.issued_at >= @from_at AND i.issued_at < @to_at
GROUP BY i.org_id, i.currency
ORDER BY i.org_id, i.currency;

-- name: OrgsPlanAndName :many
SELECT o.id, o.name, (CASE WHEN s.plan_id IS NULL OR s.status = 'cancelled' THEN @default_plan::text ELSE s.plan_id END)::text AS plan_id
FROM orgs o LEFT JOIN subscriptions s ON s.org_id = o.id
WHERE o.id = ANY(@org_ids::uuid[]);

-- name: LockInvoice :one
SELECT * FROM invoices WHERE id = @id FOR UPDATE;

-- name: SetInvoiceStatus :one
UPDATE invoices SET status = @status WHERE id = @id RETURNING *;
