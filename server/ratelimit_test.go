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
	res := attempt("ERIN@example.com") // the same account, however it is spelt
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
