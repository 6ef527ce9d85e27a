package account

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// PlaceholderEmailDomain ends the email of a user created from an external identity that
// came without a verified address (WeChat and WeCom never give one). users.email is
// required and unique, and an unverified address must not be claimed: its owner could no
// longer sign up with it. ".invalid" (RFC 2606) can never be delivered to.
const PlaceholderEmailDomain = "users.invalid"

// External is a person as an external login provider describes them.
type External struct {
	// Provider is the configured provider's name; Subject the account's id there.
	Provider string
	Subject  string
	// Email is the provider's address for the account, "" when it gave none;
	// EmailVerified is true only when the provider vouches for it.
	Email         string
	EmailVerified bool
	Name          string
	// UnionID is WeChat's unionid: the same person across the apps of one WeChat Open
	// Platform account.
	UnionID string
}

// Identity is an external account linked to a user.
type Identity struct {
	ID          uuid.UUID
	UserID      uuid.UUID
	Provider    string
	Subject     string
	Email       string // "" when the provider gave none
	CreatedAt   time.Time
	LastLoginAt *time.Time
}

// Link says how ResolveExternal found the user.
type Link string

// The ways an external identity leads to a user.
const (
	LinkExisting Link = "existing" // the identity was linked before
	LinkUnionID  Link = "union_id" // another identity of the same WeChat unionid
	LinkEmail    Link = "email"    // a user with the provider-verified email
	LinkCreated  Link = "created"  // a new user
)

// ResolveExternal returns the user ext signs in as, linking the identity on first use: to
// the user it is already linked to; else to the user of another identity with the same
// WeChat unionid; else to the user whose email the provider verified; else to a new user
// with no password (and the verified email, or a placeholder under
// PlaceholderEmailDomain). It records the sign-in on the identity. Errors:
// invalid_request when ext has no provider or subject; permission_denied when the user is
// disabled. A new link is audited (auth.identity_link) with the user as the actor, from
// where c is.
func (s *Service) ResolveExternal(ctx context.Context, ext External, c Client) (User, Identity, Link, error) {
	ext.Provider = strings.TrimSpace(ext.Provider)
	ext.Subject = strings.TrimSpace(ext.Subject)
	ext.Email = NormaliseEmail(ext.Email)
	ext.Name = truncateRunes(strings.TrimSpace(ext.Name), 100)
	if ext.Provider == "" || ext.Subject == "" || len(ext.Subject) > 255 {
		return User{}, Identity{}, "", errs.E(errs.Invalid, "the provider gave no usable account id")
	}
	if EmailProblem(ext.Email) != "" {
		// A provider's address Kiln would refuse at sign-up (a look-alike among them)
		// links to nobody and is not stored: the user gets a placeholder.
		ext.Email, ext.EmailVerified = "", false
	}
	var (
		user     db.User
		identity db.Identity
		link     Link
		dropped  []uuid.UUID
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	resolve := func(q *db.Queries) error {
		var err error
		user, identity, link, err = s.resolveExternal(ctx, q, ext, s.now(), &dropped)
		if err != nil || link == LinkExisting {
			return err
		}
		return audit.Write(ctx, q, c.actor().As(user.ID), audit.Event{OrgID: &user.PersonalOrgID,
			Action: "auth.identity_link", TargetType: "user", TargetID: user.ID.String(),
			Data: map[string]any{"provider": ext.Provider, "via": string(link)}})
	}
	err := s.st.InTx(ctx, resolve)
	if errs.CodeOf(store.Translate(err)) == errs.Conflict {
		// A concurrent first sign-in of the same person linked or created first; the
		// second attempt finds what it made.
		err = s.st.InTx(ctx, resolve)
	}
	if err != nil {
		if e, ok := errors.AsType[*errs.Error](err); ok && e.Code != errs.Internal {
			return User{}, Identity{}, "", e
		}
		return User{}, Identity{}, "", fmt.Errorf("resolve external identity: %w", err)
	}
	if err := s.revokeTokens(ctx, dropped...); err != nil {
		s.log.ErrorContext(ctx, "announce revoked sessions", "user_id", user.ID, "error", err)
	}
	return UserFromRow(user), toIdentity(identity), link, nil
}

func (s *Service) resolveExternal(ctx context.Context, q *db.Queries, ext External, now time.Time, droppedSessions *[]uuid.UUID) (db.User, db.Identity, Link, error) {
	email := store.Text(ext.Email)
	unionID := store.Text(ext.UnionID)

	found, err := q.GetIdentityBySubject(ctx, db.GetIdentityBySubjectParams{Provider: ext.Provider, Subject: ext.Subject})
	switch {
	case err != nil && errs.CodeOf(store.Translate(err)) == errs.NotFound:
	case err != nil:
		return db.User{}, db.Identity{}, "", fmt.Errorf("find identity: %w", err)
	default:
		user, err := q.GetUser(ctx, found.UserID)
		if err != nil {
			return db.User{}, db.Identity{}, "", fmt.Errorf("get user: %w", err)
		}
		if user.DisabledAt != nil {
			return db.User{}, db.Identity{}, "", errs.E(errs.PermissionDenied, "account disabled")
		}
		identity, err := q.TouchIdentity(ctx, db.TouchIdentityParams{ID: found.ID, Now: now, Email: email, UnionID: unionID})
		if err != nil {
			return db.User{}, db.Identity{}, "", fmt.Errorf("touch identity: %w", err)
		}
		return user, identity, LinkExisting, nil
	}

	user, link, dropped, err := s.linkTarget(ctx, q, ext, now)
	if err != nil {
		return db.User{}, db.Identity{}, "", err
	}
	*droppedSessions = dropped
	if user.DisabledAt != nil {
		return db.User{}, db.Identity{}, "", errs.E(errs.PermissionDenied, "account disabled")
	}
	identity, err := q.CreateIdentity(ctx, db.CreateIdentityParams{
		ID: newID(), UserID: user.ID, Provider: ext.Provider, Subject: ext.Subject, Email: email, UnionID: unionID, Now: now,
	})
	if err != nil {
		return db.User{}, db.Identity{}, "", fmt.Errorf("create identity: %w", err)
	}
	return user, identity, link, nil
}

// linkTarget finds the user a new identity belongs to, creating one when nobody matches.
//
// A password account whose address was never proven may have been registered in advance
// by someone else (account pre-hijacking): linking it to the provider-verified owner drops
// its password and sessions, whose ids are returned so their access tokens can die too.
func (s *Service) linkTarget(ctx context.Context, q *db.Queries, ext External, now time.Time) (db.User, Link, []uuid.UUID, error) {
	if ext.UnionID != "" {
		sibling, err := q.GetIdentityByUnionID(ctx, pgtype.Text{String: ext.UnionID, Valid: true})
		switch {
		case err != nil && errs.CodeOf(store.Translate(err)) == errs.NotFound:
		case err != nil:
			return db.User{}, "", nil, fmt.Errorf("find identity by unionid: %w", err)
		default:
			user, err := q.GetUser(ctx, sibling.UserID)
			if err != nil {
				return db.User{}, "", nil, fmt.Errorf("get user: %w", err)
			}
			return user, LinkUnionID, nil, nil
		}
	}
	if ext.Email != "" && ext.EmailVerified {
		user, err := q.GetUserByEmail(ctx, ext.Email)
		switch {
		case err != nil && errs.CodeOf(store.Translate(err)) == errs.NotFound:
		case err != nil:
			return db.User{}, "", nil, fmt.Errorf("find user by email: %w", err)
		default:
			// The provider proved the address, so the account's email is now verified too.
			if err := q.VerifyUserEmailByIdentity(ctx, db.VerifyUserEmailByIdentityParams{ID: user.ID, Email: user.Email, Now: now}); err != nil {
				return db.User{}, "", nil, fmt.Errorf("verify email: %w", err)
			}
			var dropped []uuid.UUID
			if user.EmailVerifiedAt == nil && user.PasswordHash.Valid {
				if err := q.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{ID: user.ID, Now: now}); err != nil {
					return db.User{}, "", nil, fmt.Errorf("drop unproven password: %w", err)
				}
				if dropped, err = q.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: user.ID, Now: now}); err != nil {
					return db.User{}, "", nil, fmt.Errorf("revoke unproven sessions: %w", err)
				}
				user.PasswordHash = pgtype.Text{}
			}
			if user.EmailVerifiedAt == nil {
				user.EmailVerifiedAt = &now
			}
			return user, LinkEmail, dropped, nil
		}
	}
	user, err := s.createExternalUser(ctx, q, ext, now)
	return user, LinkCreated, nil, err
}

// createExternalUser creates a user without a password, and its personal org.
func (s *Service) createExternalUser(ctx context.Context, q *db.Queries, ext External, now time.Time) (db.User, error) {
	email := placeholderEmail(ext.Provider, ext.Subject)
	if ext.EmailVerified {
		email = ext.Email
	}
	org, err := q.CreateOrg(ctx, db.CreateOrgParams{ID: newID(), Name: personalOrgName(ext.Name, email), Personal: true, Now: now})
	if err != nil {
		return db.User{}, fmt.Errorf("create personal org: %w", err)
	}
	user, err := q.CreateUser(ctx, db.CreateUserParams{ID: newID(), Email: email, Name: ext.Name, PersonalOrgID: org.ID, Now: now})
	if err != nil {
		return db.User{}, fmt.Errorf("create user: %w", err)
	}
	if err := q.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: org.ID, UserID: user.ID, Role: RoleOwner, Now: now}); err != nil {
		return db.User{}, fmt.Errorf("add owner: %w", err)
	}
	if ext.EmailVerified {
		if err := q.VerifyUserEmailByIdentity(ctx, db.VerifyUserEmailByIdentityParams{ID: user.ID, Email: email, Now: now}); err != nil {
			return db.User{}, fmt.Errorf("verify email: %w", err)
		}
		user.EmailVerifiedAt = &now
	}
	return user, nil
}

// placeholderEmail is <provider>-<hash of the subject>@users.invalid: lower-case, stable,
// unique per identity, and free of the subject's own characters (WeChat openids are
// mixed-case).
func placeholderEmail(provider, subject string) string {
	h := sha256.Sum256([]byte(provider + "\x00" + subject))
	return strings.ToLower(provider) + "-" + hex.EncodeToString(h[:10]) + "@" + PlaceholderEmailDomain
}

// StartSession signs userID in without a password (after an external login with
// provider), returning the session and its first refresh token; the login is audited
// (auth.login) with the user as the actor, from where c is. Errors: unauthenticated when
// the user does not exist or is disabled.
func (s *Service) StartSession(ctx context.Context, userID uuid.UUID, provider string, c Client) (User, Session, string, error) {
	var (
		user    db.User
		session db.Session
		token   string
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		user, err = q.GetUser(ctx, userID)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errs.E(errs.Unauthenticated, "no such user")
		}
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if user.DisabledAt != nil {
			return errs.E(errs.Unauthenticated, "account disabled")
		}
		session, token, err = s.startSession(ctx, q, user.ID, c, s.now())
		if err != nil {
			return err
		}
		return audit.Write(ctx, q, c.actor().As(user.ID), audit.Event{OrgID: &user.PersonalOrgID,
			Action: "auth.login", TargetType: "session", TargetID: session.ID.String(),
			Data: map[string]any{"provider": provider}})
	})
	if errs.CodeOf(err) == errs.Unauthenticated {
		return User{}, Session{}, "", errs.E(errs.Unauthenticated, "invalid login")
	}
	if err != nil {
		return User{}, Session{}, "", fmt.Errorf("start session: %w", err)
	}
	return UserFromRow(user), toSession(session), token, nil
}

// Identities returns the external accounts linked to userID, oldest first.
func (s *Service) Identities(ctx context.Context, userID uuid.UUID) ([]Identity, error) {
	rows, err := s.st.ListUserIdentities(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	out := make([]Identity, len(rows))
	for i, r := range rows {
		out[i] = toIdentity(r)
	}
	return out, nil
}

// UnlinkIdentity removes one of userID's identities. Errors: not_found when id is not an
// identity of userID; conflict when it is the user's only way to sign in (no password and
// no other identity). The unlink is audited (auth.identity_unlink) by by.
func (s *Service) UnlinkIdentity(ctx context.Context, userID, id uuid.UUID, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		user, err := q.LockUserForIdentities(ctx, userID)
		if err != nil {
			return notFound("user", err)
		}
		n, err := q.CountUserIdentities(ctx, userID)
		if err != nil {
			return fmt.Errorf("count identities: %w", err)
		}
		deleted, err := q.DeleteUserIdentity(ctx, db.DeleteUserIdentityParams{ID: id, UserID: userID})
		if err != nil {
			return fmt.Errorf("delete identity: %w", err)
		}
		if deleted == 0 {
			return errs.E(errs.NotFound, "identity not found")
		}
		if !user.PasswordHash.Valid && n <= 1 {
			return errs.E(errs.Conflict, "This is the only way to sign in to this account: set a password or link another account first.")
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &user.PersonalOrgID, Action: "auth.identity_unlink",
			TargetType: "identity", TargetID: id.String()})
	})
	if err == nil || errs.CodeOf(err) != errs.Internal {
		return err
	}
	return fmt.Errorf("unlink identity: %w", err)
}

func toIdentity(r db.Identity) Identity {
	return Identity{
		ID: r.ID, UserID: r.UserID, Provider: r.Provider, Subject: r.Subject, Email: r.Email.String,
		CreatedAt: r.CreatedAt.UTC(), LastLoginAt: store.UTC(r.LastLoginAt),
	}
}
