package account_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/emailtoken"
	"github.com/kilnhq/kiln/internal/errs"
)

// newPassword passes every sign-up rule and differs from goodPassword.
const newPassword = "violet pancake orbit 42"

// badToken is the one error of every unusable email token.
var badToken = emailtoken.Invalid()

// verificationToken issues a verification token for u, failing the test on error.
func (b *bundle) verificationToken(t *testing.T, u account.User) string {
	t.Helper()
	_, token, err := b.svc.EmailVerificationToken(t.Context(), u.ID)
	if err != nil || !strings.HasPrefix(token, "kiln_ve_") {
		t.Fatalf("EmailVerificationToken = %q, %v", token, err)
	}
	return token
}

// resetToken issues a password-reset token for email, failing the test on error.
func (b *bundle) resetToken(t *testing.T, email string) string {
	t.Helper()
	_, token, err := b.svc.PasswordResetToken(t.Context(), email, audit.Actor{})
	if err != nil || !strings.HasPrefix(token, "kiln_pr_") {
		t.Fatalf("PasswordResetToken(%s) = %q, %v", email, token, err)
	}
	return token
}

// canLogin reports whether email signs in with password.
func (b *bundle) canLogin(t *testing.T, email, password string) bool {
	t.Helper()
	_, _, _, err := b.svc.Login(t.Context(), email, password, account.Client{})
	if err != nil && errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("Login: %v", err)
	}
	return err == nil
}

func TestEmailVerification(t *testing.T) {
	b := setup(t)

	t.Run("OK", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		if u.EmailVerified {
			t.Fatal("a new account is verified")
		}
		token := b.verificationToken(t, u)
		got, err := b.svc.VerifyEmail(t.Context(), token, audit.Actor{})
		if err != nil {
			t.Fatalf("VerifyEmail: %v", err)
		}
		if got.ID != u.ID || !got.EmailVerified {
			t.Errorf("VerifyEmail = %+v, want %s verified", got, u.ID)
		}
		if stored, _ := b.svc.User(t.Context(), u.ID); !stored.EmailVerified {
			t.Error("the stored user is not verified")
		}
		t.Run("ErrReused", func(t *testing.T) {
			_, err := b.svc.VerifyEmail(t.Context(), token, audit.Actor{})
			checkSame(t, err, badToken)
		})
		t.Run("NothingToSendOnceVerified", func(t *testing.T) {
			_, token, err := b.svc.EmailVerificationToken(t.Context(), u.ID)
			if err != nil || token != "" {
				t.Errorf("EmailVerificationToken = %q, %v; want no token", token, err)
			}
		})
	})
	t.Run("ErrReplaced", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		first := b.verificationToken(t, u)
		second := b.verificationToken(t, u)
		_, err := b.svc.VerifyEmail(t.Context(), first, audit.Actor{})
		checkSame(t, err, badToken)
		if _, err := b.svc.VerifyEmail(t.Context(), second, audit.Actor{}); err != nil {
			t.Fatalf("VerifyEmail with the newest token: %v", err)
		}
	})
	t.Run("ErrEmailChanged", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.verificationToken(t, u)
		if _, err := b.st.Pool.Exec(t.Context(), "UPDATE users SET email = 'moved-'||email WHERE id = $1", u.ID); err != nil {
			t.Fatal(err)
		}
		_, err := b.svc.VerifyEmail(t.Context(), token, audit.Actor{})
		checkSame(t, err, badToken)
		if stored, _ := b.svc.User(t.Context(), u.ID); stored.EmailVerified {
			t.Error("the new address was verified by a token sent to the old one")
		}
	})
	t.Run("ErrDisabled", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.verificationToken(t, u)
		b.disable(t, u.ID)
		_, err := b.svc.VerifyEmail(t.Context(), token, audit.Actor{})
		checkSame(t, err, badToken)
	})
	t.Run("ErrResetToken", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		_, err := b.svc.VerifyEmail(t.Context(), b.resetToken(t, u.Email), audit.Actor{})
		checkSame(t, err, badToken)
	})
	t.Run("ErrUnknownUser", func(t *testing.T) {
		if _, _, err := b.svc.EmailVerificationToken(t.Context(), uuid.New()); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("EmailVerificationToken error = %v, want not_found", err)
		}
	})
	// Last: moving the clock ages every token issued above.
	t.Run("ErrExpired", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.verificationToken(t, u)
		b.clock.Advance(48 * time.Hour)
		_, err := b.svc.VerifyEmail(t.Context(), token, audit.Actor{})
		checkSame(t, err, badToken)
	})
}

func TestPasswordReset(t *testing.T) {
	b := setup(t)

	t.Run("OK", func(t *testing.T) {
		u, s1, _ := b.signUp(t, emailFor(t))
		s2, _ := b.login(t, u.Email)
		token := b.resetToken(t, " "+strings.ToUpper(u.Email)+" ")
		got, revoked, err := b.svc.ResetPassword(t.Context(), token, newPassword, audit.Actor{})
		if err != nil {
			t.Fatalf("ResetPassword: %v", err)
		}
		if got.ID != u.ID || !got.EmailVerified {
			t.Errorf("ResetPassword user = %+v, want %s, verified by the reset", got, u.ID)
		}
		slices.SortFunc(revoked, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		want := []uuid.UUID{s1.ID, s2.ID}
		slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(revoked, want) {
			t.Errorf("revoked %v, want every session %v", revoked, want)
		}
		if b.active(t, s1.ID) || b.active(t, s2.ID) {
			t.Error("a session survived the reset")
		}
		if b.canLogin(t, u.Email, goodPassword) || !b.canLogin(t, u.Email, newPassword) {
			t.Error("after the reset, the old password should fail and the new one work")
		}
		t.Run("ErrReused", func(t *testing.T) {
			_, _, err := b.svc.ResetPassword(t.Context(), token, "another fine passphrase", audit.Actor{})
			checkSame(t, err, badToken)
		})
	})
	t.Run("ErrWeakPasswordKeepsToken", func(t *testing.T) {
		u, s, _ := b.signUp(t, emailFor(t))
		token := b.resetToken(t, u.Email)
		for _, weak := range []string{"short", "password123", strings.Repeat("ab", 8), strings.TrimSuffix(u.Email, "@example.com") + "-secret!"} {
			_, _, err := b.svc.ResetPassword(t.Context(), token, weak, audit.Actor{})
			checkInvalid(t, err, []string{"/password"})
		}
		if !b.active(t, s.ID) || !b.canLogin(t, u.Email, goodPassword) {
			t.Error("a refused reset changed the account")
		}
		if _, _, err := b.svc.ResetPassword(t.Context(), token, newPassword, audit.Actor{}); err != nil {
			t.Fatalf("ResetPassword after refused attempts: %v", err)
		}
	})
	t.Run("ErrBadTokenBeforePassword", func(t *testing.T) {
		_, _, err := b.svc.ResetPassword(t.Context(), "kiln_pr_nope", "weak", audit.Actor{})
		checkSame(t, err, badToken)
	})
	t.Run("ErrVerificationToken", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		_, _, err := b.svc.ResetPassword(t.Context(), b.verificationToken(t, u), newPassword, audit.Actor{})
		checkSame(t, err, badToken)
	})
	t.Run("ErrNoAccount", func(t *testing.T) {
		off, _, _ := b.signUp(t, "off-"+emailFor(t))
		b.disable(t, off.ID)
		for _, email := range []string{"nobody@example.com", off.Email, "not an email"} {
			if _, token, err := b.svc.PasswordResetToken(t.Context(), email, audit.Actor{}); errs.CodeOf(err) != errs.NotFound || token != "" {
				t.Errorf("PasswordResetToken(%q) = %q, %v; want not_found", email, token, err)
			}
		}
	})
	t.Run("ErrDisabledAfterRequest", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.resetToken(t, u.Email)
		b.disable(t, u.ID)
		_, _, err := b.svc.ResetPassword(t.Context(), token, newPassword, audit.Actor{})
		checkSame(t, err, badToken)
	})
	t.Run("OKExternalAccount", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		if _, err := b.st.Pool.Exec(t.Context(), "UPDATE users SET password_hash = NULL WHERE id = $1", u.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.svc.ResetPassword(t.Context(), b.resetToken(t, u.Email), newPassword, audit.Actor{}); err != nil {
			t.Fatalf("ResetPassword: %v", err)
		}
		if !b.canLogin(t, u.Email, newPassword) {
			t.Error("an account without a password could not set one by reset")
		}
	})
	t.Run("OneOfConcurrentUses", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.resetToken(t, u.Email)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins []string
		)
		for i := range 4 {
			wg.Go(func() {
				pw := newPassword + strings.Repeat("!", i+1)
				_, _, err := b.svc.ResetPassword(t.Context(), token, pw, audit.Actor{})
				if err != nil && errs.CodeOf(err) != errs.Invalid {
					t.Errorf("ResetPassword: %v", err)
				}
				if err == nil {
					mu.Lock()
					wins = append(wins, pw)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(wins) != 1 || !b.canLogin(t, u.Email, wins[0]) {
			t.Fatalf("%d concurrent resets won (%q), want exactly one whose password works", len(wins), wins)
		}
	})
	// Last: moving the clock ages every token issued above.
	t.Run("ErrExpired", func(t *testing.T) {
		u, _, _ := b.signUp(t, emailFor(t))
		token := b.resetToken(t, u.Email)
		b.clock.Advance(time.Hour)
		_, _, err := b.svc.ResetPassword(t.Context(), token, newPassword, audit.Actor{})
		checkSame(t, err, badToken)
	})
}

func TestChangePassword(t *testing.T) {
	b := setup(t)
	wrong := &errs.Error{Code: errs.PermissionDenied, Message: "The current password is incorrect."}

	t.Run("OK", func(t *testing.T) {
		u, here, _ := b.signUp(t, emailFor(t))
		other, _ := b.login(t, u.Email)
		b.hashes.Store(0)
		got, revoked, err := b.svc.ChangePassword(t.Context(), u.ID, here.ID, goodPassword, newPassword, audit.Actor{})
		if err != nil {
			t.Fatalf("ChangePassword: %v", err)
		}
		if got.ID != u.ID || got.Email != u.Email {
			t.Errorf("ChangePassword user = %+v, want %+v", got, u)
		}
		if n := b.hashes.Load(); n != 2 {
			t.Errorf("argon2id ran %d times, want 2 (verify the current password, hash the new one)", n)
		}
		if !slices.Equal(revoked, []uuid.UUID{other.ID}) {
			t.Errorf("revoked %v, want only the other session %s", revoked, other.ID)
		}
		if !b.active(t, here.ID) || b.active(t, other.ID) {
			t.Error("want the session that changed the password kept and the other one revoked")
		}
		if b.canLogin(t, u.Email, goodPassword) || !b.canLogin(t, u.Email, newPassword) {
			t.Error("after the change, the old password should fail and the new one work")
		}
	})

	u, here, _ := b.signUp(t, emailFor(t))
	other, _ := b.login(t, u.Email)
	external, externalSession, _ := b.signUp(t, "external@example.com")
	if _, err := b.st.Pool.Exec(t.Context(), "UPDATE users SET password_hash = NULL WHERE id = $1", external.ID); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		user     account.User
		session  uuid.UUID
		current  string
		next     string
		want     *errs.Error // exact, or nil to check the pointer
		pointers []string
	}{
		{"ErrWrongCurrent", u, here.ID, goodPassword + "!", newPassword, wrong, nil},
		{"ErrEmptyCurrent", u, here.ID, "", newPassword, wrong, nil},
		{"ErrNoPassword", external, externalSession.ID, "", newPassword, wrong, nil},
		{"ErrWeakNew", u, here.ID, goodPassword, "password123", nil, []string{"/new_password"}},
		{"ErrNewEqualsCurrent", u, here.ID, goodPassword, goodPassword, nil, []string{"/new_password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.hashes.Store(0)
			_, _, err := b.svc.ChangePassword(t.Context(), tt.user.ID, tt.session, tt.current, tt.next, audit.Actor{})
			if tt.want != nil {
				checkSame(t, err, tt.want)
				// A missing password costs what a wrong one does.
				if n := b.hashes.Load(); n != 1 {
					t.Errorf("argon2id ran %d times, want 1", n)
				}
			} else {
				checkInvalid(t, err, tt.pointers)
			}
			if !b.active(t, here.ID) || !b.active(t, other.ID) || !b.canLogin(t, u.Email, goodPassword) {
				t.Error("a refused change altered the account")
			}
		})
	}
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, _, err := b.svc.ChangePassword(t.Context(), uuid.New(), uuid.New(), goodPassword, newPassword, audit.Actor{}); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("error = %v, want not_found", err)
		}
	})
}
