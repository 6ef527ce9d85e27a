-- +goose Up
-- An API key's own token budget per billing period of its org (null: none), held in Redis
-- like the plan's token quota.
ALTER TABLE api_keys ADD COLUMN token_budget bigint CHECK (token_budget > 0);

-- +goose Down
ALTER TABLE api_keys DROP COLUMN token_budget;
