package billing_test

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

func (b bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := b.st.Pool.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (b bundle) credit(t *testing.T, currency string) int64 {
	t.Helper()
	c, err := b.svc.Credits(t.Context(), b.org)
	if err != nil {
		t.Fatal(err)
	}
	return c[currency]
}

func (b bundle) record(t *testing.T, e billing.Event) bool {
	t.Helper()
	applied, err := b.svc.Record(t.Context(), e)
	if err != nil {
		t.Fatalf("record %s: %v", e.ID, err)
	}
	return applied
}

func (b bundle) order(t *testing.T, in billing.NewOrder) billing.Order {
	t.Helper()
	in.Org = b.org
	o, err := b.svc.CreateOrder(t.Context(), in)
	if err != nil {
		t.Fatalf("create order: %v", err)
	}
	return o
}

func TestCreateOrder(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	o := b.order(t, billing.NewOrder{Provider: billing.ProviderStripe, Purpose: billing.PurposeSubscription, Plan: "pro", Interval: "month", Currency: "USD"})
	if o.Amount != 2000 || o.Status != billing.OrderCreated || o.Plan != "pro" {
		t.Errorf("order = %+v, want pro's price 2000, created", o)
	}
	o, err := b.svc.AttachRefs(t.Context(), o.ID, billing.Refs{OrderID: "cs_1", CustomerID: "cus_1"})
	if err != nil || o.Status != billing.OrderPending || o.ProviderOrderID != "cs_1" || o.ProviderCustomerID != "cus_1" {
		t.Errorf("AttachRefs = %+v, %v; want pending with its refs", o, err)
	}
	for name, in := range map[string]billing.NewOrder{
		"UnknownPlan": {Provider: billing.ProviderStripe, Purpose: billing.PurposeSubscription, Plan: "gold", Interval: "month", Currency: "USD"},
		"NoPrice":     {Provider: billing.ProviderStripe, Purpose: billing.PurposeSubscription, Plan: "pro", Interval: "year", Currency: "USD"},
		"FreePlan":    {Provider: billing.ProviderStripe, Purpose: billing.PurposeSubscription, Plan: "free", Interval: "month", Currency: "USD"},
		"ZeroTopUp":   {Provider: billing.ProviderAlipay, Purpose: billing.PurposeTopUp, Currency: "CNY"},
		"Currency":    {Provider: billing.ProviderAlipay, Purpose: billing.PurposeTopUp, Amount: 100, Currency: "EUR"},
		"Provider":    {Provider: "paypal", Purpose: billing.PurposeTopUp, Amount: 100, Currency: "USD"},
	} {
		in.Org = b.org
		if _, err := b.svc.CreateOrder(t.Context(), in); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("%s: err = %v, want invalid_request", name, err)
		}
	}
	if _, err := b.svc.CreateOrder(t.Context(), billing.NewOrder{Org: uuid.Must(uuid.NewV7()), Provider: billing.ProviderAlipay, Purpose: billing.PurposeTopUp, Amount: 100, Currency: "CNY"}); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("unknown org: err = %v, want not_found", err)
	}
}

// TestTopUpPaidOnce: a top-up's paid event credits once; the same event again, another
// event saying paid, and events whose amount or currency differ from the order's are
// recorded in the ledger (the duplicate excepted) and change nothing.
func TestTopUpPaidOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	o := b.order(t, billing.NewOrder{Provider: billing.ProviderWeChatPay, Purpose: billing.PurposeTopUp, Amount: 5000, Currency: "CNY", ProviderOrderID: "out-1"})
	paid := func(id string, amount int64, currency string) billing.Event {
		return billing.Event{Provider: billing.ProviderWeChatPay, ID: id, Type: billing.EventPaid, ProviderOrderID: "out-1",
			ProviderPaymentID: "tx-1", Amount: amount, Currency: currency, Payload: []byte(`{"id":"` + id + `"}`)}
	}
	if b.record(t, paid("n-less", 4999, "CNY")) || b.record(t, paid("n-usd", 5000, "USD")) {
		t.Error("a paid event with another amount or currency was applied")
	}
	if got := b.credit(t, "CNY"); got != 0 {
		t.Fatalf("credit after mismatches = %d, want 0", got)
	}
	if !b.record(t, paid("n-1", 5000, "CNY")) {
		t.Fatal("the paid event was not applied")
	}
	for _, id := range []string{"n-1", "n-2"} {
		if b.record(t, paid(id, 5000, "CNY")) {
			t.Errorf("paid event %s applied a second time", id)
		}
	}
	if got := b.credit(t, "CNY"); got != 5000 {
		t.Errorf("credit = %d, want 5000", got)
	}
	got, err := b.svc.Order(t.Context(), b.org, o.ID)
	if err != nil || got.Status != billing.OrderPaid || got.ProviderPaymentID != "tx-1" || got.PaidAt == nil {
		t.Errorf("order = %+v, %v; want paid with its payment id", got, err)
	}
	if n := b.count(t, "SELECT count(*) FROM payment_events WHERE order_id = $1", o.ID); n != 4 {
		t.Errorf("ledger rows = %d, want 4 (the duplicate is not stored)", n)
	}
	if n := b.count(t, "SELECT count(*) FROM audit_events WHERE org_id = $1 AND action = 'billing.payment_event' AND data->>'outcome' = 'applied'", b.org); n != 1 {
		t.Errorf("applied audit events = %d, want 1", n)
	}
	if n := b.count(t, "SELECT count(*) FROM audit_events WHERE org_id = $1 AND data->>'outcome' = 'amount_mismatch'", b.org); n != 2 {
		t.Errorf("mismatch audit events = %d, want 2", n)
	}
	if b.record(t, billing.Event{Provider: billing.ProviderWeChatPay, ID: "n-x", Type: billing.EventPaid, ProviderOrderID: "nobody", Amount: 1, Currency: "CNY"}) {
		t.Error("an event for an unknown order was applied")
	}

	// Refunds carry the total refunded so far, and may arrive in any order.
	for _, r := range []struct {
		id     string
		amount int64
		want   bool
	}{{"r-2", 3000, true}, {"r-1", 1000, false}, {"r-2", 3000, false}, {"r-3", 5000, true}, {"r-big", 6000, false}} {
		e := billing.Event{Provider: billing.ProviderWeChatPay, ID: r.id, Type: billing.EventRefunded, ProviderPaymentID: "tx-1", Amount: r.amount, Currency: "CNY"}
		if got := b.record(t, e); got != r.want {
			t.Errorf("refund %s of %d: applied = %t, want %t", r.id, r.amount, got, r.want)
		}
	}
	if got := b.credit(t, "CNY"); got != 0 {
		t.Errorf("credit after a full refund = %d, want 0", got)
	}
	if got, _ := b.svc.Order(t.Context(), b.org, o.ID); got.Status != billing.OrderRefunded || got.Refunded != 5000 {
		t.Errorf("order = %+v, want refunded 5000", got)
	}
}

// TestPaidEventConcurrent: the same event and other paid events for one order, sent at
// once, apply once.
func TestPaidEventConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	o := b.order(t, billing.NewOrder{Provider: billing.ProviderAlipay, Purpose: billing.PurposeTopUp, Amount: 700, Currency: "CNY"})
	var applied atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			e := billing.Event{Provider: billing.ProviderAlipay, ID: []string{"a", "b"}[i%2], Type: billing.EventPaid, Order: o.ID, Amount: 700, Currency: "CNY"}
			ok, err := b.svc.Record(t.Context(), e)
			if err != nil {
				t.Error(err)
			}
			if ok {
				applied.Add(1)
			}
		})
	}
	wg.Wait()
	if applied.Load() != 1 || b.credit(t, "CNY") != 700 {
		t.Errorf("applied %d times, credit %d; want once, 700", applied.Load(), b.credit(t, "CNY"))
	}
	if n := b.count(t, "SELECT count(*) FROM payment_events WHERE order_id = $1", o.ID); n != 2 {
		t.Errorf("ledger rows = %d, want 2", n)
	}
}

// TestSubscriptionPayments: a paid subscription order activates the plan for one
// interval and an early renewal extends it; provider states older than the one applied
// are ignored; an unpaid renewal is past_due, frozen after the grace period (model calls
// refused), and paying unfreezes at once.
func TestSubscriptionPayments(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := t.Context()
	start := b.clock.Now().UTC().Truncate(time.Second)
	pay := func(id string) {
		t.Helper()
		o := b.order(t, billing.NewOrder{Provider: billing.ProviderAlipay, Purpose: billing.PurposeSubscription, Plan: "pro", Interval: "month", Currency: "USD"})
		if !b.record(t, billing.Event{Provider: billing.ProviderAlipay, ID: id, Type: billing.EventPaid, Order: o.ID, Amount: 2000, Currency: "USD", At: start}) {
			t.Fatalf("payment %s not applied", id)
		}
	}
	pay("p-1")
	sub, err := b.svc.Subscription(ctx, b.org)
	if err != nil || sub.Plan != "pro" || sub.Status != billing.Active || sub.Provider != billing.ProviderAlipay ||
		!sub.Period.Start.Equal(start) || !sub.Period.End.Equal(start.AddDate(0, 1, 0)) {
		t.Fatalf("subscription = %+v, %v; want pro active for a month from %s", sub, err, start)
	}
	pay("p-2")
	if sub, _ = b.svc.Subscription(ctx, b.org); !sub.Period.Start.Equal(start.AddDate(0, 1, 0)) || !sub.Period.End.Equal(start.AddDate(0, 2, 0)) {
		t.Errorf("renewed period = %+v, want the next month", sub.Period)
	}

	state := func(id string, status billing.Status, at time.Time) bool {
		return b.record(t, billing.Event{Provider: billing.ProviderStripe, ID: id, Type: billing.EventSubscription, Org: b.org, At: at,
			Subscription: &billing.SubscriptionState{Status: status, Plan: "pro", Interval: "month", Currency: "USD",
				Period: billing.Period{Start: start, End: start.AddDate(0, 1, 0)}, ProviderSubscriptionID: "sub_1"}})
	}
	if !state("s-2", billing.Active, start.Add(2*time.Hour)) {
		t.Fatal("the newer state was not applied")
	}
	if state("s-1", billing.Cancelled, start.Add(time.Hour)) {
		t.Error("an older state was applied over a newer one")
	}
	if !state("s-3", billing.PastDue, start.Add(3*time.Hour)) {
		t.Fatal("past_due not applied")
	}
	mctx := llm.WithOrg(ctx, b.org)
	if _, _, err := b.gateway.Chat(mctx, "default", request("hello", 8)); err != nil {
		t.Errorf("a past_due org in its grace period was refused: %v", err)
	}
	b.clock.Advance(gracePeriod + 4*time.Hour)
	if sub, _ = b.svc.Subscription(ctx, b.org); sub.Status != billing.Frozen || sub.PastDueSince == nil || !sub.PastDueSince.Equal(start.Add(3*time.Hour)) {
		t.Fatalf("after the grace period: %+v, want frozen, past due since the failure", sub)
	}
	if _, _, err := b.gateway.Chat(mctx, "default", request("hello", 8)); errs.CodeOf(err) != errs.PaymentRequired || !strings.Contains(err.Error(), "/billing/checkout") {
		t.Fatalf("frozen: err = %v, want payment_required naming where to pay", err)
	}
	if !state("s-4", billing.Active, start.Add(gracePeriod+5*time.Hour)) {
		t.Fatal("the payment was not applied")
	}
	if _, _, err := b.gateway.Chat(mctx, "default", request("hello", 8)); err != nil {
		t.Errorf("paid: the next call was refused: %v", err)
	}
}

// TestPaymentEventsAppendOnly: the ledger refuses updates and deletes.
func TestPaymentEventsAppendOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	b.record(t, billing.Event{Provider: billing.ProviderStripe, ID: "evt_1", Type: billing.EventNoted, Org: b.org, Payload: []byte(`{"a":1}`)})
	for _, q := range []string{"UPDATE payment_events SET amount_minor = 5", "UPDATE payment_events SET org_id = NULL, type = 'x'", "DELETE FROM payment_events"} {
		if _, err := b.st.Pool.Exec(t.Context(), q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want append-only", q, err)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM payment_events WHERE org_id = $1 AND type = 'noted'", b.org); n != 1 {
		t.Errorf("ledger rows = %d, want 1", n)
	}
}

func TestRedactPayload(t *testing.T) {
	t.Parallel()
	in := `{"id":"evt_1","data":{"object":{"client_secret":"pi_secret_x","amount":5,"items":[{"sign":"abc","api_key":"k","x":"y"}]}},"Signature":"s"}`
	out := string(billing.RedactPayload([]byte(in)))
	for _, secret := range []string{"pi_secret_x", `"abc"`, `"k"`, `"s"`} {
		if strings.Contains(out, secret) {
			t.Errorf("redacted payload %s still holds %s", out, secret)
		}
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.Contains(out, `"amount":5`) || !strings.Contains(out, `"x":"y"`) {
		t.Errorf("redacted payload %s lost its other fields (%v)", out, err)
	}
	if got := string(billing.RedactPayload([]byte("sign=abc&x=1"))); strings.Contains(got, "abc") {
		t.Errorf("a payload not JSON was kept: %s", got)
	}
}
