package billing

import (
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing/stripetest"
)

// FuzzStripeWebhook signs any body with the endpoint's secret and decodes it as the
// webhook does: no body panics; one refused is refused as not believed; one accepted is
// a Stripe event with its id.
func FuzzStripeWebhook(f *testing.F) {
	now := time.Unix(1_760_000_000, 0)
	obj := map[string]any{"id": "cs_1", "object": "checkout.session", "payment_status": "paid", "amount_total": 500, "currency": "usd",
		"metadata": map[string]any{"kiln_order": "0190b6d2-7a3c-7c3e-8a5e-2f1d9c8b7a60"}, "payment_intent": map[string]any{"id": "pi_1"}}
	f.Add(stripetest.Event(f, "evt_1", "checkout.session.completed", now, obj))
	f.Add(stripetest.Event(f, "evt_2", "customer.subscription.updated", now, map[string]any{"id": "sub_1", "status": "active",
		"items": map[string]any{"data": []any{map[string]any{"current_period_start": 1, "current_period_end": 2, "price": map[string]any{"id": "price_x"}}}}}))
	f.Add(stripetest.Event(f, "evt_3", "invoice.paid", now, map[string]any{"parent": map[string]any{"subscription_details": map[string]any{"subscription": 7}},
		"lines": map[string]any{"data": []any{nil}}}))
	f.Add(stripetest.Event(f, "evt_4", "charge.refunded", now, map[string]any{"amount_refunded": -1, "metadata": nil}))
	f.Add([]byte(`{"id":"evt_5","type":"invoice.payment_failed","api_version":"2025-08-27.basil","data":null}`))
	f.Add([]byte(`{}`))
	p := &StripePayments{svc: New(nil, NewCatalog(nil, ""), nil, time.Minute, 0, time.Now), cfg: StripeConfig{WebhookSecret: stripetest.WebhookSecret}}
	f.Fuzz(func(t *testing.T, body []byte) {
		e, _, err := p.verify(stripetest.Sign(body, stripetest.WebhookSecret, time.Now()), body)
		if err != nil {
			if !errors.Is(err, ErrNotBelieved) {
				t.Fatalf("refused without ErrNotBelieved: %v", err)
			}
			return
		}
		if e.Provider != ProviderStripe || e.ID == "" || e.Type == "" {
			t.Fatalf("accepted event without provider, id or type: %+v", e)
		}
	})
}
