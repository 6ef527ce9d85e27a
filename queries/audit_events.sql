-- name: InsertAuditEvent :exec
INSERT INTO audit_events (id, org_id, actor_type, actor_id, action, target_type, target_id, ip, user_agent, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: ListAuditEvents :many
-- Newest first; ids are UUIDv7, so id order is time order and the cursor is the last id.
SELECT * FROM audit_events
WHERE org_id = sqlc.arg(org_id)
  AND (sqlc.narg(before)::uuid IS NULL OR id < sqlc.narg(before)::uuid)
  AND (sqlc.narg(action)::text IS NULL OR action = sqlc.narg(action)::text)
ORDER BY id DESC
LIMIT sqlc.arg(row_limit);
