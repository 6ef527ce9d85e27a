package account

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/emailtoken"
	"github.com/kilnhq/kiln/internal/errs"
)

// The flows below prove control of an address with the tokens of package emailtoken. The
// token is spent in the same transaction as the change it authorises: a change refused
// (a weak password) or failed leaves the token usable, and two uses of one token at once
// cannot both succeed. A token works only while the address it was sent to is still the
// user's and the user is not disabled; otherwise it gets emailtoken.Invalid, like any other
// unusable token.

// errWrongCurrentPassword refuses a password change: the caller is signed in, so this is a
// refusal of the action, not of the credential.
func errWrongCurrentPassword() error {
	return errs.E(errs.PermissionDenied, "The current password is incorrect.")
}

// EmailVerificationToken issues a token that verifies userID's current address, replacing
// any earlier one, queues the email that carries it in the same transaction, and returns
// it with the user. The token is "" when the address is already verified: there is
// nothing to send. Errors: not_found.
func (s *Service) EmailVerificationToken(ctx context.Context, userID uuid.UUID) (User, string, error) {
	var (
		user  db.User
		token string
	)
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		user, err = q.GetUser(ctx, userID)
		if err != nil {
			return notFound("user", err)
		}
		if user.EmailVerifiedAt != nil {
			return nil
		}
		now := s.now()
		token, _, err = emailtoken.Issue(ctx, q, emailtoken.VerifyEmail, user.ID, user.Email, now)
		if err != nil {
			return err
		}
		return s.queueEmail(ctx, q, now, user, TemplateVerification, "verify-email", token)
	})
	if err != nil {
		return User{}, "", fmt.Errorf("email verification token: %w", err)
	}
	return UserFromRow(user), token, nil
}

// VerifyEmail spends a verification token and marks the address it was sent to verified,
// and returns the user; the user is the actor of its auth.email_verify event, from where by
// is. Errors: invalid_request naming /token (emailtoken.Invalid) for every token that
// cannot be used.
func (s *Service) VerifyEmail(ctx context.Context, token string, by audit.Actor) (User, error) {
	var user db.User
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		now := s.now()
		var err error
		user, err = s.spend(ctx, q, emailtoken.VerifyEmail, token)
		if err != nil {
			return err
		}
		if _, err := q.MarkUserEmailVerified(ctx, db.MarkUserEmailVerifiedParams{ID: user.ID, Email: user.Email, Now: now}); err != nil {
			return fmt.Errorf("mark email verified: %w", err)
		}
		if user.EmailVerifiedAt == nil {
			user.EmailVerifiedAt = &now
		}
		return audit.Write(ctx, q, by.As(user.ID), audit.Event{OrgID: &user.PersonalOrgID, Action: "auth.email_verify",
			TargetType: "user", TargetID: user.ID.String(), Data: map[string]any{"email": user.Email}})
	})
	if err != nil {
		return User{}, unwrapInvalid(fmt.Errorf("verify email: %w", err))
	}
	return UserFromRow(user), nil
}

// PasswordResetToken issues a password-reset token for the active account with email
// (folded: NormaliseEmail), replacing any earlier one, queues the email that carries it
// in the same transaction, and returns it with the user.
// Accounts without a password (external sign-in only) may get one: the token proves control
// of the address as well as the old password would. Every request is audited
// (auth.password_reset_request) with the address by by, and for an account in its
// personal org. Errors: not_found when no account that is not disabled has the address;
// the caller must not tell its client.
func (s *Service) PasswordResetToken(ctx context.Context, email string, by audit.Actor) (User, string, error) {
	var (
		user  db.User
		token string
	)
	email = NormaliseEmail(email)
	event := audit.Event{Action: "auth.password_reset_request", TargetType: "email", TargetID: email}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		user, err = q.GetUserByEmail(ctx, email)
		if err != nil {
			return notFound("user", err)
		}
		if user.DisabledAt != nil {
			return errs.E(errs.NotFound, "user not found")
		}
		now := s.now()
		token, _, err = emailtoken.Issue(ctx, q, emailtoken.ResetPassword, user.ID, user.Email, now)
		if err != nil {
			return err
		}
		if err := s.queueEmail(ctx, q, now, user, TemplatePasswordReset, "reset-password", token); err != nil {
			return err
		}
		event.OrgID = &user.PersonalOrgID
		return audit.Write(ctx, q, by, event)
	})
	if errs.CodeOf(err) == errs.NotFound {
		s.recordAttempt(ctx, by, event)
		return User{}, "", errs.E(errs.NotFound, "user not found")
	}
	if err != nil {
		return User{}, "", fmt.Errorf("password reset token: %w", err)
	}
	return UserFromRow(user), token, nil
}

// ResetPassword spends a password-reset token, sets password, marks the address verified
// (the token was read there) and revokes every session of the user, in one transaction. It
// returns the user and the revoked sessions' ids, so that the caller can stop their access
// tokens too. Errors: invalid_request naming /token (emailtoken.Invalid) for every token
// that cannot be used, then invalid_request naming /password when the password breaks the
// sign-up rules; the token is not spent then. The password_changed email is queued in the
// same transaction. The user is the actor of its
// auth.password_reset event, from where by is; the revoked sessions' access tokens stop
// working at once (NotifyRevoked).
func (s *Service) ResetPassword(ctx context.Context, token, password string, by audit.Actor) (User, []uuid.UUID, error) {
	var (
		user    db.User
		revoked []uuid.UUID
	)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		user, err = s.spend(ctx, q, emailtoken.ResetPassword, token)
		if err != nil {
			return err
		}
		if p := passwordProblem(password, user.Email, s.cfg.PasswordMinLength); p != "" {
			return errs.InvalidFields("invalid password", []errs.FieldError{{Pointer: "/password", Message: p}})
		}
		now := s.now()
		if err := q.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{
			ID: user.ID, PasswordHash: pgtype.Text{String: s.hasher.hash(password), Valid: true}, Now: now,
		}); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if _, err := q.MarkUserEmailVerified(ctx, db.MarkUserEmailVerifiedParams{ID: user.ID, Email: user.Email, Now: now}); err != nil {
			return fmt.Errorf("mark email verified: %w", err)
		}
		if user.EmailVerifiedAt == nil {
			user.EmailVerifiedAt = &now
		}
		revoked, err = q.RevokeUserSessions(ctx, db.RevokeUserSessionsParams{UserID: user.ID, Now: now})
		if err != nil {
			return fmt.Errorf("revoke sessions: %w", err)
		}
		if err := s.queueEmail(ctx, q, now, user, TemplatePasswordChanged, "reset-password", ""); err != nil {
			return err
		}
		return audit.Write(ctx, q, by.As(user.ID), passwordEvent("auth.password_reset", user, revoked))
	})
	if err != nil {
		return User{}, nil, unwrapInvalid(fmt.Errorf("reset password: %w", err))
	}
	s.announceRevoked(ctx, user.ID, revoked)
	return UserFromRow(user), revoked, nil
}

// ChangePassword replaces userID's password with next after checking current, and revokes
// every session of the user but keep (the one asking), returning the user and the revoked
// sessions' ids. It costs
// one argon2id verification whether or not the user has a password. Errors: not_found;
// permission_denied when current is wrong (or the account has no password: it must use a
// reset); invalid_request naming /new_password when next breaks the sign-up rules or equals
// current. The change is audited by by (auth.password_change), and so is a wrong current
// password (auth.password_change_failed); the password_changed email is queued in the
// change's transaction; the revoked sessions' access tokens stop working
// at once (NotifyRevoked).
func (s *Service) ChangePassword(ctx context.Context, userID, keep uuid.UUID, current, next string, by audit.Actor) (User, []uuid.UUID, error) {
	row, err := s.st.GetUser(ctx, userID)
	if err != nil {
		return User{}, nil, notFound("user", err)
	}
	phc := s.dummyHash
	if row.PasswordHash.Valid {
		phc = row.PasswordHash.String
	}
	ok, _, err := s.hasher.verify(current, phc)
	if err != nil {
		s.log.ErrorContext(ctx, "unreadable password hash", "user_id", row.ID, "err", err)
	}
	if !ok || !row.PasswordHash.Valid {
		s.recordAttempt(ctx, by, audit.Event{OrgID: &row.PersonalOrgID, Action: "auth.password_change_failed",
			TargetType: "user", TargetID: row.ID.String()})
		return User{}, nil, errWrongCurrentPassword()
	}
	p := passwordProblem(next, row.Email, s.cfg.PasswordMinLength)
	if p == "" && next == current {
		p = "must differ from the current password"
	}
	if p != "" {
		return User{}, nil, errs.InvalidFields("invalid new password", []errs.FieldError{{Pointer: "/new_password", Message: p}})
	}

	var revoked []uuid.UUID
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		now := s.now()
		if err := q.UpdateUserPasswordHash(ctx, db.UpdateUserPasswordHashParams{
			ID: userID, PasswordHash: pgtype.Text{String: s.hasher.hash(next), Valid: true}, Now: now,
		}); err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		var err error
		revoked, err = q.RevokeOtherUserSessions(ctx, db.RevokeOtherUserSessionsParams{UserID: userID, KeepID: keep, Now: now})
		if err != nil {
			return fmt.Errorf("revoke other sessions: %w", err)
		}
		if err := s.queueEmail(ctx, q, now, row, TemplatePasswordChanged, "reset-password", ""); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, passwordEvent("auth.password_change", row, revoked))
	})
	if err != nil {
		return User{}, nil, fmt.Errorf("change password: %w", err)
	}
	s.announceRevoked(ctx, userID, revoked)
	return UserFromRow(row), revoked, nil
}

// passwordEvent is the audit event of a password set for user, with the sessions it ended.
func passwordEvent(action string, user db.User, revoked []uuid.UUID) audit.Event {
	return audit.Event{OrgID: &user.PersonalOrgID, Action: action, TargetType: "user", TargetID: user.ID.String(),
		Data: map[string]any{"sessions_revoked": len(revoked)}}
}

// announceRevoked stops the access tokens of sessions revoked with a password change on
// every replica. The sessions are revoked in the database already and the password is
// changed, so a failure is logged: failing the change would only mislead.
func (s *Service) announceRevoked(ctx context.Context, userID uuid.UUID, ids []uuid.UUID) {
	if err := s.revokeTokens(ctx, ids...); err != nil {
		s.log.ErrorContext(ctx, "revoke access tokens after a password change", "user_id", userID, "error", err)
	}
}

// spend consumes token for purpose p in q's transaction and returns its user, refusing it
// when the user is disabled or no longer has the address the token was sent to.
func (s *Service) spend(ctx context.Context, q *db.Queries, p emailtoken.Purpose, token string) (db.User, error) {
	t, err := emailtoken.Consume(ctx, q, p, token, s.now())
	if err != nil {
		return db.User{}, err
	}
	user, err := q.GetUser(ctx, t.UserID)
	if err != nil {
		return db.User{}, fmt.Errorf("get user: %w", err) // the token's row cascades with the user
	}
	if user.DisabledAt != nil || user.Email != t.Email {
		return db.User{}, emailtoken.Invalid()
	}
	return user, nil
}

// unwrapInvalid returns a client error (an invalid token, a weak password) bare, as every
// other refusal of the package is, and any other error as it is.
func unwrapInvalid(err error) error {
	if e, ok := errors.AsType[*errs.Error](err); ok && e.Code == errs.Invalid {
		return e
	}
	return err
}
