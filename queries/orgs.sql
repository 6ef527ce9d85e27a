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

-- A page of ListUserMemberships: the personal org first, then the others by id (UUIDv7:
-- oldest first); the cursor is the last org's id (orgs are never deleted).
-- name: ListUserMembershipsPage :many
SELECT sqlc.embed(orgs), org_members.role
FROM org_members
JOIN orgs ON orgs.id = org_members.org_id
WHERE org_members.user_id = sqlc.arg(user_id)
  AND (sqlc.narg(after)::uuid IS NULL
       OR (NOT orgs.personal, orgs.id) > (SELECT NOT a.personal, a.id FROM orgs a WHERE a.id = sqlc.narg(after)::uuid))
ORDER BY NOT orgs.personal, orgs.id
LIMIT sqlc.arg(max_rows);

-- name: GetOrgMemberRole :one
SELECT role FROM org_members WHERE org_id = $1 AND user_id = $2;
