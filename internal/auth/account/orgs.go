package account

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Memberships returns the orgs userID belongs to with the user's role in each: the
// personal org first, then the others oldest first.
func (s *Service) Memberships(ctx context.Context, userID uuid.UUID) ([]Membership, error) {
	rows, err := s.st.ListUserMemberships(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	out := make([]Membership, len(rows))
	for i, r := range rows {
		out[i] = toMembership(r)
	}
	return out, nil
}

// MembershipsPage returns up to limit of userID's memberships in the order of Memberships,
// starting after the org with id after when it is set: pass the last org id of a page to
// get the next.
func (s *Service) MembershipsPage(ctx context.Context, userID uuid.UUID, limit int, after *uuid.UUID) ([]Membership, error) {
	rows, err := s.st.ListUserMembershipsPage(ctx, db.ListUserMembershipsPageParams{UserID: userID, After: store.NullUUID(after), MaxRows: int32(min(max(limit, 1), 1000))}) //nolint:gosec // bounded
	if err != nil {
		return nil, fmt.Errorf("list memberships: %w", err)
	}
	out := make([]Membership, len(rows))
	for i, r := range rows {
		out[i] = Membership{Org: toOrg(r.Org), Role: r.Role}
	}
	return out, nil
}

// Role returns userID's role in orgID. Errors: not_found when the user is not a member,
// so that an org the user cannot see looks the same as one that does not exist.
func (s *Service) Role(ctx context.Context, userID, orgID uuid.UUID) (string, error) {
	role, err := s.st.GetOrgMemberRole(ctx, db.GetOrgMemberRoleParams{OrgID: orgID, UserID: userID})
	if err != nil {
		return "", notFound("org", err)
	}
	return role, nil
}

// CreateOrg creates an org named name (trimmed, 1 to 100 characters) owned by userID.
// The creation is audited (org.create) by by. Errors: invalid_request naming /name;
// not_found when the user does not exist.
func (s *Service) CreateOrg(ctx context.Context, userID uuid.UUID, name string, by audit.Actor) (Org, error) {
	name = strings.TrimSpace(name)
	p := nameProblem(name)
	if name == "" {
		p = "must not be empty"
	}
	if p != "" {
		return Org{}, errs.InvalidFields("invalid org", []errs.FieldError{{Pointer: "/name", Message: p}})
	}
	now := s.now()
	var org db.Org
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		if _, err := q.GetUser(ctx, userID); err != nil {
			return notFound("user", err)
		}
		var err error
		org, err = q.CreateOrg(ctx, db.CreateOrgParams{ID: newID(), Name: name, Personal: false, Now: now})
		if err != nil {
			return fmt.Errorf("insert org: %w", err)
		}
		if err := q.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: org.ID, UserID: userID, Role: RoleOwner, Now: now}); err != nil {
			return fmt.Errorf("add owner: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org.ID, Action: "org.create", TargetType: "org", TargetID: org.ID.String()})
	})
	if err != nil {
		return Org{}, fmt.Errorf("create org: %w", err)
	}
	return toOrg(org), nil
}

func toOrg(r db.Org) Org {
	return Org{ID: r.ID, Name: r.Name, Personal: r.Personal, CreatedAt: r.CreatedAt.UTC()}
}

func toMembership(r db.ListUserMembershipsRow) Membership {
	return Membership{Org: toOrg(r.Org), Role: r.Role}
}
