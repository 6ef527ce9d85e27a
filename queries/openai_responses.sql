-- name: CreateOpenAIResponse :one
INSERT INTO openai_responses (id, org_id, conversation_id, previous_response_id, model, instructions, options, metadata, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *;

-- name: GetOpenAIResponse :one
SELECT * FROM openai_responses WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);

-- name: DeleteOpenAIResponse :execrows
DELETE FROM openai_responses WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id);
