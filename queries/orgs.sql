-- name: CreateOrg :one
INSERT INTO orgs (id, name, personal, created_at, updated_at)
VALUES (sqlc.arg(id), sqlc.arg(name), sqlc.arg(personal), sqlc.arg(now), sqlc.arg(now))
RETURNING *;

-- name: AddOrgMember :exec
INSERT INTO org_members (org_id, user_id, role, created_at)
VALUES (sqlc.arg(org_id), sqlc.arg(user_id), sqlc.arg(role), sqlc.arg(now));

-- name: ListUserMemberships :many
-- The personal org first, then the others oldest first.
SELECT sqlc.embed(orgs), org_members.role
FROM org_members
JOIN orgs ON orgs.id = org_members.org_id
WHERE org_members.user_id = $1
ORDER BY orgs.personal DESC, orgs.created_at, orgs.id;

-- name: GetOrgMemberRole :one
SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2;
