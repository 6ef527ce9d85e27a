-- +goose Up
-- OpenAI Responses API: a response is a reply in a conversation (its id is the reply
-- message's id); this row keeps what the OpenAI wire format echoes that a message does
-- not hold, and the conversation a follow-up (previous_response_id) continues. Deleting
-- the row deletes the response; the conversation stays until it is deleted itself.
CREATE TABLE openai_responses (
    -- No foreign key to messages: its lock would deadlock with the reply's end, which
    -- places the message (a key update) while holding its conversation.
    id                   uuid        PRIMARY KEY,
    org_id               uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    conversation_id      uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Not a foreign key: deleting a response leaves its follow-ups as they are.
    previous_response_id uuid,
    model                text        NOT NULL,
    instructions         text,
    -- The request's options as the transport echoes them (tools, tool_choice, sampling).
    options              jsonb       NOT NULL,
    metadata             jsonb       NOT NULL,
    created_at           timestamptz NOT NULL
);
CREATE INDEX openai_responses_conversation ON openai_responses (conversation_id);

-- +goose Down
DROP TABLE openai_responses;
