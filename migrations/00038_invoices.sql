-- +goose Up
-- The next invoice number of each issuer (billing.invoices.issuer_id). Issuing locks the
-- issuer's row FOR UPDATE in the transaction that inserts the invoice, so numbers are
-- sequential without gaps: a rolled-back issuance gives its number back.
CREATE TABLE invoice_counters (
    issuer      text   PRIMARY KEY,
    next_number bigint NOT NULL CHECK (next_number > 0)
);

-- Invoices and credit notes. Kept when the org is deleted (no foreign key to orgs):
-- issued invoices are records a seller must keep. Seller and buyer details are copied
-- at issuance, as they were then.
CREATE TABLE invoices (
    id                 uuid        PRIMARY KEY,
    org_id             uuid        NOT NULL,
    issuer             text        NOT NULL,
    sequence           bigint      NOT NULL,
    number             text        NOT NULL,
    -- invoice, or credit_note: negative lines crediting credits_invoice_id (refunds).
    kind               text        NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    credits_invoice_id uuid        REFERENCES invoices (id),
    status             text        NOT NULL CHECK (status IN ('issued', 'paid', 'void')),
    currency           text        NOT NULL CHECK (currency IN ('USD', 'CNY')),
    period_start       timestamptz NOT NULL,
    period_end         timestamptz NOT NULL CHECK (period_end > period_start),
    plan_id            text,
    subtotal_minor     bigint      NOT NULL,
    -- Tax in basis points (2000 = 20 %) of the subtotal, rounded half away from zero.
    tax_rate_bp        integer     NOT NULL CHECK (tax_rate_bp >= 0 AND tax_rate_bp <= 10000),
    tax_minor          bigint      NOT NULL,
    total_minor        bigint      NOT NULL CHECK (total_minor = subtotal_minor + tax_minor),
    seller_name        text        NOT NULL,
    seller_address     text        NOT NULL,
    seller_tax_id      text        NOT NULL,
    buyer_name         text        NOT NULL,
    buyer_address      text        NOT NULL,
    buyer_tax_id       text        NOT NULL,
    -- The payment provider's page of the invoice (Stripe's hosted invoice), when the provider issued one; null otherwise.
    provider_invoice_url text,
    issued_at          timestamptz NOT NULL,
    UNIQUE (issuer, sequence),
    UNIQUE (issuer, number),
    CHECK ((kind = 'credit_note') = (credits_invoice_id IS NOT NULL))
);
-- One invoice per org, period and currency, and one credit note per invoice it credits in
-- a period: what makes the issuing job idempotent.
CREATE UNIQUE INDEX invoices_period ON invoices (org_id, period_start, currency) WHERE kind = 'invoice';
CREATE UNIQUE INDEX invoices_credit_period ON invoices (org_id, period_start, credits_invoice_id) WHERE kind = 'credit_note';
CREATE INDEX invoices_org ON invoices (org_id, id DESC);
CREATE INDEX invoices_issued ON invoices (issued_at);

-- The admin revenue report's index on llm_usage (created_at) is built by 00044, concurrently.

-- The lines of an invoice, in order. order_id is the payment order a top-up or refund
-- line comes from (how a refund finds the invoice it credits).
CREATE TABLE invoice_lines (
    invoice_id        uuid   NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    position          integer NOT NULL,
    kind              text   NOT NULL CHECK (kind IN ('plan', 'overage', 'topup', 'refund')),
    description       text   NOT NULL,
    quantity          bigint NOT NULL,
    unit_amount_minor double precision NOT NULL,
    amount_minor      bigint NOT NULL,
    order_id          uuid,
    PRIMARY KEY (invoice_id, position)
);
CREATE INDEX invoice_lines_order ON invoice_lines (order_id) WHERE order_id IS NOT NULL;

-- What an org's invoices say of it as the buyer: its legal name, address and tax id.
CREATE TABLE org_billing_profiles (
    org_id     uuid        PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    legal_name text        NOT NULL,
    address    text        NOT NULL,
    tax_id     text        NOT NULL,
    updated_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE org_billing_profiles;
DROP TABLE invoice_lines;
DROP TABLE invoices;
DROP TABLE invoice_counters;
