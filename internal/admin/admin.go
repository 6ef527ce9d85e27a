// Package admin is what platform admins do across tenants: find any user or org, read the
// whole audit log, disable and enable users, and grant or revoke platform admin.
//
// A platform admin is a user whose users.platform_admin is set. Only `kiln admin grant`
// sets it: no API call makes an admin, so a stolen admin token cannot mint others.
package admin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Service reads and changes users, orgs and the audit log across every tenant.
type Service struct {
	st  *store.Store
	now func() time.Time
	// revoked is told about the sessions Disable ends.
	revoked func(ctx context.Context, ids ...uuid.UUID) error
	// keysChanged is told when Disable or Enable changes whether a user's API keys work.
	keysChanged func(ctx context.Context)
}

// NotifyKeysChanged makes Disable and Enable call fn (the API key service's ForgetAll)
// after they commit, so that the keys the user created stop, or start again, working at once
// on every replica rather than when the replicas' caches expire. Call it before serving.
func (s *Service) NotifyKeysChanged(fn func(ctx context.Context)) {
	s.keysChanged = fn
}

// NotifyRevoked makes Disable tell fn (the token service's RevokeSessions) which sessions
// it ended, so their access tokens stop working at once on every replica, not only their
// refresh tokens. Call it before serving.
func (s *Service) NotifyRevoked(fn func(ctx context.Context, ids ...uuid.UUID) error) {
	s.revoked = fn
}

// New returns a Service over st; now is the clock (time.Now in production).
func New(st *store.Store, now func() time.Time) *Service {
	return &Service{st: st, now: now}
}

// EventFilter narrows AuditEvents; zero fields do not filter.
type EventFilter struct {
	OrgID   *uuid.UUID
	ActorID *uuid.UUID
	Action  string
}

// errNotAdmin is the one answer to every caller who is not an enabled platform admin.
var errNotAdmin = errs.E(errs.PermissionDenied, "Only a platform admin may do this.")

// Authorize returns nil when userID is a platform admin who is not disabled, and
// permission_denied otherwise (an unknown user included).
func (s *Service) Authorize(ctx context.Context, userID uuid.UUID) error {
	u, err := s.st.GetUser(ctx, userID)
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errNotAdmin
		}
		return fmt.Errorf("authorize platform admin: %w", err)
	}
	if !u.PlatformAdmin || u.DisabledAt != nil {
		return errNotAdmin
	}
	return nil
}

// Users returns up to limit users, newest first, older than the user after (if any); when
// query is not blank, only those whose email or name contains it, ignoring case.
func (s *Service) Users(ctx context.Context, query string, limit int, after *uuid.UUID) ([]account.User, error) {
	rows, err := s.st.AdminListUsers(ctx, db.AdminListUsersParams{
		After: store.NullUUID(after), Pattern: containing(query), RowLimit: rowLimit(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", store.Translate(err))
	}
	out := make([]account.User, len(rows))
	for i, r := range rows {
		out[i] = account.UserFromRow(r)
	}
	return out, nil
}

// Orgs returns up to limit orgs, newest first, older than the org after (if any); when
// query is not blank, only those whose name contains it, ignoring case.
func (s *Service) Orgs(ctx context.Context, query string, limit int, after *uuid.UUID) ([]account.Org, error) {
	rows, err := s.st.AdminListOrgs(ctx, db.AdminListOrgsParams{
		After: store.NullUUID(after), Pattern: containing(query), RowLimit: rowLimit(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list orgs: %w", store.Translate(err))
	}
	out := make([]account.Org, len(rows))
	for i, r := range rows {
		out[i] = account.Org{ID: r.ID, Name: r.Name, Personal: r.Personal, CreatedAt: r.CreatedAt.UTC()}
	}
	return out, nil
}

// AuditEvents returns up to limit events of every org (and of none), newest first, older
// than the event before (if any), narrowed by f.
func (s *Service) AuditEvents(ctx context.Context, f EventFilter, limit int, before *uuid.UUID) ([]audit.Event, error) {
	rows, err := s.st.AdminListAuditEvents(ctx, db.AdminListAuditEventsParams{
		Before:   store.NullUUID(before),
		OrgID:    store.NullUUID(f.OrgID),
		ActorID:  store.NullUUID(f.ActorID),
		Action:   store.Text(f.Action),
		RowLimit: rowLimit(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", store.Translate(err))
	}
	out := make([]audit.Event, len(rows))
	for i, r := range rows {
		if out[i], err = audit.EventFromRow(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Disable marks userID disabled on behalf of the admin by, keeping the first time when the
// user is disabled already: logins and refreshes fail from now on. In the same transaction
// it ends every session of the user and audits it all (admin.user_disable); then the
// sessions' access tokens stop working on every replica (NotifyRevoked), and so do the API
// keys the user created (NotifyKeysChanged), until Enable. Errors: conflict
// when by is userID (an admin who locks themselves out needs another admin); not_found.
func (s *Service) Disable(ctx context.Context, by audit.Actor, userID uuid.UUID) (account.User, error) {
	if by.ID != nil && *by.ID == userID {
		return account.User{}, errs.E(errs.Conflict, "You cannot disable yourself.")
	}
	var (
		row db.User
		ids []uuid.UUID
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		now := s.now()
		var err error
		if row, err = q.DisableUser(ctx, db.DisableUserParams{ID: userID, Now: now}); err != nil {
			return userErr("disable user", userID.String(), err)
		}
		if ids, err = q.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: userID, Now: now}); err != nil {
			return fmt.Errorf("revoke sessions of %s: %w", userID, err)
		}
		return audit.Write(ctx, q, by, audit.Event{Action: "admin.user_disable", TargetType: "user", TargetID: userID.String(),
			Data: map[string]any{"email": row.Email, "sessions": len(ids)}})
	})
	if err != nil {
		return account.User{}, err
	}
	if s.keysChanged != nil {
		s.keysChanged(ctx)
	}
	if s.revoked != nil && len(ids) > 0 {
		if err := s.revoked(ctx, ids...); err != nil {
			return account.User{}, fmt.Errorf("stop access tokens of %s: %w", userID, err)
		}
	}
	return account.UserFromRow(row), nil
}

// Enable undoes Disable, audited (admin.user_enable) by by; enabling a user who is not
// disabled changes nothing. Errors: not_found.
func (s *Service) Enable(ctx context.Context, by audit.Actor, userID uuid.UUID) (account.User, error) {
	var row db.User
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		if row, err = q.EnableUser(ctx, db.EnableUserParams{ID: userID, Now: s.now()}); err != nil {
			return userErr("enable user", userID.String(), err)
		}
		return audit.Write(ctx, q, by, audit.Event{Action: "admin.user_enable", TargetType: "user", TargetID: userID.String(),
			Data: map[string]any{"email": row.Email}})
	})
	if err != nil {
		return account.User{}, err
	}
	if s.keysChanged != nil { // its keys were remembered as unknown meanwhile
		s.keysChanged(ctx)
	}
	return account.UserFromRow(row), nil
}

// Grant makes the user with email (folded: account.NormaliseEmail) a platform admin. Errors: not_found.
func (s *Service) Grant(ctx context.Context, email string) (account.User, error) {
	return s.setPlatformAdmin(ctx, email, true)
}

// Revoke makes the user with email (folded: account.NormaliseEmail) an ordinary user again; their
// next admin request is refused. Errors: not_found.
func (s *Service) Revoke(ctx context.Context, email string) (account.User, error) {
	return s.setPlatformAdmin(ctx, email, false)
}

func (s *Service) setPlatformAdmin(ctx context.Context, email string, on bool) (account.User, error) {
	email = account.NormaliseEmail(email)
	row, err := s.st.SetUserPlatformAdmin(ctx, db.SetUserPlatformAdminParams{Email: email, PlatformAdmin: on, Now: s.now()})
	if err != nil {
		return account.User{}, userErr("set platform admin", email, err)
	}
	return account.UserFromRow(row), nil
}

// userErr turns a missing user into not_found naming who, and wraps other errors.
func userErr(op, who string, err error) error {
	if err = store.Translate(err); errs.CodeOf(err) == errs.NotFound {
		return errs.E(errs.NotFound, "No user %s.", who)
	}
	return fmt.Errorf("%s %s: %w", op, who, err)
}

// likeEscaper escapes ILIKE's wildcards and its escape character, so a query matches
// itself literally: "100%" finds "100%", not "1000".
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// containing is the ILIKE pattern of text containing query, or NULL (no filter) for a
// blank query.
func containing(query string) pgtype.Text {
	query = strings.TrimSpace(query)
	if query == "" {
		return pgtype.Text{}
	}
	return pgtype.Text{String: "%" + likeEscaper.Replace(query) + "%", Valid: true}
}

// rowLimit converts a page size, which the API bounds to 1–100 (one more to detect a next
// page), to the query's type.
func rowLimit(limit int) int32 {
	return int32(min(max(limit, 0), 1000)) //nolint:gosec // clamped to 0..1000
}
