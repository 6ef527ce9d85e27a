-- +goose Up
-- Plans created through the admin API (POST /v1/admin/plans), beside the plans of config
-- (billing.plans), which are never stored: an id here is never a config plan's (the
-- billing service refuses it). Prices, features and limits are the plan's JSON, validated
-- by the service. An archived plan is offered to no new subscription; its subscribers keep
-- it, so a plan is never deleted.
CREATE TABLE billing_plans (
    id          text        PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9_-]{0,63}$'),
    name        text        NOT NULL CHECK (name <> '' AND length(name) <= 100),
    prices      jsonb       NOT NULL,
    features    jsonb       NOT NULL,
    limits      jsonb       NOT NULL,
    archived_at timestamptz,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- +goose Down
DROP TABLE billing_plans;
