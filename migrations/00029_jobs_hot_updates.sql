-- +goose Up
-- A job's start, heartbeats and progress become HOT updates (no new index entries): no
-- index may read a column they change (state, attempts, started_at, heartbeat_at,
-- updated_at, progress_*), in its key, INCLUDE list or predicate. The indexes that chose
-- live and failed jobs by state read phase instead, a stored column derived from state
-- that queued → running leaves at 'live'. Only the relay's claim (out of the outbox) and
-- the end (out of the live set) still write index entries. fillfactor leaves room on each
-- page for the new row versions.
ALTER TABLE jobs ADD COLUMN phase text NOT NULL GENERATED ALWAYS AS (
    CASE WHEN state IN ('queued', 'running') THEN 'live'
         WHEN state = 'failed' AND discarded_at IS NULL THEN 'failed'
         ELSE 'done' END) STORED;
DROP INDEX jobs_outbox;
DROP INDEX jobs_active;
DROP INDEX jobs_failed;
DROP INDEX jobs_failed_audit;
DROP INDEX jobs_live;
CREATE INDEX jobs_outbox ON jobs (run_at) WHERE phase = 'live' AND enqueued_at IS NULL;
CREATE INDEX jobs_active ON jobs (id) WHERE phase = 'live' AND enqueued_at IS NOT NULL;
CREATE INDEX jobs_failed_audit ON jobs (id DESC) WHERE phase = 'failed';
-- Metrics and queue monitoring: live jobs (read from the table, few) and failed ones
-- (counted from the index alone, however many the table keeps).
CREATE INDEX jobs_live ON jobs (queue, kind, phase) WHERE phase IN ('live', 'failed');
ALTER TABLE jobs SET (fillfactor = 70);

-- +goose Down
ALTER TABLE jobs RESET (fillfactor);
DROP INDEX jobs_live;
DROP INDEX jobs_failed_audit;
DROP INDEX jobs_active;
DROP INDEX jobs_outbox;
ALTER TABLE jobs DROP COLUMN phase;
CREATE INDEX jobs_outbox ON jobs (run_at) WHERE state = 'queued' AND enqueued_at IS NULL;
CREATE INDEX jobs_active ON jobs (id) WHERE state IN ('queued', 'running') AND enqueued_at IS NOT NULL;
CREATE INDEX jobs_failed ON jobs (finished_at DESC) WHERE state = 'failed';
CREATE INDEX jobs_failed_audit ON jobs (id DESC) WHERE state = 'failed' AND discarded_at IS NULL;
CREATE INDEX jobs_live ON jobs (queue, kind, state) INCLUDE (run_at, heartbeat_at, started_at, updated_at)
    WHERE state IN ('queued', 'running') OR (state = 'failed' AND discarded_at IS NULL);
