-- +goose Up
-- The language of a person's emails: the user's locale, else their org's, else English.
ALTER TABLE users ADD COLUMN locale text CHECK (locale IN ('en', 'zh-CN'));
ALTER TABLE orgs ADD COLUMN locale text CHECK (locale IN ('en', 'zh-CN'));

-- One notification for one user (the notification center's in-app channel).
CREATE TABLE notifications (
    id         uuid        PRIMARY KEY,
    -- The org it concerns; null for the user's own matters (their account).
    org_id     uuid        REFERENCES orgs (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category   text        NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,31}$'),
    title      text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body       text        NOT NULL DEFAULT '' CHECK (length(body) <= 4000),
    link       text        CHECK (length(link) <= 2000),
    data       jsonb       NOT NULL DEFAULT '{}',
    read_at    timestamptz,
    created_at timestamptz NOT NULL
);
-- A user's notifications, newest first (ids are UUIDv7).
CREATE INDEX notifications_user ON notifications (user_id, id DESC);
-- The unread ones only: the unread count is an index-only scan of this user's unread
-- entries, however many read notifications they have, and the unread list walks it too.
CREATE INDEX notifications_unread ON notifications (user_id, id DESC) WHERE read_at IS NULL;

-- A user's choices per category and channel; a missing row is the category's default.
CREATE TABLE notification_preferences (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category   text        NOT NULL CHECK (category ~ '^[a-z][a-z0-9_]{0,31}$'),
    channel    text        NOT NULL CHECK (channel IN ('in_app', 'email')),
    enabled    boolean     NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, category, channel)
);

-- One email to send, sent by a notify.email job (payload: the delivery id). Its status
-- says what became of it; the job is idempotent by this row.
CREATE TABLE email_deliveries (
    id                  uuid        PRIMARY KEY,
    org_id              uuid        REFERENCES orgs (id) ON DELETE CASCADE,
    user_id             uuid        REFERENCES users (id) ON DELETE SET NULL,
    to_address          text        NOT NULL CHECK (length(to_address) BETWEEN 3 AND 254),
    template            text        NOT NULL,
    -- Set when the sender chose the language; null: resolved when the email is rendered.
    locale              text        CHECK (locale IN ('en', 'zh-CN')),
    data                jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed', 'bounced')),
    attempts            integer     NOT NULL DEFAULT 0,
    last_error          text        NOT NULL DEFAULT '',
    -- The Message-ID the email was sent with.
    provider_message_id text,
    -- A sender holds the row until then; another attempt waits (a duplicate task, or a
    -- retry while a slow send still runs) rather than send the email twice.
    locked_until        timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    sent_at             timestamptz
);
CREATE INDEX email_deliveries_user ON email_deliveries (user_id, id DESC) WHERE user_id IS NOT NULL;
CREATE INDEX email_deliveries_status ON email_deliveries (status, updated_at) WHERE status <> 'sent';

-- +goose Down
DROP TABLE email_deliveries;
DROP TABLE notification_preferences;
DROP TABLE notifications;
ALTER TABLE orgs DROP COLUMN locale;
ALTER TABLE users DROP COLUMN locale;
