-- +goose Up
-- Knowledge bases: documents, their chunks with embeddings (pgvector halfvec, HNSW cosine)
-- and full-text vectors. Every row carries org_id and every read filters by it.

-- The API-key scopes of knowledge bases are kb:read and kb:write (the catalog called them
-- rag:read and rag:write before anything used them).
UPDATE api_keys SET scopes = array_replace(array_replace(scopes, 'rag:read', 'kb:read'), 'rag:write', 'kb:write')
WHERE scopes && ARRAY['rag:read', 'rag:write'];

CREATE TABLE knowledge_bases (
    id               uuid        PRIMARY KEY,
    org_id           uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name             text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description      text        NOT NULL DEFAULT '',
    -- The LLM gateway's model alias that embeds its chunks, and the vectors' size: one of
    -- the sizes the HNSW indexes below are built for.
    embedding_model  text        NOT NULL,
    dimensions       integer     NOT NULL CHECK (dimensions IN (256, 384, 512, 768, 1024, 1536, 3072)),
    chunk_max_tokens integer     NOT NULL CHECK (chunk_max_tokens BETWEEN 32 AND 8192),
    chunk_overlap    integer     NOT NULL CHECK (chunk_overlap >= 0 AND chunk_overlap < chunk_max_tokens),
    vector_store     text        NOT NULL DEFAULT 'pgvector' CHECK (vector_store IN ('pgvector')),
    -- Kept by the ingestion transactions: a search scans a small knowledge base exactly
    -- and a large one through its HNSW index.
    chunk_count      integer     NOT NULL DEFAULT 0,
    created_by       uuid        REFERENCES users (id) ON DELETE SET NULL,
    api_key_id       uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX knowledge_bases_org ON knowledge_bases (org_id, id DESC);

CREATE TABLE kb_documents (
    id            uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL,
    kb_id         uuid        NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    title         text        NOT NULL DEFAULT '',
    -- 'text' (a JSON body) or 'upload' (a multipart file).
    source        text        NOT NULL CHECK (source IN ('text', 'upload')),
    filename      text,
    media_type    text        NOT NULL,
    -- The client's own id: a document created again with it replaces this one's content.
    external_id   text        CHECK (char_length(external_id) BETWEEN 1 AND 200),
    metadata      jsonb       NOT NULL DEFAULT '{}',
    -- The extracted text, kept so that a new chunking or embedding model needs no upload.
    content       text        NOT NULL,
    -- sha256 of title, metadata and content: an unchanged document is not processed again.
    content_hash  bytea       NOT NULL,
    bytes         integer     NOT NULL,
    status        text        NOT NULL CHECK (status IN ('queued', 'processing', 'ready', 'failed')),
    error         text,
    chunk_count   integer     NOT NULL DEFAULT 0,
    -- The ingestion job of its latest content.
    job_id        uuid        REFERENCES jobs (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    indexed_at    timestamptz
);
CREATE INDEX kb_documents_kb ON kb_documents (org_id, kb_id, id DESC);
CREATE INDEX kb_documents_hash ON kb_documents (kb_id, content_hash);
CREATE UNIQUE INDEX kb_documents_external ON kb_documents (kb_id, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE kb_chunks (
    id           uuid        PRIMARY KEY,
    org_id       uuid        NOT NULL,
    kb_id        uuid        NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    document_id  uuid        NOT NULL REFERENCES kb_documents (id) ON DELETE CASCADE,
    ordinal      integer     NOT NULL,
    text         text        NOT NULL,
    tokens       integer     NOT NULL,
    -- sha256 of what was embedded: a chunk with a known hash reuses its embedding.
    content_hash bytea       NOT NULL,
    -- The document's metadata plus source, section and page.
    metadata     jsonb       NOT NULL DEFAULT '{}',
    dimensions   integer     NOT NULL,
    embedding    halfvec     NOT NULL,
    -- English stemmed words plus Chinese character bigrams, built in Go (Postgres's
    -- parsers do not segment Chinese).
    search_tsv   tsvector    NOT NULL,
    created_at   timestamptz NOT NULL,
    UNIQUE (document_id, ordinal)
);
CREATE INDEX kb_chunks_kb ON kb_chunks (kb_id);
CREATE INDEX kb_chunks_hash ON kb_chunks (kb_id, content_hash);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (search_tsv);
CREATE INDEX kb_chunks_metadata ON kb_chunks USING gin (metadata jsonb_path_ops);
-- One HNSW index per vector size (an index needs a fixed size); a search casts to its
-- knowledge base's size and names it, so the planner picks that partial index.
CREATE INDEX kb_chunks_hnsw_256 ON kb_chunks USING hnsw ((embedding::halfvec(256)) halfvec_cosine_ops) WHERE dimensions = 256;
CREATE INDEX kb_chunks_hnsw_384 ON kb_chunks USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WHERE dimensions = 384;
CREATE INDEX kb_chunks_hnsw_512 ON kb_chunks USING hnsw ((embedding::halfvec(512)) halfvec_cosine_ops) WHERE dimensions = 512;
CREATE INDEX kb_chunks_hnsw_768 ON kb_chunks USING hnsw ((embedding::halfvec(768)) halfvec_cosine_ops) WHERE dimensions = 768;
CREATE INDEX kb_chunks_hnsw_1024 ON kb_chunks USING hnsw ((embedding::halfvec(1024)) halfvec_cosine_ops) WHERE dimensions = 1024;
CREATE INDEX kb_chunks_hnsw_1536 ON kb_chunks USING hnsw ((embedding::halfvec(1536)) halfvec_cosine_ops) WHERE dimensions = 1536;
CREATE INDEX kb_chunks_hnsw_3072 ON kb_chunks USING hnsw ((embedding::halfvec(3072)) halfvec_cosine_ops) WHERE dimensions = 3072;

-- +goose Down
DROP TABLE kb_chunks;
DROP TABLE kb_documents;
DROP TABLE knowledge_bases;
UPDATE api_keys SET scopes = array_replace(array_replace(scopes, 'kb:read', 'rag:read'), 'kb:write', 'rag:write')
WHERE scopes && ARRAY['kb:read', 'kb:write'];
