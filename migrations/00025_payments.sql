-- +goose Up
-- What an org asked to pay: a subscription to a plan for an interval, or a top-up of
-- credit. One row per checkout (Stripe Checkout Session, WeChat Pay or Alipay order); its
-- status moves by the payment events of the ledger below, each applied once.
CREATE TABLE payment_orders (
    id                       uuid        PRIMARY KEY,
    org_id                   uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider                 text        NOT NULL CHECK (provider IN ('stripe', 'wechatpay', 'alipay', 'manual')),
    purpose                  text        NOT NULL CHECK (purpose IN ('subscription', 'topup')),
    plan_id                  text        CHECK (plan_id ~ '^[a-z][a-z0-9_-]{0,63}$'),
    billing_interval         text        CHECK (billing_interval IN ('month', 'year')),
    amount_minor             bigint      NOT NULL CHECK (amount_minor > 0),
    currency                 text        NOT NULL CHECK (currency IN ('USD', 'CNY')),
    status                   text        NOT NULL CHECK (status IN ('created', 'pending', 'paid', 'closed', 'refunded', 'failed')),
    -- The provider's id of the order (Checkout Session id, out_trade_no), of the payment
    -- (PaymentIntent, WeChat transaction_id, Alipay trade_no), of the customer and of the
    -- provider's subscription, as far as the provider has them.
    provider_order_id        text,
    provider_payment_id      text,
    provider_customer_id     text,
    provider_subscription_id text,
    -- Total refunded so far, in minor units.
    refunded_minor           bigint      NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    created_by               uuid        REFERENCES users (id) ON DELETE SET NULL,
    paid_at                  timestamptz,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    CHECK ((purpose = 'subscription') = (plan_id IS NOT NULL AND billing_interval IS NOT NULL)),
    UNIQUE (provider, provider_order_id)
);
CREATE INDEX payment_orders_org ON payment_orders (org_id, id DESC);
CREATE INDEX payment_orders_open ON payment_orders (provider, created_at) WHERE status IN ('created', 'pending');
CREATE UNIQUE INDEX payment_orders_payment ON payment_orders (provider, provider_payment_id);

-- The payments ledger: every event a provider sent (or an operator made), as received,
-- once per (provider, provider_event_id). Append-only: a trigger refuses updates and
-- deletes. What an event did (applied, duplicate, amount mismatch) is in the audit log.
CREATE TABLE payment_events (
    id                uuid        PRIMARY KEY,
    org_id            uuid        REFERENCES orgs (id) ON DELETE SET NULL,
    order_id          uuid        REFERENCES payment_orders (id) ON DELETE SET NULL,
    provider          text        NOT NULL CHECK (provider IN ('stripe', 'wechatpay', 'alipay', 'manual')),
    provider_event_id text        NOT NULL CHECK (provider_event_id <> ''),
    type              text        NOT NULL,
    amount_minor      bigint      NOT NULL DEFAULT 0,
    currency          text        NOT NULL DEFAULT '',
    -- The payload, secrets redacted (billing.RedactPayload).
    payload           jsonb       NOT NULL DEFAULT '{}',
    occurred_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL,
    UNIQUE (provider, provider_event_id)
);
CREATE INDEX payment_events_org ON payment_events (org_id, received_at DESC);
CREATE INDEX payment_events_order ON payment_events (order_id);

-- +goose StatementBegin
CREATE FUNCTION payment_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- An org or order deleted clears its reference (ON DELETE SET NULL); nothing else changes.
    IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - 'org_id' - 'order_id') = (to_jsonb(OLD) - 'org_id' - 'order_id')
        AND (NEW.org_id IS NULL OR NEW.org_id = OLD.org_id) AND (NEW.order_id IS NULL OR NEW.order_id = OLD.order_id) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'payment_events is append-only';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION payment_events_append_only();

-- Credit an org holds per currency (top-ups less refunds), in minor units.
CREATE TABLE org_credits (
    org_id        uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    currency      text        NOT NULL CHECK (currency IN ('USD', 'CNY')),
    balance_minor bigint      NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (org_id, currency)
);

-- An org's customer at a provider (the Stripe customer its portal opens).
CREATE TABLE payment_customers (
    org_id      uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider    text        NOT NULL CHECK (provider IN ('stripe', 'wechatpay', 'alipay')),
    customer_id text        NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (org_id, provider),
    UNIQUE (provider, customer_id)
);

-- Subscriptions paid through a provider: its subscription id, since when a renewal is
-- unpaid (past_due turns frozen after billing.grace_period), and the provider's time of
-- the last state applied, so that an older event arriving late does not undo a newer one.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_provider_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_provider_check CHECK (provider IN ('manual', 'stripe', 'wechatpay', 'alipay'));
ALTER TABLE subscriptions ADD COLUMN provider_subscription_id text;
ALTER TABLE subscriptions ADD COLUMN past_due_since timestamptz;
ALTER TABLE subscriptions ADD COLUMN state_at timestamptz;

-- +goose Down
ALTER TABLE subscriptions DROP COLUMN state_at;
ALTER TABLE subscriptions DROP COLUMN past_due_since;
ALTER TABLE subscriptions DROP COLUMN provider_subscription_id;
UPDATE subscriptions SET provider = 'manual' WHERE provider <> 'manual';
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_provider_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_provider_check CHECK (provider IN ('manual'));
DROP TABLE payment_customers;
DROP TABLE org_credits;
DROP TABLE payment_events;
DROP FUNCTION payment_events_append_only();
DROP TABLE payment_orders;
