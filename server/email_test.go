package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
)

const newTestPassword = "violet pancake orbit 42"

// tokenLink finds the link of an emailed token: <link base>/<page>?token=<prefix + 43>.
var tokenLink = regexp.MustCompile(`https://app\.example\.com/(verify-email|reset-password)\?token=(kiln_(?:ve|pr)_[A-Za-z0-9_-]{43})\n`)

// waitMail waits until addr has been sent n emails and returns the n-th.
func (b *bundle) waitMail(t testing.TB, addr string, n int) notify.Message {
	t.Helper()
	waitFor(t, "email to "+addr, func() bool { return len(b.mail.To(addr)) >= n })
	return b.mail.To(addr)[n-1]
}

// emailedToken waits for the n-th email to addr and returns the token its link carries to
// page.
func (b *bundle) emailedToken(t testing.TB, addr string, n int, page string) string {
	t.Helper()
	msg := b.waitMail(t, addr, n)
	m := tokenLink.FindStringSubmatch(msg.Text)
	if m == nil || m[1] != page {
		t.Fatalf("email %q has no %s link:\n%s", msg.Subject, page, msg.Text)
	}
	return m[2]
}

// auditCount counts the audit events with action about target.
func (b *bundle) auditCount(t testing.TB, action, targetID string) int {
	t.Helper()
	var n int
	err := b.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM audit_events WHERE action = $1 AND target_id = $2", action, targetID).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// me returns the caller's GET /v1/me status and body.
func (b *bundle) me(t testing.TB, access string) (int, api.Me) {
	t.Helper()
	var me api.Me
	res := b.call(t, "GET", "/v1/me", access, nil, &me)
	return res.StatusCode, me
}

// login signs in and returns the status and tokens.
func (b *bundle) login(t testing.TB, email, password string) (int, api.TokenPair) {
	t.Helper()
	var pair api.TokenPair
	res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": password}, &pair)
	return res.StatusCode, pair
}

// refreshStatus is the status of a refresh with token.
func (b *bundle) refreshStatus(t testing.TB, token string) int {
	t.Helper()
	return b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": token}, nil).StatusCode
}

// invalidField checks res is a 400 invalid_request naming pointer, and returns the problem
// with its per-request fields blanked, as JSON, for comparing bodies.
func invalidField(t testing.TB, code int, p api.Problem, pointer string) string {
	t.Helper()
	if code != 400 || p.Code != api.ErrorCode(errs.Invalid) || p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Pointer != pointer {
		t.Fatalf("%d %+v, want 400 invalid_request naming %s", code, p, pointer)
	}
	p.RequestId, p.Instance = "", nil
	raw, _ := json.Marshal(p)
	return string(raw)
}

// refusedToken posts body to path and checks the answer is the one invalid-token problem.
func (b *bundle) refusedToken(t testing.TB, path string, body map[string]string) string {
	t.Helper()
	res := b.call(t, "POST", path, "", body, nil)
	p := decodeProblem(t, res)
	got := invalidField(t, res.StatusCode, p, "/token")
	if p.Detail == nil || *p.Detail != "invalid or expired token" {
		t.Errorf("detail %v, want %q", p.Detail, "invalid or expired token")
	}
	return got
}

func TestEmailVerification(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.signUp(t, "ada@example.com")
	if _, me := b.me(t, pair.AccessToken); me.EmailVerified {
		t.Fatal("a new account is verified")
	}

	res := b.call(t, "POST", "/v1/auth/verify-email/request", pair.AccessToken, nil, nil)
	if res.StatusCode != 202 {
		t.Fatalf("request verification: %d %s", res.StatusCode, readAll(res))
	}
	msg := b.waitMail(t, "ada@example.com", 1)
	if msg.Subject != "Verify your email address" || !strings.Contains(msg.Text, "48 hours") {
		t.Errorf("email %+v", msg)
	}
	token := b.emailedToken(t, "ada@example.com", 1, "verify-email")

	if res := b.call(t, "POST", "/v1/auth/verify-email", "", map[string]string{"token": token}, nil); res.StatusCode != 204 {
		t.Fatalf("verify: %d %s", res.StatusCode, readAll(res))
	}
	if code, me := b.me(t, pair.AccessToken); code != 200 || !me.EmailVerified {
		t.Fatalf("me after verification: %d, email_verified %v", code, me.EmailVerified)
	}
	if n := b.auditCount(t, "auth.email_verify", mustMe(t, b, pair.AccessToken).Id.String()); n != 1 {
		t.Errorf("%d auth.email_verify events, want 1", n)
	}

	t.Run("ErrReused", func(t *testing.T) {
		b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": token})
	})
	t.Run("NothingToSendOnceVerified", func(t *testing.T) {
		if res := b.call(t, "POST", "/v1/auth/verify-email/request", pair.AccessToken, nil, nil); res.StatusCode != 202 {
			t.Fatalf("request verification: %d", res.StatusCode)
		}
		// No email is queued when there is nothing to verify, so the count is final.
		if n := len(b.mail.To("ada@example.com")); n != 1 {
			t.Errorf("%d emails, want still 1", n)
		}
	})
	t.Run("ErrUnauthenticated", func(t *testing.T) {
		if res := b.call(t, "POST", "/v1/auth/verify-email/request", "", nil, nil); res.StatusCode != 401 {
			t.Fatalf("status %d, want 401", res.StatusCode)
		}
	})
}

// TestEmailTokenRefusals checks that every unusable token gets the very same answer.
func TestEmailTokenRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t) // the reset request is a job
	bob := b.signUp(t, "bob@example.com")
	request := func() {
		t.Helper()
		if res := b.call(t, "POST", "/v1/auth/verify-email/request", bob.AccessToken, nil, nil); res.StatusCode != 202 {
			t.Fatalf("request verification: %d", res.StatusCode)
		}
	}
	request()
	replaced := b.emailedToken(t, "bob@example.com", 1, "verify-email")
	request()
	expired := b.emailedToken(t, "bob@example.com", 2, "verify-email")
	if _, err := b.pool.Exec(t.Context(), "UPDATE email_tokens SET expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	if res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "bob@example.com"}, nil); res.StatusCode != 202 {
		t.Fatalf("request reset: %d", res.StatusCode)
	}
	reset := b.emailedToken(t, "bob@example.com", 3, "reset-password")

	bodies := map[string]string{
		"Replaced":        b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": replaced}),
		"Expired":         b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": expired}),
		"ResetToken":      b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": reset}),
		"Garbage":         b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": "nope"}),
		"Unknown":         b.refusedToken(t, "/v1/auth/verify-email", map[string]string{"token": "kiln_ve_" + strings.Repeat("A", 43)}),
		"ResetExpired":    b.refusedToken(t, "/v1/auth/password-reset", map[string]string{"token": expired, "password": newTestPassword}),
		"ResetGarbage":    b.refusedToken(t, "/v1/auth/password-reset", map[string]string{"token": "kiln_pr_x", "password": newTestPassword}),
		"ResetWeakAndBad": b.refusedToken(t, "/v1/auth/password-reset", map[string]string{"token": "kiln_pr_x", "password": "weak"}),
	}
	var first string
	for name, body := range bodies {
		if first == "" {
			first = body
		}
		if body != first {
			t.Errorf("%s: body %s differs from %s", name, body, first)
		}
	}
	if _, me := b.me(t, bob.AccessToken); me.EmailVerified {
		t.Error("a refused token verified the address")
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t) // the reset request is a job
	first := b.signUp(t, "ada@example.com")
	code, second := b.login(t, "ada@example.com", testPassword)
	if code != 200 {
		t.Fatalf("login: %d", code)
	}
	adaID := mustMe(t, b, first.AccessToken).Id.String()

	res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": " ADA@Example.com "}, nil)
	if res.StatusCode != 202 {
		t.Fatalf("request reset: %d %s", res.StatusCode, readAll(res))
	}
	msg := b.waitMail(t, "ada@example.com", 1)
	if msg.Subject != "Reset your password" || !strings.Contains(msg.Text, "1 hour") {
		t.Errorf("email %+v", msg)
	}
	token := b.emailedToken(t, "ada@example.com", 1, "reset-password")

	t.Run("ErrWeakPasswordKeepsToken", func(t *testing.T) {
		for _, weak := range []string{"short", "password123", "ada-ada-ada-ada"} {
			res := b.call(t, "POST", "/v1/auth/password-reset", "", map[string]string{"token": token, "password": weak}, nil)
			invalidField(t, res.StatusCode, decodeProblem(t, res), "/password")
		}
		if code, _ := b.me(t, first.AccessToken); code != 200 {
			t.Errorf("a refused reset signed the user out: %d", code)
		}
	})

	if res := b.call(t, "POST", "/v1/auth/password-reset", "", map[string]string{"token": token, "password": newTestPassword}, nil); res.StatusCode != 204 {
		t.Fatalf("reset: %d %s", res.StatusCode, readAll(res))
	}
	for i, pair := range []api.TokenPair{first, second} {
		if code, _ := b.me(t, pair.AccessToken); code != 401 {
			t.Errorf("session %d: access token after the reset: %d, want 401", i+1, code)
		}
		if code := b.refreshStatus(t, pair.RefreshToken); code != 401 {
			t.Errorf("session %d: refresh after the reset: %d, want 401", i+1, code)
		}
	}
	if code, _ := b.login(t, "ada@example.com", testPassword); code != 401 {
		t.Errorf("login with the old password: %d, want 401", code)
	}
	code, fresh := b.login(t, "ada@example.com", newTestPassword)
	if code != 200 {
		t.Fatalf("login with the new password: %d", code)
	}
	if _, me := b.me(t, fresh.AccessToken); !me.EmailVerified {
		t.Error("a completed reset proves the address: want it verified")
	}
	if n := b.auditCount(t, "auth.password_reset", adaID); n != 1 {
		t.Errorf("%d auth.password_reset events, want 1", n)
	}
	if n := b.auditCount(t, "auth.password_reset_request", "ada@example.com"); n != 1 {
		t.Errorf("%d auth.password_reset_request events, want 1", n)
	}
	if notice := b.waitMail(t, "ada@example.com", 2); notice.Subject != "Your password was changed" {
		t.Errorf("second email %q, want the change notice", notice.Subject)
	}

	t.Run("ErrReused", func(t *testing.T) {
		b.refusedToken(t, "/v1/auth/password-reset", map[string]string{"token": token, "password": "another fine passphrase"})
	})
	t.Run("ErrReplaced", func(t *testing.T) {
		for range 2 {
			if res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "ada@example.com"}, nil); res.StatusCode != 202 {
				t.Fatalf("request reset: %d", res.StatusCode)
			}
		}
		waitFor(t, "two reset emails", func() bool { return len(b.mail.To("ada@example.com")) >= 4 })
		var tokens []string
		for _, m := range b.mail.To("ada@example.com")[2:] {
			tokens = append(tokens, tokenLink.FindStringSubmatch(m.Text)[2])
		}
		// The two requests ran concurrently: whichever token was issued last is the one that works.
		var ok int
		for _, tok := range tokens {
			res := b.call(t, "POST", "/v1/auth/password-reset", "", map[string]string{"token": tok, "password": "third fine passphrase"}, nil)
			if res.StatusCode == 204 {
				ok++
			}
		}
		if ok != 1 {
			t.Errorf("%d of 2 tokens worked, want only the newest", ok)
		}
	})
}

// TestPasswordResetUnknownEmail checks that an address without an account gets the very
// answer an account gets, and no email.
func TestPasswordResetUnknownEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t) // the reset request is a job
	b.signUp(t, "ada@example.com")

	answer := func(email string) (int, string, []string) {
		res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": email}, nil)
		var keys []string
		for k := range res.Header {
			if k != "X-Request-Id" && !strings.HasPrefix(k, "Ratelimit") {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		return res.StatusCode, readAll(res), keys
	}
	knownCode, knownBody, knownHeaders := answer("ada@example.com")
	code, body, headers := answer("nobody@example.com")
	if code != 202 || code != knownCode || body != knownBody || strings.Join(headers, ",") != strings.Join(knownHeaders, ",") {
		t.Fatalf("unknown address: %d %q %v; known address: %d %q %v", code, body, headers, knownCode, knownBody, knownHeaders)
	}
	// The request is audited once its work is done; only then is "no email" final.
	waitFor(t, "the unknown address's request to be handled", func() bool {
		return b.auditCount(t, "auth.password_reset_request", "nobody@example.com") == 1
	})
	if got := b.mail.To("nobody@example.com"); len(got) != 0 {
		t.Errorf("emails to an unknown address: %+v", got)
	}
	b.waitMail(t, "ada@example.com", 1)
	var n int
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM email_tokens").Scan(&n); err != nil || n != 1 {
		t.Errorf("%d email tokens (%v), want only ada's", n, err)
	}
}

// TestIdentityEmailsAreJobs checks that a reset request is answered once its job exists,
// before any token or email, and that the job runtime then issues the token and queues
// the email's delivery with its notify.email job.
func TestIdentityEmailsAreJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.signUp(t, "ada@example.com")
	if res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "ada@example.com"}, nil); res.StatusCode != 202 {
		t.Fatalf("request reset: %d", res.StatusCode)
	}
	count := func(query string) int {
		t.Helper()
		var n int
		if err := b.pool.QueryRow(t.Context(), query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const (
		requests   = `SELECT count(*) FROM jobs WHERE kind = 'auth.password_reset_request' AND payload->>'email' = 'ada@example.com'`
		tokens     = `SELECT count(*) FROM email_tokens`
		deliveries = `SELECT count(*) FROM email_deliveries d JOIN jobs j ON j.payload->>'delivery_id' = d.id::text
			WHERE j.kind = 'notify.email' AND d.to_address = 'ada@example.com' AND d.template = 'password_reset'`
	)
	// The answer waited for the request's job only: no token and no email yet.
	if r, tk, d := count(requests), count(tokens), count(deliveries); r != 1 || tk != 0 || d != 0 {
		t.Fatalf("after the answer: %d request jobs, %d tokens, %d deliveries; want 1, 0, 0", r, tk, d)
	}
	b.runJobs(t)
	waitFor(t, "the reset email queued by the request's job", func() bool { return count(deliveries) == 1 })
	if tk := count(tokens); tk != 1 {
		t.Errorf("%d email tokens, want 1", tk)
	}
}

// failingQueue queues an email and then fails, as a later step of the token's
// transaction would.
type failingQueue struct{ next account.EmailQueue }

func (f failingQueue) QueueEmail(ctx context.Context, q *db.Queries, now time.Time, r notify.EmailRequest) (uuid.UUID, error) {
	if _, err := f.next.QueueEmail(ctx, q, now, r); err != nil {
		return uuid.Nil, err
	}
	return uuid.Nil, errors.New("a failure after the enqueue")
}

// TestIdentityEmailRolledBack checks that a token transaction that fails after queueing
// its email leaves no token, no delivery and no job.
func TestIdentityEmailRolledBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.signUp(t, "ada@example.com")
	b.srv.auth.Accounts.UseEmails(failingQueue{next: b.srv.notify}, testLinkBase)
	if _, _, err := b.srv.auth.Accounts.PasswordResetToken(t.Context(), "ada@example.com", audit.Actor{}); err == nil {
		t.Fatal("the failing transaction succeeded")
	}
	for _, table := range []string{"email_tokens", "email_deliveries", "jobs"} {
		var n int
		if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows in %s, want none", n, table)
		}
	}
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	b := setup(t)
	here := b.signUp(t, "ada@example.com")
	code, other := b.login(t, "ada@example.com", testPassword)
	if code != 200 {
		t.Fatalf("login: %d", code)
	}
	adaID := mustMe(t, b, here.AccessToken).Id.String()
	change := func(current, next string) *httpResult {
		res := b.call(t, "POST", "/v1/me/password", here.AccessToken, map[string]string{"current_password": current, "new_password": next}, nil)
		return &httpResult{code: res.StatusCode, problem: func() api.Problem { return decodeProblem(t, res) }}
	}

	t.Run("ErrWrongCurrent", func(t *testing.T) {
		res := change("not the password", newTestPassword)
		p := res.problem()
		if res.code != 403 || p.Code != api.ErrorCode(errs.PermissionDenied) || p.Detail == nil || *p.Detail != "The current password is incorrect." {
			t.Fatalf("%d %+v, want 403 permission_denied", res.code, p)
		}
		if n := b.auditCount(t, "auth.password_change_failed", adaID); n != 1 {
			t.Errorf("%d auth.password_change_failed events, want 1", n)
		}
	})
	t.Run("ErrWeakNew", func(t *testing.T) {
		res := change(testPassword, "password123")
		invalidField(t, res.code, res.problem(), "/new_password")
	})
	t.Run("ErrSameAsCurrent", func(t *testing.T) {
		res := change(testPassword, testPassword)
		invalidField(t, res.code, res.problem(), "/new_password")
	})
	for _, pair := range []api.TokenPair{here, other} {
		if code, _ := b.me(t, pair.AccessToken); code != 200 {
			t.Fatalf("a refused change signed a session out: %d", code)
		}
	}

	if res := change(testPassword, newTestPassword); res.code != 204 {
		t.Fatalf("change: %d %+v", res.code, res.problem())
	}
	if code, _ := b.me(t, here.AccessToken); code != 200 {
		t.Errorf("the session that changed the password: %d, want 200", code)
	}
	if code := b.refreshStatus(t, here.RefreshToken); code != 200 {
		t.Errorf("refresh of the session that changed the password: %d, want 200", code)
	}
	if code, _ := b.me(t, other.AccessToken); code != 401 {
		t.Errorf("the other session's access token: %d, want 401", code)
	}
	if code := b.refreshStatus(t, other.RefreshToken); code != 401 {
		t.Errorf("the other session's refresh: %d, want 401", code)
	}
	if code, _ := b.login(t, "ada@example.com", testPassword); code != 401 {
		t.Errorf("login with the old password: %d, want 401", code)
	}
	if code, _ := b.login(t, "ada@example.com", newTestPassword); code != 200 {
		t.Errorf("login with the new password: %d, want 200", code)
	}
	if n := b.auditCount(t, "auth.password_change", adaID); n != 1 {
		t.Errorf("%d auth.password_change events, want 1", n)
	}
	if notice := b.waitMail(t, "ada@example.com", 1); notice.Subject != "Your password was changed" {
		t.Errorf("email %q, want the change notice", notice.Subject)
	}
}

// TestEmailTokensHashed checks that email_tokens holds no token in plain text, only its
// SHA-256.
func TestEmailTokensHashed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t) // the reset request is a job
	pair := b.signUp(t, "ada@example.com")
	if res := b.call(t, "POST", "/v1/auth/verify-email/request", pair.AccessToken, nil, nil); res.StatusCode != 202 {
		t.Fatalf("request verification: %d", res.StatusCode)
	}
	verify := b.emailedToken(t, "ada@example.com", 1, "verify-email")
	if res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "ada@example.com"}, nil); res.StatusCode != 202 {
		t.Fatalf("request reset: %d", res.StatusCode)
	}
	reset := b.emailedToken(t, "ada@example.com", 2, "reset-password")

	rows, err := b.pool.Query(t.Context(), "SELECT row_to_json(t)::text, encode(token_hash, 'hex') FROM email_tokens t")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var dump, hashes []string
	for rows.Next() {
		var row, hash string
		if err := rows.Scan(&row, &hash); err != nil {
			t.Fatal(err)
		}
		dump, hashes = append(dump, row), append(hashes, hash)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(dump, "\n")
	for _, token := range []string{verify, reset} {
		if secret := token[len("kiln_ve_"):]; strings.Contains(all, secret) {
			t.Errorf("email_tokens holds a token in plain text:\n%s", all)
		}
		sum := sha256.Sum256([]byte(token))
		if !strings.Contains(strings.Join(hashes, ","), hex.EncodeToString(sum[:])) {
			t.Errorf("no row holds the SHA-256 of %s…", token[:8])
		}
	}
	if len(dump) != 2 {
		t.Errorf("%d rows, want 2:\n%s", len(dump), all)
	}
}

// httpResult is a status with its problem, decoded on demand.
type httpResult struct {
	code    int
	problem func() api.Problem
}

func mustMe(t testing.TB, b *bundle, access string) api.Me {
	t.Helper()
	code, me := b.me(t, access)
	if code != 200 {
		t.Fatalf("me: %d", code)
	}
	return me
}
