// Package erasure deletes accounts and orgs on their owners' request: a deletion is
// scheduled for a grace period, in which it can be undone, and then the privacy.erase job
// removes or pseudonymises every row and Redis key that holds the subject's personal data.
//
// What the law requires keeping (invoices and credit notes, payments, the usage figures
// they are billed from) is kept with its people pseudonymised: names and addresses
// replaced by a stable pseudonym (erased-<hash>), ids by a pseudonymous id, every amount
// and number unchanged. The audit log stays append-only: the erase job alone, inside its
// own transaction, may rewrite the personal fields of past events (the trigger of
// migration 00041), and it records the erasure itself (privacy.user_erased,
// privacy.org_erased).
package erasure

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/localcache"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// Subject is what an erase job erases.
type Subject string

// The subjects of an erasure.
const (
	SubjectUser Subject = "user"
	SubjectOrg  Subject = "org"
)

// KindErase is the job that erases one account or org once its grace period is over. It
// finds its subject by its own id (users.erase_job_id, orgs.erase_job_id), so its row
// names no one, a restore (which clears that id) turns it into a no-op, and a retry after
// the erasure committed finds nothing left to do.
var KindErase = jobs.Kind{Name: "privacy.erase", MaxAttempts: 10, Timeout: 30 * time.Minute,
	Backoff: jobs.Backoff{Base: time.Minute, Max: time.Hour}}

// ErasePayload is the payload of KindErase.
type ErasePayload struct {
	Subject Subject `json:"subject"`
	// Pseudonym is drawn at random when the deletion is asked for: the id, and the hash of
	// the name, that replace the subject's in what is kept. Being random, it links the kept
	// rows to one another but to no one outside them.
	Pseudonym uuid.UUID `json:"pseudonym"`
}

// FreshToken is how recent the access token of an account without a password must be to
// delete it: the proof of a recent sign-in such an account can give.
const FreshToken = 10 * time.Minute

// Config holds the deletion rules.
type Config struct {
	// Grace is how long a deletion can be undone before the erase job runs.
	Grace time.Duration
}

// PasswordChecker verifies a user's password (account.Service).
type PasswordChecker interface {
	CheckPassword(ctx context.Context, userID uuid.UUID, password string, by audit.Actor) error
}

// RecordEraser deletes the stored idempotent responses that mention a subject
// (idempotency.Store).
type RecordEraser interface {
	EraseMentioning(ctx context.Context, tokens ...string) (int, error)
}

// Deps are the services the erasure works with.
type Deps struct {
	Store     *store.Store
	Jobs      *jobs.Registry
	Redis     redis.UniversalClient
	Keyspace  redisclient.Keyspace
	Passwords PasswordChecker
	// Idempotency, when set, has its records that mention the subject deleted.
	Idempotency RecordEraser
	Log         *slog.Logger
	Now         func() time.Time
}

// Service schedules, undoes and carries out erasures.
type Service struct {
	cfg            Config
	d              Deps
	revokeSessions func(ctx context.Context, ids ...uuid.UUID) error
	keysChanged    func(ctx context.Context)
	subs           Subscriptions // nil: subscriptions left alone

	// refusals are orgs' deletion state on the write path, by org: the
	// org_deletion_pending refusal, or nil for a writable org.
	refusals *localcache.Map[uuid.UUID, *errs.Error]
}

// writableTTL is how long a replica trusts an org's deletion state on the write path (each
// model call and write of an org asks): a deletion or restore reaches the other replicas
// within it, and this replica at once.
const writableTTL = 5 * time.Second

// New returns a Service and registers KindErase on d.Jobs.
func New(cfg Config, d Deps) *Service {
	if cfg.Grace <= 0 {
		cfg.Grace = 14 * 24 * time.Hour
	}
	s := &Service{cfg: cfg, d: d, refusals: localcache.New[uuid.UUID, *errs.Error](writableTTL)}
	jobs.Register(d.Jobs, KindErase, s.erase)
	jobs.Register(d.Jobs, KindRenewal, s.renew)
	if s.d.Log == nil {
		s.d.Log = slog.New(slog.DiscardHandler)
	}
	return s
}

// NotifyRevoked sets what stops the access tokens of revoked sessions at once, on every
// replica (token.Service.RevokeSessions).
func (s *Service) NotifyRevoked(fn func(ctx context.Context, ids ...uuid.UUID) error) {
	s.revokeSessions = fn
}

// NotifyKeysChanged sets what drops revoked API keys from every replica's cache
// (apikey.Service.ForgetAll).
func (s *Service) NotifyKeysChanged(fn func(ctx context.Context)) { s.keysChanged = fn }

// Scheduled is a pending deletion.
type Scheduled struct {
	RequestedAt time.Time
	EraseAt     time.Time
}

// Proof is how the caller re-authenticates before deleting their account: the password of
// a password account, or, for an account without one, when their access token was issued.
type Proof struct {
	Password       string
	TokenIssuedAt  time.Time
	KeepSessionID  uuid.UUID // the caller's session, which stays signed in
	PasswordAbsent bool      // no password was sent
}

// DeleteUser schedules userID's account for erasure after the grace period, in one
// transaction with its erase job: every other session is signed out and the API keys of
// the orgs that go with the account (its personal org and the orgs of which it is the only
// member) are revoked at once. Asking again while a deletion is pending returns it as it
// is. Errors: not_found; permission_denied when the proof fails (a wrong or missing
// password, or for an account without one a token older than FreshToken); sole_owner,
// naming the orgs, while the user is the only owner of an org with other members.
func (s *Service) DeleteUser(ctx context.Context, userID uuid.UUID, proof Proof, by audit.Actor) (Scheduled, error) {
	user, err := s.d.Store.GetUser(ctx, userID)
	if err != nil {
		return Scheduled{}, notFound("user", err)
	}
	if user.EraseAt != nil && user.DeletionRequestedAt != nil {
		return Scheduled{RequestedAt: user.DeletionRequestedAt.UTC(), EraseAt: user.EraseAt.UTC()}, nil
	}
	switch {
	case user.PasswordHash.Valid && proof.PasswordAbsent:
		return Scheduled{}, errs.E(errs.PermissionDenied, "Deleting the account needs its password: send {\"password\": …}.")
	case user.PasswordHash.Valid:
		if err := s.d.Passwords.CheckPassword(ctx, userID, proof.Password, by); err != nil {
			return Scheduled{}, err
		}
	case s.d.Now().Sub(proof.TokenIssuedAt) > FreshToken:
		return Scheduled{}, errs.E(errs.PermissionDenied,
			"Deleting an account without a password needs a fresh sign-in: sign in again and retry within %s.", FreshToken)
	}

	var (
		out     Scheduled
		revoked []uuid.UUID
		keys    int
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.d.Store.InTx(ctx, func(q *db.Queries) error {
		u, err := q.LockUserForErasure(ctx, userID)
		if err != nil {
			return notFound("user", err)
		}
		if u.EraseAt != nil && u.DeletionRequestedAt != nil { // asked twice at once
			out = Scheduled{RequestedAt: u.DeletionRequestedAt.UTC(), EraseAt: u.EraseAt.UTC()}
			return nil
		}
		if err := refuseSoleOwner(ctx, q, userID); err != nil {
			return err
		}
		now := s.d.Now().UTC()
		out = Scheduled{RequestedAt: now, EraseAt: now.Add(s.cfg.Grace)}
		job, err := s.d.Jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindErase.Name, RunAt: out.EraseAt,
			Payload: ErasePayload{Subject: SubjectUser, Pseudonym: uuid.Must(uuid.NewRandomFromReader(rand.Reader))}})
		if err != nil {
			return err
		}
		if _, err := q.ScheduleUserErasure(ctx, db.ScheduleUserErasureParams{ID: userID, Now: &now, EraseAt: &out.EraseAt,
			JobID: uuid.NullUUID{UUID: job.ID, Valid: true}}); err != nil {
			return fmt.Errorf("schedule erasure: %w", err)
		}
		if revoked, err = q.RevokeOtherUserSessions(ctx, db.RevokeOtherUserSessionsParams{UserID: userID, KeepID: proof.KeepSessionID, Now: now}); err != nil {
			return fmt.Errorf("revoke sessions: %w", err)
		}
		orgs, err := q.OrgsGoingWithUser(ctx, userID)
		if err != nil {
			return fmt.Errorf("orgs going with the user: %w", err)
		}
		for _, org := range orgs {
			hashes, err := q.RevokeOrgAPIKeys(ctx, db.RevokeOrgAPIKeysParams{OrgID: org, Now: &now})
			if err != nil {
				return fmt.Errorf("revoke api keys: %w", err)
			}
			keys += len(hashes)
		}
		if err := s.renewals(ctx, q, now, orgs, &userID); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &u.PersonalOrgID, Action: "privacy.user_deletion_requested",
			TargetType: "user", TargetID: userID.String(), Data: map[string]any{
				"erase_at": out.EraseAt.Format(time.RFC3339), "sessions_revoked": len(revoked), "api_keys_revoked": keys}})
	})
	if err != nil {
		return Scheduled{}, fmt.Errorf("delete account: %w", err)
	}
	s.announce(ctx, revoked, keys > 0)
	return out, nil
}

// refuseSoleOwner returns sole_owner naming the orgs userID alone owns while others are
// members.
func refuseSoleOwner(ctx context.Context, q *db.Queries, userID uuid.UUID) error {
	orgs, err := q.SoleOwnedSharedOrgs(ctx, userID)
	if err != nil {
		return fmt.Errorf("sole-owned orgs: %w", err)
	}
	if len(orgs) == 0 {
		return nil
	}
	names := make([]string, len(orgs))
	for i, o := range orgs {
		names[i] = fmt.Sprintf("%q (%s)", o.Name, o.ID)
	}
	return errs.E(errs.SoleOwner, "You are the only owner of %s, which other members belong to: transfer the ownership "+
		"(POST /v1/orgs/{id}/transfer-ownership) or delete the org first.", strings.Join(names, ", "))
}

// announce stops revoked sessions' access tokens and revoked keys on every replica. The
// change is committed, so a failure is logged: failing the request would only mislead.
func (s *Service) announce(ctx context.Context, sessions []uuid.UUID, keys bool) {
	if s.revokeSessions != nil && len(sessions) > 0 {
		if err := s.revokeSessions(ctx, sessions...); err != nil {
			s.d.Log.ErrorContext(ctx, "revoke access tokens after a deletion", "error", err)
		}
	}
	if s.keysChanged != nil && keys {
		s.keysChanged(ctx)
	}
}

// RestoreUser undoes userID's pending deletion and cancels its erase job. Sessions and
// API keys revoked by the deletion stay revoked. Errors: not_found when no deletion is
// pending.
func (s *Service) RestoreUser(ctx context.Context, userID uuid.UUID, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.d.Store.InTx(ctx, func(q *db.Queries) error {
		now := s.d.Now().UTC()
		u, err := q.LockUserForErasure(ctx, userID)
		if err != nil {
			return notFound("user", err)
		}
		if u.EraseAt == nil {
			return errs.E(errs.NotFound, "No deletion of this account is pending.")
		}
		if _, err := q.CancelUserErasure(ctx, db.CancelUserErasureParams{ID: userID, Now: now}); err != nil {
			return fmt.Errorf("cancel erasure: %w", err)
		}
		if err := cancelJob(ctx, q, u.EraseJobID, now); err != nil {
			return err
		}
		orgs, err := q.OrgsGoingWithUser(ctx, userID)
		if err != nil {
			return fmt.Errorf("orgs going with the user: %w", err)
		}
		if err := s.renewals(ctx, q, now, orgs, &userID); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &u.PersonalOrgID, Action: "privacy.user_deletion_cancelled",
			TargetType: "user", TargetID: userID.String()})
	})
	if err != nil {
		return fmt.Errorf("restore account: %w", err)
	}
	return nil
}

// cancelJob cancels a queued erase job; one already running finds its subject restored
// and does nothing.
func cancelJob(ctx context.Context, q *db.Queries, id uuid.NullUUID, now time.Time) error {
	if !id.Valid {
		return nil
	}
	_, err := q.CancelQueuedJob(ctx, db.CancelQueuedJobParams{ID: id.UUID, Now: &now})
	if err != nil && errs.CodeOf(store.Translate(err)) != errs.NotFound {
		return fmt.Errorf("cancel erase job: %w", err)
	}
	return nil
}

// DeleteOrg schedules orgID for erasure after the grace period, in one transaction with
// its erase job; meanwhile its writes are refused (Writable). Only an owner (userID) may.
// Asking again while a deletion is pending returns it. Errors: not_found (not a member, or
// erased); permission_denied for members who are not owners; invalid_request for a
// personal org, which goes with its user.
func (s *Service) DeleteOrg(ctx context.Context, orgID, userID uuid.UUID, by audit.Actor) (Scheduled, error) {
	var out Scheduled
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.d.Store.InTx(ctx, func(q *db.Queries) error {
		org, err := lockOwnedOrg(ctx, q, orgID, userID)
		if err != nil {
			return err
		}
		if org.Personal {
			return errs.E(errs.Invalid, "A personal org goes with its user: delete the account instead (DELETE /v1/me).")
		}
		if org.EraseAt != nil && org.DeletionRequestedAt != nil {
			out = Scheduled{RequestedAt: org.DeletionRequestedAt.UTC(), EraseAt: org.EraseAt.UTC()}
			return nil
		}
		now := s.d.Now().UTC()
		out = Scheduled{RequestedAt: now, EraseAt: now.Add(s.cfg.Grace)}
		job, err := s.d.Jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindErase.Name, RunAt: out.EraseAt,
			Payload: ErasePayload{Subject: SubjectOrg, Pseudonym: uuid.Must(uuid.NewRandomFromReader(rand.Reader))}})
		if err != nil {
			return err
		}
		if _, err := q.ScheduleOrgErasure(ctx, db.ScheduleOrgErasureParams{ID: orgID, Now: &now, EraseAt: &out.EraseAt,
			JobID: uuid.NullUUID{UUID: job.ID, Valid: true}}); err != nil {
			return fmt.Errorf("schedule erasure: %w", err)
		}
		if err := s.renewals(ctx, q, now, []uuid.UUID{orgID}, nil); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "privacy.org_deletion_requested",
			TargetType: "org", TargetID: orgID.String(), Data: map[string]any{"erase_at": out.EraseAt.Format(time.RFC3339)}})
	})
	if err != nil {
		return Scheduled{}, fmt.Errorf("delete org: %w", err)
	}
	s.refusals.Forget(orgID)
	return out, nil
}

// RestoreOrg undoes orgID's pending deletion and cancels its erase job; only an owner
// (userID) may. Errors: not_found (not a member, or no deletion pending);
// permission_denied for members who are not owners.
func (s *Service) RestoreOrg(ctx context.Context, orgID, userID uuid.UUID, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.d.Store.InTx(ctx, func(q *db.Queries) error {
		org, err := lockOwnedOrg(ctx, q, orgID, userID)
		if err != nil {
			return err
		}
		if org.EraseAt == nil {
			return errs.E(errs.NotFound, "No deletion of this org is pending.")
		}
		now := s.d.Now().UTC()
		if _, err := q.CancelOrgErasure(ctx, db.CancelOrgErasureParams{ID: orgID, Now: now}); err != nil {
			return fmt.Errorf("cancel erasure: %w", err)
		}
		if err := cancelJob(ctx, q, org.EraseJobID, now); err != nil {
			return err
		}
		if err := s.renewals(ctx, q, now, []uuid.UUID{orgID}, nil); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &orgID, Action: "privacy.org_deletion_cancelled",
			TargetType: "org", TargetID: orgID.String()})
	})
	if err != nil {
		return fmt.Errorf("restore org: %w", err)
	}
	s.refusals.Forget(orgID)
	return nil
}

// lockOwnedOrg locks orgID for a change only its owners may make.
func lockOwnedOrg(ctx context.Context, q *db.Queries, orgID, userID uuid.UUID) (db.Org, error) {
	role, err := q.GetOrgMemberRole(ctx, db.GetOrgMemberRoleParams{OrgID: orgID, UserID: userID})
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return db.Org{}, errs.E(errs.NotFound, "No org %s.", orgID)
		}
		return db.Org{}, fmt.Errorf("get role: %w", err)
	}
	if role != "owner" {
		return db.Org{}, errs.E(errs.PermissionDenied, "Only an owner of the org may delete or restore it.")
	}
	org, err := q.LockOrgForErasure(ctx, orgID)
	if err != nil {
		return db.Org{}, notFound("org", err)
	}
	if org.ErasedAt != nil {
		return db.Org{}, errs.E(errs.NotFound, "No org %s.", orgID)
	}
	return org, nil
}

// Writable refuses the writes and model calls of an org whose deletion is pending (or
// done): org_deletion_pending. Reads go on. The state is read through a per-replica cache
// of writableTTL.
func (s *Service) Writable(ctx context.Context, orgID uuid.UUID) error {
	now := s.d.Now()
	refusal, ok := s.refusals.Get(orgID, now)
	if !ok {
		var err error
		if refusal, err = s.orgRefusal(ctx, orgID); err != nil {
			return err
		}
		s.refusals.Put(orgID, refusal, now)
	}
	if refusal != nil {
		return refusal
	}
	return nil
}

// orgRefusal reads orgID's deletion state: the org_deletion_pending refusal, or nil.
func (s *Service) orgRefusal(ctx context.Context, orgID uuid.UUID) (*errs.Error, error) {
	st, err := s.d.Store.OrgDeletionState(ctx, orgID)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil // the caller's own checks answer for a missing org
	}
	if err != nil {
		return nil, fmt.Errorf("org deletion state: %w", err)
	}
	if st.EraseAt != nil || st.ErasedAt != nil {
		when := "it has been erased"
		if st.EraseAt != nil {
			when = "it will be erased at " + st.EraseAt.UTC().Format(time.RFC3339)
		}
		return errs.E(errs.OrgDeletionPending, "The org is being deleted (%s): its writes and model calls are refused; an owner may "+
			"undo it with POST /v1/orgs/%s/restore.", when, orgID), nil
	}
	return nil, nil
}

// OrgDeletion returns orgID's pending deletion, or nil when none is pending.
func (s *Service) OrgDeletion(ctx context.Context, orgID uuid.UUID) (*Scheduled, error) {
	st, err := s.d.Store.OrgDeletionState(ctx, orgID)
	if err != nil {
		return nil, notFound("org", err)
	}
	if st.EraseAt == nil || st.DeletionRequestedAt == nil {
		return nil, nil //nolint:nilnil // none pending
	}
	return &Scheduled{RequestedAt: st.DeletionRequestedAt.UTC(), EraseAt: st.EraseAt.UTC()}, nil
}

// notFound turns a missing row into a not_found error naming what, and wraps other errors.
func notFound(what string, err error) error {
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return errs.E(errs.NotFound, "%s not found", what)
	}
	return fmt.Errorf("get %s: %w", what, err)
}

// pseudonymText is the stable pseudonym that replaces names and addresses in what is kept:
// erased- and 16 hex digits of a hash of the erasure's random pseudonym and of scope (an
// org id, or nothing for the person).
func pseudonymText(p uuid.UUID, scope uuid.UUID) string {
	h := sha256.New()
	h.Write(p[:])
	if scope != uuid.Nil {
		h.Write(scope[:])
	}
	return "erased-" + hex.EncodeToString(h.Sum(nil))[:16]
}

var errNotDue = errors.New("erasure not due yet")
