-- +goose Up
-- An org's subscription: the plan it is on (an id of billing.plans in config), its status
-- and its current period. An org without a row is on the default plan, active, with
-- calendar-month periods. One row per org: a plan change updates it (the audit log keeps
-- the history).
CREATE TABLE subscriptions (
    org_id               uuid        PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    plan_id              text        NOT NULL CHECK (plan_id ~ '^[a-z][a-z0-9_-]{0,63}$'),
    status               text        NOT NULL CHECK (status IN ('trialing', 'active', 'past_due', 'frozen', 'cancelled')),
    -- month or year: the billing interval, which is also the period of the token quota.
    billing_interval     text        NOT NULL CHECK (billing_interval IN ('month', 'year')),
    currency             text        NOT NULL CHECK (currency IN ('USD', 'CNY')),
    current_period_start timestamptz NOT NULL,
    current_period_end   timestamptz NOT NULL CHECK (current_period_end > current_period_start),
    -- manual: put on the plan by an operator (invoiced customers); payment providers later.
    provider             text        NOT NULL CHECK (provider IN ('manual')),
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
CREATE INDEX subscriptions_status ON subscriptions (status);

-- +goose Down
DROP TABLE subscriptions;
