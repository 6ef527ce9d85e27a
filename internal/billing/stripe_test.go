package billing_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/stripetest"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// hexID is id as the tests' Stripe ids end with it.
func hexID(id uuid.UUID) string { return strings.ReplaceAll(id.String(), "-", "") }

// proPrice is the Stripe Price of the pro plan per month in USD.
const proPrice = "price_pro_month_usd"

// stripeBundle is a billing bundle with Stripe served by stripe-mock.
type stripeBundle struct {
	bundle
	pay *billing.StripePayments
}

func setupStripe(t *testing.T) stripeBundle {
	t.Helper()
	b := setup(t, 1000)
	pay := billing.NewStripePayments(b.svc, billing.StripeConfig{SecretKey: stripetest.SecretKey, WebhookSecret: stripetest.WebhookSecret,
		BaseURL: stripetest.Start(t)})
	return stripeBundle{bundle: b, pay: pay}
}

// topUp opens a Checkout for a top-up of cents for org.
func (s stripeBundle) topUp(t *testing.T, org uuid.UUID, cents int64) billing.Checkout {
	t.Helper()
	out, err := s.pay.Checkout(t.Context(), billing.CheckoutRequest{SuccessURL: "https://app.example/paid",
		OrderRequest: billing.OrderRequest{Org: org, Purpose: billing.PurposeTopUp, Amount: cents, Currency: "USD"}})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	return out
}

// post signs body now with the endpoint's secret and posts it.
func (s stripeBundle) post(t *testing.T, body []byte) error {
	t.Helper()
	return s.pay.Webhook(t.Context(), stripetest.Sign(body, stripetest.WebhookSecret, time.Now()), body)
}

// sessionCompleted is Stripe's checkout.session.completed for c, paid amount.
func sessionCompleted(t *testing.T, id string, at time.Time, c billing.Checkout, amount int64, extra map[string]any) []byte {
	t.Helper()
	obj := map[string]any{"id": c.SessionID, "object": "checkout.session", "mode": "payment", "status": "complete", "payment_status": "paid",
		"amount_total": amount, "currency": "usd", "client_reference_id": c.Order.ID.String(), "customer": c.Order.ProviderCustomerID,
		"metadata": map[string]any{"kiln_order": c.Order.ID.String(), "kiln_org": c.Order.Org.String()}, "payment_intent": "pi_" + hexID(c.Order.ID)}
	for k, v := range extra {
		obj[k] = v
	}
	return stripetest.Event(t, id, "checkout.session.completed", at, obj)
}

// chargeRefunded is Stripe's charge.refunded for c's payment, refunded in all so far.
func chargeRefunded(t *testing.T, id string, at time.Time, c billing.Checkout, refunded int64) []byte {
	t.Helper()
	return stripetest.Event(t, id, "charge.refunded", at, map[string]any{"id": "ch_" + hexID(c.Order.ID), "object": "charge",
		"amount": c.Order.Amount, "amount_refunded": refunded, "currency": "usd", "refunded": refunded == c.Order.Amount,
		"payment_intent": "pi_" + hexID(c.Order.ID), "metadata": map[string]any{"kiln_order": c.Order.ID.String(), "kiln_org": c.Order.Org.String()}})
}

// subscriptionEvent is a customer.subscription.* event for org, status, on price for
// the period [start, end).
func subscriptionEvent(t *testing.T, id, typ string, at time.Time, org uuid.UUID, status, price string, start, end time.Time) []byte {
	t.Helper()
	return stripetest.Event(t, id, typ, at, map[string]any{"id": "sub_" + hexID(org), "object": "subscription", "status": status,
		"currency": "usd", "customer": "cus_" + hexID(org), "metadata": map[string]any{"kiln_org": org.String()},
		"items": map[string]any{"object": "list", "data": []any{map[string]any{"id": "si_1", "object": "subscription_item",
			"current_period_start": start.Unix(), "current_period_end": end.Unix(),
			"price": map[string]any{"id": price, "object": "price", "currency": "usd", "unit_amount": 2000, "recurring": map[string]any{"interval": "month"}}}}}})
}

// invoiceEvent is an invoice.paid or invoice.payment_failed of org's subscription whose
// line covers [start, end).
func invoiceEvent(t *testing.T, id, typ string, at time.Time, org uuid.UUID, amount int64, start, end time.Time) []byte {
	t.Helper()
	return stripetest.Event(t, id, typ, at, map[string]any{"id": "in_" + id, "object": "invoice", "currency": "usd",
		"amount_paid": amount, "amount_due": amount, "customer": "cus_" + hexID(org), "billing_reason": "subscription_cycle",
		"hosted_invoice_url": "https://invoice.stripe.com/i/acct_test/in_" + id,
		"parent": map[string]any{"type": "subscription_details", "subscription_details": map[string]any{
			"subscription": "sub_" + hexID(org), "metadata": map[string]any{"kiln_org": org.String()}}},
		"lines": map[string]any{"object": "list", "data": []any{map[string]any{"id": "il_1", "object": "line_item",
			"amount": amount, "period": map[string]any{"start": start.Unix(), "end": end.Unix()}}}}})
}

// TestStripeCheckout opens Checkout Sessions at stripe-mock for a plan and a top-up, and
// pays them by webhook: the order is pending with the session's id, then paid; the
// subscription is on the plan, the credit topped up; a plan without a Stripe Price and an
// unconfigured Stripe are refused.
func TestStripeCheckout(t *testing.T) {
	t.Parallel()
	s := setupStripe(t)
	ctx := t.Context()
	sub, err := s.pay.Checkout(ctx, billing.CheckoutRequest{SuccessURL: "https://app.example/paid",
		OrderRequest: billing.OrderRequest{Org: s.org, Purpose: billing.PurposeSubscription, Plan: "pro", Interval: "month", Currency: "USD"}})
	if err != nil {
		t.Fatalf("subscription checkout: %v", err)
	}
	if sub.SessionID == "" || sub.URL == "" || sub.Order.Status != billing.OrderPending || sub.Order.ProviderOrderID != sub.SessionID ||
		sub.Order.Amount != 2000 || sub.Order.ProviderCustomerID == "" {
		t.Fatalf("subscription checkout = %+v", sub)
	}
	top := s.topUp(t, s.org, 750)
	if top.Order.ProviderCustomerID != sub.Order.ProviderCustomerID {
		t.Errorf("second checkout's customer %q, want the org's %q", top.Order.ProviderCustomerID, sub.Order.ProviderCustomerID)
	}
	if _, err := s.pay.Checkout(ctx, billing.CheckoutRequest{SuccessURL: "https://app.example/paid",
		OrderRequest: billing.OrderRequest{Org: s.org, Purpose: billing.PurposeSubscription, Plan: "free", Interval: "month", Currency: "USD"}}); errs.CodeOf(err) != errs.Invalid {
		t.Errorf("plan without a Stripe Price: %v, want invalid_request", err)
	}
	off := billing.NewStripePayments(s.svc, billing.StripeConfig{})
	if _, err := off.Checkout(ctx, billing.CheckoutRequest{OrderRequest: billing.OrderRequest{Org: s.org, Purpose: billing.PurposeTopUp, Amount: 1, Currency: "USD"}}); errs.CodeOf(err) != errs.ProviderNotConfigured {
		t.Errorf("unconfigured checkout: %v, want provider_not_configured", err)
	}
	if url, err := s.pay.Portal(ctx, s.org, "https://app.example/billing"); err != nil || url == "" {
		t.Errorf("portal: %q %v", url, err)
	}
	if _, err := s.pay.Portal(ctx, storetest.Org(t, s.st), ""); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("portal of an org without a customer: %v, want not_found", err)
	}

	now := time.Now()
	if err := s.post(t, sessionCompleted(t, "evt_sub_paid", now, sub, 2000, map[string]any{"mode": "subscription", "payment_intent": nil, "subscription": "sub_1"})); err != nil {
		t.Fatal(err)
	}
	if err := s.post(t, sessionCompleted(t, "evt_top_paid", now, top, 750, nil)); err != nil {
		t.Fatal(err)
	}
	got, err := s.svc.Subscription(ctx, s.org)
	if err != nil || got.Plan != "pro" || got.Status != billing.Active || got.Provider != billing.ProviderStripe {
		t.Fatalf("subscription after checkout = %+v %v, want pro active through stripe", got, err)
	}
	if c := s.credit(t, "USD"); c != 750 {
		t.Errorf("credit %d, want 750", c)
	}
	if o, _ := s.svc.Order(ctx, s.org, top.Order.ID); o.Status != billing.OrderPaid || o.ProviderPaymentID != "pi_"+hexID(top.Order.ID) {
		t.Errorf("top-up order = %+v, want paid with its PaymentIntent", o)
	}
}

// TestStripeEventsOutOfOrder: a subscription event older than the state applied does
// not roll it back, a failed invoice makes it past_due and a paid one active for the new
// period, a cancelled one stays cancelled; a refund that arrives before its payment is
// kept, and the payment credits only what is left.
func TestStripeEventsOutOfOrder(t *testing.T) {
	t.Parallel()
	s := setupStripe(t)
	ctx := t.Context()
	org := s.org
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	p1s, p1e := t0, t0.AddDate(0, 1, 0)
	p2s, p2e := p1e, p1e.AddDate(0, 1, 0)
	steps := []struct {
		name   string
		body   []byte
		status billing.Status
		end    time.Time
	}{
		{"updated (newer)", subscriptionEvent(t, "evt_o1", "customer.subscription.updated", t0.Add(10*time.Second), org, "active", proPrice, p1s, p1e), billing.Active, p1e},
		{"updated (older) ignored", subscriptionEvent(t, "evt_o2", "customer.subscription.updated", t0.Add(5*time.Second), org, "past_due", proPrice, p1s, p1e), billing.Active, p1e},
		{"invoice failed", invoiceEvent(t, "evt_o3", "invoice.payment_failed", t0.Add(20*time.Second), org, 2000, p2s, p2e), billing.PastDue, p1e},
		{"invoice paid", invoiceEvent(t, "evt_o4", "invoice.paid", t0.Add(30*time.Second), org, 2000, p2s, p2e), billing.Active, p2e},
		{"deleted", subscriptionEvent(t, "evt_o5", "customer.subscription.deleted", t0.Add(40*time.Second), org, "canceled", proPrice, p2s, p2e), billing.Cancelled, p2e},
		{"updated (older than deleted) ignored", subscriptionEvent(t, "evt_o6", "customer.subscription.updated", t0.Add(35*time.Second), org, "active", proPrice, p2s, p2e), billing.Cancelled, p2e},
	}
	for _, st := range steps {
		if err := s.post(t, st.body); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := s.svc.Subscription(ctx, org)
		if err != nil || got.Status != st.status || got.Plan != "pro" || !got.Period.End.Equal(st.end) {
			t.Fatalf("after %s: %+v %v, want pro %s until %s", st.name, got, err, st.status, st.end)
		}
	}

	top := s.topUp(t, org, 1000)
	for _, step := range []struct {
		name   string
		body   []byte
		credit int64
		status billing.OrderStatus
	}{
		{"refund of 400 before the payment", chargeRefunded(t, "evt_r1", time.Now(), top, 400), 0, billing.OrderPending},
		{"payment", sessionCompleted(t, "evt_r2", time.Now(), top, 1000, nil), 600, billing.OrderPaid},
		{"the refund again", chargeRefunded(t, "evt_r1", time.Now(), top, 400), 600, billing.OrderPaid},
		{"refunded in full", chargeRefunded(t, "evt_r3", time.Now(), top, 1000), 0, billing.OrderRefunded},
	} {
		if err := s.post(t, step.body); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		o, err := s.svc.Order(ctx, org, top.Order.ID)
		if c := s.credit(t, "USD"); err != nil || c != step.credit || o.Status != step.status {
			t.Fatalf("after %s: credit %d, order %s (%v); want %d, %s", step.name, c, o.Status, err, step.credit, step.status)
		}
	}
}

// TestStripeInvoiceLink: Kiln's invoice of a period a Stripe subscription paid links
// Stripe's hosted invoice of that period (from the ledger's invoice.paid), and only that
// period's.
func TestStripeInvoiceLink(t *testing.T) {
	t.Parallel()
	s := setupStripe(t)
	org := s.org
	t0 := time.Now().AddDate(0, -2, 0).Truncate(time.Second)
	p1 := billing.Period{Start: t0, End: t0.AddDate(0, 1, 0)}
	p2 := billing.Period{Start: p1.End, End: p1.End.AddDate(0, 1, 0)}
	for _, body := range [][]byte{
		subscriptionEvent(t, "evt_l1", "customer.subscription.created", t0, org, "active", proPrice, p1.Start, p1.End),
		invoiceEvent(t, "evt_l2", "invoice.paid", t0.Add(time.Second), org, 2000, p1.Start, p1.End),
	} {
		if err := s.post(t, body); err != nil {
			t.Fatal(err)
		}
	}
	iv := billing.NewInvoicer(s.st, s.svc, billing.Issuer{ID: "stripe-link", Prefix: "SL-", Name: "Kiln Test Ltd"}, time.Now)
	for _, c := range []struct {
		period billing.Period
		want   string
	}{{p1, "https://invoice.stripe.com/i/acct_test/in_evt_l2"}, {p2, ""}} {
		out, err := iv.Issue(t.Context(), org, c.period)
		if err != nil || len(out) != 1 {
			t.Fatalf("issue %v: %d invoices, %v", c.period, len(out), err)
		}
		got, err := iv.Invoice(t.Context(), org, out[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if (got.ProviderURL == nil) != (c.want == "") || got.ProviderURL != nil && *got.ProviderURL != c.want {
			t.Errorf("period from %s: provider URL %v, want %q", c.period.Start, got.ProviderURL, c.want)
		}
	}
}

// TestStripeWebhookRefusesForgeries: a wrong secret, a tampered body, a stale signature
// and none are refused as not believed; nothing is recorded.
func TestStripeWebhookRefusesForgeries(t *testing.T) {
	t.Parallel()
	s := setupStripe(t)
	body := sessionCompleted(t, "evt_forged", time.Now(), s.topUp(t, s.org, 500), 500, nil)
	for _, f := range stripetest.Forgeries(body, time.Now()) {
		if err := s.pay.Webhook(t.Context(), f.Signature, f.Body); !errors.Is(err, billing.ErrNotBelieved) {
			t.Errorf("%s: %v, want not believed", f.Kind, err)
		}
	}
	if n := s.count(t, "SELECT count(*) FROM payment_events"); n != 0 {
		t.Errorf("%d ledger rows after forgeries, want 0", n)
	}
	if c := s.credit(t, "USD"); c != 0 {
		t.Errorf("credit %d after forgeries, want 0", c)
	}
}
