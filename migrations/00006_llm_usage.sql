-- +goose Up
-- One row per model call, written in batches off the request path. An append-only log:
-- no foreign keys, so a batch never fails because an org, user or key was deleted since.
CREATE TABLE llm_usage (
    id                uuid PRIMARY KEY,
    org_id            uuid             NOT NULL,
    user_id           uuid,
    api_key_id        uuid,
    request_id        text             NOT NULL,
    -- chat, openai.chat, openai.embeddings, websocket
    endpoint          text             NOT NULL,
    -- The model alias requested, and the target that served it (empty when none did).
    alias             text             NOT NULL,
    provider          text             NOT NULL,
    model             text             NOT NULL,
    -- ok, error or cancelled; error_code is Kiln's error code for errors.
    status            text             NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
    error_code        text             NOT NULL,
    prompt_tokens     integer          NOT NULL,
    completion_tokens integer          NOT NULL,
    cached_tokens     integer          NOT NULL,
    cost_usd          double precision NOT NULL,
    latency_ms        integer          NOT NULL,
    -- Time to the first streamed event; null for blocking calls.
    ttft_ms           integer,
    -- Answered from Kiln's response cache (no upstream cost).
    cached            boolean          NOT NULL,
    attempts          integer          NOT NULL,
    created_at        timestamptz      NOT NULL,
    deleted_at        timestamptz
);
CREATE INDEX llm_usage_org_created ON llm_usage (org_id, created_at);

-- +goose Down
DROP TABLE llm_usage;
