package billing_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/stripetest"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestStripeWebhookReplay posts every real Stripe event 16 times, shuffled among forged
// ones (another secret, tampered after signing, older than 300 s, unsigned), from 16
// goroutines at once: top-ups paid by checkout.session.completed, a partial refund (which
// may come before its payment), a payment of the wrong amount, and subscription,
// invoice.paid and invoice.payment_failed events of other orgs. Every forgery is refused,
// every real event is accepted, each makes exactly one state change (one ledger row, one
// applied audit event), and the credit is the sum of the top-ups less the refund.
func TestStripeWebhookReplay(t *testing.T) {
	t.Parallel()
	s := setupStripe(t)
	now := time.Now()
	var posts []replayPost
	send := func(p stripetest.Post) func() error {
		return func() error { return s.pay.Webhook(t.Context(), p.Signature, p.Body) }
	}
	realEvents := map[string]string{} // event id → the outcome it must have
	add := func(id, outcome string, body []byte) {
		realEvents[id] = outcome
		for range 16 {
			posts = append(posts, replayPost{real: true, kind: "real " + id, send: send(stripetest.Post{Signature: stripetest.Sign(body, stripetest.WebhookSecret, now), Body: body})})
		}
		for _, f := range stripetest.Forgeries(body, now) {
			posts = append(posts, replayPost{kind: f.Kind + " " + id, send: send(f)})
		}
	}
	var want int64
	var orders []billing.Order
	for i, cents := range []int64{500, 1200, 2500, 9900} {
		c := s.topUp(t, s.org, cents)
		add(fmt.Sprintf("evt_paid_%d", i), "applied", sessionCompleted(t, fmt.Sprintf("evt_paid_%d", i), now, c, cents, nil))
		want += cents
		orders = append(orders, c.Order)
		switch i {
		case 1:
			add("evt_refund_1", "applied", chargeRefunded(t, "evt_refund_1", now, c, 200))
			want -= 200
		case 3:
			add("evt_wrong_amount_3", "amount_mismatch", sessionCompleted(t, "evt_wrong_amount_3", now, c, 1, nil))
		}
	}
	start := now.Truncate(time.Second)
	end := start.AddDate(0, 1, 0)
	subs := map[uuid.UUID]billing.Status{}
	for i, ev := range []struct{ typ, status string }{
		{"customer.subscription.created", "trialing"}, {"customer.subscription.updated", "active"}, {"customer.subscription.deleted", "canceled"},
	} {
		org := storetest.Org(t, s.st)
		id := fmt.Sprintf("evt_sub_%d", i)
		add(id, "applied", subscriptionEvent(t, id, ev.typ, now, org, ev.status, proPrice, start, end))
		subs[org] = map[string]billing.Status{"trialing": billing.Trialing, "active": billing.Active, "canceled": billing.Cancelled}[ev.status]
	}
	paidOrg, failedOrg := storetest.Org(t, s.st), storetest.Org(t, s.st)
	add("evt_invoice_paid", "applied", invoiceEvent(t, "evt_invoice_paid", "invoice.paid", now, paidOrg, 2000, start, end))
	add("evt_invoice_failed", "applied", invoiceEvent(t, "evt_invoice_failed", "invoice.payment_failed", now, failedOrg, 2000, start, end))
	subs[paidOrg], subs[failedOrg] = billing.Active, billing.PastDue
	forged := replay(t, posts)
	t.Logf("%d posts: %d real (%d events, 16 of each), %d forged, all refused", len(posts), int64(len(posts))-forged, len(realEvents), forged)
	if got := s.credit(t, "USD"); got != want {
		t.Errorf("credit %d, want %d (each top-up once, less the refund)", got, want)
	}
	for _, o := range orders {
		got, err := s.svc.Order(t.Context(), s.org, o.ID)
		if err != nil || got.Status != billing.OrderPaid {
			t.Errorf("order of %d cents is %s (%v), want paid", o.Amount, got.Status, err)
		}
	}
	for id, outcome := range realEvents {
		if n := s.count(t, "SELECT count(*) FROM payment_events WHERE provider = 'stripe' AND provider_event_id = $1", id); n != 1 {
			t.Errorf("%s: %d ledger rows, want 1", id, n)
		}
		if n := s.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_event' AND data->>'event_id' = $1", id); n != 1 {
			t.Errorf("%s: %d audit events, want 1", id, n)
		}
		if n := s.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_event' AND data->>'event_id' = $1 AND data->>'outcome' = $2", id, outcome); n != 1 {
			t.Errorf("%s: not %s once", id, outcome)
		}
	}
	if n := s.count(t, "SELECT count(*) FROM payment_events"); n != len(realEvents) {
		t.Errorf("ledger rows = %d, want %d (each real event once, nothing forged)", n, len(realEvents))
	}
	for org, status := range subs {
		got, err := s.svc.Subscription(t.Context(), org)
		if err != nil || got.Status != status || got.Provider != billing.ProviderStripe {
			t.Errorf("org's subscription = %+v %v, want %s through stripe", got, err, status)
		}
	}
}
