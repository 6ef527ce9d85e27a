// Package account keeps people, their orgs, their signed-in sessions and the refresh tokens
// that keep those sessions alive.
//
// Passwords are hashed with argon2id and stored as PHC strings; the parameters are read
// back from each stored string, so raising them in Config affects new hashes at once and
// old ones at their owner's next login, when they are rehashed.
//
// A session is one signed-in device. It lives for Config.SessionTTL from sign-in and is
// kept alive by opaque refresh tokens (kiln_rt_…) stored only as SHA-256 hashes. Each
// refresh spends the presented token and returns a new one. A spent token presented again
// more than Config.RefreshReuseGrace after it was spent means it leaked: the whole session
// is revoked. Within the grace a client that refreshed twice at once gets another token.
//
// Every failed login (unknown email, wrong password, disabled user) is one and the same
// unauthenticated error, and so is every refused refresh (unknown, expired or reused token,
// revoked session, disabled user): they tell the caller nothing more.
package account

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// The roles a user holds in an org.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// User is a person who can sign in.
type User struct {
	ID    uuid.UUID
	Email string // lower-case
	Name  string
	// PersonalOrgID is the org created with the user, of which the user is the only member.
	PersonalOrgID uuid.UUID
	EmailVerified bool
	PlatformAdmin bool
	Disabled      bool
	CreatedAt     time.Time
	// HasPassword is false for accounts that only sign in externally.
	HasPassword bool
	// DeletionRequestedAt and EraseAt are set while a deletion (DELETE /v1/me) is pending:
	// when it was asked for and when the erase job runs.
	DeletionRequestedAt *time.Time
	EraseAt             *time.Time
}

// Org is a tenant: every tenant-owned row belongs to one.
type Org struct {
	ID   uuid.UUID
	Name string
	// Personal is true for the org created with a user; it has no other members.
	Personal  bool
	CreatedAt time.Time
}

// Membership is an org a user belongs to and the user's role in it.
type Membership struct {
	Org  Org
	Role string // RoleOwner, RoleAdmin or RoleMember
}

// Session is one signed-in device.
type Session struct {
	ID     uuid.UUID
	UserID uuid.UUID
	// Name describes the device, e.g. "Firefox on Windows", from the user agent at sign-in.
	Name string
	// UserAgent and IP are those of the last sign-in or refresh.
	UserAgent  string
	IP         string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

// Client is who is signing in or refreshing: the request's User-Agent header and the
// client's IP address. Either may be empty.
type Client struct {
	UserAgent string
	IP        string
}

// actor is the anonymous client as an audit actor; As names the user it signs in as.
func (c Client) actor() audit.Actor {
	return audit.Actor{IP: c.IP, UserAgent: c.UserAgent}
}

// Config holds the account rules and the password-hashing cost.
type Config struct {
	// PasswordMinLength is the fewest characters (runes) a new password may have.
	PasswordMinLength int
	// Argon2Memory is the memory of one hash in KiB; Argon2Time the passes over it;
	// Argon2Threads the lanes.
	Argon2Memory  uint32
	Argon2Time    uint32
	Argon2Threads uint8
	// SessionTTL is the lifetime of a session, and of its refresh tokens, from sign-in.
	SessionTTL time.Duration
	// RefreshReuseGrace is how long after its first use a refresh token may be presented
	// again (by a client that refreshed concurrently) without counting as stolen.
	RefreshReuseGrace time.Duration
}

// DefaultConfig returns the recommended settings: passwords of at least 10 characters,
// argon2id with 64 MiB, 2 passes and 2 lanes, 30-day sessions and a 10 s reuse grace.
func DefaultConfig() Config {
	return Config{
		PasswordMinLength: 10,
		Argon2Memory:      64 * 1024,
		Argon2Time:        2,
		Argon2Threads:     2,
		SessionTTL:        30 * 24 * time.Hour,
		RefreshReuseGrace: 10 * time.Second,
	}
}

// withDefaults fills every zero field from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.PasswordMinLength <= 0 {
		c.PasswordMinLength = d.PasswordMinLength
	}
	if c.Argon2Memory == 0 {
		c.Argon2Memory = d.Argon2Memory
	}
	if c.Argon2Time == 0 {
		c.Argon2Time = d.Argon2Time
	}
	if c.Argon2Threads == 0 {
		c.Argon2Threads = d.Argon2Threads
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.RefreshReuseGrace <= 0 {
		c.RefreshReuseGrace = d.RefreshReuseGrace
	}
	return c
}

// Service signs people up and in, and manages their orgs and sessions.
type Service struct {
	st     *store.Store
	audit  *audit.Log
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	hasher hasher
	// revoked is told about sessions revoked by refresh-token reuse detection.
	revoked func(ctx context.Context, ids ...uuid.UUID) error
	// dummyHash is verified in place of a real hash when the email is unknown, so that
	// an unknown email costs as much as a wrong password.
	dummyHash string
	// emails queues the account emails; linkBase roots their links (UseEmails).
	emails   EmailQueue
	linkBase string
	// jobs creates the password-reset request jobs (UseJobs).
	jobs *jobs.Registry
}

// NotifyRevoked makes reuse detection tell fn (the token service's RevokeSessions) which
// session it revoked, so the session's access tokens stop working at once on every
// replica, not only its refresh tokens. Call it before serving.
func (s *Service) NotifyRevoked(fn func(ctx context.Context, ids ...uuid.UUID) error) {
	s.revoked = fn
}

// New returns a Service over st. Zero fields of cfg take DefaultConfig's values; now is
// the clock (time.Now in production).
func New(st *store.Store, cfg Config, log *slog.Logger, now func() time.Time) *Service {
	cfg = cfg.withDefaults()
	h := newHasher(cfg)
	return &Service{st: st, audit: audit.New(st), cfg: cfg, log: log, now: now, hasher: h, dummyHash: h.dummy()}
}

// errBadCredentials is the one answer to every failed login.
func errBadCredentials() error {
	return errs.E(errs.Unauthenticated, "invalid email or password")
}

// SignUp creates, in one transaction, a user with a personal org it owns, a session for c
// and the session's first refresh token, which it returns. The email is folded
// (NormaliseEmail) and must pass EmailProblem. Errors: invalid_request naming /email,
// /password or /name; conflict when an account with the email exists.
func (s *Service) SignUp(ctx context.Context, email, password, name string, c Client) (User, Session, string, error) {
	email = NormaliseEmail(email)
	name = strings.TrimSpace(name)
	if err := s.validateSignUp(email, password, name); err != nil {
		return User{}, Session{}, "", err
	}
	phc := s.hasher.hash(password)
	now := s.now()

	var (
		user    db.User
		session db.Session
		token   string
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		org, err := q.CreateOrg(ctx, db.CreateOrgParams{ID: newID(), Name: personalOrgName(name, email), Personal: true, Now: now})
		if err != nil {
			return fmt.Errorf("create personal org: %w", err)
		}
		user, err = q.CreateUser(ctx, db.CreateUserParams{
			ID:            newID(),
			Email:         email,
			Name:          name,
			PasswordHash:  pgtype.Text{String: phc, Valid: true},
			PersonalOrgID: org.ID,
			Now:           now,
		})
		if errs.CodeOf(store.Translate(err)) == errs.Conflict {
			return errs.E(errs.Conflict, "an account with this email exists")
		}
		if err != nil {
			return fmt.Errorf("create user: %w", err)
		}
		if err := q.AddOrgMember(ctx, db.AddOrgMemberParams{OrgID: org.ID, UserID: user.ID, Role: RoleOwner, Now: now}); err != nil {
			return fmt.Errorf("add owner: %w", err)
		}
		session, token, err = s.startSession(ctx, q, user.ID, c, now)
		if err != nil {
			return err
		}
		return audit.Write(ctx, q, c.actor().As(user.ID), audit.Event{OrgID: &user.PersonalOrgID,
			Action: "auth.signup", TargetType: "user", TargetID: user.ID.String()})
	})
	if err != nil {
		return User{}, Session{}, "", fmt.Errorf("sign up: %w", err)
	}
	return UserFromRow(user), toSession(session), token, nil
}

// Login checks email and password and starts a session for c, returning its first
// refresh token. An unknown email, a wrong password and a disabled user all give the same
// unauthenticated error after the same work: one argon2id verification, and the same
// auth.login_failed audit event, written even when the client has hung up. A hash made
// with other parameters than the configured ones is replaced on success. The email is
// folded (NormaliseEmail); one that fails EmailProblem, which no account can have, is an
// invalid_request naming /email, before any work.
func (s *Service) Login(ctx context.Context, email, password string, c Client) (User, Session, string, error) {
	email = NormaliseEmail(email)
	if err := checkEmail("invalid login", email); err != nil {
		return User{}, Session{}, "", err
	}
	row, err := s.st.GetUserByEmail(ctx, email)
	found := err == nil && row.PasswordHash.Valid
	if err != nil && errs.CodeOf(store.Translate(err)) != errs.NotFound {
		return User{}, Session{}, "", fmt.Errorf("login: find user: %w", err)
	}
	phc := s.dummyHash
	if found {
		phc = row.PasswordHash.String
	}
	ok, current, err := s.hasher.verify(password, phc)
	if err != nil {
		// A stored hash we cannot read is corrupt data, not a wrong password: say so in
		// the log, but give the client the usual answer.
		s.log.ErrorContext(ctx, "unreadable password hash", "user_id", row.ID, "err", err)
	}
	if !found || !ok || row.DisabledAt != nil {
		return User{}, Session{}, "", s.loginFailed(ctx, email, c)
	}
	now := s.now()
	if !current {
		s.rehash(ctx, row.ID, password, now)
	}

	var (
		session db.Session
		token   string
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		disabledAt, err := q.LockUserForSignIn(ctx, row.ID)
		if err != nil {
			return fmt.Errorf("lock user: %w", err)
		}
		if disabledAt != nil {
			return errBadCredentials() // disabled while the password was being checked
		}
		session, token, err = s.startSession(ctx, q, row.ID, c, now)
		if err != nil {
			return err
		}
		return audit.Write(ctx, q, c.actor().As(row.ID), audit.Event{OrgID: &row.PersonalOrgID,
			Action: "auth.login", TargetType: "session", TargetID: session.ID.String()})
	})
	if errs.CodeOf(err) == errs.Unauthenticated {
		return User{}, Session{}, "", s.loginFailed(ctx, email, c)
	}
	if err != nil {
		return User{}, Session{}, "", fmt.Errorf("login: %w", err)
	}
	return UserFromRow(row), toSession(session), token, nil
}

// loginFailed audits a failed login with the attempted address and returns the one
// answer to it. A failure to audit is logged: the client gets its answer all the same.
func (s *Service) loginFailed(ctx context.Context, email string, c Client) error {
	s.recordAttempt(ctx, c.actor(), audit.Event{Action: "auth.login_failed", TargetType: "email", TargetID: email})
	return errBadCredentials()
}

// recordAttempt audits an attempt that changed nothing; a failure to audit is logged, as
// the attempt's own answer matters more to its caller.
func (s *Service) recordAttempt(ctx context.Context, by audit.Actor, e audit.Event) {
	if err := s.audit.Record(ctx, by, e); err != nil {
		s.log.ErrorContext(ctx, "audit record failed", "action", e.Action, "error", err)
	}
}

// rehash stores password hashed with the configured parameters. A failure only costs the
// upgrade, not the login, so it is logged and ignored.
func (s *Service) rehash(ctx context.Context, userID uuid.UUID, password string, now time.Time) {
	err := s.st.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{
		ID:           userID,
		PasswordHash: pgtype.Text{String: s.hasher.hash(password), Valid: true},
		Now:          now,
	})
	if err != nil {
		s.log.WarnContext(ctx, "rehash password", "user_id", userID, "err", err)
	}
}

// User returns the user with id. Errors: not_found.
func (s *Service) User(ctx context.Context, id uuid.UUID) (User, error) {
	row, err := s.st.GetUser(ctx, id)
	if err != nil {
		return User{}, notFound("user", err)
	}
	return UserFromRow(row), nil
}

// notFound turns a missing row into a not_found error naming what, and wraps other errors.
func notFound(what string, err error) error {
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return errs.E(errs.NotFound, "%s not found", what)
	}
	return fmt.Errorf("get %s: %w", what, err)
}

// personalOrgName is "<name>'s org", or the email when the user gave no name, cut to the
// 100 characters an org name may have.
func personalOrgName(name, email string) string {
	if name == "" {
		return truncateRunes(email, 100)
	}
	const suffix = "'s org"
	return truncateRunes(name, 100-len(suffix)) + suffix
}

// truncateRunes cuts s to at most n runes.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// newID returns a UUIDv7. It cannot fail: crypto/rand never returns an error on the
// platforms Go supports (it aborts the program instead).
func newID() uuid.UUID {
	return uuid.Must(uuid.NewV7())
}

// UserFromRow converts a stored user row.
func UserFromRow(r db.User) User {
	return User{
		ID:                  r.ID,
		Email:               r.Email,
		Name:                r.Name,
		PersonalOrgID:       r.PersonalOrgID,
		EmailVerified:       r.EmailVerifiedAt != nil,
		PlatformAdmin:       r.PlatformAdmin,
		Disabled:            r.DisabledAt != nil,
		CreatedAt:           r.CreatedAt.UTC(),
		HasPassword:         r.PasswordHash.Valid,
		DeletionRequestedAt: store.UTC(r.DeletionRequestedAt),
		EraseAt:             store.UTC(r.EraseAt),
	}
}

// CheckPassword reports whether password is userID's, for a re-authentication before a
// grave change (deleting the account). It costs one argon2id verification whether or not
// the user has a password; an account without one never matches. A wrong password is
// audited (auth.reauth_failed) by by. Errors: not_found; permission_denied when the
// password is wrong.
func (s *Service) CheckPassword(ctx context.Context, userID uuid.UUID, password string, by audit.Actor) error {
	row, err := s.st.GetUser(ctx, userID)
	if err != nil {
		return notFound("user", err)
	}
	phc := s.dummyHash
	if row.PasswordHash.Valid {
		phc = row.PasswordHash.String
	}
	ok, _, err := s.hasher.verify(password, phc)
	if err != nil {
		s.log.ErrorContext(ctx, "unreadable password hash", "user_id", row.ID, "err", err)
	}
	if !ok || !row.PasswordHash.Valid {
		s.recordAttempt(ctx, by, audit.Event{OrgID: &row.PersonalOrgID, Action: "auth.reauth_failed",
			TargetType: "user", TargetID: row.ID.String()})
		return errs.E(errs.PermissionDenied, "The password is incorrect.")
	}
	return nil
}

// UserByEmail returns the user with email (folded: NormaliseEmail). Errors: not_found.
func (s *Service) UserByEmail(ctx context.Context, email string) (User, error) {
	row, err := s.st.GetUserByEmail(ctx, NormaliseEmail(email))
	if err != nil {
		return User{}, notFound("user", err)
	}
	return UserFromRow(row), nil
}
