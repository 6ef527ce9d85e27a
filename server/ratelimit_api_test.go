package server

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// withAPILimits sets ratelimit.api.
func withAPILimits(l config.APIRateLimits) option { return func(d *Deps) { d.APILimits = l } }

// TestAPIRateLimits: a user token is limited per user, an API key per key, both per org;
// every limited answer carries RateLimit-Policy and RateLimit for each limit that applies,
// a refusal is a 429 rate_limited with Retry-After and spends nothing, and an unreachable
// Redis lets requests through.
func TestAPIRateLimits(t *testing.T) {
	t.Parallel()
	limits := config.APIRateLimits{PerKey: config.Rate{Rate: 1, Burst: 3}, PerUser: config.Rate{Rate: 1, Burst: 2}, PerOrg: config.Rate{Rate: 1, Burst: 5}}
	// One request a minute: nothing refills while a test runs, so every count is exact.

	t.Run("ErrPerUser", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withAPILimits(limits))
		token := b.signUp(t, "user-limit@example.com").AccessToken
		for i, remaining := range []int{1, 0} {
			res := b.call(t, "GET", "/v1/me", token, nil, nil)
			if res.StatusCode != http.StatusOK || res.Header.Get("RateLimit-Policy") != `"api-user";q=1;w=60` ||
				res.Header.Get("RateLimit") != `"api-user";r=`+strconv.Itoa(remaining)+`;t=`+strconv.Itoa(60*(2-remaining)) {
				t.Fatalf("request %d: %d, RateLimit-Policy %q, RateLimit %q", i+1, res.StatusCode, res.Header.Get("RateLimit-Policy"), res.Header.Get("RateLimit"))
			}
		}
		res := b.call(t, "GET", "/v1/me", token, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != http.StatusTooManyRequests || string(p.Code) != string(errs.RateLimited) ||
			res.Header.Get("Retry-After") != "60" || res.Header.Get("RateLimit") != `"api-user";r=0;t=120` {
			t.Fatalf("third request: %d %s, Retry-After %q, RateLimit %q", res.StatusCode, p.Code, res.Header.Get("Retry-After"), res.Header.Get("RateLimit"))
		}
	})

	t.Run("ErrPerKeyAndOrg", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withAPILimits(limits))
		token := b.signUp(t, "key-limit@example.com").AccessToken
		key := b.createKey(t, token, []string{"chat"}).Key // the org's first request
		for i := range 3 {
			res := b.call(t, "GET", "/openai/v1/models", key, nil, nil)
			if res.StatusCode != http.StatusOK || res.Header.Get("RateLimit-Policy") != `"api-key";q=1;w=60, "api-org";q=1;w=60` {
				t.Fatalf("request %d: %d, RateLimit-Policy %q", i+1, res.StatusCode, res.Header.Get("RateLimit-Policy"))
			}
		}
		res := b.call(t, "GET", "/openai/v1/models", key, nil, nil)
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("RateLimit") != `"api-key";r=0;t=180, "api-org";r=1;t=240` {
			t.Fatalf("fourth request: %d, RateLimit %q; want the key's refusal, the org's last request unspent", res.StatusCode, res.Header.Get("RateLimit"))
		}
		// The user's own token still has the org's last request (per-user: its second).
		if res := b.call(t, "GET", "/v1/api-keys", token, nil, nil); res.StatusCode != http.StatusOK || res.Header.Get("RateLimit") != `"api-user";r=0;t=120, "api-org";r=0;t=300` {
			t.Fatalf("the user after the key's refusal: %d, RateLimit %q", res.StatusCode, res.Header.Get("RateLimit"))
		}
		if res := b.call(t, "GET", "/v1/api-keys", token, nil, nil); res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("the org's sixth request: %d, want 429", res.StatusCode)
		}
		// Routes without a caller are not limited.
		if res := b.call(t, "GET", "/health", "", nil, nil); res.StatusCode != http.StatusOK || res.Header.Get("RateLimit") != "" {
			t.Fatalf("GET /health: %d, RateLimit %q", res.StatusCode, res.Header.Get("RateLimit"))
		}
	})

	t.Run("OKFailOpenWithoutRedis", func(t *testing.T) {
		t.Parallel()
		rd := storetest.NewProxy(t, storetest.RedisAddr())
		b := setup(t, withAPILimits(limits), func(d *Deps) { d.Redis, _ = storetest.RedisBehind(t, rd) })
		token := b.signUp(t, "fail-open@example.com").AccessToken
		rd.Cut()
		for i := range 4 { // past the burst of 2
			if res := b.call(t, "GET", "/v1/me", token, nil, nil); res.StatusCode != http.StatusOK || res.Header.Get("RateLimit") != "" {
				t.Fatalf("request %d with Redis cut: %d, RateLimit %q; want it let through, unlimited", i+1, res.StatusCode, res.Header.Get("RateLimit"))
			}
		}
		rd.Restore()
		b.call(t, "GET", "/v1/me", token, nil, nil)
		b.call(t, "GET", "/v1/me", token, nil, nil)
		if res := b.call(t, "GET", "/v1/me", token, nil, nil); res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("with Redis back, the third request: %d, want 429", res.StatusCode)
		}
	})
}

// BenchmarkRateLimitAPI measures what ratelimit.api adds to a request: GET /v1/me by one
// user, with the limits (generous: never refused) and without. The Plan cases put the
// user's org on a plan of 30 requests a minute, used up: every request is refused by it
// (429), with the quota alerts off and on (their 80 % and 100 % alerts sent by the first
// refusals): the difference is what the alerts' check costs a request once they went out.
func BenchmarkRateLimitAPI(b *testing.B) {
	for _, tt := range []struct {
		name         string
		limits       config.APIRateLimits
		plan, alerts bool
	}{
		{"Off", config.APIRateLimits{}, false, false},
		{"On", config.APIRateLimits{PerUser: config.Rate{Rate: 1 << 30, Burst: 1 << 20}, PerOrg: config.Rate{Rate: 1 << 30, Burst: 1 << 20}}, false, false},
		{"PlanRefused", config.APIRateLimits{}, true, false},
		{"PlanRefusedAlerted", config.APIRateLimits{}, true, true},
	} {
		b.Run(tt.name, func(b *testing.B) {
			bb := setup(b, withAPILimits(tt.limits))
			if tt.alerts {
				bb.srv.llm.Billing.EnableAlerts(bb.srv.notify, bb.srv.log)
			}
			p := bb.person(b, "bench-"+tt.name+"@example.com")
			want := http.StatusOK
			if tt.plan {
				want = http.StatusTooManyRequests
				if _, err := bb.srv.llm.Billing.Set(b.Context(), audit.Actor{Type: audit.ActorSystem}, p.personalOrg, billing.SetSubscription{Plan: "capped"}); err != nil {
					b.Fatal(err)
				}
				for range 40 { // past the minute's 30
					bb.call(b, "GET", "/v1/me", p.token, nil, nil)
				}
				bb.srv.llm.Billing.WaitAlerts()
			}
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", "/v1/me", nil)
				req.Header.Set("Authorization", "Bearer "+p.token)
				rec := httptest.NewRecorder()
				bb.srv.ServeHTTP(rec, req)
				// A plan's minute gives one request back every 2 s.
				if rec.Code != want && (!tt.plan || rec.Code != http.StatusOK) {
					b.Fatalf("GET /v1/me: %d %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
