-- name: CreateNotification :one
INSERT INTO notifications (id, org_id, user_id, category, title, body, link, data, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *;

-- name: GetNotification :one
SELECT * FROM notifications WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id);

-- Newest first; ids are UUIDv7, so the cursor is the last id.
-- name: ListNotifications :many
SELECT * FROM notifications
WHERE user_id = sqlc.arg(user_id)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: ListUnreadNotifications :many
SELECT * FROM notifications
WHERE user_id = sqlc.arg(user_id) AND read_at IS NULL
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- name: CountUnreadNotifications :one
SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL;

-- Marks one read; a notification read already keeps its first read_at.
-- name: MarkNotificationRead :one
UPDATE notifications SET read_at = coalesce(read_at, sqlc.arg(now))
WHERE id = sqlc.arg(id) AND user_id = sqlc.arg(user_id)
RETURNING *;

-- name: MarkAllNotificationsRead :execrows
UPDATE notifications SET read_at = sqlc.arg(now)
WHERE user_id = sqlc.arg(user_id) AND read_at IS NULL;

-- name: ListNotificationPreferences :many
SELECT * FROM notification_preferences WHERE user_id = $1 ORDER BY category, channel;

-- name: SetNotificationPreference :exec
INSERT INTO notification_preferences (user_id, category, channel, enabled, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id, category, channel) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at;

-- What a notification or an email needs to know of its recipient.
-- name: GetRecipient :one
SELECT u.id, u.email, u.locale, u.disabled_at, o.locale AS org_locale
FROM users u LEFT JOIN orgs o ON o.id = coalesce(sqlc.narg(org_id)::uuid, u.personal_org_id)
WHERE u.id = sqlc.arg(user_id);

-- name: SetUserLocale :exec
UPDATE users SET locale = sqlc.narg(locale), updated_at = sqlc.arg(now) WHERE id = sqlc.arg(id);

-- name: GetOrgLocale :one
SELECT locale FROM orgs WHERE id = $1;

-- name: CreateEmailDelivery :one
INSERT INTO email_deliveries (id, org_id, user_id, to_address, template, locale, data, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
RETURNING *;

-- name: GetEmailDelivery :one
SELECT * FROM email_deliveries WHERE id = $1;

-- Takes a queued delivery for one attempt until locked_until; no row when it is no
-- longer queued or another attempt holds it.
-- name: ClaimEmailDelivery :one
UPDATE email_deliveries
SET attempts = attempts + 1, locked_until = sqlc.arg(locked_until), updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND status = 'queued' AND (locked_until IS NULL OR locked_until <= sqlc.arg(now))
RETURNING *;

-- Ends an attempt: sent, bounced or failed for good, or (status queued) to be retried.
-- name: FinishEmailAttempt :exec
UPDATE email_deliveries
SET status = sqlc.arg(status), last_error = sqlc.arg(last_error),
    provider_message_id = coalesce(sqlc.narg(provider_message_id), provider_message_id),
    sent_at = sqlc.narg(sent_at), locked_until = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id);

-- A delivery whose job failed for good: failed, unless an attempt got it out.
-- name: FailEmailDelivery :exec
UPDATE email_deliveries
SET status = 'failed', last_error = CASE WHEN last_error = '' THEN sqlc.arg(last_error) ELSE last_error END,
    locked_until = NULL, updated_at = sqlc.arg(now)
WHERE id = sqlc.arg(id) AND status = 'queued';
