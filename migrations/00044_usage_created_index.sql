-- The admin revenue report sums usage across orgs over a time range. llm_usage is the
-- largest table and every model call writes to it: the index is built concurrently, outside
-- a transaction, so no usage write waits for the build. IF NOT EXISTS: databases migrated
-- before this file have it from 00038.
-- +goose NO TRANSACTION

-- +goose Up
CREATE INDEX CONCURRENTLY IF NOT EXISTS llm_usage_created ON llm_usage (created_at);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS llm_usage_created;
