-- +goose Up
-- pgvector: embeddings for RAG live in this database.
CREATE EXTENSION IF NOT EXISTS vector;

-- +goose Down
DROP EXTENSION IF EXISTS vector;
