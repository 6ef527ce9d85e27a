-- name: CreateKnowledgeBase :one
INSERT INTO knowledge_bases (id, org_id, name, description, embedding_model, dimensions, chunk_max_tokens, chunk_overlap,
                             vector_store, created_by, api_key_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
RETURNING *;

-- name: GetKnowledgeBase :one
SELECT * FROM knowledge_bases WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- Serialises the writers of one knowledge base's documents (dedupe by content hash).
-- name: LockKnowledgeBase :one
SELECT * FROM knowledge_bases WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) FOR UPDATE;

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- name: ListKnowledgeBases :many
SELECT * FROM knowledge_bases k
WHERE k.org_id = sqlc.arg(org_id)
  AND (sqlc.narg(after)::uuid IS NULL OR k.id < sqlc.narg(after)::uuid)
ORDER BY k.id DESC
LIMIT sqlc.arg(max_rows);

-- name: UpdateKnowledgeBase :one
UPDATE knowledge_bases
SET name = coalesce(sqlc.narg(name), name),
    description = coalesce(sqlc.narg(description), description),
    updated_at = sqlc.arg(updated_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
RETURNING *;

-- name: DeleteKnowledgeBase :execrows
DELETE FROM knowledge_bases WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- The documents and chunks a write added to a knowledge base (negative: removed).
-- name: CountKnowledgeBase :exec
UPDATE knowledge_bases SET document_count = document_count + sqlc.arg(documents)::integer,
    chunk_count = chunk_count + sqlc.arg(chunks)::integer
WHERE id = sqlc.arg(id);

-- A new document with its ingestion job, counted in its knowledge base (whose row the
-- writer has locked).
-- name: CreateDocument :one
WITH counted AS (
    UPDATE knowledge_bases SET document_count = document_count + 1 WHERE id = sqlc.arg(kb_id)
)
INSERT INTO kb_documents (id, org_id, kb_id, title, source, filename, media_type, external_id, metadata, content,
                          content_hash, bytes, status, job_id, created_at, updated_at)
VALUES (sqlc.arg(id), sqlc.arg(org_id), sqlc.arg(kb_id), sqlc.arg(title), sqlc.arg(source), sqlc.narg(filename),
        sqlc.arg(media_type), sqlc.narg(external_id), sqlc.arg(metadata), sqlc.arg(content), sqlc.arg(content_hash),
        sqlc.arg(bytes), 'queued', sqlc.arg(job_id), sqlc.arg(created_at), sqlc.arg(created_at))
RETURNING *;

-- A document's status is its row's, unless its ingestion job ended without finishing it
-- (cancelled, or failed for good in a way the handler could not record).
-- name: GetDocument :one
SELECT sqlc.embed(d), j.state AS job_state, j.last_error AS job_error
FROM kb_documents d LEFT JOIN jobs j ON j.id = d.job_id
WHERE d.org_id = sqlc.arg(org_id) AND d.kb_id = sqlc.arg(kb_id) AND d.id = sqlc.arg(id);

-- name: ListDocuments :many
SELECT sqlc.embed(d), j.state AS job_state, j.last_error AS job_error
FROM kb_documents d LEFT JOIN jobs j ON j.id = d.job_id
WHERE d.org_id = sqlc.arg(org_id) AND d.kb_id = sqlc.arg(kb_id)
  AND (sqlc.narg(after)::uuid IS NULL OR d.id < sqlc.narg(after)::uuid)
  AND (sqlc.narg(status)::text IS NULL OR d.status = sqlc.narg(status)::text)
ORDER BY d.id DESC
LIMIT sqlc.arg(max_rows);

-- name: FindDocumentByHash :one
SELECT * FROM kb_documents
WHERE kb_id = sqlc.arg(kb_id) AND content_hash = sqlc.arg(content_hash)
ORDER BY id LIMIT 1;

-- name: FindDocumentByExternalID :one
SELECT * FROM kb_documents
WHERE kb_id = sqlc.arg(kb_id) AND external_id = sqlc.arg(external_id)
FOR UPDATE;

-- New content for a document created again with its external id; it is ingested again.
-- name: ReplaceDocumentContent :one
UPDATE kb_documents
SET title = sqlc.arg(title), source = sqlc.arg(source), filename = sqlc.narg(filename), media_type = sqlc.arg(media_type),
    metadata = sqlc.arg(metadata), content = sqlc.arg(content), content_hash = sqlc.arg(content_hash),
    bytes = sqlc.arg(bytes), status = 'queued', error = NULL, job_id = sqlc.arg(job_id), updated_at = sqlc.arg(updated_at)
WHERE id = sqlc.arg(id)
RETURNING *;

-- The ingestion job's own view of its document: it may have been deleted or replaced.
-- name: LockDocumentForIngestion :one
SELECT * FROM kb_documents WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) FOR UPDATE;

-- name: GetDocumentForIngestion :one
SELECT * FROM kb_documents WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- name: SetDocumentProcessing :exec
UPDATE kb_documents SET status = 'processing', updated_at = sqlc.arg(updated_at)
WHERE id = sqlc.arg(id) AND status IN ('queued', 'processing');

-- name: FinishDocument :exec
UPDATE kb_documents SET status = 'ready', error = NULL, chunk_count = sqlc.arg(chunk_count),
    indexed_at = sqlc.arg(now), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);

-- name: FailDocument :exec
UPDATE kb_documents SET status = 'failed', error = sqlc.arg(error), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);

-- name: DeleteDocument :one
DELETE FROM kb_documents WHERE org_id = sqlc.arg(org_id) AND kb_id = sqlc.arg(kb_id) AND id = sqlc.arg(id)
RETURNING chunk_count;

-- A generation's chunks of a document without their vectors, in document order.
-- name: ListDocumentChunks :many
SELECT id, ordinal, text, tokens, metadata, content_hash
FROM kb_chunks WHERE org_id = sqlc.arg(org_id) AND document_id = sqlc.arg(document_id) AND generation = sqlc.arg(generation)
ORDER BY ordinal;

-- Embeddings already computed in these generations of this knowledge base (those made
-- with its current model and size) for any of these chunk hashes.
-- One lookup of (kb_id, content_hash) per hash, whatever the table's statistics say: with
-- content_hash = ANY(...), a plan made while the table looked empty (a knowledge base's
-- first import) read all the knowledge base's chunks for each document.
-- name: FindChunkEmbeddings :many
SELECT h.content_hash::bytea AS content_hash, e.embedding
FROM unnest(sqlc.arg(hashes)::bytea[]) AS h(content_hash)
CROSS JOIN LATERAL (
    SELECT c.embedding FROM kb_chunks c
    WHERE c.kb_id = sqlc.arg(kb_id) AND c.content_hash = h.content_hash AND c.embedding IS NOT NULL
      AND c.generation = ANY(sqlc.arg(generations)::integer[])
    LIMIT 1
) e;

-- search_text is the chunk's text as the full-text index reads it (Chinese in bigrams).
-- name: InsertChunk :batchexec
INSERT INTO kb_chunks (id, org_id, kb_id, document_id, generation, ordinal, text, tokens, content_hash, metadata, dimensions,
                       embedding, search_tsv, created_at)
VALUES (sqlc.arg(id), sqlc.arg(org_id), sqlc.arg(kb_id), sqlc.arg(document_id), sqlc.arg(generation), sqlc.arg(ordinal), sqlc.arg(text),
        sqlc.arg(tokens), sqlc.arg(content_hash), sqlc.arg(metadata), sqlc.arg(dimensions), sqlc.arg(embedding),
        to_tsvector('english', sqlc.arg(search_text)::text), sqlc.arg(created_at));

-- name: DeleteChunks :execrows
DELETE FROM kb_chunks WHERE document_id = sqlc.arg(document_id) AND id = ANY(sqlc.arg(ids)::uuid[]);

-- The chunks a search returns, with their documents' titles and external ids.
-- name: GetChunksByID :many
SELECT c.id, c.document_id, d.title, d.external_id, c.ordinal, c.text, c.metadata
FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id
WHERE c.org_id = sqlc.arg(org_id) AND c.kb_id = sqlc.arg(kb_id) AND c.id = ANY(sqlc.arg(ids)::uuid[]);

-- Every serving chunk of a knowledge base with its document's external id (evaluations).
-- name: ListChunkExternalIDs :many
SELECT c.id, coalesce(d.external_id, d.id::text)::text AS external_id
FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id JOIN knowledge_bases k ON k.id = c.kb_id
WHERE c.org_id = sqlc.arg(org_id) AND c.kb_id = sqlc.arg(kb_id) AND c.generation = k.generation;

-- An ingestion's transaction reads the serving generation under a lock that a reindex's
-- swap (FOR UPDATE) waits for and that waits for the swap: chunks of a generation that
-- stopped serving are never written.
-- name: LockKnowledgeBaseGeneration :one
SELECT generation FROM knowledge_bases WHERE id = sqlc.arg(id) FOR KEY SHARE;

-- name: SetKnowledgeBaseReindex :exec
UPDATE knowledge_bases SET reindex_job_id = sqlc.arg(job_id) WHERE id = sqlc.arg(id);

-- Whether a job is still to run or running (a reindex in progress).
-- name: JobLive :one
SELECT EXISTS (SELECT 1 FROM jobs WHERE id = sqlc.arg(id) AND state IN ('queued', 'running'))::boolean;

-- Every document of a knowledge base with the hash of its content (a reindex's work list).
-- name: ListDocumentHashes :many
SELECT id, content_hash FROM kb_documents WHERE org_id = sqlc.arg(org_id) AND kb_id = sqlc.arg(kb_id) ORDER BY id;

-- name: DeleteDocumentGeneration :exec
DELETE FROM kb_chunks WHERE document_id = sqlc.arg(document_id) AND generation = sqlc.arg(generation);

-- The chunks of every generation but the one kept: a reindex's partial index, or the
-- index a reindex replaced.
-- name: DeleteOtherGenerations :execrows
DELETE FROM kb_chunks WHERE kb_id = sqlc.arg(kb_id) AND generation <> sqlc.arg(keep);

-- A reindex's swap: the new generation serves, with the settings it was built with.
-- name: SwapKnowledgeBaseGeneration :exec
UPDATE knowledge_bases
SET generation = sqlc.arg(generation), embedding_model = sqlc.arg(embedding_model), dimensions = sqlc.arg(dimensions),
    chunk_max_tokens = sqlc.arg(chunk_max_tokens), chunk_overlap = sqlc.arg(chunk_overlap),
    chunk_count = (SELECT count(*) FROM kb_chunks c WHERE c.kb_id = sqlc.arg(id) AND c.generation = sqlc.arg(generation))::integer,
    updated_at = sqlc.arg(updated_at)
WHERE id = sqlc.arg(id);

-- Every document of a knowledge base is indexed in the generation that now serves.
-- name: FinishReindexedDocuments :exec
UPDATE kb_documents d
SET chunk_count = (SELECT count(*) FROM kb_chunks c WHERE c.document_id = d.id AND c.generation = sqlc.arg(generation))::integer,
    status = 'ready', error = NULL, indexed_at = sqlc.arg(now), updated_at = sqlc.arg(now)
WHERE d.kb_id = sqlc.arg(kb_id);

-- Every org's knowledge bases for platform admins, newest first, with their sizes and
-- failed ingestions (a document failed, or its job ended without finishing it).
-- name: AdminListKnowledgeBases :many
SELECT k.id, k.org_id, o.name AS org_name, k.name, k.embedding_model, k.dimensions, k.vector_store, k.generation,
       k.chunk_count, k.created_at,
       k.document_count,
       (SELECT coalesce(sum(d.bytes), 0) FROM kb_documents d WHERE d.kb_id = k.id)::bigint AS bytes,
       (SELECT count(*) FROM kb_documents d LEFT JOIN jobs j ON j.id = d.job_id
        WHERE d.kb_id = k.id
          AND (d.status = 'failed' OR (d.status IN ('queued', 'processing') AND j.state IN ('failed', 'cancelled'))))::integer AS failed_documents
FROM knowledge_bases k JOIN orgs o ON o.id = k.org_id
WHERE (sqlc.narg(org_id)::uuid IS NULL OR k.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(after)::uuid IS NULL OR k.id < sqlc.narg(after)::uuid)
ORDER BY k.id DESC
LIMIT sqlc.arg(max_rows);

-- Every org's documents whose ingestion failed, newest first.
-- name: AdminListFailedDocuments :many
SELECT sqlc.embed(d), k.name AS kb_name, j.state AS job_state, j.last_error AS job_error
FROM kb_documents d JOIN knowledge_bases k ON k.id = d.kb_id LEFT JOIN jobs j ON j.id = d.job_id
WHERE (d.status = 'failed' OR (d.status IN ('queued', 'processing') AND j.state IN ('failed', 'cancelled')))
  AND (sqlc.narg(org_id)::uuid IS NULL OR d.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(after)::uuid IS NULL OR d.id < sqlc.narg(after)::uuid)
ORDER BY d.id DESC
LIMIT sqlc.arg(max_rows);

-- A document of any org, with its ingestion job's state (a platform admin's retry).
-- name: AdminGetDocument :one
SELECT sqlc.embed(d), j.state AS job_state, j.last_error AS job_error
FROM kb_documents d LEFT JOIN jobs j ON j.id = d.job_id
WHERE d.kb_id = sqlc.arg(kb_id) AND d.id = sqlc.arg(id);

-- name: RequeueDocument :one
UPDATE kb_documents SET status = 'queued', error = NULL, job_id = sqlc.arg(job_id), updated_at = sqlc.arg(updated_at)
WHERE id = sqlc.arg(id)
RETURNING *;
