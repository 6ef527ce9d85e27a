package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/stripetest"
	"github.com/kilnhq/kiln/internal/jobs"
)

// stripeCalls is an HTTP transport to stripe-mock that records each call ("POST
// /v1/subscriptions/sub_x cancel_at_period_end=true") and, while down is set, fails them
// as an unreachable Stripe would.
type stripeCalls struct {
	down  atomic.Bool
	mu    sync.Mutex
	calls []string
}

func (c *stripeCalls) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.down.Load() {
		return nil, errors.New("connection refused")
	}
	call := r.Method + " " + r.URL.Path
	if r.Body != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		if form, _ := url.ParseQuery(string(body)); len(form) > 0 {
			call += " " + form.Encode()
		}
	}
	c.mu.Lock()
	c.calls = append(c.calls, call)
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

// has reports whether call was made.
func (c *stripeCalls) has(call string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.calls {
		if x == call {
			return true
		}
	}
	return false
}

// TestDeleteOrgStopsStripe: an org paying through Stripe (stripe-mock) stops renewing when
// its deletion is asked (cancel_at_period_end), renews again when it is restored, and its
// erase job cancels the subscription at once. While Stripe is unreachable the erase job's
// attempts fail naming what failed and keep every row; the job's retries erase the org
// once Stripe answers.
func TestDeleteOrgStopsStripe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	calls := &stripeCalls{}
	b.srv.erasure.UseSubscriptions(billing.NewStripePayments(b.srv.llm.Billing, billing.StripeConfig{SecretKey: stripetest.SecretKey,
		BaseURL: stripetest.Start(t), HTTPClient: &http.Client{Transport: calls}}))
	if err := b.srv.jobs.Registry.Override("privacy.erase", jobs.Kind{Backoff: jobs.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	b.runJobs(t)
	ada := b.person(t, "ada@example.com")
	org := b.org(t, ada, "Paying Ltd")
	sub := "sub_" + strings.ReplaceAll(org.String(), "-", "")
	if _, err := b.pool.Exec(t.Context(), `INSERT INTO subscriptions (org_id, plan_id, status, billing_interval, currency, current_period_start,
		current_period_end, provider, provider_subscription_id, created_at, updated_at)
		VALUES ($1, 'pro', 'active', 'month', 'USD', now(), now() + interval '30 days', 'stripe', $2, now(), now())`, org, sub); err != nil {
		t.Fatal(err)
	}
	renewals := func(n int) {
		t.Helper()
		waitLong(t, fmt.Sprintf("%d renewal jobs", n), func() bool {
			var done int
			if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM jobs WHERE kind = 'privacy.subscription_renewal' AND state = 'succeeded'").Scan(&done); err != nil {
				t.Fatal(err)
			}
			return done == n
		})
	}
	path := "/v1/orgs/" + org.String()
	wantStatus(t, b.call(t, "DELETE", path, ada.token, nil, nil), 202)
	renewals(1)
	if !calls.has("POST /v1/subscriptions/" + sub + " cancel_at_period_end=true") {
		t.Fatalf("the deletion did not stop the renewal at Stripe: %q", calls.calls)
	}
	wantStatus(t, b.call(t, "POST", path+"/restore", ada.token, nil, nil), 204)
	renewals(2)
	if !calls.has("POST /v1/subscriptions/" + sub + " cancel_at_period_end=false") {
		t.Fatalf("the restore did not resume the renewal at Stripe: %q", calls.calls)
	}

	wantStatus(t, b.call(t, "DELETE", path, ada.token, nil, nil), 202)
	renewals(3)
	calls.down.Store(true)
	b.eraseClock.Advance(14*24*time.Hour + time.Minute)
	if _, err := b.pool.Exec(t.Context(), "UPDATE jobs SET run_at = now() WHERE kind = 'privacy.erase' AND state = 'queued'"); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "a failed attempt of the erase job", func() bool {
		var last string
		if err := b.pool.QueryRow(t.Context(), "SELECT coalesce(last_error, '') FROM jobs WHERE kind = 'privacy.erase' AND state = 'queued'").Scan(&last); err != nil {
			return false
		}
		if last != "" && !strings.Contains(last, "cancel org "+org.String()+"'s subscription at its payment provider") {
			t.Fatalf("last error %q does not say what failed", last)
		}
		return last != ""
	})
	var erased *time.Time
	var subs int
	if err := b.pool.QueryRow(t.Context(), "SELECT erased_at, (SELECT count(*) FROM subscriptions WHERE org_id = $1) FROM orgs WHERE id = $1", org).Scan(&erased, &subs); err != nil ||
		erased != nil || subs != 1 {
		t.Fatalf("while Stripe is down: erased_at %v, %d subscriptions (%v); want the org intact", erased, subs, err)
	}
	calls.down.Store(false)
	waitLong(t, "the erase job", func() bool {
		var state, last string
		var attempts int
		if err := b.pool.QueryRow(t.Context(), `SELECT state, attempts, coalesce(last_error, '') FROM jobs WHERE kind = 'privacy.erase'
			AND state <> 'cancelled'`).Scan(&state, &attempts, &last); err != nil {
			t.Fatal(err)
		}
		if state == "failed" {
			t.Fatalf("erase job failed after %d attempts: %s", attempts, last)
		}
		return state == "succeeded"
	})
	if !calls.has("DELETE /v1/subscriptions/" + sub) {
		t.Errorf("the erasure did not cancel the subscription at Stripe: %q", calls.calls)
	}
	if err := b.pool.QueryRow(t.Context(), "SELECT erased_at FROM orgs WHERE id = $1", org).Scan(&erased); err != nil || erased == nil {
		t.Errorf("org not erased (%v)", err)
	}
}
