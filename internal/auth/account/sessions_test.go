package account_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

// refused is the one error of every refused refresh.
var refused = &errs.Error{Code: errs.Unauthenticated, Message: "invalid refresh token"}

// firefox is a Firefox on Windows user agent.
const firefox = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"

// TestRefresh shares one database: each case signs up a user of its own, and moving the
// clock only ages the sessions of cases that have finished.
func TestRefresh(t *testing.T) {
	b := setup(t)
	grace := testConfig().RefreshReuseGrace

	t.Run("OKRotates", func(t *testing.T) {
		u, s, t0 := b.signUp(t, emailFor(t))
		b.clock.Advance(time.Minute)
		gotUser, gotSession, t1, err := b.svc.Refresh(t.Context(), t0, account.Client{UserAgent: firefox, IP: "203.0.113.9"})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		if t1 == t0 || !strings.HasPrefix(t1, account.RefreshTokenPrefix) {
			t.Errorf("new token %q: want a fresh kiln_rt_ token", t1)
		}
		if gotUser != u {
			t.Errorf("user = %+v, want %+v", gotUser, u)
		}
		want := s
		want.LastSeenAt, want.UserAgent, want.IP = b.clock.Now(), firefox, "203.0.113.9"
		if gotSession != want {
			t.Errorf("session = %+v, want %+v (name kept, last seen, user agent and IP updated)", gotSession, want)
		}
		if _, _, _, err := b.svc.Refresh(t.Context(), t1, account.Client{}); err != nil {
			t.Fatalf("Refresh with the new token: %v", err)
		}
		if n := b.count(t, "refresh_tokens"); n != 3 {
			t.Errorf("%d refresh tokens stored, want 3", n)
		}
	})
	t.Run("ErrReuseAfterGraceRevokesSession", func(t *testing.T) {
		_, s, t0 := b.signUp(t, emailFor(t))
		_, _, t1, err := b.svc.Refresh(t.Context(), t0, account.Client{})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		b.clock.Advance(grace + time.Second)
		_, _, _, err = b.svc.Refresh(t.Context(), t0, account.Client{IP: "203.0.113.66"})
		checkSame(t, err, refused)
		if b.active(t, s.ID) {
			t.Error("the session is still active after its spent token was reused")
		}
		_, _, _, err = b.svc.Refresh(t.Context(), t1, account.Client{})
		checkSame(t, err, refused)
		if logs := b.logs.String(); !strings.Contains(logs, "refresh token reused") || !strings.Contains(logs, s.ID.String()) {
			t.Errorf("the reuse was not logged with the session id: %s", logs)
		}
	})
	t.Run("OKReuseWithinGrace", func(t *testing.T) {
		_, s, t0 := b.signUp(t, emailFor(t))
		_, _, t1, err := b.svc.Refresh(t.Context(), t0, account.Client{})
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		b.clock.Advance(grace)
		_, _, t2, err := b.svc.Refresh(t.Context(), t0, account.Client{})
		if err != nil {
			t.Fatalf("Refresh with the spent token within the grace: %v", err)
		}
		if t2 == t1 || t2 == t0 {
			t.Error("the reuse within the grace did not get a token of its own")
		}
		for i, tok := range []string{t1, t2} {
			if _, _, _, err := b.svc.Refresh(t.Context(), tok, account.Client{}); err != nil {
				t.Errorf("Refresh with token %d: %v", i+1, err)
			}
		}
		if !b.active(t, s.ID) {
			t.Error("the session was revoked")
		}
	})
	t.Run("ErrGraceCountsFromFirstUse", func(t *testing.T) {
		_, s, t0 := b.signUp(t, emailFor(t))
		if _, _, _, err := b.svc.Refresh(t.Context(), t0, account.Client{}); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
		b.clock.Advance(grace - time.Second)
		if _, _, _, err := b.svc.Refresh(t.Context(), t0, account.Client{}); err != nil {
			t.Fatalf("Refresh within the grace: %v", err)
		}
		b.clock.Advance(2 * time.Second) // grace+1s after the first use, 2s after the second
		_, _, _, err := b.svc.Refresh(t.Context(), t0, account.Client{})
		checkSame(t, err, refused)
		if b.active(t, s.ID) {
			t.Error("a reuse past the grace of the first use did not revoke the session")
		}
	})

	// Every other refusal: the same error, and the session, if any, is left alone.
	for _, tt := range []struct {
		name    string
		prepare func(t *testing.T, b *bundle, u account.User, s account.Session, token string) string
	}{
		{"ErrUnknownToken", func(*testing.T, *bundle, account.User, account.Session, string) string {
			return account.RefreshTokenPrefix + strings.Repeat("A", 43)
		}},
		{"ErrMalformedToken", func(_ *testing.T, _ *bundle, _ account.User, _ account.Session, token string) string {
			return token[:len(token)-1]
		}},
		{"ErrWrongPrefix", func(_ *testing.T, _ *bundle, _ account.User, _ account.Session, token string) string {
			return "kiln_xx_" + strings.TrimPrefix(token, account.RefreshTokenPrefix)
		}},
		{"ErrEmpty", func(*testing.T, *bundle, account.User, account.Session, string) string { return "" }},
		{"ErrExpired", func(_ *testing.T, b *bundle, _ account.User, _ account.Session, token string) string {
			b.clock.Advance(testConfig().SessionTTL)
			return token
		}},
		{"ErrRevokedSession", func(t *testing.T, b *bundle, u account.User, s account.Session, token string) string {
			if err := b.svc.RevokeSession(t.Context(), u.ID, s.ID); err != nil {
				t.Fatalf("RevokeSession: %v", err)
			}
			return token
		}},
		{"ErrDisabledUser", func(t *testing.T, b *bundle, u account.User, _ account.Session, token string) string {
			b.disable(t, u.ID)
			return token
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, s, token := b.signUp(t, emailFor(t))
			presented := tt.prepare(t, b, u, s, token)
			tokens := b.count(t, "refresh_tokens")
			_, _, _, err := b.svc.Refresh(t.Context(), presented, account.Client{})
			checkSame(t, err, refused)
			if n := b.count(t, "refresh_tokens"); n != tokens {
				t.Errorf("a refused refresh stored a token: %d, want %d", n, tokens)
			}
			var revoked bool
			if err := b.st.Pool.QueryRow(t.Context(), "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1", s.ID).Scan(&revoked); err != nil {
				t.Fatalf("read session: %v", err)
			}
			if revoked != (tt.name == "ErrRevokedSession") {
				t.Errorf("session revoked = %v after the refusal", revoked)
			}
		})
	}
}

// TestRefreshConcurrent presents one token ten times at once, as a client with several
// tabs would: the refreshes are serialised, all within the grace, so none may revoke the
// session and none may fail with anything but the one unauthenticated error.
func TestRefreshConcurrent(t *testing.T) {
	b := setup(t)
	_, s, token := b.signUp(t, "ada@example.com")

	const n = 10
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		tokens  = make([]string, n)
		results = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			_, _, tokens[i], results[i] = b.svc.Refresh(t.Context(), token, account.Client{})
		})
	}
	close(start)
	wg.Wait()

	var issued []string
	for i, err := range results {
		if err != nil {
			checkSame(t, err, refused)
			continue
		}
		issued = append(issued, tokens[i])
	}
	// The grace covers them all, so in fact every one succeeds.
	if len(issued) != n {
		t.Errorf("%d of %d concurrent refreshes succeeded, want all", len(issued), n)
	}
	slices.Sort(issued)
	if len(slices.Compact(issued)) != len(issued) {
		t.Error("two concurrent refreshes got the same token")
	}
	if !b.active(t, s.ID) {
		t.Fatal("concurrent refreshes within the grace revoked the session")
	}
	for _, tok := range issued {
		if _, _, _, err := b.svc.Refresh(t.Context(), tok, account.Client{}); err != nil {
			t.Errorf("Refresh with a token from a concurrent refresh: %v", err)
		}
	}
}

func TestRevokeSession(t *testing.T) {
	b := setup(t)
	ada, first, firstToken := b.signUp(t, "ada@example.com")
	second, secondToken := b.login(t, "ada@example.com")
	bob, bobSession, _ := b.signUp(t, "bob@example.com")

	t.Run("ErrNotFoundOtherUsersSession", func(t *testing.T) {
		if err := b.svc.RevokeSession(t.Context(), bob.ID, first.ID); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("RevokeSession(bob, ada's session) error = %v, want not_found", err)
		}
		if !b.active(t, first.ID) {
			t.Error("another user revoked ada's session")
		}
	})
	t.Run("ErrNotFoundUnknown", func(t *testing.T) {
		if err := b.svc.RevokeSession(t.Context(), ada.ID, uuid.New()); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("RevokeSession(unknown) error = %v, want not_found", err)
		}
	})
	t.Run("OK", func(t *testing.T) {
		if err := b.svc.RevokeSession(t.Context(), ada.ID, first.ID); err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		if b.active(t, first.ID) {
			t.Error("the revoked session is active")
		}
		_, _, _, err := b.svc.Refresh(t.Context(), firstToken, account.Client{})
		checkSame(t, err, refused)
		if !b.active(t, second.ID) {
			t.Error("revoking one session revoked another")
		}
		if _, _, _, err := b.svc.Refresh(t.Context(), secondToken, account.Client{}); err != nil {
			t.Errorf("Refresh of the other session: %v", err)
		}
	})
	t.Run("ErrNotFoundAlreadyRevoked", func(t *testing.T) {
		if err := b.svc.RevokeSession(t.Context(), ada.ID, first.ID); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("second RevokeSession error = %v, want not_found", err)
		}
	})
	if !b.active(t, bobSession.ID) {
		t.Error("bob's session was revoked")
	}
}

func TestRevokeAllSessions(t *testing.T) {
	b := setup(t)
	ada, s1, t1 := b.signUp(t, "ada@example.com")
	s2, t2 := b.login(t, "ada@example.com")
	s3, t3 := b.login(t, "ada@example.com")
	_, bobSession, _ := b.signUp(t, "bob@example.com")

	t.Run("OK", func(t *testing.T) {
		ids, err := b.svc.RevokeAllSessions(t.Context(), ada.ID)
		if err != nil {
			t.Fatalf("RevokeAllSessions: %v", err)
		}
		want := []uuid.UUID{s1.ID, s2.ID, s3.ID}
		slices.SortFunc(ids, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		slices.SortFunc(want, func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
		if !slices.Equal(ids, want) {
			t.Errorf("revoked %v, want %v", ids, want)
		}
		for _, tok := range []string{t1, t2, t3} {
			_, _, _, err := b.svc.Refresh(t.Context(), tok, account.Client{})
			checkSame(t, err, refused)
		}
		if got, err := b.svc.Sessions(t.Context(), ada.ID, 100, nil); err != nil || len(got) != 0 {
			t.Errorf("Sessions after revoking all = %v, %v; want none", got, err)
		}
		if !b.active(t, bobSession.ID) {
			t.Error("another user's session was revoked")
		}
	})
	t.Run("OKNoneLeft", func(t *testing.T) {
		ids, err := b.svc.RevokeAllSessions(t.Context(), ada.ID)
		if err != nil || len(ids) != 0 {
			t.Errorf("second RevokeAllSessions = %v, %v; want none", ids, err)
		}
	})
}

func TestSessions(t *testing.T) {
	b := setup(t)
	ada, s1, _ := b.signUp(t, "ada@example.com")
	b.clock.Advance(time.Hour)
	s2, _ := b.login(t, "ada@example.com")
	b.clock.Advance(time.Hour)
	s3, _ := b.login(t, "ada@example.com")
	b.signUp(t, "bob@example.com")

	t.Run("OKNewestFirst", func(t *testing.T) {
		got, err := b.svc.Sessions(t.Context(), ada.ID, 100, nil)
		if err != nil {
			t.Fatalf("Sessions: %v", err)
		}
		if want := []account.Session{s3, s2, s1}; !slices.Equal(got, want) {
			t.Errorf("Sessions = %+v, want %+v", got, want)
		}
	})
	t.Run("OKWithoutRevoked", func(t *testing.T) {
		if err := b.svc.RevokeSession(t.Context(), ada.ID, s2.ID); err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
		got, err := b.svc.Sessions(t.Context(), ada.ID, 100, nil)
		if err != nil {
			t.Fatalf("Sessions: %v", err)
		}
		if want := []account.Session{s3, s1}; !slices.Equal(got, want) {
			t.Errorf("Sessions = %+v, want %+v", got, want)
		}
	})
	t.Run("OKWithoutExpired", func(t *testing.T) {
		b.clock.Advance(testConfig().SessionTTL - 2*time.Hour) // s1 expires now, s3 in 2 h
		got, err := b.svc.Sessions(t.Context(), ada.ID, 100, nil)
		if err != nil {
			t.Fatalf("Sessions: %v", err)
		}
		if want := []account.Session{s3}; !slices.Equal(got, want) {
			t.Errorf("Sessions = %+v, want %+v", got, want)
		}
		if b.active(t, s1.ID) {
			t.Error("an expired session is active")
		}
		if !b.active(t, s3.ID) {
			t.Error("an unexpired session is not active")
		}
	})
	t.Run("OKInactiveWhenUserDisabled", func(t *testing.T) {
		b.disable(t, ada.ID)
		if b.active(t, s3.ID) {
			t.Error("a disabled user's session is active")
		}
	})
	t.Run("OKUnknownInactive", func(t *testing.T) {
		if b.active(t, uuid.New()) {
			t.Error("an unknown session is active")
		}
	})
}

func TestDescribeUserAgent(t *testing.T) {
	tests := []struct{ name, ua, want string }{
		{"ChromeOnMacOS", chrome, "Chrome on macOS"},
		{"FirefoxOnWindows", firefox, "Firefox on Windows"},
		{"SafariOnIOS", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1", "Safari on iOS"},
		{"ChromeOnAndroid", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36", "Chrome on Android"},
		{"EdgeOnWindows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0", "Edge on Windows"},
		{"FirefoxOnLinux", "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", "Firefox on Linux"},
		{"ChromeOnChromeOS", "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36", "Chrome on ChromeOS"},
		{"Curl", "curl/8.5.0", "curl"},
		{"SDK", "kiln-sdk-go/0.3.1 (go1.26)", "kiln-sdk-go"},
		{"Empty", "", "Unknown device"},
		{"ControlCharacters", "\x00\x01", "Unknown device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := account.DescribeUserAgent(tt.ua); got != tt.want {
				t.Errorf("DescribeUserAgent(%q) = %q, want %q", tt.ua, got, tt.want)
			}
		})
	}
}
