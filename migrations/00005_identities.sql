-- +goose Up
-- An identity is an account at an external login provider (OIDC, GitHub, WeChat, WeCom)
-- linked to a user; the user signs in with it instead of, or besides, a password.
CREATE TABLE identities (
    id            uuid PRIMARY KEY,
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The configured provider's name (auth.oauth.providers[].name), not its type: two
    -- OIDC providers are two namespaces of subjects.
    provider      text        NOT NULL CHECK (length(provider) BETWEEN 1 AND 32),
    -- The account's id at the provider: OIDC sub, GitHub id, WeChat openid, WeCom corpid:userid.
    subject       text        NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    -- The email the provider reported at the last sign-in, verified or not; shown only.
    email         text,
    -- WeChat unionid: one person across the apps of one WeChat Open Platform account.
    union_id      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    UNIQUE (provider, subject)
);
CREATE INDEX identities_user ON identities (user_id);
CREATE INDEX identities_union_id ON identities (union_id) WHERE union_id IS NOT NULL;

-- +goose Down
DROP TABLE identities;
