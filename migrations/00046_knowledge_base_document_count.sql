-- +goose Up
-- A knowledge base keeps the count of its documents, as it keeps its chunks': reading a
-- knowledge base (every search, every ingestion) counted its documents, which took longer
-- the more it had. The writers of documents lock the knowledge base's row already.
ALTER TABLE knowledge_bases ADD COLUMN document_count integer NOT NULL DEFAULT 0;
UPDATE knowledge_bases k SET document_count = (SELECT count(*) FROM kb_documents d WHERE d.kb_id = k.id);

-- +goose Down
ALTER TABLE knowledge_bases DROP COLUMN document_count;
