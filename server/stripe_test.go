package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/stripetest"
)

// withStripe serves Stripe through a stripe-mock started for the test.
func withStripe(t testing.TB) option {
	url := stripetest.Start(t)
	return func(d *Deps) {
		d.StripePayments = billing.NewStripePayments(d.LLM.Billing, billing.StripeConfig{SecretKey: stripetest.SecretKey,
			WebhookSecret: stripetest.WebhookSecret, BaseURL: url, Log: d.Log})
	}
}

// postStripe posts a webhook as Stripe does.
func (b *bundle) postStripe(t testing.TB, signature string, body []byte) *http.Response {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	if signature != "" {
		req.Header.Set("Stripe-Signature", signature)
	}
	return b.do(t, req)
}

// stripeSessionCompleted is checkout.session.completed for the order of c, paid amount.
func stripeSessionCompleted(t testing.TB, id string, c api.StripeCheckout, amount int64) []byte {
	t.Helper()
	return stripetest.Event(t, id, "checkout.session.completed", time.Now(), map[string]any{"id": c.SessionId, "object": "checkout.session",
		"mode": "payment", "status": "complete", "payment_status": "paid", "amount_total": amount, "currency": "usd",
		"client_reference_id": c.Order.Id.String(), "payment_intent": "pi_" + strings.ReplaceAll(c.Order.Id.String(), "-", ""),
		"metadata": map[string]any{"kiln_order": c.Order.Id.String(), "kiln_org": c.Order.OrgId.String()}})
}

// TestStripe pays through Stripe over HTTP: a subscription and a top-up Checkout at
// stripe-mock (owners and admins only, Idempotency-Key replayed), the billing portal, the
// webhook applying a payment once however often it comes, every forgery refused as a 400
// problem, and an unconfigured server answering provider_not_configured.
func TestStripe(t *testing.T) {
	t.Parallel()
	b := setup(t, withStripe(t))
	owner := b.person(t, "owner@example.com")
	org := owner.personalOrg
	checkoutPath := fmt.Sprintf("/v1/orgs/%s/billing/checkout", org)
	portalPath := fmt.Sprintf("/v1/orgs/%s/billing/portal", org)

	if res := b.call(t, "POST", portalPath, owner.token, map[string]any{}, nil); res.StatusCode != 404 {
		t.Errorf("portal before any checkout: %d, want 404", res.StatusCode)
	}
	var sub api.StripeCheckout
	res := b.call(t, "POST", checkoutPath, owner.token, map[string]any{"purpose": "subscription", "plan": "team", "interval": "month", "currency": "USD",
		"success_url": "https://app.example/billing?paid=1"}, &sub)
	if res.StatusCode != 201 || !strings.HasPrefix(sub.SessionId, "cs_") || sub.Url == "" || sub.Order.Amount != 1900 ||
		sub.Order.Provider != api.PaymentOrderProviderStripe || sub.Order.Status != api.PaymentOrderStatusPending ||
		sub.Order.ProviderOrderId == nil || *sub.Order.ProviderOrderId != sub.SessionId {
		t.Fatalf("subscription checkout: %d %+v", res.StatusCode, sub)
	}
	topUp := map[string]any{"purpose": "top_up", "amount": 800, "currency": "USD", "success_url": "https://app.example/billing", "cancel_url": "https://app.example/"}
	var top api.StripeCheckout
	if res := b.call(t, "POST", checkoutPath, owner.token, topUp, &top, "Idempotency-Key", "top-up-1"); res.StatusCode != 201 || top.Order.Purpose != api.PaymentPurposeTopUp {
		t.Fatalf("top-up checkout: %d %+v", res.StatusCode, top)
	}
	var again api.StripeCheckout
	if res := b.call(t, "POST", checkoutPath, owner.token, topUp, &again, "Idempotency-Key", "top-up-1"); res.StatusCode != 201 || !isReplay(res) || again.Order.Id != top.Order.Id {
		t.Errorf("top-up retried with its Idempotency-Key: %d replayed=%v %v, want the first order", res.StatusCode, isReplay(res), again.Order.Id)
	}
	for name, body := range map[string]map[string]any{
		"plan without a Stripe Price": {"purpose": "subscription", "plan": "tiny", "interval": "month", "currency": "USD", "success_url": "https://app.example/"},
		"no success_url":              {"purpose": "top_up", "amount": 100, "currency": "USD"},
		"EUR":                         {"purpose": "top_up", "amount": 100, "currency": "EUR", "success_url": "https://app.example/"},
	} {
		if res := b.call(t, "POST", checkoutPath, owner.token, body, nil); res.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", name, res.StatusCode)
		}
	}
	stranger := b.person(t, "stranger@example.com")
	if res := b.call(t, "POST", checkoutPath, stranger.token, topUp, nil); res.StatusCode != 404 {
		t.Errorf("another org's checkout: %d, want 404", res.StatusCode)
	}
	var portal api.StripePortal
	if res := b.call(t, "POST", portalPath, owner.token, map[string]any{"return_url": "https://app.example/billing"}, &portal); res.StatusCode != 200 || portal.Url == "" {
		t.Errorf("portal: %d %+v", res.StatusCode, portal)
	}

	// The top-up is paid: forgeries are refused, the real event applied once.
	body := stripeSessionCompleted(t, "evt_http_paid", top, 800)
	for _, f := range stripetest.Forgeries(body, time.Now()) {
		res := b.postStripe(t, f.Signature, f.Body)
		if res.StatusCode != 400 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/problem+json") || decodeProblem(t, res).Code != "invalid_request" {
			t.Errorf("%s: %d, want a 400 problem", f.Kind, res.StatusCode)
		}
	}
	for range 3 {
		if res := b.postStripe(t, stripetest.Sign(body, stripetest.WebhookSecret, time.Now()), body); res.StatusCode != 204 {
			t.Fatalf("webhook: %d %s", res.StatusCode, readAllString(res))
		}
	}
	var order api.PaymentOrder
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/payments/%s", org, top.Order.Id), owner.token, nil, &order); res.StatusCode != 200 ||
		order.Status != api.PaymentOrderStatusPaid || order.PaidAt == nil {
		t.Fatalf("order after the webhook: %d %+v", res.StatusCode, order)
	}
	var n int
	if err := b.pool.QueryRow(t.Context(), "SELECT balance_minor FROM org_credits WHERE org_id = $1 AND currency = 'USD'", org).Scan(&n); err != nil || n != 800 {
		t.Errorf("credit %d (%v), want 800 once", n, err)
	}

	off := setup(t)
	offOwner := off.person(t, "off@example.com")
	for path, body := range map[string]map[string]any{"/v1/orgs/%s/billing/checkout": topUp, "/v1/orgs/%s/billing/portal": {}} {
		res := off.call(t, "POST", fmt.Sprintf(path, offOwner.personalOrg), offOwner.token, body, nil)
		if res.StatusCode != 422 || decodeProblem(t, res).Code != "provider_not_configured" {
			t.Errorf("%s unconfigured: %d, want 422 provider_not_configured", path, res.StatusCode)
		}
	}
	if res := off.postStripe(t, stripetest.Sign(body, stripetest.WebhookSecret, time.Now()), body); res.StatusCode != 404 {
		t.Errorf("webhook unconfigured: %d, want 404", res.StatusCode)
	}
}
