package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/store"
)

// TestLoginFailedAuditSurvivesHangUp is the client that hangs up during a failed login
// (curl -m 0.08): the request's context is cancelled while the password is being checked,
// and the auth.login_failed event must be in the audit log all the same.
func TestLoginFailedAuditSurvivesHangUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// A hash made with costly parameters, so the check outlasts the client's patience;
	// verification reads the parameters from the stored hash.
	slow := account.New(store.New(b.pool), account.Config{
		PasswordMinLength: 10, Argon2Memory: 32 * 1024, Argon2Time: 8, Argon2Threads: 1, SessionTTL: time.Hour,
	}, slog.New(slog.DiscardHandler), time.Now)
	const email = "hangup@example.com"
	if _, _, _, err := slow.SignUp(t.Context(), email, testPassword, "Ada", account.Client{}); err != nil {
		t.Fatal(err)
	}
	for patience := 20 * time.Millisecond; ; patience *= 2 {
		if patience > 2*time.Second {
			t.Fatal("the client never hung up during the password check")
		}
		ctx, cancel := context.WithCancel(t.Context())
		req := jsonRequest("POST", "/v1/auth/login", `{"email":"`+email+`","password":"not the password"}`).WithContext(ctx)
		hungUp := make(chan time.Time, 1)
		timer := time.AfterFunc(patience, func() { hungUp <- time.Now(); cancel() })
		res := b.do(t, req)
		timer.Stop()
		cancel()
		var at time.Time
		select {
		case at = <-hungUp:
		default:
			t.Fatalf("the login answered %d within %s: the password check is too fast for this test", res.StatusCode, patience)
		}
		if res.StatusCode != 401 {
			continue // the client left before the email was looked up: no attempt was made
		}
		var n int
		var first time.Time
		err := b.pool.QueryRow(t.Context(), `SELECT count(*), coalesce(min(created_at), 'epoch') FROM audit_events
			WHERE action = 'auth.login_failed' AND target_type = 'email' AND target_id = $1`, email).Scan(&n, &first)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("auth.login_failed events after a hang-up = %d, want 1", n)
		}
		if !first.After(at) {
			t.Fatalf("the event was written at %s, before the client hung up at %s: the test did not hang up in time", first, at)
		}
		if logs := b.logs.String(); strings.Contains(logs, "audit record failed") {
			t.Fatalf("audit write failed: %s", logs)
		}
		return
	}
}
