-- name: CreateConversation :one
INSERT INTO conversations (id, org_id, user_id, api_key_id, title, model, metadata, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
RETURNING *;

-- A user (user_id set) sees the conversations they started; an API key every one of its org.
-- name: GetConversation :one
SELECT * FROM conversations
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id)::uuid);

-- Serialises the writers of one conversation (new messages, a reply's end); deleted
-- ones too, so a reply running when its conversation is deleted still ends.
-- name: LockConversation :one
SELECT * FROM conversations WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) FOR UPDATE;

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- deleted lists the deleted conversations instead of the others.
-- name: ListConversations :many
SELECT * FROM conversations
WHERE org_id = sqlc.arg(org_id) AND (deleted_at IS NOT NULL) = sqlc.arg(deleted)::boolean
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id)::uuid)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
  AND (sqlc.narg(title_like)::text IS NULL OR title ILIKE sqlc.narg(title_like)::text ESCAPE '\')
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: UpdateConversation :one
UPDATE conversations
SET title = coalesce(sqlc.narg(title), title),
    model = coalesce(sqlc.narg(model), model),
    metadata = coalesce(sqlc.narg(metadata), metadata),
    updated_at = sqlc.arg(updated_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id)::uuid)
RETURNING *;

-- Sets a generated title unless one was given meanwhile.
-- name: SetConversationTitleIfUnset :execrows
UPDATE conversations SET title = sqlc.arg(title)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND title IS NULL AND deleted_at IS NULL;

-- name: DeleteConversation :execrows
UPDATE conversations SET deleted_at = sqlc.arg(deleted_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR user_id = sqlc.narg(user_id)::uuid);

-- A deleted conversation to restore, locked; expired says it was deleted longer ago than
-- the org's retention (default_days without a setting of the org).
-- name: GetDeletedConversationForUpdate :one
SELECT c.*, (c.deleted_at < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.deleted_conversations_days, sqlc.arg(default_days)::integer)))::boolean AS expired
FROM conversations c LEFT JOIN org_retention r ON r.org_id = c.org_id
WHERE c.org_id = sqlc.arg(org_id) AND c.id = sqlc.arg(id) AND c.deleted_at IS NOT NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR c.user_id = sqlc.narg(user_id)::uuid)
FOR UPDATE OF c;

-- name: RestoreConversation :execrows
UPDATE conversations SET deleted_at = NULL
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND deleted_at IS NOT NULL;

-- Reserves n positions and marks the conversation active; returns the first.
-- name: ReserveMessageSeq :one
UPDATE conversations SET next_seq = next_seq + sqlc.arg(n)::integer, updated_at = sqlc.arg(updated_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
RETURNING (next_seq - sqlc.arg(n)::integer)::integer AS first;

-- name: CreateMessage :one
INSERT INTO messages (id, org_id, conversation_id, seq, role, content, parts, tool_calls, tool_call_id, name, is_error,
                      status, model, prompt_name, prompt_version, experiment_id, created_at, completed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
RETURNING *;

-- Ends a reply: its content, position and outcome.
-- name: FinishMessage :one
UPDATE messages
SET seq = sqlc.arg(seq), content = sqlc.arg(content), tool_calls = sqlc.arg(tool_calls), status = sqlc.arg(status),
    error_code = sqlc.arg(error_code), error_detail = sqlc.arg(error_detail),
    provider = sqlc.arg(provider), provider_model = sqlc.arg(provider_model), finish_reason = sqlc.arg(finish_reason),
    prompt_tokens = sqlc.arg(prompt_tokens), completion_tokens = sqlc.arg(completion_tokens),
    cached_tokens = sqlc.arg(cached_tokens), cost_usd = sqlc.arg(cost_usd), citations = sqlc.arg(citations),
    completed_at = sqlc.arg(completed_at)
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id) AND status = 'in_progress'
RETURNING *;

-- name: GetMessage :one
SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
WHERE m.org_id = sqlc.arg(org_id) AND m.id = sqlc.arg(id) AND c.deleted_at IS NULL
  AND (sqlc.narg(user_id)::uuid IS NULL OR c.user_id = sqlc.narg(user_id)::uuid);

-- Oldest first; a reply being generated (seq null) last. The cursor is the last seq.
-- name: ListMessages :many
SELECT * FROM messages
WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id)
  AND (sqlc.narg(after_seq)::integer IS NULL OR seq > sqlc.narg(after_seq)::integer OR seq IS NULL)
ORDER BY seq ASC NULLS LAST
LIMIT sqlc.arg(max_rows);

-- The sizes of the messages ListMessages would return, so that a page is cut to its byte
-- budget before the messages themselves are read.
-- name: ListMessageSizes :many
SELECT (octet_length(content) + coalesce(octet_length(parts::text), 0) + coalesce(octet_length(tool_calls::text), 0)
        + coalesce(octet_length(error_detail), 0) + coalesce(octet_length(citations::text), 0))::bigint AS bytes
FROM messages
WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id)
  AND (sqlc.narg(after_seq)::integer IS NULL OR seq > sqlc.narg(after_seq)::integer OR seq IS NULL)
ORDER BY seq ASC NULLS LAST
LIMIT sqlc.arg(max_rows);

-- The history a reply is generated from, read newest first a page at a time until the
-- context window is full: the placed messages before before_seq (all when null).
-- name: ListHistoryBefore :many
SELECT * FROM messages
WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id) AND seq IS NOT NULL
  AND (sqlc.narg(before_seq)::integer IS NULL OR seq < sqlc.narg(before_seq)::integer)
ORDER BY seq DESC
LIMIT sqlc.arg(max_rows);

-- Whether a conversation holds more than one user message (a reply to its first one is
-- what asks for a title).
-- name: CountUserMessages :one
SELECT count(*)::integer FROM (
    SELECT 1 FROM messages
    WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id) AND role = 'user'
    LIMIT 2) u;

-- The last placed message and the tool results placed after the last assistant message.
-- name: LastMessages :many
SELECT * FROM messages
WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id) AND seq IS NOT NULL
ORDER BY seq DESC
LIMIT sqlc.arg(max_rows);

-- name: RunningMessage :one
SELECT * FROM messages
WHERE org_id = sqlc.arg(org_id) AND conversation_id = sqlc.arg(conversation_id) AND status = 'in_progress';

-- Replies still in progress long after any reply could have ended: their replica died.
-- name: ListStaleMessages :many
SELECT id, org_id, conversation_id, created_at FROM messages
WHERE status = 'in_progress' AND created_at < sqlc.arg(before)
LIMIT 1000;

-- name: UpsertMessageFeedback :one
INSERT INTO message_feedback (message_id, org_id, rater, rating, comment, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
ON CONFLICT (message_id, rater) DO UPDATE
SET rating = EXCLUDED.rating, comment = EXCLUDED.comment, updated_at = EXCLUDED.updated_at
RETURNING *;

-- name: ExperimentFeedback :many
SELECT m.prompt_version::integer AS version,
       count(*) FILTER (WHERE f.rating = 'up')   AS up,
       count(*) FILTER (WHERE f.rating = 'down') AS down
FROM message_feedback f JOIN messages m ON m.id = f.message_id
WHERE m.org_id = sqlc.arg(org_id) AND m.experiment_id = sqlc.arg(experiment_id)
GROUP BY m.prompt_version;

-- name: GetOrgSettings :one
SELECT conversation_retention_days FROM orgs WHERE id = $1;

-- name: SetOrgSettings :one
UPDATE orgs SET conversation_retention_days = sqlc.narg(conversation_retention_days)
WHERE id = sqlc.arg(id)
RETURNING conversation_retention_days;

-- The purges delete in batches of at most max_rows, so no run is one long transaction.
-- Conversations deleted longer ago than their org's retention (default_days without a
-- setting of the org).
-- name: PurgeDeletedConversations :execrows
DELETE FROM conversations WHERE id IN (
    SELECT d.id FROM conversations d LEFT JOIN org_retention r ON r.org_id = d.org_id
    WHERE d.deleted_at IS NOT NULL
      AND d.deleted_at < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.deleted_conversations_days, sqlc.arg(default_days)::integer))
    LIMIT sqlc.arg(max_rows));

-- Conversations idle past their org's retention, without a reply in progress.
-- name: PurgeIdleConversations :execrows
DELETE FROM conversations WHERE id IN (
    SELECT c.id FROM conversations c JOIN orgs o ON o.id = c.org_id
    WHERE o.conversation_retention_days IS NOT NULL
      AND c.updated_at < sqlc.arg(now)::timestamptz - make_interval(days => o.conversation_retention_days)
      AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.status = 'in_progress')
    LIMIT sqlc.arg(max_rows));

-- Prompts deleted longer ago than their org's retention (default_days without a setting
-- of the org).
-- name: PurgeDeletedPrompts :execrows
DELETE FROM prompts WHERE id IN (
    SELECT d.id FROM prompts d LEFT JOIN org_retention r ON r.org_id = d.org_id
    WHERE d.deleted_at IS NOT NULL
      AND d.deleted_at < sqlc.arg(now)::timestamptz - make_interval(days => COALESCE(r.deleted_prompts_days, sqlc.arg(default_days)::integer))
    LIMIT sqlc.arg(max_rows));
