-- +goose Up
-- Jobs: background work whose source of truth is PostgreSQL. A job row is written in the
-- same transaction as the change that asks for it (a transactional outbox); a relay moves
-- committed rows into Asynq, and a reconciliation sweep re-enqueues rows whose task Asynq
-- no longer has. Handlers are idempotent by job id.
CREATE TABLE jobs (
    id                uuid        PRIMARY KEY,
    -- The org it works for; null for system work (housekeeping, schedules without org).
    org_id            uuid        REFERENCES orgs (id) ON DELETE CASCADE,
    kind              text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.:-]{0,63}$'),
    queue             text        NOT NULL,
    state             text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    payload           jsonb       NOT NULL,
    progress_done     bigint      NOT NULL DEFAULT 0,
    progress_total    bigint      NOT NULL DEFAULT 0,
    progress_message  text        NOT NULL DEFAULT '',
    attempts          integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL CHECK (max_attempts >= 1),
    last_error        text        NOT NULL DEFAULT '',
    result            jsonb,
    -- Who asked for it: a user, or an API key of the org; both null for system work.
    created_by        uuid        REFERENCES users (id) ON DELETE SET NULL,
    api_key_id        uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    -- With unique_key, a second job of the kind with the same key created before
    -- unique_until is the first one.
    unique_key        text,
    unique_until      timestamptz,
    -- When it may run; the relay hands it to Asynq from then on.
    run_at            timestamptz NOT NULL,
    -- Set when the relay handed the job to Asynq; null while it waits in the outbox.
    enqueued_at       timestamptz,
    -- The Asynq task id the job runs under: its id, then a fresh one per run and per
    -- re-enqueue of an orphan (a task of a dead worker that Asynq still holds as active
    -- must not block, nor run beside, the new one; a task whose id is not this one is
    -- stale and skipped).
    task_id           text        NOT NULL,
    -- Bumped by the running handler; a running job whose heartbeat stopped is an orphan.
    heartbeat_at      timestamptz,
    cancel_requested_at timestamptz,
    -- A retry of a failed or cancelled job starts a new run: its events are a new stream.
    run               integer     NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX jobs_org ON jobs (org_id, id DESC);
CREATE INDEX jobs_creator ON jobs (org_id, created_by, id DESC);
CREATE INDEX jobs_outbox ON jobs (run_at) WHERE state = 'queued' AND enqueued_at IS NULL;
CREATE INDEX jobs_active ON jobs (id) WHERE state IN ('queued', 'running') AND enqueued_at IS NOT NULL;
CREATE INDEX jobs_failed ON jobs (finished_at DESC) WHERE state = 'failed';
CREATE INDEX jobs_unique ON jobs (kind, unique_key, unique_until DESC) WHERE unique_key IS NOT NULL;

-- Wakes an idle relay when a transaction that created a job commits (NOTIFY is delivered
-- at commit, never for a rollback); the relay also polls, so a lost notification only
-- delays. A NOTIFY serialises the commits of every notifying transaction behind one lock
-- held through the commit's WAL flush (on this machine 1,380 → 260 commits/s), so only an
-- idle relay asks for one: it holds advisory lock 7243013 shared while it waits, and a busy
-- relay polls at short intervals instead (docs/performance.md, Jobs).
-- +goose StatementBegin
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_lock(7243013) THEN
        PERFORM pg_advisory_unlock(7243013); -- no relay waits
    ELSE
        PERFORM pg_notify('kiln_jobs', '');
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER jobs_notify AFTER INSERT ON jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();

-- +goose Down
DROP TABLE jobs;
DROP FUNCTION jobs_notify();
