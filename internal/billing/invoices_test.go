package billing_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// invoicing is what an invoice test works with: the billing service on a fixed clock
// (2026-02-10) and plans free and biz (USD 50.00 a month, 100 tokens then 0.5 cent a
// token, billed).
type invoicing struct {
	st    *store.Store
	svc   *billing.Service
	clock *storetest.Clock
}

var testIssuer = billing.Issuer{ID: "default", Prefix: "INV-", Name: "Kiln Ltd", Address: "1 Kiln Way", TaxID: "GB123", TaxRateBP: 2000}

func setupInvoicing(t *testing.T) invoicing {
	t.Helper()
	st := storetest.New(t)
	rdb, ks := storetest.Redis(t)
	clock := storetest.ClockAt(time.Date(2026, 2, 10, 12, 0, 0, 0, time.UTC))
	plans := billing.NewCatalog([]billing.Plan{
		{ID: "free", Name: "Free", Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 1000, Overage: billing.Block}}},
		{ID: "biz", Name: "Biz", Prices: []billing.Price{{Interval: "month", Currency: "USD", Amount: 5000}},
			Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 100, Overage: billing.AllowAndBill, UnitPrice: 0.5}}},
	}, "free")
	svc := billing.New(st, plans, billing.NewQuota(rdb, ks, time.Minute, clock.Now), time.Minute, gracePeriod, clock.Now)
	return invoicing{st: st, svc: svc, clock: clock}
}

func (iv invoicing) invoicer(issuer billing.Issuer) *billing.Invoicer {
	return billing.NewInvoicer(iv.st, iv.svc, issuer, iv.clock.Now)
}

// topUp pays a top-up of amount for org now; it returns the order.
func (iv invoicing) topUp(t *testing.T, org uuid.UUID, amount int64, currency string) billing.Order {
	t.Helper()
	ref := "out-" + uuid.NewString()
	o, err := iv.svc.CreateOrder(t.Context(), billing.NewOrder{Org: org, Provider: billing.ProviderAlipay, Purpose: billing.PurposeTopUp,
		Amount: amount, Currency: currency, ProviderOrderID: ref})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := iv.svc.Record(t.Context(), billing.Event{Provider: billing.ProviderAlipay, ID: "paid-" + ref, Type: billing.EventPaid,
		ProviderOrderID: ref, ProviderPaymentID: "trade-" + ref, Amount: amount, Currency: currency}); err != nil {
		t.Fatal(err)
	}
	return o
}

// use records a call of tokens by org at now.
func (iv invoicing) use(t *testing.T, org uuid.UUID, tokens int) {
	t.Helper()
	if _, err := iv.st.Pool.Exec(t.Context(), `INSERT INTO llm_usage (id, org_id, request_id, endpoint, alias, provider, model, status, error_code,
		prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
		VALUES ($1, $2, 'req', 'chat', 'default', 'dev', 'dev', 'ok', '', $3, 0, 0, 0.01, 5, false, 1, $4)`,
		uuid.Must(uuid.NewV7()), org, tokens, iv.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func issue(t *testing.T, iv *billing.Invoicer, org uuid.UUID, p billing.Period) []billing.Invoice {
	t.Helper()
	got, err := iv.Issue(t.Context(), org, p)
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	return got
}

// TestIssueInvoices follows an org on a manual plan through two periods: February's
// USD invoice (plan and overage, to be paid) and CNY invoice (a top-up, paid), issued
// once however often the job runs; then March's invoice and the credit note of a partial
// refund of February's top-up. Tax is 20 %, numbers run on from one issuer; another
// issuer starts at 1.
func TestIssueInvoices(t *testing.T) {
	t.Parallel()
	f := setupInvoicing(t)
	org := storetest.Org(t, f.st)
	if _, err := f.st.UpsertOrgBillingProfile(t.Context(), db.UpsertOrgBillingProfileParams{OrgID: org, LegalName: "Acme GmbH",
		Address: "Hauptstr. 1, Berlin", TaxID: "DE999", UpdatedAt: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, org, billing.SetSubscription{Plan: "biz",
		PeriodStart: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	iv := f.invoicer(testIssuer)
	f.use(t, org, 90)
	f.use(t, org, 160) // 250 in February: 150 past the limit, 75 cents
	topUp := f.topUp(t, org, 8000, "CNY")
	feb := billing.Period{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}

	f.clock.Advance(30 * 24 * time.Hour) // 2026-03-12
	sub, err := f.svc.Subscription(t.Context(), org)
	if err != nil {
		t.Fatal(err)
	}
	if last := billing.LastEnded(sub, f.clock.Now()); last != feb {
		t.Fatalf("last ended period = %+v, want February", last)
	}
	issued, err := iv.IssueDue(t.Context())
	if err != nil || issued.Invoices != 2 || issued.CreditNotes != 0 {
		t.Fatalf("IssueDue = %+v, %v; want 2 invoices", issued, err)
	}
	if again, err := iv.IssueDue(t.Context()); err != nil || again.Invoices+again.CreditNotes != 0 {
		t.Fatalf("IssueDue again = %+v, %v; want nothing", again, err)
	}
	list, err := iv.Invoices(t.Context(), org, 10, nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("invoices = %d, %v", len(list), err)
	}
	cny, usd := list[0], list[1] // newest first
	if usd.Number != "INV-000001" || usd.Currency != "USD" || usd.Status != billing.StatusIssued || usd.Plan != "biz" ||
		usd.Subtotal != 5075 || usd.Tax != 1015 || usd.Total != 6090 || usd.TaxRateBP != 2000 || usd.Period != feb {
		t.Errorf("USD invoice = %+v", usd)
	}
	if len(usd.Lines) != 2 || usd.Lines[0].Kind != billing.LinePlan || usd.Lines[0].Amount != 5000 ||
		usd.Lines[1].Kind != billing.LineOverage || usd.Lines[1].Quantity != 150 || usd.Lines[1].UnitAmount != 0.5 || usd.Lines[1].Amount != 75 {
		t.Errorf("USD lines = %+v", usd.Lines)
	}
	if usd.Seller != (billing.Party{Name: "Kiln Ltd", Address: "1 Kiln Way", TaxID: "GB123"}) || usd.Buyer != (billing.Party{Name: "Acme GmbH", Address: "Hauptstr. 1, Berlin", TaxID: "DE999"}) {
		t.Errorf("parties = %+v / %+v", usd.Seller, usd.Buyer)
	}
	if cny.Number != "INV-000002" || cny.Status != billing.StatusPaid || cny.Total != 9600 || len(cny.Lines) != 1 ||
		cny.Lines[0].Kind != billing.LineTopup || cny.Lines[0].Order == nil || *cny.Lines[0].Order != topUp.ID {
		t.Errorf("CNY invoice = %+v", cny)
	}

	// A refund of 30.00 of February's top-up, in March: March's invoice and a credit note.
	if _, err := f.svc.Record(t.Context(), billing.Event{Provider: billing.ProviderAlipay, ID: "refund-1", Type: billing.EventRefunded,
		ProviderOrderID: topUp.ProviderOrderID, Amount: 3000, Currency: "CNY"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(31 * 24 * time.Hour) // 2026-04-12
	issued, err = iv.IssueDue(t.Context())
	if err != nil || issued.Invoices != 1 || issued.CreditNotes != 1 {
		t.Fatalf("IssueDue in April = %+v, %v; want an invoice and a credit note", issued, err)
	}
	list, err = iv.Invoices(t.Context(), org, 10, nil)
	if err != nil || len(list) != 4 {
		t.Fatalf("invoices = %d, %v", len(list), err)
	}
	note, march := list[0], list[1]
	if march.Number != "INV-000003" || march.Total != 6000 || len(march.Lines) != 1 {
		t.Errorf("March invoice = %+v", march)
	}
	if note.Number != "INV-000004" || note.Kind != billing.KindCreditNote || note.Credits == nil || *note.Credits != cny.ID ||
		note.Subtotal != -3000 || note.Tax != -600 || note.Total != -3600 || note.Lines[0].Kind != billing.LineRefund {
		t.Errorf("credit note = %+v", note)
	}
	if again, err := iv.IssueDue(t.Context()); err != nil || again.Invoices+again.CreditNotes != 0 {
		t.Fatalf("IssueDue again = %+v, %v; want nothing (the refund is credited)", again, err)
	}
	got, err := iv.Invoice(t.Context(), org, note.ID)
	if err != nil || got.Number != note.Number || len(got.Lines) != 1 {
		t.Errorf("Invoice = %+v, %v", got, err)
	}
	if _, err := iv.Invoice(t.Context(), storetest.Org(t, f.st), note.ID); err == nil || !strings.Contains(err.Error(), "No invoice") {
		t.Errorf("another org's invoice: %v, want not_found", err)
	}
	var audited int
	if err := f.st.Pool.QueryRow(t.Context(), "SELECT count(*) FROM audit_events WHERE org_id = $1 AND action = 'billing.invoice_issued'", org).Scan(&audited); err != nil || audited != 4 {
		t.Errorf("invoice_issued audit events = %d, %v; want 4", audited, err)
	}

	other := storetest.Org(t, f.st)
	f.topUp(t, other, 100, "USD")
	april := billing.Period{Start: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	b := testIssuer
	b.ID, b.Prefix = "cn", "CN-"
	if got := issue(t, f.invoicer(b), other, april); len(got) != 1 || got[0].Number != "CN-000001" || got[0].Sequence != 1 {
		t.Errorf("another issuer's first invoice = %+v", got)
	}
}

// TestInvoiceNumbersHaveNoGaps issues 60 orgs' invoices from 4 invoicers (replicas) and
// 16 goroutines at once, each picking orgs at random (so several race for the same org),
// while a trigger makes 30 % of the line inserts fail after the number was taken: every
// failed issuance rolls back, and the numbers issued are exactly 1..60, one invoice per
// org.
func TestInvoiceNumbersHaveNoGaps(t *testing.T) {
	t.Parallel()
	const orgs, workers = 60, 16
	f := setupInvoicing(t)
	ids := make([]uuid.UUID, orgs)
	for i := range ids {
		ids[i] = storetest.Org(t, f.st)
		f.topUp(t, ids[i], int64(100+i), "USD")
	}
	feb := billing.Period{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := f.st.Pool.Exec(t.Context(), `
		CREATE FUNCTION flaky_invoice_line() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF random() < 0.3 THEN RAISE EXCEPTION 'injected failure'; END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER flaky BEFORE INSERT ON invoice_lines FOR EACH ROW EXECUTE FUNCTION flaky_invoice_line();`); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*billing.Invoicer, 4)
	for i := range replicas {
		replicas[i] = f.invoicer(testIssuer)
	}
	var failed, issued atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iv := replicas[w%len(replicas)]
			for range 200 {
				if issued.Load() == orgs {
					return
				}
				got, err := iv.Issue(t.Context(), ids[rand.IntN(orgs)], feb) //nolint:gosec // a test's choice of org
				if err != nil {
					if !strings.Contains(err.Error(), "injected failure") {
						errc <- err
						return
					}
					failed.Add(1)
					continue
				}
				issued.Add(int64(len(got)))
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if failed.Load() == 0 {
		t.Fatal("no issuance failed: the test proved nothing about rollbacks")
	}
	if issued.Load() != orgs {
		t.Fatalf("issued %d invoices, want %d", issued.Load(), orgs)
	}
	rows, err := f.st.Pool.Query(t.Context(), "SELECT sequence, number, org_id FROM invoices WHERE issuer = 'default' ORDER BY sequence")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[uuid.UUID]bool{}
	var n int64
	for rows.Next() {
		var seq int64
		var number string
		var org uuid.UUID
		if err := rows.Scan(&seq, &number, &org); err != nil {
			t.Fatal(err)
		}
		n++
		if seq != n || number != fmt.Sprintf("INV-%06d", n) {
			t.Fatalf("invoice %d has sequence %d, number %s: a gap or a repeat", n, seq, number)
		}
		if seen[org] {
			t.Fatalf("org %s invoiced twice", org)
		}
		seen[org] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var next int64
	if err := f.st.Pool.QueryRow(t.Context(), "SELECT next_number FROM invoice_counters WHERE issuer = 'default'").Scan(&next); err != nil || n != orgs || next != orgs+1 {
		t.Fatalf("%d invoices, next number %d (%v); want %d and %d", n, next, err, orgs, orgs+1)
	}
	t.Logf("%d invoices numbered 1..%d without a gap; %d issuances rolled back by the injected failure", n, n, failed.Load())
}

// TestRevenue: the report sums what invoices issued in the range billed per plan and
// org, the usage of the range per plan (each org under its plan now) and per org, most
// tokens first, truncated at the limit, and counts subscriptions by the status they read
// as now (a past_due one past its grace reads frozen; orgs without one are active).
func TestRevenue(t *testing.T) {
	t.Parallel()
	f := setupInvoicing(t)
	biz, free, frozen := storetest.Org(t, f.st), storetest.Org(t, f.st), storetest.Org(t, f.st)
	if _, err := f.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, biz, billing.SetSubscription{Plan: "biz",
		PeriodStart: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, frozen, billing.SetSubscription{Plan: "biz", Status: billing.PastDue}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Pool.Exec(t.Context(), "UPDATE subscriptions SET past_due_since = $2 WHERE org_id = $1", frozen, f.clock.Now().Add(-gracePeriod-time.Hour)); err != nil {
		t.Fatal(err)
	}
	f.use(t, biz, 300)
	f.use(t, free, 40)
	f.use(t, free, 20)
	f.topUp(t, free, 700, "USD")
	feb := billing.Period{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	iv := f.invoicer(testIssuer)
	issue(t, iv, biz, feb)  // 5000 plan + 100 overage
	issue(t, iv, free, feb) // 700 top-up

	r, err := f.svc.Revenue(t.Context(), feb.Start, feb.End, 1)
	if err != nil {
		t.Fatal(err)
	}
	byPlan := map[string]billing.PlanRevenue{}
	for _, p := range r.Plans {
		byPlan[p.Plan] = p
	}
	if p := byPlan["biz"]; p.Orgs != 2 || p.Invoices != 1 || len(p.Billed) != 1 || p.Billed[0] != (billing.Amount{Currency: "USD", Minor: 5100}) ||
		p.Usage.Tokens != 300 || p.Usage.Requests != 1 {
		t.Errorf("biz = %+v", p)
	}
	if p := byPlan["free"]; p.Orgs != 1 || p.Invoices != 1 || p.Billed[0] != (billing.Amount{Currency: "USD", Minor: 700}) ||
		p.Usage.Tokens != 60 || p.Usage.Requests != 2 || p.Usage.CostUSD < 0.019 || p.Usage.CostUSD > 0.021 {
		t.Errorf("free = %+v", p)
	}
	if len(r.Orgs) != 1 || !r.OrgsTruncated || r.Orgs[0].Org != biz || r.Orgs[0].Plan != "biz" || r.Orgs[0].Usage.Tokens != 300 ||
		r.Orgs[0].Billed[0].Minor != 5100 || !strings.HasPrefix(r.Orgs[0].Name, "org-") {
		t.Errorf("orgs = %+v (truncated %t)", r.Orgs, r.OrgsTruncated)
	}
	if r.Subscriptions[billing.Active] != 2 || r.Subscriptions[billing.Frozen] != 1 || r.Subscriptions[billing.PastDue] != 0 {
		t.Errorf("subscriptions = %+v, want 2 active (one by default), 1 frozen", r.Subscriptions)
	}
	if r, err := f.svc.Revenue(t.Context(), feb.End, feb.End.AddDate(0, 1, 0), 10); err != nil || len(r.Orgs) != 0 || len(r.Plans) != 2 || byPlanTokens(r) != 0 {
		t.Errorf("March = %+v, %v; want no usage, no orgs", r, err)
	}
	if _, err := f.svc.Revenue(t.Context(), feb.End, feb.Start, 10); err == nil {
		t.Error("to before from: no error")
	}
}

func byPlanTokens(r billing.Revenue) int64 {
	var n int64
	for _, p := range r.Plans {
		n += p.Usage.Tokens
	}
	return n
}

// TestIssueCountOverage: a plan that bills past its count limits (allow_and_bill) has a
// line for each one the org exceeds when the invoice is issued, and none for one it does
// not exceed or one that only alerts.
func TestIssueCountOverage(t *testing.T) {
	t.Parallel()
	f := setupInvoicing(t)
	plans := billing.NewCatalog([]billing.Plan{
		{ID: "free", Name: "Free"},
		{ID: "team", Name: "Team", Prices: []billing.Price{{Interval: "month", Currency: "USD", Amount: 1000}},
			Limits: map[string]billing.Limit{
				billing.LimitKnowledgeBases: {Value: 1, Overage: billing.AllowAndBill, UnitPrice: 250},
				billing.LimitDocuments:      {Value: 5, Overage: billing.AllowAndBill, UnitPrice: 10},
				billing.LimitSeats:          {Value: 0, Overage: billing.AllowAndAlert},
			}},
	}, "free")
	rdb, ks := storetest.Redis(t)
	svc := billing.New(f.st, plans, billing.NewQuota(rdb, ks, time.Minute, f.clock.Now), time.Minute, gracePeriod, f.clock.Now)
	org := storetest.Org(t, f.st)
	if _, err := svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, org, billing.SetSubscription{Plan: "team",
		PeriodStart: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // 3 knowledge bases: 2 past the limit of 1
		if _, err := f.st.Pool.Exec(t.Context(), `INSERT INTO knowledge_bases (id, org_id, name, embedding_model, dimensions, chunk_max_tokens, chunk_overlap, created_at, updated_at)
			VALUES ($1, $2, 'kb', 'hash', 256, 512, 64, now(), now())`, uuid.Must(uuid.NewV7()), org); err != nil {
			t.Fatal(err)
		}
	}
	feb := billing.Period{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	got := issue(t, billing.NewInvoicer(f.st, svc, testIssuer, f.clock.Now), org, feb)
	if len(got) != 1 {
		t.Fatalf("invoices = %+v, want one", got)
	}
	lines := got[0].Lines
	if len(lines) != 2 || lines[1].Kind != billing.LineOverage || lines[1].Quantity != 2 || lines[1].UnitAmount != 250 ||
		lines[1].Amount != 500 || lines[1].Description != "Knowledge bases past the plan's 1" || got[0].Subtotal != 1500 {
		t.Errorf("lines = %+v, subtotal %d; want the plan and 2 knowledge bases past the limit at 250", lines, got[0].Subtotal)
	}
}
