package account

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/opaque"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// RefreshTokenPrefix starts every refresh token, so that one pasted into the wrong
// place (a log, an Authorization header, a secret scanner) is recognised.
const RefreshTokenPrefix = "kiln_rt_"

const (
	userAgentMaxBytes = 512
	ipMaxBytes        = 64
	sessionNameMax    = 64
)

// errBadRefreshToken is the one answer to every refresh that does not succeed.
func errBadRefreshToken() error {
	return errs.E(errs.Unauthenticated, "invalid refresh token")
}

// startSession creates a session for userID seen from c, and its first refresh token.
func (s *Service) startSession(ctx context.Context, q *db.Queries, userID uuid.UUID, c Client, now time.Time) (db.Session, string, error) {
	ua := truncateBytes(c.UserAgent, userAgentMaxBytes)
	session, err := q.CreateSession(ctx, db.CreateSessionParams{
		ID:        newID(),
		UserID:    userID,
		Name:      describeUserAgent(ua),
		UserAgent: ua,
		Ip:        truncateBytes(c.IP, ipMaxBytes),
		Now:       now,
		ExpiresAt: now.Add(s.cfg.SessionTTL),
	})
	if err != nil {
		return db.Session{}, "", fmt.Errorf("create session: %w", err)
	}
	token, err := issueRefreshToken(ctx, q, session, now)
	return session, token, err
}

// issueRefreshToken stores the hash of a new refresh token for session, expiring with it,
// and returns the token.
func issueRefreshToken(ctx context.Context, q *db.Queries, session db.Session, now time.Time) (string, error) {
	token := opaque.New(RefreshTokenPrefix)
	err := q.CreateRefreshToken(ctx, db.CreateRefreshTokenParams{
		ID:        newID(),
		SessionID: session.ID,
		TokenHash: opaque.Hash(token),
		Now:       now,
		ExpiresAt: session.ExpiresAt,
	})
	if err != nil {
		return "", fmt.Errorf("create refresh token: %w", err)
	}
	return token, nil
}

// Refresh spends the refresh token and returns the session's user, the session and a new
// token; the session records c and the time as last seen. Presenting a token already spent
// more than Config.RefreshReuseGrace ago revokes its whole session: the token was copied.
// Within the grace, another new token is issued. Concurrent refreshes of one token run one
// after the other. Errors: unauthenticated, the same for an unknown, malformed, expired or
// reused token, a revoked session and a disabled user.
func (s *Service) Refresh(ctx context.Context, token string, c Client) (User, Session, string, error) {
	if !opaque.WellFormed(token, RefreshTokenPrefix) {
		return User{}, Session{}, "", errBadRefreshToken()
	}
	var (
		user    db.User
		session db.Session
		next    string
		reused  *db.LockRefreshTokenRow
	)
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		// The clock is read after the lock is taken: a refresh that waited for another
		// judges the grace from when it actually runs.
		row, err := q.LockRefreshToken(ctx, opaque.Hash(token))
		if err != nil {
			if errs.CodeOf(store.Translate(err)) == errs.NotFound {
				return errBadRefreshToken()
			}
			return fmt.Errorf("find refresh token: %w", err)
		}
		now := s.now()
		rt := row.RefreshToken
		if row.SessionRevokedAt != nil || !now.Before(rt.ExpiresAt) || !now.Before(row.SessionExpiresAt) {
			return errBadRefreshToken()
		}
		if rt.UsedAt != nil && now.Sub(*rt.UsedAt) > s.cfg.RefreshReuseGrace {
			if err := q.RevokeSession(ctx, db.RevokeSessionParams{ID: rt.SessionID, Now: now}); err != nil {
				return fmt.Errorf("revoke session on reuse: %w", err)
			}
			reused = &row
			return nil // commit the revocation; the caller still gets unauthenticated
		}
		user, err = q.GetUser(ctx, row.UserID)
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		if user.DisabledAt != nil {
			return errBadRefreshToken()
		}
		if err := q.MarkRefreshTokenUsed(ctx, db.MarkRefreshTokenUsedParams{ID: rt.ID, Now: now}); err != nil {
			return fmt.Errorf("spend refresh token: %w", err)
		}
		ua := truncateBytes(c.UserAgent, userAgentMaxBytes)
		session, err = q.TouchSession(ctx, db.TouchSessionParams{ID: rt.SessionID, Now: now, UserAgent: ua, Ip: truncateBytes(c.IP, ipMaxBytes)})
		if err != nil {
			return fmt.Errorf("touch session: %w", err)
		}
		next, err = issueRefreshToken(ctx, q, session, now)
		return err
	})
	if errs.CodeOf(err) == errs.Unauthenticated {
		return User{}, Session{}, "", errBadRefreshToken() // unwrapped, like every other refusal
	}
	if err != nil {
		return User{}, Session{}, "", fmt.Errorf("refresh: %w", err)
	}
	if reused != nil {
		s.log.WarnContext(ctx, "refresh token reused after its grace: session revoked",
			"session_id", reused.RefreshToken.SessionID, "user_id", reused.UserID,
			"token_used_at", reused.RefreshToken.UsedAt, "ip", c.IP)
		if s.revoked != nil {
			if err := s.revoked(ctx, reused.RefreshToken.SessionID); err != nil {
				s.log.ErrorContext(ctx, "announce revoked session", "session_id", reused.RefreshToken.SessionID, "error", err)
			}
		}
		return User{}, Session{}, "", errBadRefreshToken()
	}
	return UserFromRow(user), toSession(session), next, nil
}

// RevokeSession ends one of userID's sessions (a logout): its refresh tokens stop working,
// SessionActive reports false and its access tokens stop working on every replica
// (NotifyRevoked). Errors: not_found when sessionID is not an active session of userID.
func (s *Service) RevokeSession(ctx context.Context, userID, sessionID uuid.UUID) error {
	return s.revokeSession(ctx, userID, sessionID, nil)
}

// SignOutSession is RevokeSession for one of the user's other devices, audited
// (auth.session_revoke) by by. Errors: not_found.
func (s *Service) SignOutSession(ctx context.Context, userID, sessionID uuid.UUID, by audit.Actor) error {
	return s.revokeSession(ctx, userID, sessionID, func(ctx context.Context, q *db.Queries, user db.User) error {
		return audit.Write(ctx, q, by, audit.Event{OrgID: &user.PersonalOrgID, Action: "auth.session_revoke",
			TargetType: "session", TargetID: sessionID.String()})
	})
}

// revokeSession revokes sessionID of userID and, with record, audits it in the same
// transaction.
func (s *Service) revokeSession(ctx context.Context, userID, sessionID uuid.UUID, record func(context.Context, *db.Queries, db.User) error) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		n, err := q.RevokeUserSession(ctx, db.RevokeUserSessionParams{ID: sessionID, UserID: userID, Now: s.now()})
		if err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
		if n == 0 {
			return errs.E(errs.NotFound, "session not found")
		}
		if record == nil {
			return nil
		}
		user, err := q.GetUser(ctx, userID)
		if err != nil {
			return fmt.Errorf("get user: %w", err)
		}
		return record(ctx, q, user)
	})
	if err != nil {
		return err
	}
	return s.revokeTokens(ctx, sessionID)
}

// RevokeAllSessions ends every session of userID not already revoked and returns their
// ids, so that the caller can tell other replicas to stop accepting their access tokens.
func (s *Service) RevokeAllSessions(ctx context.Context, userID uuid.UUID) ([]uuid.UUID, error) {
	ids, err := s.st.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: userID, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("revoke sessions: %w", err)
	}
	return ids, nil
}

// LogoutAll ends every session of userID, audited (auth.logout_all) by by, and stops their
// access tokens on every replica (NotifyRevoked). Errors: not_found.
func (s *Service) LogoutAll(ctx context.Context, userID uuid.UUID, by audit.Actor) error {
	var ids []uuid.UUID
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		user, err := q.GetUser(ctx, userID)
		if err != nil {
			return notFound("user", err)
		}
		ids, err = q.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: userID, Now: s.now()})
		if err != nil {
			return fmt.Errorf("revoke sessions: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &user.PersonalOrgID, Action: "auth.logout_all",
			TargetType: "user", TargetID: userID.String(), Data: map[string]any{"sessions": len(ids)}})
	})
	if err != nil {
		return fmt.Errorf("log out everywhere: %w", err)
	}
	return s.revokeTokens(ctx, ids...)
}

// revokeTokens stops the access tokens of revoked sessions on every replica
// (NotifyRevoked); the sessions are revoked in the database already, so a retry of a
// request that failed here finds them revoked.
func (s *Service) revokeTokens(ctx context.Context, ids ...uuid.UUID) error {
	if s.revoked == nil || len(ids) == 0 {
		return nil
	}
	return s.revoked(ctx, ids...)
}

// Sessions returns up to limit of userID's active sessions (neither revoked nor expired),
// newest first, starting after the session with id after when it is set.
func (s *Service) Sessions(ctx context.Context, userID uuid.UUID, limit int, after *uuid.UUID) ([]Session, error) {
	rows, err := s.st.ListActiveSessions(ctx, db.ListActiveSessionsParams{UserID: userID, Now: s.now(), After: store.NullUUID(after), MaxRows: int32(min(max(limit, 1), 1000))}) //nolint:gosec // bounded
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return toSessions(rows), nil
}

// SessionActive reports whether the session exists, is neither revoked nor expired, and
// belongs to a user who is not disabled. Access tokens name their session; a token whose
// session is not active must be refused.
func (s *Service) SessionActive(ctx context.Context, sessionID uuid.UUID) (bool, error) {
	ok, err := s.st.SessionActive(ctx, db.SessionActiveParams{ID: sessionID, Now: s.now()})
	if err != nil {
		return false, fmt.Errorf("check session: %w", err)
	}
	return ok, nil
}

// describeUserAgent names a device for humans from its User-Agent header: "Chrome on
// macOS", "Firefox on Android", "curl", or "Unknown device".
func describeUserAgent(ua string) string {
	browser := ""
	for _, b := range []struct{ token, name string }{
		{"Edg/", "Edge"},
		{"EdgA/", "Edge"},
		{"EdgiOS/", "Edge"},
		{"Edge/", "Edge"},
		{"OPR/", "Opera"},
		{"SamsungBrowser/", "Samsung Internet"},
		{"Firefox/", "Firefox"},
		{"FxiOS/", "Firefox"},
		{"CriOS/", "Chrome"},
		{"Chrome/", "Chrome"},
		{"Chromium/", "Chromium"},
		{"Version/", "Safari"}, // Safari puts its own version in Version/
	} {
		if strings.Contains(ua, b.token) {
			browser = b.name
			break
		}
	}
	platform := ""
	for _, o := range []struct{ token, name string }{
		{"Windows", "Windows"},
		{"iPhone", "iOS"},
		{"iPad", "iPadOS"},
		{"Android", "Android"},
		{"CrOS", "ChromeOS"},
		{"Mac OS X", "macOS"},
		{"Macintosh", "macOS"},
		{"Linux", "Linux"},
	} {
		if strings.Contains(ua, o.token) {
			platform = o.name
			break
		}
	}
	switch {
	case browser != "" && platform != "":
		return browser + " on " + platform
	case browser != "":
		return browser
	case platform != "" && strings.HasPrefix(ua, "Mozilla/"):
		return "Browser on " + platform
	}
	// Not a browser: a tool or SDK names itself first, as in "curl/8.5.0".
	product, _, _ := strings.Cut(strings.TrimSpace(ua), " ")
	product, _, _ = strings.Cut(product, "/")
	product = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, product)
	if product == "" {
		return "Unknown device"
	}
	return truncateRunes(product, sessionNameMax)
}

// truncateBytes cuts s to at most n bytes without splitting a character, and replaces
// invalid UTF-8 (Postgres text refuses it).
func truncateBytes(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func toSession(r db.Session) Session {
	return Session{
		ID:         r.ID,
		UserID:     r.UserID,
		Name:       r.Name,
		UserAgent:  r.UserAgent,
		IP:         r.Ip,
		CreatedAt:  r.CreatedAt.UTC(),
		LastSeenAt: r.LastSeenAt.UTC(),
		ExpiresAt:  r.ExpiresAt.UTC(),
	}
}

func toSessions(rows []db.Session) []Session {
	out := make([]Session, len(rows))
	for i, r := range rows {
		out[i] = toSession(r)
	}
	return out
}
