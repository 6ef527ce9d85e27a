-- +goose Up
-- A knowledge base keeps its vectors in pgvector (kb_chunks.embedding, the HNSW indexes)
-- or in Qdrant. The chunks of a Qdrant knowledge base are in kb_chunks all the same
-- (text, metadata, full-text index) but without an embedding, which stays out of the
-- HNSW indexes; a NULL embedding is also a chunk whose vector was deleted.
ALTER TABLE knowledge_bases DROP CONSTRAINT knowledge_bases_vector_store_check;
ALTER TABLE knowledge_bases ADD CONSTRAINT knowledge_bases_vector_store_check CHECK (vector_store IN ('pgvector', 'qdrant'));
ALTER TABLE kb_chunks ALTER COLUMN embedding DROP NOT NULL;

-- +goose Down
-- Qdrant knowledge bases cannot be kept without their vectors: they go.
DELETE FROM knowledge_bases WHERE vector_store <> 'pgvector';
DELETE FROM kb_chunks WHERE embedding IS NULL;
ALTER TABLE kb_chunks ALTER COLUMN embedding SET NOT NULL;
ALTER TABLE knowledge_bases DROP CONSTRAINT knowledge_bases_vector_store_check;
ALTER TABLE knowledge_bases ADD CONSTRAINT knowledge_bases_vector_store_check CHECK (vector_store IN ('pgvector'));
