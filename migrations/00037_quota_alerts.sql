-- +goose Up
-- The quota alerts sent: one row per org, limit, threshold (percent) and period, inserted
-- in the transaction that notifies the org's owners and admins, so an alert goes out once
-- whichever replica or call saw the usage cross the threshold first.
CREATE TABLE quota_alerts (
    org_id       uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    limit_name   text        NOT NULL CHECK (limit_name ~ '^[a-z][a-z0-9_]{0,63}$'),
    threshold    integer     NOT NULL CHECK (threshold BETWEEN 1 AND 1000),
    period_start timestamptz NOT NULL,
    used         bigint      NOT NULL,
    limit_value  bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (org_id, limit_name, threshold, period_start)
);

-- +goose Down
DROP TABLE quota_alerts;
