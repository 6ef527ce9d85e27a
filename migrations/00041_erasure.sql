-- +goose Up
-- Deletion with a grace period: DELETE /v1/me and DELETE /v1/orgs/{id} set erase_at and
-- schedule the privacy.erase job (erase_job_id) for then; a restore clears the three.
ALTER TABLE users
    ADD COLUMN deletion_requested_at timestamptz,
    ADD COLUMN erase_at              timestamptz,
    ADD COLUMN erase_job_id          uuid;

-- An erased org stays as a tombstone (its name pseudonymised, erased_at set): the invoices
-- and payments the law requires keeping still name it.
ALTER TABLE orgs
    ADD COLUMN deletion_requested_at timestamptz,
    ADD COLUMN erase_at              timestamptz,
    ADD COLUMN erase_job_id          uuid,
    ADD COLUMN erased_at             timestamptz;

-- The audit log and the payment events stay append-only, with one controlled exception:
-- the erase job, and only inside its own transaction (set_config('kiln.erasure', 'on',
-- true)), may rewrite the personal fields of past audit events (actor_id, target_id, ip,
-- user_agent, data) and the provider payload of payment events. What was done, when, in
-- which org, for how much, and the row itself never change, and nothing is ever deleted.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('kiln.erasure', true) = 'on'
       AND NEW.id = OLD.id AND NEW.org_id IS NOT DISTINCT FROM OLD.org_id
       AND NEW.actor_type = OLD.actor_type AND NEW.action = OLD.action
       AND NEW.target_type = OLD.target_type AND NEW.created_at = OLD.created_at THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION payment_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- An org or order deleted clears its reference (ON DELETE SET NULL); nothing else changes.
    IF TG_OP = 'UPDATE' AND (to_jsonb(NEW) - 'org_id' - 'order_id') = (to_jsonb(OLD) - 'org_id' - 'order_id')
        AND (NEW.org_id IS NULL OR NEW.org_id = OLD.org_id) AND (NEW.order_id IS NULL OR NEW.order_id = OLD.order_id) THEN
        RETURN NEW;
    END IF;
    -- The erasure empties the provider's payload (names, addresses); amounts stay.
    IF TG_OP = 'UPDATE' AND current_setting('kiln.erasure', true) = 'on'
        AND (to_jsonb(NEW) - 'payload') = (to_jsonb(OLD) - 'payload') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'payment_events is append-only';
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION payment_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
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
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
-- +goose StatementEnd
ALTER TABLE orgs
    DROP COLUMN erased_at,
    DROP COLUMN erase_job_id,
    DROP COLUMN erase_at,
    DROP COLUMN deletion_requested_at;
ALTER TABLE users
    DROP COLUMN erase_job_id,
    DROP COLUMN erase_at,
    DROP COLUMN deletion_requested_at;
