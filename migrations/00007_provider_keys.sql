-- +goose Up
-- Bring your own key: an org's own API key for a configured provider, sealed with the
-- secrets keyring (AES-GCM; the sealed value names its master key id, so keys can rotate).
CREATE TABLE org_provider_keys (
    org_id     uuid        NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider   text        NOT NULL CHECK (length(provider) BETWEEN 1 AND 64),
    key_sealed bytea       NOT NULL,
    hint       text        NOT NULL,
    created_by uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, provider)
);

-- +goose Down
DROP TABLE org_provider_keys;
