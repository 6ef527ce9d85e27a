-- name: InsertUsage :copyfrom
INSERT INTO llm_usage (
    id, org_id, user_id, api_key_id, request_id, endpoint, alias, provider, model, status,
    error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms,
    ttft_ms, cached, attempts, created_at, prompt_name, prompt_version, experiment_id
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
    $21, $22, $23
);

-- name: UsageReport :many
-- Buckets an org's calls in [from, to) by UTC day or by alias.
SELECT (CASE WHEN @group_by::text = 'model' THEN alias
             ELSE to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') END)::text AS key,
       count(*)                                           AS requests,
       count(*) FILTER (WHERE status = 'error')           AS errors,
       count(*) FILTER (WHERE cached)                     AS cached_requests,
       coalesce(sum(prompt_tokens), 0)::bigint            AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint        AS completion_tokens,
       coalesce(sum(cached_tokens), 0)::bigint            AS cached_tokens,
       coalesce(sum(cost_usd), 0)::double precision       AS cost_usd,
       coalesce(avg(latency_ms), 0)::double precision     AS latency_ms_avg
FROM llm_usage
WHERE org_id = @org_id
  AND created_at >= @from_time AND created_at < @to_time
  AND deleted_at IS NULL
  AND (sqlc.narg(alias)::text IS NULL OR alias = sqlc.narg(alias))
  AND (sqlc.narg(api_key_id)::uuid IS NULL OR api_key_id = sqlc.narg(api_key_id))
GROUP BY 1
ORDER BY 1;

-- name: UsageExportOrgPage :many
-- The next page of an org's calls in [from, to) after the cursor (created_at, id), in that
-- order. Keyset pages follow the (org_id, created_at) index: each starts where the last ended.
SELECT id, org_id, user_id, api_key_id, request_id, endpoint, alias, provider, model, status,
       error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms,
       cached, created_at
FROM llm_usage
WHERE org_id = @org_id
  AND created_at >= @from_time AND created_at < @to_time
  AND deleted_at IS NULL
  AND (created_at, id) > (@after_created::timestamptz, @after_id::uuid)
ORDER BY created_at, id
LIMIT @page_size;

-- name: UsageExportAllPage :many
-- The next page of every org's calls in [from, to) after the cursor (org_id, created_at,
-- id), in that order, following the (org_id, created_at) index as UsageExportOrgPage does.
SELECT id, org_id, user_id, api_key_id, request_id, endpoint, alias, provider, model, status,
       error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms,
       cached, created_at
FROM llm_usage
WHERE created_at >= @from_time AND created_at < @to_time
  AND deleted_at IS NULL
  AND (org_id, created_at, id) > (@after_org::uuid, @after_created::timestamptz, @after_id::uuid)
ORDER BY org_id, created_at, id
LIMIT @page_size;
