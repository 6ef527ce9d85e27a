-- +goose Up
-- Schedules: cron expressions that create jobs. Schedules from config (source 'config')
-- are written here at start, so every replica agrees on them and the admin API can pause
-- them; schedules from the admin API have source 'api'. A replica creates a run by locking
-- a due schedule (FOR UPDATE SKIP LOCKED), creating the job and moving next_run_at past
-- now in one transaction: a slot gets exactly one run whatever the number of replicas.
CREATE TABLE job_schedules (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    source       text        NOT NULL CHECK (source IN ('config', 'api')),
    cron         text        NOT NULL,
    timezone     text        NOT NULL DEFAULT 'UTC',
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    -- The first slot not yet run; slots before it that were missed are coalesced into one run.
    next_run_at  timestamptz NOT NULL,
    paused_at    timestamptz,
    last_run_at  timestamptz,
    last_job_id  uuid        REFERENCES jobs (id) ON DELETE SET NULL,
    created_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX job_schedules_due ON job_schedules (next_run_at) WHERE paused_at IS NULL;

-- A failed job an admin discarded: kept for the record, no longer listed as failed.
ALTER TABLE jobs ADD COLUMN discarded_at timestamptz;
ALTER TABLE jobs ADD COLUMN discarded_by uuid REFERENCES users (id) ON DELETE SET NULL;
-- The failed-job audit lists failed jobs newest first.
CREATE INDEX jobs_failed_audit ON jobs (id DESC) WHERE state = 'failed' AND discarded_at IS NULL;
-- Metrics and queue monitoring count the jobs still to run or failed on every scrape:
-- this index holds only those, however many finished jobs the table keeps, and covers
-- the columns the count reads, so failed jobs (spread over the whole table) are counted
-- without visiting it (an index-only scan once vacuum has seen their pages).
CREATE INDEX jobs_live ON jobs (queue, kind, state) INCLUDE (run_at, heartbeat_at, started_at, updated_at)
    WHERE state IN ('queued', 'running') OR (state = 'failed' AND discarded_at IS NULL);
-- Processed and failed per minute read the jobs that ended in the last minutes.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- +goose Down
DROP INDEX jobs_live;
DROP INDEX jobs_finished;
DROP INDEX jobs_failed_audit;
ALTER TABLE jobs DROP COLUMN discarded_by;
ALTER TABLE jobs DROP COLUMN discarded_at;
DROP TABLE job_schedules;
