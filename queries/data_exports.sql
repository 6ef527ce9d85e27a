-- name: CreateDataExport :one
INSERT INTO data_exports (id, subject, org_id, user_id, api_key_id, job_id, state, created_at)
VALUES (sqlc.arg(id), sqlc.arg(subject), sqlc.arg(org_id), sqlc.narg(user_id), sqlc.narg(api_key_id), sqlc.arg(job_id), 'pending', sqlc.arg(created_at))
RETURNING *;

-- Serialises the export requests of one subject (its kind and id).
-- name: LockDataExportSubject :exec
SELECT pg_advisory_xact_lock(hashtextextended('data_export:' || sqlc.arg(subject)::text || ':' || sqlc.arg(subject_id)::uuid::text, 7243012));

-- Pending exports of the subject whose job ended without them (cancelled while queued,
-- failed for good) are failed; a live one is returned by PendingDataExport.
-- name: FailDeadDataExports :exec
UPDATE data_exports d SET state = 'failed', finished_at = sqlc.arg(now)
WHERE d.subject = sqlc.arg(subject) AND d.state = 'pending'
  AND (CASE WHEN sqlc.arg(subject) = 'org' THEN d.org_id ELSE d.user_id END) = sqlc.arg(subject_id)::uuid
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d.job_id AND j.state IN ('queued', 'running'));

-- name: PendingDataExport :one
SELECT * FROM data_exports d
WHERE d.subject = sqlc.arg(subject) AND d.state = 'pending'
  AND (CASE WHEN sqlc.arg(subject) = 'org' THEN d.org_id ELSE d.user_id END) = sqlc.arg(subject_id)::uuid
ORDER BY d.id DESC
LIMIT 1;

-- name: GetDataExport :one
SELECT * FROM data_exports WHERE id = $1;

-- name: InsertDataExportChunk :exec
INSERT INTO data_export_chunks (export_id, seq, data) VALUES (sqlc.arg(export_id), sqlc.arg(seq), sqlc.arg(data));

-- name: GetDataExportChunk :one
SELECT data FROM data_export_chunks WHERE export_id = sqlc.arg(export_id) AND seq = sqlc.arg(seq);

-- name: DeleteDataExportChunks :exec
DELETE FROM data_export_chunks WHERE export_id = $1;

-- name: FinishDataExport :one
UPDATE data_exports
SET state = 'ready', size = sqlc.arg(size), sha256 = sqlc.arg(sha256), expires_at = sqlc.arg(expires_at), finished_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state = 'pending'
RETURNING *;

-- name: FailDataExport :exec
UPDATE data_exports SET state = 'failed', finished_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state = 'pending';

-- The one download: only the first claim of a ready, unexpired export returns a row.
-- name: ClaimDataExport :one
UPDATE data_exports SET state = 'downloaded', downloaded_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND state = 'ready' AND downloaded_at IS NULL AND expires_at > sqlc.arg(now)
RETURNING *;

-- name: ExpireDataExports :execrows
UPDATE data_exports SET state = 'expired'
WHERE state = 'ready' AND expires_at <= sqlc.arg(now);

-- The bytes of every export that can no longer be downloaded: expired, failed, or
-- downloaded (by now sent; a download deletes its own, this catches one cut short).
-- name: PurgeDataExportChunks :execrows
DELETE FROM data_export_chunks c
USING data_exports d
WHERE c.export_id = d.id
  AND (d.state IN ('expired', 'failed') OR (d.state = 'downloaded' AND d.downloaded_at < sqlc.arg(downloaded_before)));

-- The sections of an archive. Each returns rows as JSON (secrets left out here, in SQL),
-- a page of at most max_rows after the cursor; a null org_id or user_id does not filter.

-- name: ExportUserProfile :one
SELECT (to_jsonb(u) - 'password_hash')::jsonb FROM users u WHERE u.id = $1;

-- name: ExportOrgProfile :one
SELECT to_jsonb(o)::jsonb FROM orgs o WHERE o.id = $1;

-- name: ExportSessions :many
SELECT s.id, to_jsonb(s)::jsonb AS row FROM sessions s
WHERE s.user_id = sqlc.arg(user_id) AND s.id > sqlc.arg(after)
ORDER BY s.id LIMIT sqlc.arg(max_rows);

-- name: ExportIdentities :many
SELECT i.id, to_jsonb(i)::jsonb AS row FROM identities i
WHERE i.user_id = sqlc.arg(user_id) AND i.id > sqlc.arg(after)
ORDER BY i.id LIMIT sqlc.arg(max_rows);

-- name: ExportUserMemberships :many
SELECT m.org_id AS id, jsonb_build_object('org_id', m.org_id, 'org_name', o.name, 'personal', o.personal,
    'role', m.role, 'created_at', m.created_at) AS row
FROM org_members m JOIN orgs o ON o.id = m.org_id
WHERE m.user_id = sqlc.arg(user_id) AND m.org_id > sqlc.arg(after)
ORDER BY m.org_id LIMIT sqlc.arg(max_rows);

-- name: ExportOrgMembers :many
SELECT m.user_id AS id, jsonb_build_object('user_id', m.user_id, 'email', u.email, 'name', u.name,
    'role', m.role, 'created_at', m.created_at) AS row
FROM org_members m JOIN users u ON u.id = m.user_id
WHERE m.org_id = sqlc.arg(org_id) AND m.user_id > sqlc.arg(after)
ORDER BY m.user_id LIMIT sqlc.arg(max_rows);

-- name: ExportAPIKeys :many
SELECT k.id, (to_jsonb(k) - 'secret_hash')::jsonb AS row FROM api_keys k
WHERE (sqlc.narg(org_id)::uuid IS NULL OR k.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR k.created_by = sqlc.narg(user_id)::uuid)
  AND k.id > sqlc.arg(after)
ORDER BY k.id LIMIT sqlc.arg(max_rows);

-- name: ExportConversations :many
SELECT c.id, c.title, to_jsonb(c)::jsonb AS row FROM conversations c
WHERE (sqlc.narg(org_id)::uuid IS NULL OR c.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR c.user_id = sqlc.narg(user_id)::uuid)
  AND c.id > sqlc.arg(after)
ORDER BY c.id LIMIT sqlc.arg(max_rows);

-- name: ExportMessages :many
SELECT m.id, m.role, m.content, m.created_at,
    (to_jsonb(m) || jsonb_build_object('feedback', (SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY f.created_at), '[]'::jsonb)
        FROM message_feedback f WHERE f.message_id = m.id)))::jsonb AS row
FROM messages m
WHERE m.conversation_id = sqlc.arg(conversation_id) AND m.id > sqlc.arg(after)
ORDER BY m.id LIMIT sqlc.arg(max_rows);

-- name: ExportPrompts :many
SELECT p.id, (to_jsonb(p) || jsonb_build_object(
    'versions', (SELECT coalesce(jsonb_agg(to_jsonb(v) ORDER BY v.version), '[]'::jsonb) FROM prompt_versions v WHERE v.prompt_id = p.id),
    'labels', (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.label), '[]'::jsonb) FROM prompt_labels l WHERE l.prompt_id = p.id)))::jsonb AS row
FROM prompts p
WHERE (sqlc.narg(org_id)::uuid IS NULL OR p.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR p.created_by = sqlc.narg(user_id)::uuid)
  AND p.id > sqlc.arg(after)
ORDER BY p.id LIMIT sqlc.arg(max_rows);

-- A knowledge base's settings are its index metadata (model, dimensions, chunking,
-- generation, chunk count); the vectors are not exported.
-- name: ExportKnowledgeBases :many
SELECT k.id, k.org_id, to_jsonb(k)::jsonb AS row FROM knowledge_bases k
WHERE (sqlc.narg(org_id)::uuid IS NULL OR k.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR k.created_by = sqlc.narg(user_id)::uuid)
  AND k.id > sqlc.arg(after)
ORDER BY k.id LIMIT sqlc.arg(max_rows);

-- name: ExportDocuments :many
SELECT d.id, (to_jsonb(d) - 'content_hash')::jsonb AS row FROM kb_documents d
WHERE d.org_id = sqlc.arg(org_id) AND d.kb_id = sqlc.arg(kb_id) AND d.id > sqlc.arg(after)
ORDER BY d.id LIMIT sqlc.arg(max_rows);

-- name: ExportUsage :many
SELECT u.id, to_jsonb(u)::jsonb AS row FROM llm_usage u
WHERE (sqlc.narg(org_id)::uuid IS NULL OR u.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR u.user_id = sqlc.narg(user_id)::uuid)
  AND u.id > sqlc.arg(after)
ORDER BY u.id LIMIT sqlc.arg(max_rows);

-- name: ExportNotifications :many
SELECT n.id, to_jsonb(n)::jsonb AS row FROM notifications n
WHERE (sqlc.narg(org_id)::uuid IS NULL OR n.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR n.user_id = sqlc.narg(user_id)::uuid)
  AND n.id > sqlc.arg(after)
ORDER BY n.id LIMIT sqlc.arg(max_rows);

-- A user's audit events are those they are the actor of; an org's, those in the org.
-- name: ExportAuditEvents :many
SELECT e.id, to_jsonb(e)::jsonb AS row FROM audit_events e
WHERE (sqlc.narg(org_id)::uuid IS NULL OR e.org_id = sqlc.narg(org_id)::uuid)
  AND (sqlc.narg(user_id)::uuid IS NULL OR (e.actor_type = 'user' AND e.actor_id = sqlc.narg(user_id)::uuid))
  AND e.id > sqlc.arg(after)
ORDER BY e.id LIMIT sqlc.arg(max_rows);

-- name: ExportInvoices :many
SELECT i.id, (to_jsonb(i) || jsonb_build_object('lines', (SELECT coalesce(jsonb_agg(to_jsonb(l) - 'invoice_id' ORDER BY l.position), '[]'::jsonb)
    FROM invoice_lines l WHERE l.invoice_id = i.id)))::jsonb AS row
FROM invoices i
WHERE i.org_id = sqlc.arg(org_id) AND i.id > sqlc.arg(after)
ORDER BY i.id LIMIT sqlc.arg(max_rows);

-- name: ExportBillingProfile :one
SELECT to_jsonb(b)::jsonb FROM org_billing_profiles b WHERE b.org_id = $1;
