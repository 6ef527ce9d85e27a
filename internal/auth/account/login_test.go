package account_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

func TestLogin(t *testing.T) {
	b := setup(t)
	ada, _, _ := b.signUp(t, "ada@example.com")
	off, _, _ := b.signUp(t, "off@example.com")
	b.disable(t, off.ID)
	external, _, _ := b.signUp(t, "external@example.com")
	if _, err := b.st.Pool.Exec(t.Context(), "UPDATE users SET password_hash = NULL WHERE id = $1", external.ID); err != nil {
		t.Fatalf("make external account: %v", err)
	}
	broken, _, _ := b.signUp(t, "broken@example.com")
	if _, err := b.st.Pool.Exec(t.Context(), "UPDATE users SET password_hash = '$argon2id$v=19$garbage' WHERE id = $1", broken.ID); err != nil {
		t.Fatalf("corrupt hash: %v", err)
	}

	refused := &errs.Error{Code: errs.Unauthenticated, Message: "invalid email or password"}
	tests := []struct {
		name     string
		email    string
		password string
		wantErr  bool
	}{
		{"OK", "ada@example.com", goodPassword, false},
		{"OKEmailCaseAndSpace", " ADA@Example.com ", goodPassword, false},
		{"OKEmailFullWidth", "ａｄａ＠ｅｘａｍｐｌｅ．ｃｏｍ", goodPassword, false},
		{"ErrWrongPassword", "ada@example.com", goodPassword + "!", true},
		{"ErrPasswordCase", "ada@example.com", strings.ToUpper(goodPassword), true},
		{"ErrUnknownEmail", "nobody@example.com", goodPassword, true},
		{"ErrDisabled", "off@example.com", goodPassword, true},
		{"ErrNoPassword", "external@example.com", goodPassword, true},
		{"ErrEmptyPassword", "ada@example.com", "", true},
		{"ErrCorruptHash", "broken@example.com", goodPassword, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sessions := b.count(t, "sessions")
			b.hashes.Store(0)
			u, s, token, err := b.svc.Login(t.Context(), tt.email, tt.password, account.Client{UserAgent: "curl/8.5.0", IP: "198.51.100.7"})
			// Every outcome costs exactly one argon2id run: an unknown email may not
			// answer faster than a wrong password.
			if n := b.hashes.Load(); n != 1 {
				t.Errorf("argon2id ran %d times, want 1", n)
			}
			if tt.wantErr {
				checkSame(t, err, refused)
				if n := b.count(t, "sessions"); n != sessions {
					t.Errorf("a refused login left %d sessions, want %d", n, sessions)
				}
				return
			}
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if u.ID != ada.ID || s.UserID != ada.ID || s.Name != "curl" || s.IP != "198.51.100.7" || !strings.HasPrefix(token, account.RefreshTokenPrefix) {
				t.Errorf("Login = %+v, %+v, %q", u, s, token)
			}
			if !b.active(t, s.ID) {
				t.Error("the new session is not active")
			}
		})
	}
	if !strings.Contains(b.logs.String(), "unreadable password hash") {
		t.Error("the corrupt hash was not logged")
	}
	// An address no account can have is refused by its shape, naming the field, before
	// any work: the answer tells nothing about accounts.
	for name, email := range map[string]string{
		"ErrMalformedEmail": "not an email",
		"ErrBidiControl":    "ada\u202e@example.com",
		"ErrLookalike":      "\u0430da@example.com", // Cyrillic а
	} {
		t.Run(name, func(t *testing.T) {
			b.hashes.Store(0)
			_, _, _, err := b.svc.Login(t.Context(), email, goodPassword, account.Client{})
			var e *errs.Error
			if !errors.As(err, &e) || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Pointer != "/email" {
				t.Fatalf("Login(%q) = %v, want invalid_request naming /email", email, err)
			}
			if n := b.hashes.Load(); n != 0 {
				t.Errorf("argon2id ran %d times for a refused address, want 0", n)
			}
		})
	}
}

// TestLoginParametersChange checks that a hash made with other parameters still verifies,
// with the parameters written in it, and is replaced by one with the configured ones.
func TestLoginParametersChange(t *testing.T) {
	b := setup(t)
	u, _, _ := b.signUp(t, "ada@example.com")
	stored := func() string {
		t.Helper()
		var phc string
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT password_hash FROM users WHERE id = $1", u.ID).Scan(&phc); err != nil {
			t.Fatalf("read hash: %v", err)
		}
		return phc
	}
	before := stored()

	stronger := testConfig()
	stronger.Argon2Memory, stronger.Argon2Time, stronger.Argon2Threads = 12*1024, 2, 2
	if _, _, _, err := b.service(stronger).Login(t.Context(), "ada@example.com", goodPassword, account.Client{}); err != nil {
		t.Fatalf("Login with new parameters: %v", err)
	}
	after := stored()
	if !strings.HasPrefix(after, "$argon2id$v=19$m=12288,t=2,p=2$") || after == before {
		t.Errorf("hash after login = %q, want it rehashed with m=12288,t=2,p=2 (was %q)", after, before)
	}

	b.hashes.Store(0)
	if _, _, _, err := b.service(stronger).Login(t.Context(), "ada@example.com", goodPassword, account.Client{}); err != nil {
		t.Fatalf("Login after rehash: %v", err)
	}
	if n := b.hashes.Load(); n != 1 {
		t.Errorf("argon2id ran %d times on a current hash, want 1 (no rehash)", n)
	}
	if _, _, _, err := b.service(stronger).Login(t.Context(), "ada@example.com", "wrong password", account.Client{}); errs.CodeOf(err) != errs.Unauthenticated {
		t.Errorf("wrong password after rehash: error = %v, want unauthenticated", err)
	}
}

// TestLoginRacingDisable: a disable that commits while the password is being checked
// either makes the login fail or sees (and so revokes) the session it started.
func TestLoginRacingDisable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	u, _, _ := b.signUp(t, "racer@example.com")
	tx, err := b.st.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The disable holds the row: the login's session cannot start until it ends.
	if _, err := tx.Exec(ctx, "UPDATE users SET disabled_at = now() WHERE id = $1", u.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, _, err := b.svc.Login(ctx, "racer@example.com", goodPassword, account.Client{})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // long enough for the login to reach the lock
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; errs.CodeOf(err) != errs.Unauthenticated {
		t.Fatalf("login racing a disable: %v", err)
	}
	var active int
	if err := b.st.Pool.QueryRow(ctx, "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL", u.ID).Scan(&active); err != nil {
		t.Fatal(err)
	}
	if active != 1 { // the sign-up's own session; the disable path revokes it separately
		t.Errorf("%d active sessions, want only the sign-up's", active)
	}
}
