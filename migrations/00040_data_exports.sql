-- +goose Up
-- Privacy exports: one row per archive asked for (POST /v1/me/export, /v1/orgs/{id}/export).
-- The archive lives in PostgreSQL (data_export_chunks) so any replica serves its download;
-- its bytes are deleted once it was downloaded or its link expired.
CREATE TABLE data_exports (
    id            uuid        PRIMARY KEY,
    -- user: everything of user_id across orgs; org: every row of org_id.
    subject       text        NOT NULL CHECK (subject IN ('user', 'org')),
    -- The org exported, or for a user export the org the job was asked in.
    org_id        uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- The user exported, or for an org export the user who asked (null: an API key).
    user_id       uuid        REFERENCES users (id) ON DELETE CASCADE,
    api_key_id    uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    job_id        uuid        REFERENCES jobs (id) ON DELETE SET NULL,
    -- pending until the job built it; then ready, downloaded, expired or failed.
    state         text        NOT NULL CHECK (state IN ('pending', 'ready', 'downloaded', 'expired', 'failed')),
    size          bigint      NOT NULL DEFAULT 0,
    sha256        bytea,
    expires_at    timestamptz,
    downloaded_at timestamptz,
    created_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    CHECK (subject = 'org' OR user_id IS NOT NULL)
);
-- One export at a time per subject is checked under an advisory lock; this finds it.
CREATE INDEX data_exports_pending ON data_exports (subject, org_id, user_id) WHERE state = 'pending';
CREATE INDEX data_exports_user ON data_exports (user_id);
CREATE INDEX data_exports_expiring ON data_exports (expires_at) WHERE state = 'ready';

-- The archive, in pieces of at most 1 MiB written as the ZIP is streamed, read back in
-- order by the download: neither side holds the whole archive.
CREATE TABLE data_export_chunks (
    export_id uuid    NOT NULL REFERENCES data_exports (id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    data      bytea   NOT NULL,
    PRIMARY KEY (export_id, seq)
);

-- +goose Down
DROP TABLE data_export_chunks;
DROP TABLE data_exports;
