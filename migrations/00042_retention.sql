-- +goose Up
-- An org's retention settings: how many days deleted prompts and conversations stay
-- restorable, ended jobs are kept (succeeded or cancelled; failed) and usage rows are
-- kept. A null column (or no row) takes the deployment's default (retention.* config).
-- The bounds are the API's; the checks keep a hand-written row within them too.
CREATE TABLE org_retention (
    org_id                     uuid PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    deleted_prompts_days       integer CHECK (deleted_prompts_days BETWEEN 1 AND 365),
    deleted_conversations_days integer CHECK (deleted_conversations_days BETWEEN 1 AND 365),
    finished_jobs_days         integer CHECK (finished_jobs_days BETWEEN 1 AND 365),
    failed_jobs_days           integer CHECK (failed_jobs_days BETWEEN 1 AND 365),
    usage_days                 integer CHECK (usage_days BETWEEN 400 AND 3650),
    updated_at                 timestamptz NOT NULL,
    updated_by                 uuid
);

-- A deleted job is hidden from its owner's reads until it is restored or purged (with the
-- other ended jobs, by finished_at). No index reads the column: the jobs' hot updates stay
-- hot.
ALTER TABLE jobs ADD COLUMN deleted_at timestamptz;
CREATE INDEX prompts_deleted ON prompts (deleted_at) WHERE deleted_at IS NOT NULL;

-- +goose Down
DROP INDEX prompts_deleted;
ALTER TABLE jobs DROP COLUMN deleted_at;
DROP TABLE org_retention;
