package server

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
)

// TestInvoices: an org on the team plan (CNY 99.00 a month, by hand) with a billing
// profile and a CNY and a USD top-up paid this period gets two invoices (10 % tax); its
// owner and a billing:read key page through them, read one and download its PDF; plain
// members and other orgs' users cannot. A platform admin reads the revenue report; others
// cannot.
func TestInvoices(t *testing.T) {
	t.Parallel()
	b := setup(t)
	adminPair, _ := b.signUpAdmin(t, "root@example.com")
	ada := b.person(t, "ada@example.com")
	org := ada.personalOrg
	if res := b.call(t, "PUT", fmt.Sprintf("/v1/admin/orgs/%s/subscription", org), adminPair.AccessToken, map[string]any{"plan": "team", "currency": "CNY"}, nil); res.StatusCode != 200 {
		t.Fatalf("put on team: %d", res.StatusCode)
	}
	profilePath := fmt.Sprintf("/v1/orgs/%s/billing-profile", org)
	var profile api.BillingProfile
	if res := b.call(t, "GET", profilePath, ada.token, nil, &profile); res.StatusCode != 200 || profile.UpdatedAt != nil || profile.LegalName != "" {
		t.Fatalf("no billing profile yet: %d %+v", res.StatusCode, profile)
	}
	if res := b.call(t, "PUT", profilePath, ada.token, map[string]any{"legal_name": "Ada Ltd", "address": "1 Loop St", "tax_id": strings.Repeat("9", 65)}, nil); res.StatusCode != 400 {
		t.Errorf("a tax id too long: %d, want 400", res.StatusCode)
	}
	if res := b.call(t, "PUT", profilePath, ada.token, map[string]any{"legal_name": "Ada Ltd", "address": "1 Loop St", "tax_id": "GB42"}, &profile); res.StatusCode != 200 ||
		profile.UpdatedAt == nil || profile.TaxId != "GB42" {
		t.Fatalf("set billing profile: %d %+v", res.StatusCode, profile)
	}
	now := time.Now()
	for _, topUp := range []struct {
		amount   int64
		currency string
	}{{5000, "CNY"}, {1000, "USD"}} {
		if _, err := b.pool.Exec(t.Context(), `INSERT INTO payment_orders (id, org_id, provider, purpose, amount_minor, currency, status, paid_at, created_at, updated_at)
			VALUES ($1, $2, 'alipay', 'topup', $3, $4, 'paid', $5, $5, $5)`, uuid.Must(uuid.NewV7()), org, topUp.amount, topUp.currency, now); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := b.srv.llm.Billing.Subscription(t.Context(), org)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := b.srv.invoices.Invoicer.Issue(t.Context(), org, sub.Period)
	if err != nil || len(issued) != 2 {
		t.Fatalf("issue: %d invoices, %v", len(issued), err)
	}

	path := fmt.Sprintf("/v1/orgs/%s/invoices", org)
	var first, second api.InvoiceList
	if res := b.call(t, "GET", path+"?limit=1", ada.token, nil, &first); res.StatusCode != 200 || len(first.Data) != 1 || first.NextCursor == nil {
		t.Fatalf("first page: %d %+v", res.StatusCode, first)
	}
	if res := b.call(t, "GET", path+"?limit=1&cursor="+*first.NextCursor, ada.token, nil, &second); res.StatusCode != 200 || len(second.Data) != 1 || second.NextCursor != nil {
		t.Fatalf("second page: %d %+v", res.StatusCode, second)
	}
	cny, usd := first.Data[0], second.Data[0] // newest first; USD is issued before CNY
	if cny.Number != "INV-000002" || cny.Currency != api.InvoiceCurrencyCNY || cny.Status != api.InvoiceStatusIssued || len(cny.Lines) != 2 ||
		cny.Lines[0].Kind != api.InvoiceLineKindPlan || cny.Lines[0].Amount != 9900 || cny.Lines[1].Kind != api.InvoiceLineKindTopup ||
		cny.Subtotal != 14900 || cny.TaxRateBp != 1000 || cny.Tax != 1490 || cny.Total != 16390 || cny.Seller.Name != "Kiln Test Ltd" ||
		cny.Buyer != (api.InvoiceParty{Name: "Ada Ltd", Address: "1 Loop St", TaxId: "GB42"}) {
		t.Errorf("CNY invoice = %+v", cny)
	}
	if usd.Number != "INV-000001" || usd.Status != api.InvoiceStatusPaid || usd.Total != 1100 || usd.Plan == nil || *usd.Plan != "team" {
		t.Errorf("USD invoice = %+v", usd)
	}
	one := fmt.Sprintf("%s/%s", path, cny.Id)
	var got api.Invoice
	if res := b.call(t, "GET", one, ada.token, nil, &got); res.StatusCode != 200 || got.Number != cny.Number || len(got.Lines) != 2 {
		t.Errorf("one invoice: %d %+v", res.StatusCode, got)
	}
	res := b.call(t, "GET", one+"/pdf", ada.token, nil, nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/pdf" || !strings.HasPrefix(string(body), "%PDF-") ||
		res.Header.Get("Content-Disposition") != `attachment; filename="INV-000002.pdf"` {
		t.Errorf("PDF: %d %s %q, %d bytes", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("Content-Disposition"), len(body))
	}
	key := b.createKey(t, ada.token, []string{"billing:read"})
	if res := b.call(t, "GET", path, key.Key, nil, nil); res.StatusCode != 200 {
		t.Errorf("a billing:read key: %d", res.StatusCode)
	}
	chatKey := b.createKey(t, ada.token, []string{"chat"})
	if res := b.call(t, "GET", path, chatKey.Key, nil, nil); res.StatusCode != 403 {
		t.Errorf("a chat key: %d, want 403", res.StatusCode)
	}
	eve := b.signUp(t, "eve@example.com")
	for _, p := range []string{path, one, one + "/pdf", profilePath} {
		if res := b.call(t, "GET", p, eve.AccessToken, nil, nil); res.StatusCode != 404 {
			t.Errorf("%s by another org's user: %d, want 404", p, res.StatusCode)
		}
	}
	acme := b.org(t, ada, "Acme")
	bob := b.person(t, "bob@example.com")
	b.join(t, ada, acme, bob, "member")
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/invoices", acme), bob.token, nil, nil); res.StatusCode != 403 {
		t.Errorf("a plain member: %d, want 403", res.StatusCode)
	}
	eveOrg := b.currentUser(t, eve.AccessToken).PersonalOrgId
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/invoices/%s", eveOrg, cny.Id), eve.AccessToken, nil, nil); res.StatusCode != 404 {
		t.Errorf("another org's invoice under one's own org: %d, want 404", res.StatusCode)
	}

	var rep api.RevenueReport
	if res := b.call(t, "GET", "/v1/admin/revenue", adminPair.AccessToken, nil, &rep); res.StatusCode != 200 {
		t.Fatalf("revenue: %d", res.StatusCode)
	}
	var team *api.PlanRevenue
	for i := range rep.Plans {
		if rep.Plans[i].Plan == "team" {
			team = &rep.Plans[i]
		}
	}
	if team == nil || team.Orgs != 1 || team.Invoices != 2 || len(team.Billed) != 2 || team.Billed[0] != (api.MoneyAmount{Currency: "CNY", Amount: 14900}) ||
		team.Billed[1] != (api.MoneyAmount{Currency: "USD", Amount: 1000}) {
		t.Errorf("team's revenue = %+v", team)
	}
	if len(rep.Orgs) != 1 || rep.Orgs[0].OrgId != org || rep.Orgs[0].Plan != "team" || len(rep.Orgs[0].Billed) != 2 || rep.OrgsTruncated {
		t.Errorf("orgs = %+v", rep.Orgs)
	}
	if rep.Subscriptions[string(billing.Active)] < 2 { // ada's org on team, the others on the default plan
		t.Errorf("subscriptions = %+v", rep.Subscriptions)
	}
	if res := b.call(t, "GET", "/v1/admin/revenue", ada.token, nil, nil); res.StatusCode != 403 {
		t.Errorf("revenue for a non-admin: %d, want 403", res.StatusCode)
	}
	q := "/v1/admin/revenue?from=" + now.UTC().Format(time.RFC3339) + "&to=" + now.UTC().Add(-time.Hour).Format(time.RFC3339)
	if res := b.call(t, "GET", q, adminPair.AccessToken, nil, nil); res.StatusCode != 400 {
		t.Errorf("to before from: %d, want 400", res.StatusCode)
	}

	t.Run("AdminSetsStatus", func(t *testing.T) {
		status := func(id uuid.UUID) string { return fmt.Sprintf("/v1/admin/invoices/%s/status", id) }
		var paid api.Invoice
		if res := b.call(t, "POST", status(cny.Id), adminPair.AccessToken, map[string]any{"status": "paid", "note": "transfer 2026-12-01"}, &paid); res.StatusCode != 200 ||
			paid.Status != api.InvoiceStatusPaid || paid.Number != cny.Number || len(paid.Lines) != 2 {
			t.Fatalf("mark paid: %d %+v", res.StatusCode, paid)
		}
		if n := b.auditCount(t, "billing.invoice_paid", cny.Id.String()); n != 1 {
			t.Errorf("%d billing.invoice_paid events, want 1", n)
		}
		var got api.Invoice
		if res := b.call(t, "GET", one, ada.token, nil, &got); res.StatusCode != 200 || got.Status != api.InvoiceStatusPaid {
			t.Errorf("the org reads %d %s, want paid", res.StatusCode, got.Status)
		}
		for name, id := range map[string]uuid.UUID{"paid already": cny.Id, "paid when bought": usd.Id} {
			res := b.call(t, "POST", status(id), adminPair.AccessToken, map[string]any{"status": "void"}, nil)
			if p := decodeProblem(t, res); res.StatusCode != 409 || p.Code != api.ErrorCode(errs.Conflict) {
				t.Errorf("void an invoice %s: %d %s", name, res.StatusCode, p.Code)
			}
		}
		if res := b.call(t, "POST", status(uuid.Must(uuid.NewV7())), adminPair.AccessToken, map[string]any{"status": "paid"}, nil); res.StatusCode != 404 {
			t.Errorf("an unknown invoice: %d, want 404", res.StatusCode)
		}
		if res := b.call(t, "POST", status(cny.Id), adminPair.AccessToken, map[string]any{"status": "issued"}, nil); res.StatusCode != 400 {
			t.Errorf("back to issued: %d, want 400", res.StatusCode)
		}
	})
}
