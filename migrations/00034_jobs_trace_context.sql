-- +goose Up
-- The W3C trace context (traceparent, tracestate) of the traced request or job that
-- created the job: each run's span continues that trace. Null when tracing is off or the
-- job was created outside a trace (its runs start their own).
ALTER TABLE jobs ADD COLUMN trace_context jsonb;

-- +goose Down
ALTER TABLE jobs DROP COLUMN trace_context;
