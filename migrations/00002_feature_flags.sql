-- +goose Up
CREATE TABLE feature_flags (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    description     text        NOT NULL DEFAULT '',
    enabled         boolean     NOT NULL DEFAULT false,
    -- Share of subjects that get the flag while it is enabled; sticky by hashing.
    rollout_percent integer     NOT NULL DEFAULT 100 CHECK (rollout_percent BETWEEN 0 AND 100),
    -- Which subject the rollout hash sticks to.
    sticky_by       text        NOT NULL DEFAULT 'org' CHECK (sticky_by IN ('org', 'user')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Per-org and per-user overrides win over the rollout; a user override wins over an org one.
CREATE TABLE feature_flag_overrides (
    flag_key     text        NOT NULL REFERENCES feature_flags (key) ON DELETE CASCADE,
    subject_type text        NOT NULL CHECK (subject_type IN ('org', 'user')),
    subject_id   uuid        NOT NULL,
    enabled      boolean     NOT NULL,
    -- Temporary overrides expire; the housekeeping task purges them.
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag_key, subject_type, subject_id)
);

CREATE INDEX feature_flag_overrides_expires_at ON feature_flag_overrides (expires_at)
    WHERE expires_at IS NOT NULL;

-- +goose Down
DROP TABLE feature_flag_overrides;
DROP TABLE feature_flags;
