package members

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/opaque"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store"
)

// TokenPrefix starts every invitation token, so that one pasted into the wrong place is
// recognised.
const TokenPrefix = "kiln_inv_"

// Invitations returns up to limit of orgID's pending invitations (neither accepted,
// withdrawn nor expired), newest first, starting after the invitation with id after when
// it is set. Errors: not_found for an org the actor is not a member of;
// permission_denied when the actor is a member.
func (s *Service) Invitations(ctx context.Context, actorID, orgID uuid.UUID, limit int, after *uuid.UUID) ([]Invitation, error) {
	role, err := actorRole(ctx, s.st.Queries, orgID, actorID)
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	if !mayManage(role) {
		return nil, errs.E(errs.PermissionDenied, "listing invitations needs the owner or admin role")
	}
	rows, err := s.st.ListPendingInvitations(ctx, db.ListPendingInvitationsParams{OrgID: orgID, Now: s.now(), After: store.NullUUID(after), MaxRows: int32(min(max(limit, 1), 1000))}) //nolint:gosec // bounded
	if err != nil {
		return nil, fmt.Errorf("list invitations: %w", err)
	}
	out := make([]Invitation, len(rows))
	for i, r := range rows {
		out[i] = toInvitation(r)
	}
	return out, nil
}

// Invite invites email (folded: account.NormaliseEmail) to join orgID as role (admin or member) on
// behalf of actorID, withdrawing the address's earlier unanswered invitations to the org.
// The invitation email, carrying the token, is queued in the same transaction (UseEmails):
// an invitation is kept with its email or not at all. Errors: not_found for an org the actor is not a member of;
// permission_denied when the actor is a member; conflict for a personal org or an address
// that is already a member's; invalid_request naming /email or /role.
func (s *Service) Invite(ctx context.Context, by audit.Actor, orgID uuid.UUID, email, role string) (Invitation, error) {
	email = account.NormaliseEmail(email)
	var inv Invitation
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, org db.Org, actor string) error {
		actorID := *by.ID
		if !mayManage(actor) {
			return errs.E(errs.PermissionDenied, "inviting members needs the owner or admin role")
		}
		if org.Personal {
			return errs.E(errs.Conflict, "a personal org cannot have other members: create an org to invite people")
		}
		if err := checkInvitation(email, role); err != nil {
			return err
		}
		taken, err := q.OrgHasMemberWithEmail(ctx, db.OrgHasMemberWithEmailParams{OrgID: orgID, Email: email})
		if err != nil {
			return fmt.Errorf("find member: %w", err)
		}
		if taken {
			return errs.E(errs.Conflict, "%s is already a member of the org", email)
		}
		inviter, err := member(ctx, q, orgID, actorID)
		if err != nil {
			return err
		}
		now := s.now()
		if err := q.RevokeInvitationsForEmail(ctx, db.RevokeInvitationsForEmailParams{OrgID: orgID, Email: email, Now: now}); err != nil {
			return fmt.Errorf("withdraw earlier invitations: %w", err)
		}
		if err := s.takeSeat(ctx, q, orgID); err != nil {
			return err
		}
		token, hash := newToken()
		row, err := q.CreateInvitation(ctx, db.CreateInvitationParams{
			ID: newID(), OrgID: orgID, Email: email, Role: role, TokenHash: hash, InvitedBy: actorID,
			Now: now, ExpiresAt: now.Add(InvitationTTL),
		})
		if err != nil {
			return fmt.Errorf("insert invitation: %w", err)
		}
		inv = toInvitation(row)
		if err := s.queueInvitation(ctx, q, now, inv, token, toOrg(org), inviter); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "member.invite", TargetType: "invitation", TargetID: inv.ID.String(),
			Data: map[string]any{"email": inv.Email, "role": inv.Role}})
	})
	if err != nil {
		return Invitation{}, fmt.Errorf("invite: %w", err)
	}
	return inv, nil
}

// queueInvitation queues the email that carries inv's token in q's transaction.
func (s *Service) queueInvitation(ctx context.Context, q *db.Queries, now time.Time, inv Invitation, token string, org account.Org, inviter Member) error {
	if s.emails == nil {
		return nil
	}
	name := inviter.Name
	if name == "" {
		name = inviter.Email
	}
	_, err := s.emails.QueueEmail(ctx, q, now, notify.EmailRequest{
		To: inv.Email, Template: TemplateInvitation, OrgID: &inv.OrgID,
		Data: map[string]string{
			"inviter": name, "org": org.Name, "role": inv.Role,
			"link": account.EmailLink(s.linkBase, "accept-invitation", token),
		},
	})
	if err != nil {
		return fmt.Errorf("queue invitation email: %w", err)
	}
	return nil
}

// checkInvitation returns an invalid_request error naming each bad field, or nil.
func checkInvitation(email, role string) error {
	var fields []errs.FieldError
	if p := account.EmailProblem(email); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/email", Message: p})
	}
	if role != account.RoleAdmin && role != account.RoleMember {
		fields = append(fields, errs.FieldError{Pointer: "/role", Message: "must be admin or member"})
	}
	if len(fields) == 0 {
		return nil
	}
	return &errs.Error{Code: errs.Invalid, Message: "invalid invitation", Fields: fields}
}

// Withdraw revokes orgID's pending invitation invitationID on behalf of by (audited) and returns
// it. Errors: not_found for an org the actor is not a member of, or an invitation of the
// org that is not pending; permission_denied when the actor is a member.
func (s *Service) Withdraw(ctx context.Context, by audit.Actor, orgID, invitationID uuid.UUID) (Invitation, error) {
	var inv Invitation
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.inOrg(ctx, orgID, by, func(q *db.Queries, _ db.Org, actor string) error {
		if !mayManage(actor) {
			return errs.E(errs.PermissionDenied, "withdrawing invitations needs the owner or admin role")
		}
		row, err := q.RevokePendingInvitation(ctx, db.RevokePendingInvitationParams{OrgID: orgID, ID: invitationID, Now: s.now()})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errNoInvitation()
		}
		if err != nil {
			return fmt.Errorf("revoke invitation: %w", err)
		}
		inv = toInvitation(row)
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "member.invitation_revoke", TargetType: "invitation",
			TargetID: inv.ID.String(), Data: map[string]any{"email": inv.Email}})
	})
	if err != nil {
		return Invitation{}, fmt.Errorf("withdraw invitation: %w", err)
	}
	return inv, nil
}

// Accept makes by's user a member of the org token invites them to, with the invitation's
// role, and spends the token. It returns the new membership and the invitation. Errors:
// permission_denied until the user's email is verified; not_found ("invitation not found")
// for a malformed, unknown, expired, used or withdrawn token and for one sent to another
// address, all alike; conflict when the user is already a member.
func (s *Service) Accept(ctx context.Context, by audit.Actor, token string) (account.Membership, Invitation, error) {
	var (
		org account.Org
		inv Invitation
	)
	userID := by.UserID()
	if userID == nil {
		return account.Membership{}, Invitation{}, errs.E(errs.PermissionDenied, "only a user may accept an invitation")
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		userID := *userID
		user, err := q.GetUser(ctx, userID)
		if err != nil {
			return fmt.Errorf("get user: %w", store.Translate(err))
		}
		// Asked before the token is looked at, so that it tells nothing about the token.
		if user.EmailVerifiedAt == nil {
			return errs.E(errs.PermissionDenied, "accepting an invitation needs a verified email address: verify yours first")
		}
		hash, ok := parseToken(token)
		if !ok {
			return errNoInvitation()
		}
		found, err := q.GetInvitationByTokenHash(ctx, hash)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errNoInvitation()
		}
		if err != nil {
			return fmt.Errorf("find invitation: %w", err)
		}
		// The org is locked before the invitation, as every change to the org does.
		locked, err := q.LockOrg(ctx, found.OrgID)
		if err != nil {
			return fmt.Errorf("lock org: %w", store.Translate(err))
		}
		row, err := q.ClaimInvitation(ctx, db.ClaimInvitationParams{TokenHash: hash, Now: s.now()})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errNoInvitation()
		}
		if err != nil {
			return fmt.Errorf("claim invitation: %w", err)
		}
		if row.Email != account.NormaliseEmail(user.Email) {
			return errNoInvitation() // the rollback leaves it to its addressee
		}
		if locked.Personal {
			return errs.E(errs.Conflict, "a personal org cannot have other members")
		}
		if err := s.takeSeat(ctx, q, row.OrgID); err != nil {
			return err
		}
		err = q.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: row.OrgID, UserID: userID, Role: row.Role, Now: s.now()})
		if errs.CodeOf(store.Translate(err)) == errs.Conflict {
			return errs.E(errs.Conflict, "you are already a member of this org")
		}
		if err != nil {
			return fmt.Errorf("add member: %w", err)
		}
		org, inv = toOrg(locked), toInvitation(row)
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org.ID, Action: "member.join", TargetType: "user", TargetID: userID.String(),
			Data: map[string]any{"role": inv.Role, "invitation_id": inv.ID.String(), "invited_by": inv.InvitedBy.String()}})
	})
	if err != nil {
		return account.Membership{}, Invitation{}, fmt.Errorf("accept invitation: %w", err)
	}
	return account.Membership{Org: org, Role: inv.Role}, inv, nil
}

// newToken returns a fresh invitation token and the hash that is stored of it.
func newToken() (string, []byte) {
	token := opaque.New(TokenPrefix)
	return token, opaque.Hash(token)
}

// parseToken returns the stored hash of a well-formed token; ok is false for anything that
// cannot be a token this package issued, which is then not looked up.
func parseToken(token string) (hash []byte, ok bool) {
	if !opaque.WellFormed(token, TokenPrefix) {
		return nil, false
	}
	return opaque.Hash(token), true
}

func toInvitation(r db.Invitation) Invitation {
	return Invitation{
		ID: r.ID, OrgID: r.OrgID, Email: r.Email, Role: r.Role, InvitedBy: r.InvitedBy,
		CreatedAt: r.CreatedAt.UTC(), ExpiresAt: r.ExpiresAt.UTC(),
	}
}
