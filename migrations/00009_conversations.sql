-- +goose Up
-- Conversations: stored history, replies generated apart from the connection, feedback,
-- and each org's retention of conversations.
ALTER TABLE orgs ADD COLUMN conversation_retention_days integer
    CHECK (conversation_retention_days BETWEEN 1 AND 36500);

-- Soft delete: deleted_at hides a conversation (and its messages) from every read; the
-- housekeeping task deletes it for good later, and conversations idle past their org's
-- retention at once.
CREATE TABLE conversations (
    id          uuid        PRIMARY KEY,
    org_id      uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- Who started it: a user, or (user_id null) an API key of the org.
    user_id     uuid        REFERENCES users (id) ON DELETE CASCADE,
    api_key_id  uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    title       text        CHECK (char_length(title) BETWEEN 1 AND 200),
    model       text,
    metadata    jsonb       NOT NULL,
    -- The position of the next message.
    next_seq    integer     NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);
CREATE INDEX conversations_org ON conversations (org_id, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX conversations_user ON conversations (org_id, user_id, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX conversations_idle ON conversations (org_id, updated_at) WHERE deleted_at IS NULL;
CREATE INDEX conversations_deleted ON conversations (deleted_at) WHERE deleted_at IS NOT NULL;

-- Every message as it happened: the user's, the assistant's replies with their tool
-- calls, and tool results (server-side tools' and the client's).
CREATE TABLE messages (
    id              uuid        PRIMARY KEY,
    org_id          uuid        NOT NULL,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- The position in the conversation; null while a reply is generated (the server-side
    -- tool steps it takes are placed before it when it ends).
    seq             integer,
    role            text        NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content         text        NOT NULL,
    -- [ContentPart] after content (images), null when none.
    parts           jsonb,
    -- [{id, name, arguments}], null when none.
    tool_calls      jsonb,
    tool_call_id    text,
    name            text,
    is_error        boolean     NOT NULL DEFAULT false,
    status          text        NOT NULL CHECK (status IN ('in_progress', 'completed', 'cancelled', 'failed')),
    error_code      text,
    error_detail    text,
    -- A reply's model alias, the target that served it, and what it cost.
    model           text,
    provider        text,
    provider_model  text,
    finish_reason   text,
    prompt_tokens     integer,
    completion_tokens integer,
    cached_tokens     integer,
    cost_usd          double precision,
    -- The stored prompt version it ran under.
    prompt_name     text,
    prompt_version  integer,
    experiment_id   uuid,
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    UNIQUE (conversation_id, seq)
);
-- One reply at a time per conversation.
CREATE UNIQUE INDEX messages_one_running ON messages (conversation_id) WHERE status = 'in_progress';
CREATE INDEX messages_running ON messages (created_at) WHERE status = 'in_progress';
CREATE INDEX messages_experiment ON messages (experiment_id) WHERE experiment_id IS NOT NULL;

-- One rating per message and rater (a user id or an API key id).
CREATE TABLE message_feedback (
    message_id uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    org_id     uuid        NOT NULL,
    rater      uuid        NOT NULL,
    rating     text        NOT NULL CHECK (rating IN ('up', 'down')),
    comment    text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (message_id, rater)
);

-- +goose Down
DROP TABLE message_feedback;
DROP TABLE messages;
DROP TABLE conversations;
ALTER TABLE orgs DROP COLUMN conversation_retention_days;
