-- +goose Up
-- The sources a reply grounded in knowledge bases was given, as its citations event sent
-- them: [{source, knowledge_base_id, document_id, chunk_id, title, snippet}]; null for a
-- reply not grounded (and every other message).
ALTER TABLE messages ADD COLUMN citations jsonb;

-- +goose Down
ALTER TABLE messages DROP COLUMN citations;
