-- +goose Up
-- Reindexing builds a knowledge base's new index beside the one that serves searches: its
-- chunks carry the generation they belong to, and the knowledge base names the generation
-- that serves. A reindex writes generation+1, then swaps by raising the knowledge base's
-- generation in one transaction and drops the old chunks; until then every read sees only
-- the serving generation. A failed or cancelled reindex deletes its partial generation.
ALTER TABLE knowledge_bases ADD COLUMN generation integer NOT NULL DEFAULT 0;
-- The latest reindex job: a second reindex while it is live is a conflict.
ALTER TABLE knowledge_bases ADD COLUMN reindex_job_id uuid REFERENCES jobs (id) ON DELETE SET NULL;
ALTER TABLE kb_chunks ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE kb_chunks DROP CONSTRAINT kb_chunks_document_id_ordinal_key;
ALTER TABLE kb_chunks ADD CONSTRAINT kb_chunks_document_generation_ordinal_key UNIQUE (document_id, generation, ordinal);

-- +goose Down
-- A reindex in progress loses its partial generation.
DELETE FROM kb_chunks c USING knowledge_bases k WHERE c.kb_id = k.id AND c.generation <> k.generation;
ALTER TABLE kb_chunks DROP CONSTRAINT kb_chunks_document_generation_ordinal_key;
ALTER TABLE kb_chunks ADD CONSTRAINT kb_chunks_document_id_ordinal_key UNIQUE (document_id, ordinal);
ALTER TABLE kb_chunks DROP COLUMN generation;
ALTER TABLE knowledge_bases DROP COLUMN reindex_job_id;
ALTER TABLE knowledge_bases DROP COLUMN generation;
