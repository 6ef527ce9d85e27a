-- +goose Up
CREATE TABLE orgs (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- A personal org belongs to one user and cannot get other members.
    personal   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                uuid PRIMARY KEY,
    email             text        NOT NULL CHECK (email = lower(email) AND length(email) <= 254),
    email_verified_at timestamptz,
    name              text        NOT NULL DEFAULT '' CHECK (length(name) <= 100),
    -- argon2id in PHC string form; NULL for accounts that only log in externally.
    password_hash     text,
    personal_org_id   uuid        NOT NULL REFERENCES orgs (id),
    platform_admin    boolean     NOT NULL DEFAULT false,
    disabled_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (email);

CREATE TABLE org_members (
    org_id     uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);

-- A session is one signed-in device; its refresh tokens rotate on every use.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL DEFAULT '',
    user_agent   text        NOT NULL DEFAULT '',
    ip           text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE refresh_tokens (
    id         uuid PRIMARY KEY,
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- SHA-256 of the opaque token; the token itself is never stored.
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when the token is exchanged; a second use after the grace interval is reuse.
    used_at    timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

-- JWT signing keys. The private key is encrypted with the master key (AES-GCM).
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    algorithm       text        NOT NULL CHECK (algorithm IN ('EdDSA')),
    private_key_enc bytea       NOT NULL,
    public_key      bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer key takes over signing; the key keeps verifying until retired.
    superseded_at   timestamptz,
    retired_at      timestamptz
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    org_id       uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- What is shown to humans, e.g. kiln_live_AbCd…; never enough to authenticate.
    display      text        NOT NULL,
    -- SHA-256 of the whole key.
    secret_hash  bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL,
    created_by   uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    -- Set on the old key when it is rotated; it stays valid until expires_at (the grace).
    rotated_to   uuid        REFERENCES api_keys (id) ON DELETE SET NULL
);
CREATE INDEX api_keys_org ON api_keys (org_id, id DESC);

-- Append-only: a trigger refuses updates and deletes (the retention job drops partitions
-- or uses a role that may; not in this schema yet).
CREATE TABLE audit_events (
    id          uuid PRIMARY KEY,
    org_id      uuid,
    actor_type  text        NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system', 'anonymous')),
    actor_id    uuid,
    action      text        NOT NULL,
    target_type text        NOT NULL DEFAULT '',
    target_id   text        NOT NULL DEFAULT '',
    ip          text        NOT NULL DEFAULT '',
    user_agent  text        NOT NULL DEFAULT '',
    data        jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_org ON audit_events (org_id, id DESC);
CREATE INDEX audit_events_created ON audit_events (id DESC);

-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE api_keys;
DROP TABLE signing_keys;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE org_members;
DROP TABLE users;
DROP TABLE orgs;
