// Package members manages who belongs to an org and as what: listing the members, changing
// roles, removing members and leaving, handing ownership over, and inviting people by email.
//
// The rules: any member may list the members. Owners and admins may invite, list and
// withdraw invitations, change roles and remove others; only an owner may make or unmake an
// owner or remove one. Anyone may leave. An org always keeps an owner: its last owner can
// neither leave, be removed nor be demoted. A personal org has no member but its owner.
//
// Every change locks the org's row first, so the changes to one org run one at a time and
// each is checked against the committed state (never against a cache): two owners demoting
// each other at once cannot leave the org without one. An org the caller does not belong to
// is not_found, like one that does not exist.
//
// An invitation is a single-use token (kiln_inv_…) emailed to the invited address and stored
// only as its SHA-256 hash; it expires after InvitationTTL, and inviting the address again
// withdraws the earlier one. Accepting it needs a signed-in user whose verified email is the
// invited address. Unknown, expired, used, withdrawn and someone else's tokens all get the
// same not_found error, so a refusal tells nothing about the invitation.
package members

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// InvitationTTL is how long an invitation can be accepted.
const InvitationTTL = 7 * 24 * time.Hour

// Member is a user's membership of an org.
type Member struct {
	UserID   uuid.UUID
	Email    string
	Name     string
	Role     string // account.RoleOwner, RoleAdmin or RoleMember
	JoinedAt time.Time
}

// Invitation is an offer to join an org, sent to an email address. Its token is never kept.
type Invitation struct {
	ID        uuid.UUID
	OrgID     uuid.UUID
	Email     string // lower-case
	Role      string // account.RoleAdmin or RoleMember
	InvitedBy uuid.UUID
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Service keeps org memberships and invitations.
type Service struct {
	st  *store.Store
	now func() time.Time
	// emails queues invitation emails; linkBase roots their links (UseEmails).
	emails   account.EmailQueue
	linkBase string
	// plan holds members and invitations to the org's seats (UsePlanLimits); nil: no limit.
	plan PlanLimits
}

// PlanLimits admits what a change adds to an org's plan limits, in the change's
// transaction (billing.Service): plan_limit_reached past the seats limit.
type PlanLimits interface {
	Admit(ctx context.Context, q *db.Queries, org uuid.UUID, uses ...billing.Use) error
}

// UsePlanLimits holds new members and invitations to the seats of the org's plan.
func (s *Service) UsePlanLimits(p PlanLimits) { s.plan = p }

// takeSeat admits one more seat of org in q's transaction.
func (s *Service) takeSeat(ctx context.Context, q *db.Queries, org uuid.UUID) error {
	if s.plan == nil {
		return nil
	}
	return s.plan.Admit(ctx, q, org, billing.Use{Limit: billing.LimitSeats, Amount: 1})
}

// TemplateInvitation is the notify template of the invitation email.
const TemplateInvitation = "invitation"

// UseEmails makes the service queue invitation emails on emails, in the transaction that
// creates the invitation, with links to the client's accept-invitation page under linkBase
// (mail.link_base). Call it before serving; without it no email is queued (tests of the
// membership rules alone).
func (s *Service) UseEmails(emails account.EmailQueue, linkBase string) {
	s.emails, s.linkBase = emails, linkBase
}

// New returns a Service over st; now is the clock (time.Now in production).
func New(st *store.Store, now func() time.Time) *Service {
	return &Service{st: st, now: now}
}

// errNoOrg is the answer for an org the caller is not a member of, whether or not it exists.
func errNoOrg() error { return errs.E(errs.NotFound, "org not found") }

// errNoMember is the answer for a user who is not a member of the org.
func errNoMember() error { return errs.E(errs.NotFound, "member not found") }

// errNoInvitation is the one refusal of every invitation that cannot be accepted or withdrawn.
func errNoInvitation() error { return errs.E(errs.NotFound, "invitation not found") }

// List returns up to limit members of orgID, by user id (the order users signed up),
// starting after the user with id after when it is set, if actorID is one of them.
// Errors: not_found for an org the actor is not a member of.
func (s *Service) List(ctx context.Context, actorID, orgID uuid.UUID, limit int, after *uuid.UUID) ([]Member, error) {
	if _, err := actorRole(ctx, s.st.Queries, orgID, actorID); err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	rows, err := s.st.ListOrgMembers(ctx, db.ListOrgMembersParams{OrgID: orgID, After: store.NullUUID(after), MaxRows: int32(min(max(limit, 1), 1000))}) //nolint:gosec // bounded
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	out := make([]Member, len(rows))
	for i, r := range rows {
		out[i] = toMember(r)
	}
	return out, nil
}

// ChangeRole sets userID's role in orgID to role on behalf of by (audited) and returns the member
// and the role they had (equal to role when nothing changed). Errors: not_found for an org
// the actor is not a member of or a user who is not a member; invalid_request naming /role;
// permission_denied when the actor is a member, or an admin making or unmaking an owner;
// conflict when demoting the last owner.
func (s *Service) ChangeRole(ctx context.Context, by audit.Actor, orgID, userID uuid.UUID, role string) (Member, string, error) {
	var (
		target Member
		from   string
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, _ db.Org, actor string) error {
		var err error
		if target, err = member(ctx, q, orgID, userID); err != nil {
			return err
		}
		owners, err := q.CountOrgOwners(ctx, orgID)
		if err != nil {
			return fmt.Errorf("count owners: %w", err)
		}
		if err := checkRoleChange(actor, target.Role, role, owners); err != nil {
			return err
		}
		from = target.Role
		if from == role {
			return nil
		}
		if err := setRole(ctx, q, orgID, userID, role); err != nil {
			return err
		}
		target.Role = role
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "member.role_change", TargetType: "user",
			TargetID: userID.String(), Data: map[string]any{"from": from, "to": role}})
	})
	if err != nil {
		return Member{}, "", fmt.Errorf("change role: %w", err)
	}
	return target, from, nil
}

// Remove takes userID out of orgID on behalf of by (audited), or lets by leave when userID
// is by's user, and returns the member as they were. Errors: not_found for an org the actor is
// not a member of or a user who is not a member; permission_denied when a member removes
// another or an admin removes an owner; conflict when the last owner would go.
func (s *Service) Remove(ctx context.Context, by audit.Actor, orgID, userID uuid.UUID) (Member, error) {
	var target Member
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, _ db.Org, actor string) error {
		var err error
		if target, err = member(ctx, q, orgID, userID); err != nil {
			return err
		}
		owners, err := q.CountOrgOwners(ctx, orgID)
		if err != nil {
			return fmt.Errorf("count owners: %w", err)
		}
		leaving := *by.ID == userID
		if err := checkRemoval(actor, target.Role, leaving, owners); err != nil {
			return err
		}
		n, err := q.DeleteOrgMember(ctx, db.DeleteOrgMemberParams{OrgID: orgID, UserID: userID})
		if err != nil {
			return fmt.Errorf("delete member: %w", err)
		}
		if n == 0 {
			return errNoMember() // cannot happen while the org is locked
		}
		action := "member.remove"
		if leaving {
			action = "member.leave"
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: action, TargetType: "user", TargetID: userID.String(),
			Data: map[string]any{"role": target.Role}})
	})
	if err != nil {
		return Member{}, fmt.Errorf("remove member: %w", err)
	}
	return target, nil
}

// TransferOwnership makes userID an owner of orgID and by, an owner, an admin, in one
// transaction. It returns the role userID had. Errors: not_found for an org the actor is not
// a member of or a user who is not a member; permission_denied when the actor is not an
// owner; invalid_request naming /user_id when it is the actor.
func (s *Service) TransferOwnership(ctx context.Context, by audit.Actor, orgID, userID uuid.UUID) (string, error) {
	var previous string
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, _ db.Org, actor string) error {
		actorID := *by.ID
		if actor != account.RoleOwner {
			return errs.E(errs.PermissionDenied, "transferring ownership needs the owner role")
		}
		if userID == actorID {
			return &errs.Error{Code: errs.Invalid, Message: "ownership must go to another member",
				Fields: []errs.FieldError{{Pointer: "/user_id", Message: "must be another member of the org"}}}
		}
		target, err := member(ctx, q, orgID, userID)
		if err != nil {
			return err
		}
		previous = target.Role
		if err := setRole(ctx, q, orgID, userID, account.RoleOwner); err != nil {
			return err
		}
		if err := setRole(ctx, q, orgID, actorID, account.RoleAdmin); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "org.ownership_transfer", TargetType: "org", TargetID: orgID.String(),
			Data: map[string]any{"from": actorID.String(), "to": userID.String(), "to_previous_role": previous}})
	})
	if err != nil {
		return "", fmt.Errorf("transfer ownership: %w", err)
	}
	return previous, nil
}

// inOrg runs fn in a transaction holding orgID's lock, with the org and the role in it of
// by, who must be a user. Errors: not_found when the org does not exist or by is not a
// member.
func (s *Service) inOrg(ctx context.Context, orgID uuid.UUID, by audit.Actor, fn func(q *db.Queries, org db.Org, actor string) error) error {
	actorID := by.UserID()
	if actorID == nil {
		return errNoOrg()
	}
	return s.st.InTx(ctx, func(q *db.Queries) error {
		org, err := q.LockOrg(ctx, orgID)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errNoOrg()
		}
		if err != nil {
			return fmt.Errorf("lock org: %w", err)
		}
		role, err := actorRole(ctx, q, orgID, *actorID)
		if err != nil {
			return err
		}
		return fn(q, org, role)
	})
}

// actorRole returns actorID's role in orgID. Errors: not_found when they are not a member.
func actorRole(ctx context.Context, q *db.Queries, orgID, actorID uuid.UUID) (string, error) {
	role, err := q.GetOrgMemberRole(ctx, db.GetOrgMemberRoleParams{OrgID: orgID, UserID: actorID})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return "", errNoOrg()
	}
	if err != nil {
		return "", fmt.Errorf("get role: %w", err)
	}
	return role, nil
}

// member returns userID's membership of orgID. Errors: not_found when they are not a member.
func member(ctx context.Context, q *db.Queries, orgID, userID uuid.UUID) (Member, error) {
	row, err := q.GetOrgMember(ctx, db.GetOrgMemberParams{OrgID: orgID, UserID: userID})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Member{}, errNoMember()
	}
	if err != nil {
		return Member{}, fmt.Errorf("get member: %w", err)
	}
	return toMember(db.ListOrgMembersRow(row)), nil
}

func setRole(ctx context.Context, q *db.Queries, orgID, userID uuid.UUID, role string) error {
	n, err := q.SetOrgMemberRole(ctx, db.SetOrgMemberRoleParams{OrgID: orgID, UserID: userID, Role: role})
	if err != nil {
		return fmt.Errorf("set role: %w", err)
	}
	if n == 0 {
		return errNoMember() // cannot happen while the org is locked
	}
	return nil
}

// mayManage reports whether role may invite, withdraw invitations, change roles and remove
// others.
func mayManage(role string) bool {
	return role == account.RoleOwner || role == account.RoleAdmin
}

// checkRoleChange returns why a member with role actor may not change a member's role from
// from to to while the org has owners owners, or nil.
func checkRoleChange(actor, from, to string, owners int64) error {
	switch {
	case to != account.RoleOwner && to != account.RoleAdmin && to != account.RoleMember:
		return &errs.Error{Code: errs.Invalid, Message: "unknown role " + to,
			Fields: []errs.FieldError{{Pointer: "/role", Message: "must be owner, admin or member"}}}
	case !mayManage(actor):
		return errs.E(errs.PermissionDenied, "changing roles needs the owner or admin role")
	case (from == account.RoleOwner || to == account.RoleOwner) && actor != account.RoleOwner:
		return errs.E(errs.PermissionDenied, "making or unmaking an owner needs the owner role")
	case from == account.RoleOwner && to != account.RoleOwner && owners <= 1:
		return errs.E(errs.Conflict, "the last owner cannot be demoted: make another member an owner first")
	}
	return nil
}

// checkRemoval returns why a member with role actor may not remove a member with role
// target (themselves when self) while the org has owners owners, or nil.
func checkRemoval(actor, target string, self bool, owners int64) error {
	switch {
	case !self && !mayManage(actor):
		return errs.E(errs.PermissionDenied, "removing members needs the owner or admin role")
	case !self && target == account.RoleOwner && actor != account.RoleOwner:
		return errs.E(errs.PermissionDenied, "removing an owner needs the owner role")
	case target == account.RoleOwner && owners <= 1:
		return errs.E(errs.Conflict, "the last owner cannot leave or be removed: make another member an owner first")
	}
	return nil
}

func toMember(r db.ListOrgMembersRow) Member {
	return Member{UserID: r.UserID, Email: r.Email, Name: r.Name, Role: r.Role, JoinedAt: r.CreatedAt.UTC()}
}

func toOrg(r db.Org) account.Org {
	return account.Org{ID: r.ID, Name: r.Name, Personal: r.Personal, CreatedAt: r.CreatedAt.UTC()}
}

// newID returns a UUIDv7; crypto/rand does not fail on the platforms Go supports.
func newID() uuid.UUID {
	return uuid.Must(uuid.NewV7())
}

// Add makes the existing user userID a member of orgID with role (admin or member) on
// behalf of by, an owner or admin of the org, without an invitation: it is how an operator
// (`kiln seed apply`) places people it already knows. The addition is audited
// (member.add). Errors: not_found for an org the actor is not a member of or an unknown
// user; permission_denied when the actor is a member; conflict for a personal org or a
// user who is already a member; invalid_request naming /role.
func (s *Service) Add(ctx context.Context, by audit.Actor, orgID, userID uuid.UUID, role string) (Member, error) {
	if role != account.RoleAdmin && role != account.RoleMember {
		return Member{}, errs.InvalidFields("invalid member", []errs.FieldError{{Pointer: "/role", Message: "must be admin or member"}})
	}
	var added Member
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, org db.Org, actor string) error {
		if !mayManage(actor) {
			return errs.E(errs.PermissionDenied, "adding members needs the owner or admin role")
		}
		if org.Personal {
			return errs.E(errs.Conflict, "a personal org cannot have other members")
		}
		if _, err := q.GetUser(ctx, userID); errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errs.E(errs.NotFound, "user not found")
		} else if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if err := s.takeSeat(ctx, q, orgID); err != nil {
			return err
		}
		err := q.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: orgID, UserID: userID, Role: role, Now: s.now()})
		if errs.CodeOf(store.Translate(err)) == errs.Conflict {
			return errs.E(errs.Conflict, "the user is already a member of this org")
		}
		if err != nil {
			return fmt.Errorf("add member: %w", err)
		}
		if added, err = member(ctx, q, orgID, userID); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "member.add", TargetType: "user",
			TargetID: userID.String(), Data: map[string]any{"role": role}})
	})
	if err != nil {
		return Member{}, fmt.Errorf("add member: %w", err)
	}
	return added, nil
}
