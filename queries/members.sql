-- Every change to an org's members or invitations locks the org's row first, so that the
-- changes to one org run one at a time: the owner count a change checks stays true until
-- it commits. NO KEY UPDATE leaves inserts that reference the org (API keys, members)
-- unblocked.
-- name: LockOrg :one
SELECT * FROM orgs WHERE id = $1 FOR NO KEY UPDATE;

-- By user id (UUIDv7: the order the users signed up), so the cursor, the last user id,
-- still places the next page after that member has left.
-- name: ListOrgMembers :many
SELECT org_members.user_id, users.email, users.name, org_members.role, org_members.created_at
FROM org_members
JOIN users ON users.id = org_members.user_id
WHERE org_members.org_id = sqlc.arg(org_id)
  AND (sqlc.narg(after)::uuid IS NULL OR org_members.user_id > sqlc.narg(after)::uuid)
ORDER BY org_members.user_id
LIMIT sqlc.arg(max_rows);

-- name: GetOrgMember :one
SELECT org_members.user_id, users.email, users.name, org_members.role, org_members.created_at
FROM org_members
JOIN users ON users.id = org_members.user_id
WHERE org_members.org_id = $1 AND org_members.user_id = $2;

-- name: CountOrgOwners :one
SELECT count(*) FROM org_members WHERE org_id = $1 AND role = 'owner';

-- name: SetOrgMemberRole :execrows
UPDATE org_members SET role = sqlc.arg(role)
WHERE org_id = sqlc.arg(org_id) AND user_id = sqlc.arg(user_id);

-- name: DeleteOrgMember :execrows
DELETE FROM org_members WHERE org_id = $1 AND user_id = $2;

-- name: OrgHasMemberWithEmail :one
SELECT EXISTS (
    SELECT 1 FROM org_members
    JOIN users ON users.id = org_members.user_id
    WHERE org_members.org_id = $1 AND users.email = $2
);

-- A pending invitation is neither accepted nor revoked, and not expired at now.
-- name: ListPendingInvitations :many
SELECT * FROM invitations
WHERE org_id = sqlc.arg(org_id) AND accepted_at IS NULL AND revoked_at IS NULL
  AND expires_at > sqlc.arg(now)
  AND (sqlc.narg(after)::uuid IS NULL OR id < sqlc.narg(after)::uuid)
ORDER BY id DESC
LIMIT sqlc.arg(max_rows);

-- Withdraws every unanswered invitation of email to the org, before a new one replaces them.
-- name: RevokeInvitationsForEmail :exec
UPDATE invitations SET revoked_at = sqlc.arg(now)::timestamptz
WHERE org_id = sqlc.arg(org_id) AND email = sqlc.arg(email) AND accepted_at IS NULL AND revoked_at IS NULL;

-- name: CreateInvitation :one
INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at)
VALUES (sqlc.arg(id), sqlc.arg(org_id), sqlc.arg(email), sqlc.arg(role), sqlc.arg(token_hash),
        sqlc.arg(invited_by), sqlc.arg(now), sqlc.arg(expires_at))
RETURNING *;

-- name: RevokePendingInvitation :one
UPDATE invitations SET revoked_at = sqlc.arg(now)::timestamptz
WHERE org_id = sqlc.arg(org_id) AND id = sqlc.arg(id)
  AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > sqlc.arg(now)
RETURNING *;

-- Accepting knows only the token, so this lookup is not scoped by org_id: the hash is
-- unique and the row names its org.
-- name: GetInvitationByTokenHash :one
SELECT * FROM invitations WHERE token_hash = $1;

-- Claims a pending invitation by its token: of two concurrent claims, one gets the row.
-- name: ClaimInvitation :one
UPDATE invitations SET accepted_at = sqlc.arg(now)::timestamptz
WHERE token_hash = sqlc.arg(token_hash)
  AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > sqlc.arg(now)
RETURNING *;
