package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/ratelimit"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// limitRule is one GCRA limit on a route: per client IP, or per account (the email in
// the request body, or the signed-in user).
type limitRule struct {
	name    string // policy name, in the RateLimit headers and the Redis key
	byEmail bool
	byUser  bool // the authenticated caller's account: a stolen access token guesses from any number of IPs
	limit   redis_rate.Limit
}

// abuseLimits guard the identity routes against guessing and flooding; they run after
// authentication, so a signed-in route can be limited per account.
// Per IP they are generous (offices and NATs share addresses); per account they are tight.
var abuseLimits = map[string][]limitRule{
	"POST /v1/auth/login": {
		{name: "login-ip", limit: redis_rate.Limit{Rate: 30, Burst: 30, Period: time.Minute}},
		{name: "login-account", byEmail: true, limit: redis_rate.Limit{Rate: 10, Burst: 10, Period: 15 * time.Minute}},
	},
	"POST /v1/auth/signup": {
		{name: "signup-ip", limit: redis_rate.Limit{Rate: 20, Burst: 20, Period: time.Hour}},
	},
	"POST /v1/auth/password-reset/request": {
		{name: "reset-ip", limit: redis_rate.Limit{Rate: 20, Burst: 20, Period: time.Hour}},
		{name: "reset-account", byEmail: true, limit: redis_rate.Limit{Rate: 5, Burst: 5, Period: time.Hour}},
	},
	"POST /v1/auth/password-reset": {
		{name: "reset-confirm-ip", limit: redis_rate.Limit{Rate: 30, Burst: 30, Period: time.Hour}},
	},
	"POST /v1/auth/refresh": {
		{name: "refresh-ip", limit: redis_rate.Limit{Rate: 120, Burst: 120, Period: time.Minute}},
	},
	"POST /v1/auth/verify-email": {
		{name: "verify-ip", limit: redis_rate.Limit{Rate: 30, Burst: 30, Period: time.Hour}},
	},
	"POST /v1/auth/verify-email/request": {
		{name: "verify-request-ip", limit: redis_rate.Limit{Rate: 10, Burst: 10, Period: time.Hour}},
	},
	"POST /v1/me/password": {
		{name: "password-change-ip", limit: redis_rate.Limit{Rate: 10, Burst: 10, Period: 15 * time.Minute}},
		{name: "password-change-account", byUser: true, limit: redis_rate.Limit{Rate: 10, Burst: 10, Period: 15 * time.Minute}},
	},
	"GET /v1/auth/oauth/{provider}/start": {
		{name: "oauth-start-ip", limit: redis_rate.Limit{Rate: 60, Burst: 60, Period: time.Minute}},
	},
	"POST /v1/auth/oauth/exchange": {
		{name: "oauth-exchange-ip", limit: redis_rate.Limit{Rate: 60, Burst: 60, Period: time.Minute}},
	},
}

// rateLimiter applies abuseLimits with GCRA in Redis, so every replica shares the counts.
type rateLimiter struct {
	limiter *redis_rate.Limiter
	ks      redisclient.Keyspace
}

// limitAbuse enforces abuseLimits. Every limited response carries RateLimit-Policy and
// RateLimit (IETF httpapi draft) for its tightest policy; a refusal is a 429 problem with
// Retry-After. If Redis fails, requests pass (and the failure is logged): an outage of the
// limiter must not lock every user out.
func (s *Server) limitAbuse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rules := abuseLimits[s.routeOf(r)]
		if len(rules) == 0 || s.limits == nil {
			next.ServeHTTP(w, r)
			return
		}
		var email string
		for _, rule := range rules {
			if rule.byEmail {
				email = peekEmail(r)
				break
			}
		}
		var tightest *redis_rate.Result
		var tightestRule limitRule
		for _, rule := range rules {
			subject := s.clientIP(r)
			switch {
			case rule.byEmail:
				if email == "" {
					continue // the validator will refuse the request
				}
				subject = email
			case rule.byUser:
				p, ok := principalFrom(r.Context())
				if !ok || p.UserID == uuid.Nil {
					continue // authentication refused the request already
				}
				subject = "user:" + p.UserID.String()
			}
			sum := sha256.Sum256([]byte(subject)) // no addresses or emails in key names
			key := s.limits.ks.Key("ratelimit", 1, rule.name+":"+hex.EncodeToString(sum[:16]))
			res, err := s.limits.limiter.Allow(r.Context(), key, rule.limit)
			if err != nil {
				s.log.WarnContext(r.Context(), "rate limiter unavailable; request let through", "policy", rule.name, "error", err)
				continue
			}
			if tightest == nil || res.Allowed == 0 || (tightest.Allowed > 0 && res.Remaining < tightest.Remaining) {
				tightest, tightestRule = res, rule
			}
			if res.Allowed == 0 {
				break
			}
		}
		if tightest == nil {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		window := int(tightestRule.limit.Period.Seconds())
		h.Set("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", tightestRule.name, tightestRule.limit.Rate, window))
		h.Set("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", tightestRule.name, tightest.Remaining, int(tightest.ResetAfter.Seconds()+0.999)))
		if tightest.Allowed == 0 {
			retry := max(1, int(tightest.RetryAfter.Seconds()+0.999))
			h.Set("Retry-After", strconv.Itoa(retry))
			s.respondError(w, r, errs.E(errs.RateLimited, "Too many attempts; retry in %d seconds.", retry))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// peekEmail reads the "email" field of a JSON body and puts the body back for the
// handlers. The body is already capped by limitBody.
func peekEmail(r *http.Request) string {
	if r.Body == nil {
		return ""
	}
	raw, err := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(raw))
	if err != nil {
		return ""
	}
	var body struct {
		Email string `json:"email"`
	}
	if json.Unmarshal(raw, &body) != nil {
		return ""
	}
	return account.NormaliseEmail(body.Email)
}

// clientIP is the client's address: the connection's, or, when the connection comes from
// a trusted proxy (http.trusted_proxies), the rightmost X-Forwarded-For entry that is not
// itself a trusted proxy. Entries left of that are the client's to forge, so never used.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trustedProxy(addr) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return host
		}
		if !s.trustedProxy(hop) {
			return hop.Unmap().String()
		}
	}
	return host
}

func (s *Server) trustedProxy(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range s.trustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// apiLimiter applies ratelimit.api (per API key, per signed-in user and per org) and the
// requests_per_minute limit of each org's plan.
type apiLimiter struct {
	gcra                    *ratelimit.Limiter
	ks                      redisclient.Keyspace
	perKey, perUser, perOrg apiPolicy
	// plans are the orgs' plans' requests_per_minute; nil: no plans (billing off).
	plans planRates
}

// planRates are the requests_per_minute of the orgs' plans (billing.Service).
type planRates interface {
	// RequestsPerMinute returns the requests a minute the org's plan allows, 0 for no limit.
	RequestsPerMinute(ctx context.Context, org uuid.UUID) (int64, error)
	// RequestsSeen tells what the limit saw after a request: used of the minute's
	// allowance, or refused (for the plan's quota alerts).
	RequestsSeen(ctx context.Context, org uuid.UUID, used int64, refused bool)
}

// apiPolicy is one API limit and its RateLimit-Policy item; a zero limit is off.
type apiPolicy struct {
	name   string
	limit  ratelimit.Limit
	policy string
}

func newAPIPolicy(name string, r config.Rate) apiPolicy {
	if r.Rate <= 0 {
		return apiPolicy{name: name}
	}
	return apiPolicy{name: name, limit: ratelimit.Limit{Rate: r.Rate, Period: time.Minute, Burst: r.Burst}, policy: fmt.Sprintf("%q;q=%d;w=60", name, r.Rate)}
}

// planPolicy is the API policy of a plan's requests_per_minute: the whole minute's
// requests may come at once.
func planPolicy(rate int64) apiPolicy {
	return apiPolicy{name: "plan", limit: ratelimit.Limit{Rate: int(rate), Period: time.Minute, Burst: int(rate)}, policy: fmt.Sprintf(`"plan";q=%d;w=60`, rate)}
}

// newAPILimiter returns nil when no API limit is set and there are no plans (plans nil).
func newAPILimiter(cfg config.APIRateLimits, rdb redis.UniversalClient, ks redisclient.Keyspace, plans planRates) *apiLimiter {
	if rdb == nil || (cfg.PerKey.Rate <= 0 && cfg.PerUser.Rate <= 0 && cfg.PerOrg.Rate <= 0 && plans == nil) {
		return nil
	}
	return &apiLimiter{gcra: ratelimit.New(rdb), ks: ks, plans: plans,
		perKey: newAPIPolicy("api-key", cfg.PerKey), perUser: newAPIPolicy("api-user", cfg.PerUser), perOrg: newAPIPolicy("api-org", cfg.PerOrg)}
}

// limitAPI enforces ratelimit.api on authenticated requests: an API key's requests count
// against the key and its org, a user token's against the user and the org it acts in;
// and the org's plan's requests_per_minute (policy "plan") when it blocks.
// The limits that apply are checked and spent in one Redis round trip, all or none.
// Every limited response carries RateLimit-Policy and RateLimit (IETF httpapi draft) with
// one item per limit; a refusal is a 429 rate_limited problem with Retry-After. The auth
// routes under the abuse limits are left to those. If Redis fails, requests pass (logged):
// an outage of the limiter must not stop the API.
func (s *Server) limitAPI(next http.Handler) http.Handler {
	l := s.api
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := principalFrom(r.Context())
		if !ok || len(abuseLimits[s.routeOf(r)]) > 0 {
			next.ServeHTTP(w, r)
			return
		}
		// Every key of a request carries its org's hash tag, so the script's keys share
		// a Redis Cluster slot; a user is therefore limited per org they act in, and
		// apart on the routes outside any org.
		var org uuid.UUID
		if a, ok := resolvedOrg(r.Context()); ok {
			org = a.OrgID
		} else if p.Key != nil {
			org = p.Key.OrgID
		}
		tag := "{" + org.String() + "}"
		if org == uuid.Nil {
			tag = "{user:" + p.UserID.String() + "}"
		}
		var (
			policies [4]apiPolicy
			keys     [4]string
			limits   [4]ratelimit.Limit
			n        int
			plan     = -1 // the index of the plan's limit
			planRate int64
		)
		add := func(pol apiPolicy, subject string) {
			if pol.policy != "" {
				policies[n], keys[n], limits[n] = pol, l.ks.Key("ratelimit", 1, tag+":"+pol.name+":"+subject), pol.limit
				n++
			}
		}
		if p.Key != nil {
			add(l.perKey, p.Key.ID.String())
		} else {
			add(l.perUser, p.UserID.String())
		}
		if org != uuid.Nil {
			add(l.perOrg, org.String())
			if l.plans != nil {
				rate, err := l.plans.RequestsPerMinute(r.Context(), org)
				if err != nil {
					s.log.WarnContext(r.Context(), "plan of the org unavailable; its requests_per_minute not applied", "error", err)
				} else if rate > 0 {
					plan, planRate = n, rate
					add(planPolicy(rate), org.String())
				}
			}
		}
		if n == 0 {
			next.ServeHTTP(w, r)
			return
		}
		res, allowed, err := l.gcra.Allow(r.Context(), keys[:n], limits[:n])
		if err != nil {
			s.log.WarnContext(r.Context(), "API rate limiter unavailable; request let through", "error", err)
			next.ServeHTTP(w, r)
			return
		}
		if plan >= 0 && plan < len(res) {
			// The whole minute is the burst: what the burst lacks is what the minute used.
			l.plans.RequestsSeen(r.Context(), org, planRate-int64(res[plan].Remaining), !res[plan].Allowed)
		}
		var policy, state strings.Builder
		var retry time.Duration
		for i, pol := range policies[:n] {
			if i > 0 {
				policy.WriteString(", ")
				state.WriteString(", ")
			}
			policy.WriteString(pol.policy)
			fmt.Fprintf(&state, "%q;r=%d;t=%d", pol.name, res[i].Remaining, ceilSeconds(res[i].ResetAfter))
			retry = max(retry, res[i].RetryAfter)
		}
		h := w.Header()
		h.Set("RateLimit-Policy", policy.String())
		h.Set("RateLimit", state.String())
		if !allowed {
			secs := max(1, ceilSeconds(retry))
			h.Set("Retry-After", strconv.Itoa(secs))
			s.respondError(w, r, errs.E(errs.RateLimited, "Too many requests; retry in %d seconds.", secs))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ceilSeconds rounds d up to whole seconds, as the RateLimit and Retry-After fields count.
func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
