package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
)

func TestLoginRateLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.signUp(t, "erin@example.com")
	attempt := func(email string) *http.Response {
		return b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": "wrong password!"}, nil)
	}
	// The per-account policy allows 10 attempts per 15 minutes.
	for i := range 10 {
		res := attempt("erin@example.com")
		if res.StatusCode != 401 {
			t.Fatalf("attempt %d: %d", i+1, res.StatusCode)
		}
		if !strings.HasPrefix(res.Header.Get("RateLimit-Policy"), `"login-`) || !strings.Contains(res.Header.Get("RateLimit"), ";r=") {
			t.Fatalf("attempt %d: headers %v", i+1, res.Header)
		}
	}
	res := attempt("ＥＲＩＮ@example.com") // the same account, however it is spelt (case, full width)
	if res.StatusCode != 429 {
		t.Fatalf("11th attempt: %d", res.StatusCode)
	}
	retry, err := strconv.Atoi(res.Header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 15*60 {
		t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
	}
	if p := decodeProblem(t, res); p.Code != api.ErrorCode(errs.RateLimited) || !strings.Contains(res.Header.Get("RateLimit-Policy"), `"login-account";q=10;w=900`) {
		t.Errorf("problem %+v, policy %q", p, res.Header.Get("RateLimit-Policy"))
	}
	// Another account from the same address is still let through (the IP budget is larger).
	if res := attempt("frank@example.com"); res.StatusCode != 401 {
		t.Errorf("another account: %d", res.StatusCode)
	}
	// Even the right password waits: the limit is on attempts, not failures.
	if res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "erin@example.com", "password": testPassword}, nil); res.StatusCode != 429 {
		t.Errorf("right password while limited: %d", res.StatusCode)
	}
}

// TestRateLimiterFailsOpen: with Redis down, requests pass (and the outage is logged).
func TestRateLimiterFailsOpen(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dead := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = dead.Close() })
	b.srv.limits = &rateLimiter{limiter: redis_rate.NewLimiter(dead), ks: b.srv.limits.ks}
	req := jsonRequest("POST", "/v1/auth/login", `{"email":"x@example.com","password":"whatever12"}`)
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if rec.Code != 401 || rec.Header().Get("RateLimit") != "" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	if !strings.Contains(b.logs.String(), "rate limiter unavailable") {
		t.Error("the limiter outage was not logged")
	}
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var err error
	b.srv.trustedProxies, err = config.ParsePrefixes("10.0.0.0/8, 192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote, xff, want string
	}{
		{"OKDirect", "203.0.113.7:5000", "", "203.0.113.7"},
		{"OKDirectIgnoresForgedHeader", "203.0.113.7:5000", "1.2.3.4", "203.0.113.7"},
		{"OKBehindProxy", "10.1.2.3:443", "198.51.100.9", "198.51.100.9"},
		{"OKClientForgedLeftEntries", "10.1.2.3:443", "1.2.3.4, 198.51.100.9", "198.51.100.9"},
		{"OKTwoTrustedHops", "192.0.2.1:443", "198.51.100.9, 10.9.9.9", "198.51.100.9"},
		{"OKGarbageFallsBackToProxy", "10.1.2.3:443", "not-an-ip", "10.1.2.3"},
		{"OKOnlyTrustedHops", "10.1.2.3:443", "10.0.0.1", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/health", nil)
			req.RemoteAddr = tt.remote
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			if got := b.srv.clientIP(req); got != tt.want {
				t.Errorf("clientIP = %s, want %s", got, tt.want)
			}
		})
	}
}
