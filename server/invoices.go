package server

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/invoicepdf"
	"github.com/kilnhq/kiln/internal/errs"
)

// Invoices serves the invoice endpoints.
type Invoices struct {
	Invoicer *billing.Invoicer
	PDF      *invoicepdf.Renderer
}

// invoicesFor returns the invoicer and the org the caller may read the invoices of: an
// owner or admin of it, or its API key (scoped by the spec). Errors: not_ready,
// permission_denied.
func (s *Server) invoicesFor(ctx context.Context, org uuid.UUID) (*billing.Invoicer, uuid.UUID, error) {
	if s.invoices.Invoicer == nil {
		return nil, uuid.Nil, errs.E(errs.NotReady, "Invoices are not configured on this server.")
	}
	access, err := s.orgFor(ctx, &org)
	if err != nil {
		return nil, uuid.Nil, err
	}
	if !access.isAdmin() {
		return nil, uuid.Nil, errs.E(errs.PermissionDenied, "Only the org's owners and admins can read its invoices.")
	}
	return s.invoices.Invoicer, access.OrgID, nil
}

// ListOrgInvoices lists the org's invoices and credit notes, newest first.
func (s *Server) ListOrgInvoices(ctx context.Context, req api.ListOrgInvoicesRequestObject) (api.ListOrgInvoicesResponseObject, error) {
	iv, org, err := s.invoicesFor(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := iv.Invoices(ctx, org, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(i billing.Invoice) uuid.UUID { return i.ID }, toAPIInvoice)
	return api.ListOrgInvoices200JSONResponse{Data: data, NextCursor: next}, nil
}

// GetOrgInvoice returns one of the org's invoices.
func (s *Server) GetOrgInvoice(ctx context.Context, req api.GetOrgInvoiceRequestObject) (api.GetOrgInvoiceResponseObject, error) {
	iv, org, err := s.invoicesFor(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	inv, err := iv.Invoice(ctx, org, req.InvoiceId)
	if err != nil {
		return nil, err
	}
	return api.GetOrgInvoice200JSONResponse(toAPIInvoice(inv)), nil
}

// GetOrgInvoicePDF renders one of the org's invoices as PDF.
func (s *Server) GetOrgInvoicePDF(ctx context.Context, req api.GetOrgInvoicePDFRequestObject) (api.GetOrgInvoicePDFResponseObject, error) {
	iv, org, err := s.invoicesFor(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	inv, err := iv.Invoice(ctx, org, req.InvoiceId)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := s.invoices.PDF.Render(&buf, inv); err != nil {
		return nil, err
	}
	// The number is the configured prefix and digits; %q keeps the header well formed whatever the prefix.
	disposition := fmt.Sprintf("attachment; filename=%q", inv.Number+".pdf")
	return api.GetOrgInvoicePDF200ApplicationpdfResponse{Body: &buf, ContentLength: int64(buf.Len()),
		Headers: api.GetOrgInvoicePDF200ResponseHeaders{ContentDisposition: &disposition}}, nil
}

// GetOrgBillingProfile returns what the org's invoices say of it as the buyer.
func (s *Server) GetOrgBillingProfile(ctx context.Context, req api.GetOrgBillingProfileRequestObject) (api.GetOrgBillingProfileResponseObject, error) {
	iv, org, err := s.invoicesFor(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	p, err := iv.BillingProfile(ctx, org)
	if err != nil {
		return nil, err
	}
	return api.GetOrgBillingProfile200JSONResponse(toAPIBillingProfile(p)), nil
}

// SetOrgBillingProfile sets what the org's future invoices say of it (audited by the domain).
func (s *Server) SetOrgBillingProfile(ctx context.Context, req api.SetOrgBillingProfileRequestObject) (api.SetOrgBillingProfileResponseObject, error) {
	iv, org, err := s.invoicesFor(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	p, err := iv.SetBillingProfile(ctx, actor(ctx), org, billing.Profile{LegalName: req.Body.LegalName, Address: req.Body.Address, TaxID: req.Body.TaxId})
	if err != nil {
		return nil, err
	}
	return api.SetOrgBillingProfile200JSONResponse(toAPIBillingProfile(p)), nil
}

func toAPIBillingProfile(p billing.Profile) api.BillingProfile {
	return api.BillingProfile{LegalName: p.LegalName, Address: p.Address, TaxId: p.TaxID, UpdatedAt: p.Updated}
}

// AdminSetInvoiceStatus marks an issued invoice paid or void (audited by the invoicer).
func (s *Server) AdminSetInvoiceStatus(ctx context.Context, req api.AdminSetInvoiceStatusRequestObject) (api.AdminSetInvoiceStatusResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	if s.invoices.Invoicer == nil {
		return nil, errs.E(errs.NotReady, "Invoices are not configured on this server.")
	}
	var note string
	if req.Body.Note != nil {
		note = *req.Body.Note
	}
	inv, err := s.invoices.Invoicer.SetStatus(ctx, actor(ctx), req.InvoiceId, string(req.Body.Status), note)
	if err != nil {
		return nil, err
	}
	return api.AdminSetInvoiceStatus200JSONResponse(toAPIInvoice(inv)), nil
}

// AdminGetRevenue reports revenue and usage per plan and per org, and subscriptions by
// status, to a platform admin.
func (s *Server) AdminGetRevenue(ctx context.Context, req api.AdminGetRevenueRequestObject) (api.AdminGetRevenueResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	b, err := s.billingService()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	from := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	if req.Params.From != nil {
		from = *req.Params.From
	}
	to := from.AddDate(0, 1, 0)
	if req.Params.To != nil {
		to = *req.Params.To
	}
	limit := 100
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	r, err := b.Revenue(ctx, from, to, limit)
	if err != nil {
		return nil, err
	}
	out := api.AdminGetRevenue200JSONResponse{From: r.From, To: r.To, Plans: make([]api.PlanRevenue, len(r.Plans)),
		Orgs: make([]api.OrgRevenue, len(r.Orgs)), OrgsTruncated: r.OrgsTruncated, Subscriptions: map[string]int64{}}
	for i, p := range r.Plans {
		out.Plans[i] = api.PlanRevenue{Plan: p.Plan, Orgs: p.Orgs, Billed: toAPIAmounts(p.Billed), Invoices: p.Invoices,
			CreditNotes: p.CreditNotes, Usage: toAPIUsageTotals(p.Usage)}
	}
	for i, o := range r.Orgs {
		out.Orgs[i] = api.OrgRevenue{OrgId: o.Org, Name: o.Name, Plan: o.Plan, Billed: toAPIAmounts(o.Billed), Usage: toAPIUsageTotals(o.Usage)}
	}
	for st, n := range r.Subscriptions {
		out.Subscriptions[string(st)] = n
	}
	return out, nil
}

func toAPIAmounts(in []billing.Amount) []api.MoneyAmount {
	out := make([]api.MoneyAmount, len(in))
	for i, a := range in {
		out[i] = api.MoneyAmount{Currency: api.MoneyAmountCurrency(a.Currency), Amount: a.Minor}
	}
	return out
}

func toAPIUsageTotals(u billing.Usage) api.UsageTotals {
	return api.UsageTotals{Requests: u.Requests, Tokens: u.Tokens, CostUsd: u.CostUSD}
}

func toAPIInvoice(inv billing.Invoice) api.Invoice {
	out := api.Invoice{
		Id: inv.ID, OrgId: inv.Org, Number: inv.Number, Kind: api.InvoiceKind(inv.Kind), CreditsInvoiceId: inv.Credits,
		Status: api.InvoiceStatus(inv.Status), Currency: api.InvoiceCurrency(inv.Currency),
		PeriodStart: inv.Period.Start.UTC(), PeriodEnd: inv.Period.End.UTC(),
		Subtotal: inv.Subtotal, TaxRateBp: inv.TaxRateBP, Tax: inv.Tax, Total: inv.Total,
		Seller:             api.InvoiceParty{Name: inv.Seller.Name, Address: inv.Seller.Address, TaxId: inv.Seller.TaxID},
		Buyer:              api.InvoiceParty{Name: inv.Buyer.Name, Address: inv.Buyer.Address, TaxId: inv.Buyer.TaxID},
		ProviderInvoiceUrl: inv.ProviderURL, Lines: make([]api.InvoiceLine, len(inv.Lines)), IssuedAt: inv.IssuedAt.UTC(),
	}
	if inv.Plan != "" {
		out.Plan = &inv.Plan
	}
	for i, l := range inv.Lines {
		out.Lines[i] = api.InvoiceLine{Kind: api.InvoiceLineKind(l.Kind), Description: l.Description, Quantity: l.Quantity,
			UnitAmount: l.UnitAmount, Amount: l.Amount, OrderId: l.Order}
	}
	return out
}
