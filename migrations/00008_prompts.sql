-- +goose Up
-- The prompt store: prompts by name, immutable numbered versions, labels pointing at a
-- version or splitting traffic between versions (an A/B experiment).
-- Soft delete: deleted_at hides a prompt (and so its versions and labels) from every read;
-- a retention job purging deleted prompts is not in this schema yet.
CREATE TABLE prompts (
    id          uuid        PRIMARY KEY,
    org_id      uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    description text        NOT NULL,
    -- The user who created it; null for an API key (the audit log names the key).
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);
CREATE UNIQUE INDEX prompts_org_name ON prompts (org_id, name) WHERE deleted_at IS NULL;
CREATE INDEX prompts_org ON prompts (org_id, id DESC);

-- Immutable: a trigger refuses updates (deletes stay possible for the cascade).
CREATE TABLE prompt_versions (
    id         uuid        PRIMARY KEY,
    org_id     uuid        NOT NULL,
    prompt_id  uuid        NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    version    integer     NOT NULL CHECK (version >= 1),
    -- [{role, content}], content a template with {{variable}} placeholders.
    messages   jsonb       NOT NULL,
    -- [{name, type, required, default, description}]
    variables  jsonb       NOT NULL,
    -- The model alias; null: the request's (or the default).
    model      text,
    -- {temperature, top_p, max_tokens}
    parameters jsonb       NOT NULL,
    -- [{name, description, parameters}] as ChatRequest.tools
    tools      jsonb       NOT NULL,
    note       text        NOT NULL,
    created_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (prompt_id, version)
);
CREATE INDEX prompt_versions_list ON prompt_versions (org_id, prompt_id, id DESC);

-- +goose StatementBegin
CREATE FUNCTION prompt_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'prompt versions are immutable';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER prompt_versions_immutable BEFORE UPDATE ON prompt_versions
    FOR EACH ROW EXECUTE FUNCTION prompt_versions_immutable();

-- A label points at one version, or splits traffic between versions by weight
-- ([{version, weight}]) under the experiment it started.
CREATE TABLE prompt_labels (
    org_id        uuid        NOT NULL,
    prompt_id     uuid        NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    label         text        NOT NULL CHECK (label ~ '^[a-z0-9][a-z0-9._-]{0,63}$' AND label <> 'latest'),
    version       integer,
    split         jsonb,
    experiment_id uuid,
    updated_at    timestamptz NOT NULL,
    updated_by    uuid        REFERENCES users (id) ON DELETE SET NULL,
    PRIMARY KEY (prompt_id, label),
    CHECK ((version IS NULL) <> (split IS NULL)),
    CHECK ((split IS NULL) = (experiment_id IS NULL))
);

-- Every split a label ran, so its report outlives the label's next move.
CREATE TABLE prompt_experiments (
    id         uuid        PRIMARY KEY,
    org_id     uuid        NOT NULL,
    prompt_id  uuid        NOT NULL REFERENCES prompts (id) ON DELETE CASCADE,
    label      text        NOT NULL,
    split      jsonb       NOT NULL,
    created_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    ended_at   timestamptz
);

-- The prompt a chat call used, for experiment reports.
ALTER TABLE llm_usage
    ADD COLUMN prompt_name    text,
    ADD COLUMN prompt_version integer,
    ADD COLUMN experiment_id  uuid;
CREATE INDEX llm_usage_experiment ON llm_usage (org_id, experiment_id) WHERE experiment_id IS NOT NULL;

-- +goose Down
DROP INDEX llm_usage_experiment;
ALTER TABLE llm_usage DROP COLUMN prompt_name, DROP COLUMN prompt_version, DROP COLUMN experiment_id;
DROP TABLE prompt_experiments;
DROP TABLE prompt_labels;
DROP TABLE prompt_versions;
DROP FUNCTION prompt_versions_immutable();
DROP TABLE prompts;
