-- +goose Up
-- Evaluation runs of a knowledge base's retrieval: the labelled queries asked, and the
-- metrics, comparisons and per-query outcomes the rag.evaluate job stored.
CREATE TABLE kb_evaluations (
    id           uuid        PRIMARY KEY,
    org_id       uuid        NOT NULL,
    kb_id        uuid        NOT NULL REFERENCES knowledge_bases (id) ON DELETE CASCADE,
    name         text        NOT NULL DEFAULT '',
    status       text        NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error        text,
    -- {queries, modes, chunks}
    request      jsonb       NOT NULL,
    query_count  integer     NOT NULL,
    -- {runs, comparisons}, once succeeded.
    result       jsonb,
    job_id       uuid        REFERENCES jobs (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL,
    finished_at  timestamptz
);
CREATE INDEX kb_evaluations_kb ON kb_evaluations (org_id, kb_id, id DESC);

-- +goose Down
DROP TABLE kb_evaluations;
