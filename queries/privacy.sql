-- Deletion with a grace period and the erase job (internal/privacy).

-- name: LockUserForErasure :one
SELECT * FROM users WHERE id = $1 FOR UPDATE;

-- name: ScheduleUserErasure :one
UPDATE users
SET deletion_requested_at = sqlc.arg(now), erase_at = sqlc.arg(erase_at), erase_job_id = sqlc.arg(job_id), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: CancelUserErasure :one
UPDATE users SET deletion_requested_at = NULL, erase_at = NULL, erase_job_id = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND erase_at IS NOT NULL
RETURNING *;

-- name: UserErasedBy :one
-- The user job_id erases, while that job is still the one scheduled for them (a restore
-- clears it).
SELECT * FROM users WHERE erase_job_id = $1 FOR UPDATE;

-- name: LockOrgForErasure :one
SELECT * FROM orgs WHERE id = $1 FOR UPDATE;

-- name: ScheduleOrgErasure :one
UPDATE orgs
SET deletion_requested_at = sqlc.arg(now), erase_at = sqlc.arg(erase_at), erase_job_id = sqlc.arg(job_id), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id)
RETURNING *;

-- name: CancelOrgErasure :one
UPDATE orgs SET deletion_requested_at = NULL, erase_at = NULL, erase_job_id = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND erase_at IS NOT NULL AND erased_at IS NULL
RETURNING *;

-- name: OrgErasedBy :one
SELECT * FROM orgs WHERE erase_job_id = $1 AND erased_at IS NULL FOR UPDATE;

-- name: OrgDeletionState :one
SELECT deletion_requested_at, erase_at, erased_at FROM orgs WHERE id = $1;

-- name: SoleOwnedSharedOrgs :many
-- The non-personal orgs user_id is the only owner of while others are members: they must be
-- handed over (or deleted) before the user's account may be.
SELECT o.id, o.name FROM orgs o
JOIN org_members m ON m.org_id = o.id AND m.user_id = sqlc.arg(user_id) AND m.role = 'owner'
WHERE NOT o.personal
  AND NOT EXISTS (SELECT 1 FROM org_members x WHERE x.org_id = o.id AND x.user_id <> sqlc.arg(user_id) AND x.role = 'owner')
  AND EXISTS (SELECT 1 FROM org_members x WHERE x.org_id = o.id AND x.user_id <> sqlc.arg(user_id))
ORDER BY o.id
LIMIT 20;

-- name: OrgsGoingWithUser :many
-- The orgs erased with user_id: the personal org and every org of which they are the only member.
SELECT o.id FROM orgs o
JOIN org_members m ON m.org_id = o.id AND m.user_id = sqlc.arg(user_id)
WHERE o.personal
   OR NOT EXISTS (SELECT 1 FROM org_members x WHERE x.org_id = o.id AND x.user_id <> sqlc.arg(user_id))
ORDER BY o.id;

-- name: RevokeOrgAPIKeys :many
UPDATE api_keys SET revoked_at = sqlc.arg(now) WHERE org_id = sqlc.arg(org_id) AND revoked_at IS NULL
RETURNING secret_hash;

-- name: UserSessionAddresses :many
SELECT DISTINCT ip, user_agent FROM sessions WHERE user_id = $1;

-- name: UserIdentityEmails :many
SELECT DISTINCT email FROM identities WHERE user_id = $1 AND email IS NOT NULL AND email <> '';

-- name: EraseOrgRows :exec
-- Every row an org owns that no law asks to keep. Children cascade (messages, feedback,
-- responses, prompt versions, documents, chunks, evaluations); the erase job's own row,
-- which belongs to no org, is never among them.
WITH k AS (DELETE FROM api_keys WHERE api_keys.org_id = sqlc.arg(org_id)),
     i AS (DELETE FROM invitations WHERE invitations.org_id = sqlc.arg(org_id)),
     pk AS (DELETE FROM org_provider_keys WHERE org_provider_keys.org_id = sqlc.arg(org_id)),
     p AS (DELETE FROM prompts WHERE prompts.org_id = sqlc.arg(org_id)),
     c AS (DELETE FROM conversations WHERE conversations.org_id = sqlc.arg(org_id)),
     kb AS (DELETE FROM knowledge_bases WHERE knowledge_bases.org_id = sqlc.arg(org_id)),
     n AS (DELETE FROM notifications WHERE notifications.org_id = sqlc.arg(org_id)),
     e AS (DELETE FROM email_deliveries WHERE email_deliveries.org_id = sqlc.arg(org_id)),
     s AS (DELETE FROM subscriptions WHERE subscriptions.org_id = sqlc.arg(org_id)),
     qa AS (DELETE FROM quota_alerts WHERE quota_alerts.org_id = sqlc.arg(org_id)),
     pc AS (DELETE FROM payment_customers WHERE payment_customers.org_id = sqlc.arg(org_id)),
     bp AS (DELETE FROM org_billing_profiles WHERE org_billing_profiles.org_id = sqlc.arg(org_id)),
     f AS (DELETE FROM feature_flag_overrides WHERE feature_flag_overrides.subject_id = sqlc.arg(org_id)),
     x AS (DELETE FROM data_exports WHERE data_exports.org_id = sqlc.arg(org_id))
DELETE FROM org_members WHERE org_members.org_id = sqlc.arg(org_id);

-- name: EraseOrgJobs :many
DELETE FROM jobs WHERE jobs.org_id = sqlc.arg(org_id) AND jobs.id <> sqlc.arg(keep_id) RETURNING jobs.id;

-- name: OrgStreamIDs :many
-- The ids of the org's messages and conversations, whose stream buffers in Redis go too;
-- read before the rows are deleted.
SELECT m.id FROM messages m WHERE m.org_id = sqlc.arg(org_id)
UNION ALL SELECT c.id FROM conversations c WHERE c.org_id = sqlc.arg(org_id)
UNION ALL SELECT r.id FROM openai_responses r WHERE r.org_id = sqlc.arg(org_id);

-- name: PseudonymiseOrgLedger :exec
-- What the law keeps (invoices, payments, usage figures) stays, its people pseudonymised:
-- the buyer named by the pseudonym, provider payloads (which carry names and addresses)
-- emptied, no user or key named; every amount and number unchanged. The org stays as a
-- tombstone under the pseudonym.
WITH iv AS (UPDATE invoices SET buyer_name = sqlc.arg(pseudonym)::text, buyer_address = '', buyer_tax_id = ''
            WHERE invoices.org_id = sqlc.arg(org_id)),
     pe AS (UPDATE payment_events SET payload = '{}'::jsonb WHERE payment_events.org_id = sqlc.arg(org_id)),
     po AS (UPDATE payment_orders SET created_by = NULL WHERE payment_orders.org_id = sqlc.arg(org_id)),
     u AS (UPDATE llm_usage SET user_id = CASE WHEN llm_usage.user_id = sqlc.narg(subject)::uuid THEN sqlc.narg(subject_pseudonym)::uuid END,
                                api_key_id = NULL
           WHERE llm_usage.org_id = sqlc.arg(org_id))
UPDATE orgs SET name = sqlc.arg(pseudonym)::text, erased_at = sqlc.arg(now), deletion_requested_at = NULL, erase_at = NULL,
                erase_job_id = NULL, updated_at = sqlc.arg(now)
WHERE orgs.id = sqlc.arg(org_id);

-- name: EraseUserRows :many
-- The rows of user_id outside the orgs erased with them: in shared orgs their
-- conversations, ratings, emails, invitations to their address, flag overrides and the
-- jobs that name them; their usage rows keep their figures under the pseudonym. Returns
-- the ids of the conversations and messages deleted (for their Redis buffers).
WITH fb AS (DELETE FROM message_feedback WHERE rater = sqlc.arg(user_id)),
     u AS (UPDATE llm_usage SET user_id = sqlc.arg(pseudonym) WHERE llm_usage.user_id = sqlc.arg(user_id)),
     ed AS (DELETE FROM email_deliveries WHERE email_deliveries.user_id = sqlc.arg(user_id) OR to_address = sqlc.arg(email)::text),
     inv AS (DELETE FROM invitations WHERE invitations.email = sqlc.arg(email)::text),
     ff AS (DELETE FROM feature_flag_overrides WHERE subject_id = sqlc.arg(user_id)),
     c AS (DELETE FROM conversations WHERE conversations.user_id = sqlc.arg(user_id) RETURNING id),
     m AS (SELECT messages.id FROM messages JOIN c ON c.id = messages.conversation_id)
SELECT id FROM c UNION ALL SELECT id FROM m;

-- name: EraseJobsNaming :many
-- Jobs whose row names the subject anywhere (payload, result, error) or that they created,
-- but the erase job itself.
DELETE FROM jobs
WHERE id <> sqlc.arg(keep_id)
  AND (created_by = sqlc.narg(user_id)::uuid OR strpos(lower(jobs::text), sqlc.arg(token)::text) > 0)
RETURNING id;

-- name: DeleteErasedUser :exec
DELETE FROM users WHERE id = $1;

-- name: AllowErasure :exec
-- Lets this transaction, and it alone, rewrite the personal fields of audit events and
-- payment events (the triggers audit_events_append_only and payment_events_append_only
-- check it).
SELECT set_config('kiln.erasure', 'on', true);

-- name: AuditEventsNaming :many
SELECT * FROM audit_events
WHERE actor_id = sqlc.arg(subject) OR target_id = sqlc.arg(subject_text)::text OR org_id = ANY(sqlc.arg(org_ids)::uuid[])
   OR strpos(lower(data::text), sqlc.arg(subject_text)::text) > 0 OR strpos(lower(data::text), sqlc.arg(email)::text) > 0
ORDER BY id;

-- name: PseudonymiseAuditEvent :exec
UPDATE audit_events SET actor_id = sqlc.narg(actor_id), target_id = sqlc.arg(target_id), ip = sqlc.arg(ip),
                        user_agent = sqlc.arg(user_agent), data = sqlc.arg(data)
WHERE id = sqlc.arg(id);
