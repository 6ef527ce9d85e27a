package billing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Issuer is the seller on invoices (billing.invoices in config).
type Issuer struct {
	// ID names the number sequence: numbers are sequential without gaps per issuer.
	ID string
	// Prefix starts every number: Prefix + the sequence, six digits at least.
	Prefix               string
	Name, Address, TaxID string
	// TaxRateBP is the tax rate in basis points (2000 = 20 %).
	TaxRateBP int
}

// Party is a seller or buyer as an invoice names them.
type Party struct{ Name, Address, TaxID string }

// The kinds of invoice lines.
const (
	LinePlan    = "plan"
	LineOverage = "overage"
	LineTopup   = "topup"
	LineRefund  = "refund"
)

// The kinds of invoices.
const (
	KindInvoice    = "invoice"
	KindCreditNote = "credit_note"
)

// The statuses of invoices: issued (to be paid) or paid; StatusVoid below.
const (
	StatusIssued = "issued"
	StatusPaid   = "paid"
)

// InvoiceLine is one line of an invoice; Amount is in minor units, negative on credit notes.
type InvoiceLine struct {
	Kind        string
	Description string
	Quantity    int64
	UnitAmount  float64 // minor units per unit
	Amount      int64
	Order       *uuid.UUID // the payment order of a top-up or refund line
}

// Invoice is an issued invoice or credit note.
type Invoice struct {
	ID, Org  uuid.UUID
	Issuer   string
	Sequence int64
	Number   string
	Kind     string
	// Credits is the invoice a credit note credits.
	Credits              *uuid.UUID
	Status               string
	Currency             string
	Period               Period
	Plan                 string
	Subtotal, Tax, Total int64
	TaxRateBP            int
	Seller, Buyer        Party
	// ProviderURL is the payment provider's page of the invoice (Stripe's hosted
	// invoice), when the provider issued one; nil otherwise.
	ProviderURL *string
	IssuedAt    time.Time
	Lines       []InvoiceLine
}

// Invoicer issues and reads invoices.
type Invoicer struct {
	st     *store.Store
	bill   *Service
	issuer Issuer
	now    func() time.Time
}

// NewInvoicer returns the invoicer of issuer over bill's subscriptions and ledger.
func NewInvoicer(st *store.Store, bill *Service, issuer Issuer, now func() time.Time) *Invoicer {
	return &Invoicer{st: st, bill: bill, issuer: issuer, now: now}
}

// Issued counts what one run of IssueDue did.
type Issued struct {
	Orgs        int `json:"orgs"`
	Invoices    int `json:"invoices"`
	CreditNotes int `json:"credit_notes"`
}

// IssueDue issues, for every org, the invoices of its last ended period that are not
// issued yet. Running it again issues nothing new.
func (iv *Invoicer) IssueDue(ctx context.Context) (Issued, error) {
	var out Issued
	after := uuid.Nil
	for {
		orgs, err := iv.st.OrgIDsAfter(ctx, db.OrgIDsAfterParams{After: after, Lim: 500})
		if err != nil {
			return out, fmt.Errorf("list orgs: %w", err)
		}
		for _, org := range orgs {
			sub, err := iv.bill.Subscription(ctx, org)
			if err != nil {
				return out, err
			}
			got, err := iv.Issue(ctx, org, LastEnded(sub, iv.now()))
			if err != nil {
				return out, fmt.Errorf("invoice org %s: %w", org, err)
			}
			out.Orgs++
			for _, inv := range got {
				if inv.Kind == KindInvoice {
					out.Invoices++
				} else {
					out.CreditNotes++
				}
			}
		}
		if len(orgs) < 500 {
			return out, nil
		}
		after = orgs[len(orgs)-1]
	}
}

// LastEnded is the last period of sub that has ended by now.
func LastEnded(sub Subscription, now time.Time) Period {
	if !now.Before(sub.Period.End) {
		return sub.Period // a provider's subscription whose period ended unrenewed
	}
	start := sub.Period.Start.AddDate(0, -1, 0)
	if sub.Interval == "year" {
		start = sub.Period.Start.AddDate(-1, 0, 0)
	}
	return Period{Start: start, End: sub.Period.Start}
}

// draft is an invoice before it has a number.
type draft struct {
	kind     string
	credits  *uuid.UUID
	currency string
	lines    []InvoiceLine
	// paid: every line was paid when it was bought (top-ups, a plan paid through a
	// provider); an invoice with a manual plan or overage is issued to be paid.
	paid bool
}

// Issue issues org's invoices for period p, one per currency with anything to bill
// (the subscription's plan, its overage, top-ups paid in p) and one credit note per
// invoice that refunds not yet credited refer to, each numbered from the issuer's counter
// in the same transaction. It is idempotent: what is issued for (org, p) already is not
// issued again. It returns what it issued; a period with nothing to bill issues nothing.
func (iv *Invoicer) Issue(ctx context.Context, org uuid.UUID, p Period) ([]Invoice, error) {
	sub, err := iv.bill.Subscription(ctx, org)
	if err != nil {
		return nil, err
	}
	plan := iv.bill.planFor(sub)
	byCurrency := map[string]*draft{}
	add := func(currency string, l InvoiceLine) {
		d, ok := byCurrency[currency]
		if !ok {
			d = &draft{kind: KindInvoice, currency: currency, paid: true}
			byCurrency[currency] = d
		}
		d.lines = append(d.lines, l)
		if l.Kind == LineOverage || (l.Kind == LinePlan && sub.Provider == ProviderManual) {
			d.paid = false
		}
	}
	if amount, ok := plan.Price(sub.Interval, sub.Currency); ok && amount > 0 {
		add(sub.Currency, InvoiceLine{Kind: LinePlan, Description: fmt.Sprintf("%s plan, %s %s", plan.Name, p.Start.Format("2006-01-02"), p.End.Format("2006-01-02")),
			Quantity: 1, UnitAmount: float64(amount), Amount: amount})
	}
	if l, ok := plan.Limits[LimitTokens]; ok && l.Overage == AllowAndBill && l.UnitPrice > 0 {
		used, err := iv.st.OrgTokensInPeriod(ctx, db.OrgTokensInPeriodParams{OrgID: org, PeriodStart: p.Start, PeriodEnd: p.End})
		if err != nil {
			return nil, fmt.Errorf("tokens used: %w", err)
		}
		if over := used - l.Value; over > 0 {
			add(sub.Currency, overageLine(LimitTokens, l, over))
		}
	}
	if err := iv.countOverage(ctx, org, plan, func(l InvoiceLine) { add(sub.Currency, l) }); err != nil {
		return nil, err
	}
	topups, err := iv.st.PaidTopupsInPeriod(ctx, db.PaidTopupsInPeriodParams{OrgID: org, PeriodStart: p.Start, PeriodEnd: p.End})
	if err != nil {
		return nil, fmt.Errorf("top-ups: %w", err)
	}
	for _, t := range topups {
		add(t.Currency, InvoiceLine{Kind: LineTopup, Description: "Credit top-up, paid " + t.PaidAt.UTC().Format("2006-01-02"),
			Quantity: 1, UnitAmount: float64(t.AmountMinor), Amount: t.AmountMinor, Order: &t.ID})
	}
	// Most runs find everything issued already: settle that without taking the issuer's
	// lock (the transaction checks again under it).
	for currency := range byCurrency {
		exists, err := iv.st.InvoiceForPeriodExists(ctx, db.InvoiceForPeriodExistsParams{OrgID: org, PeriodStart: p.Start, Currency: currency})
		if err != nil {
			return nil, fmt.Errorf("find invoice: %w", err)
		}
		if exists {
			delete(byCurrency, currency)
		}
	}
	if len(byCurrency) == 0 {
		refunds, err := iv.st.UncreditedRefunds(ctx, db.UncreditedRefundsParams{OrgID: org, PeriodEnd: p.End})
		if err != nil {
			return nil, fmt.Errorf("refunds: %w", err)
		}
		if len(refunds) == 0 {
			return nil, nil
		}
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var out []Invoice
	err = iv.st.InTx(ctx, func(q *db.Queries) error {
		out = out[:0]
		if err := q.EnsureInvoiceCounter(ctx, iv.issuer.ID); err != nil {
			return fmt.Errorf("invoice counter: %w", err)
		}
		next, err := q.LockInvoiceCounter(ctx, iv.issuer.ID)
		if err != nil {
			return fmt.Errorf("lock invoice counter: %w", err)
		}
		buyer, err := q.GetInvoiceBuyer(ctx, org)
		if err != nil {
			return fmt.Errorf("invoice buyer: %w", store.Translate(err))
		}
		issue := func(d draft) error {
			inv, err := iv.insert(ctx, q, org, p, sub.Plan, next, Party{Name: buyer.Name, Address: buyer.Address, TaxID: buyer.TaxID}, d)
			if err != nil {
				return err
			}
			next++
			out = append(out, inv)
			return nil
		}
		for _, currency := range []string{"USD", "CNY"} {
			d, ok := byCurrency[currency]
			if !ok {
				continue
			}
			exists, err := q.InvoiceForPeriodExists(ctx, db.InvoiceForPeriodExistsParams{OrgID: org, PeriodStart: p.Start, Currency: currency})
			if err != nil {
				return fmt.Errorf("find invoice: %w", err)
			}
			if !exists {
				if err := issue(*d); err != nil {
					return err
				}
			}
		}
		// Refunds after the invoices: a top-up paid and refunded in p credits the invoice just issued.
		refunds, err := q.UncreditedRefunds(ctx, db.UncreditedRefundsParams{OrgID: org, PeriodEnd: p.End})
		if err != nil {
			return fmt.Errorf("refunds: %w", err)
		}
		var notes []*draft
		byInvoice := map[uuid.UUID]*draft{}
		for _, r := range refunds {
			credited, err := q.InvoiceCrediting(ctx, db.InvoiceCreditingParams{OrgID: org, OrderID: uuid.NullUUID{UUID: r.ID, Valid: true}, Currency: r.Currency, PaidAt: r.PaidAt})
			if errors.Is(err, pgx.ErrNoRows) {
				continue // paid before any invoice of it was issued: nothing to credit
			}
			if err != nil {
				return fmt.Errorf("credited invoice: %w", err)
			}
			d, ok := byInvoice[credited]
			if !ok {
				d = &draft{kind: KindCreditNote, credits: &credited, currency: r.Currency}
				byInvoice[credited], notes = d, append(notes, d)
			}
			d.lines = append(d.lines, InvoiceLine{Kind: LineRefund, Description: "Refund, payment of " + r.PaidAt.UTC().Format("2006-01-02"),
				Quantity: 1, UnitAmount: float64(-r.UncreditedMinor), Amount: -r.UncreditedMinor, Order: &r.ID})
		}
		for _, d := range notes {
			exists, err := q.CreditNoteForPeriodExists(ctx, db.CreditNoteForPeriodExistsParams{OrgID: org, PeriodStart: p.Start, CreditsInvoiceID: uuid.NullUUID{UUID: *d.credits, Valid: true}})
			if err != nil {
				return fmt.Errorf("find credit note: %w", err)
			}
			if !exists {
				if err := issue(*d); err != nil {
					return err
				}
			}
		}
		if err := q.SetInvoiceCounter(ctx, db.SetInvoiceCounterParams{Issuer: iv.issuer.ID, NextNumber: next}); err != nil {
			return fmt.Errorf("advance invoice counter: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insert numbers d with sequence n and stores it with its lines and audit event.
func (iv *Invoicer) insert(ctx context.Context, q *db.Queries, org uuid.UUID, p Period, plan string, n int64, buyer Party, d draft) (Invoice, error) {
	inv := Invoice{
		ID: uuid.Must(uuid.NewV7()), Org: org, Issuer: iv.issuer.ID, Sequence: n, Number: fmt.Sprintf("%s%06d", iv.issuer.Prefix, n),
		Kind: d.kind, Credits: d.credits, Status: StatusIssued, Currency: d.currency, Period: p, Plan: plan, TaxRateBP: iv.issuer.TaxRateBP,
		Seller: Party{Name: iv.issuer.Name, Address: iv.issuer.Address, TaxID: iv.issuer.TaxID}, Buyer: buyer,
		IssuedAt: iv.now().UTC().Truncate(time.Microsecond), Lines: d.lines,
	}
	if d.paid || d.kind == KindCreditNote {
		inv.Status = StatusPaid // a credit note is settled by the refund it records
	}
	for _, l := range d.lines {
		inv.Subtotal += l.Amount
	}
	inv.Tax = taxOf(inv.Subtotal, inv.TaxRateBP)
	inv.Total = inv.Subtotal + inv.Tax
	// An invoice of a period a Stripe subscription paid links Stripe's own invoice of it.
	var providerURL string
	if d.kind == KindInvoice {
		url, err := q.StripeInvoiceURL(ctx, db.StripeInvoiceURLParams{OrgID: uuid.NullUUID{UUID: org, Valid: true}, PeriodStartUnix: strconv.FormatInt(p.Start.Unix(), 10)})
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return Invoice{}, fmt.Errorf("find the stripe invoice: %w", err)
		}
		if providerURL = url; url != "" {
			inv.ProviderURL = &url
		}
	}
	if err := q.InsertInvoice(ctx, db.InsertInvoiceParams{
		ID: inv.ID, OrgID: org, Issuer: inv.Issuer, Sequence: n, Number: inv.Number, Kind: inv.Kind, CreditsInvoiceID: store.NullUUID(inv.Credits),
		Status: inv.Status, Currency: inv.Currency, PeriodStart: p.Start, PeriodEnd: p.End, PlanID: store.Text(plan),
		SubtotalMinor: inv.Subtotal, TaxRateBp: int32(inv.TaxRateBP), TaxMinor: inv.Tax, TotalMinor: inv.Total, //nolint:gosec // at most 10,000
		SellerName: inv.Seller.Name, SellerAddress: inv.Seller.Address, SellerTaxID: inv.Seller.TaxID,
		BuyerName: buyer.Name, BuyerAddress: buyer.Address, BuyerTaxID: buyer.TaxID, ProviderInvoiceUrl: store.Text(providerURL), IssuedAt: inv.IssuedAt,
	}); err != nil {
		return Invoice{}, fmt.Errorf("insert invoice: %w", store.Translate(err))
	}
	for i, l := range d.lines {
		if err := q.InsertInvoiceLine(ctx, db.InsertInvoiceLineParams{InvoiceID: inv.ID, Position: int32(i + 1), Kind: l.Kind, Description: l.Description, //nolint:gosec // a handful of lines
			Quantity: l.Quantity, UnitAmountMinor: l.UnitAmount, AmountMinor: l.Amount, OrderID: store.NullUUID(l.Order)}); err != nil {
			return Invoice{}, fmt.Errorf("insert invoice line: %w", store.Translate(err))
		}
	}
	ev := audit.Event{OrgID: &org, Action: "billing.invoice_issued", TargetType: "invoice", TargetID: inv.ID.String(),
		Data: map[string]any{"number": inv.Number, "kind": inv.Kind, "currency": inv.Currency, "total_minor": inv.Total,
			"period_start": p.Start, "period_end": p.End}}
	if inv.Credits != nil {
		ev.Data["credits_invoice_id"] = inv.Credits.String()
	}
	if err := audit.Write(ctx, q, audit.Actor{Type: audit.ActorSystem}, ev); err != nil {
		return Invoice{}, err
	}
	return inv, nil
}

// taxOf is rateBP basis points of amount, rounded half away from zero.
func taxOf(amount int64, rateBP int) int64 {
	x := amount * int64(rateBP)
	if x < 0 {
		return -((-x + 5000) / 10000)
	}
	return (x + 5000) / 10000
}

// Invoices lists org's invoices and credit notes, newest first, limit after the cursor.
func (iv *Invoicer) Invoices(ctx context.Context, org uuid.UUID, limit int, before *uuid.UUID) ([]Invoice, error) {
	rows, err := iv.st.ListInvoices(ctx, db.ListInvoicesParams{OrgID: org, Before: store.NullUUID(before), Lim: int32(limit)}) //nolint:gosec // a page size
	if err != nil {
		return nil, fmt.Errorf("list invoices: %w", err)
	}
	return iv.withLines(ctx, rows)
}

// Invoice returns one of org's invoices. Errors: not_found.
func (iv *Invoicer) Invoice(ctx context.Context, org, id uuid.UUID) (Invoice, error) {
	row, err := iv.st.GetInvoice(ctx, db.GetInvoiceParams{OrgID: org, ID: id})
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return Invoice{}, errs.E(errs.NotFound, "No invoice %s.", id)
		}
		return Invoice{}, fmt.Errorf("get invoice: %w", err)
	}
	out, err := iv.withLines(ctx, []db.Invoice{row})
	if err != nil {
		return Invoice{}, err
	}
	return out[0], nil
}

func (iv *Invoicer) withLines(ctx context.Context, rows []db.Invoice) ([]Invoice, error) {
	ids := make([]uuid.UUID, len(rows))
	out := make([]Invoice, len(rows))
	at := map[uuid.UUID]int{}
	for i, r := range rows {
		ids[i], at[r.ID], out[i] = r.ID, i, toInvoice(r)
	}
	lines, err := iv.st.ListInvoiceLines(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("invoice lines: %w", err)
	}
	for _, l := range lines {
		inv := &out[at[l.InvoiceID]]
		inv.Lines = append(inv.Lines, InvoiceLine{Kind: l.Kind, Description: l.Description, Quantity: l.Quantity,
			UnitAmount: l.UnitAmountMinor, Amount: l.AmountMinor, Order: store.UUIDPtr(l.OrderID)})
	}
	return out, nil
}

// StatusVoid is the status of an invoice an operator voided (issued in error).
const StatusVoid = "void"

// SetStatus marks issued invoice id paid (settled outside the payment providers) or void,
// auditing it with note in the same transaction. Errors: not_found, invalid_request naming
// /status, conflict for a credit note or an invoice that is not issued.
func (iv *Invoicer) SetStatus(ctx context.Context, by audit.Actor, id uuid.UUID, status, note string) (Invoice, error) {
	action := map[string]string{StatusPaid: "billing.invoice_paid", StatusVoid: "billing.invoice_voided"}[status]
	if action == "" {
		return Invoice{}, errs.InvalidFields("invalid invoice status", []errs.FieldError{{Pointer: "/status", Message: "must be paid or void"}})
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var row db.Invoice
	err := iv.st.InTx(ctx, func(q *db.Queries) error {
		cur, err := q.LockInvoice(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "No invoice %s.", id)
		}
		if err != nil {
			return fmt.Errorf("lock invoice: %w", err)
		}
		if cur.Kind != KindInvoice {
			return errs.E(errs.Conflict, "%s is a credit note: it is settled by the refund it records.", cur.Number)
		}
		if cur.Status != StatusIssued {
			return errs.E(errs.Conflict, "%s is %s already; only an issued invoice is marked paid or void.", cur.Number, cur.Status)
		}
		if row, err = q.SetInvoiceStatus(ctx, db.SetInvoiceStatusParams{ID: id, Status: status}); err != nil {
			return fmt.Errorf("set invoice status: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &row.OrgID, Action: action, TargetType: "invoice", TargetID: id.String(),
			Data: map[string]any{"number": row.Number, "note": note}})
	})
	if err != nil {
		return Invoice{}, err
	}
	out, err := iv.withLines(ctx, []db.Invoice{row})
	if err != nil {
		return Invoice{}, err
	}
	return out[0], nil
}

func toInvoice(r db.Invoice) Invoice {
	inv := Invoice{
		ID: r.ID, Org: r.OrgID, Issuer: r.Issuer, Sequence: r.Sequence, Number: r.Number, Kind: r.Kind, Credits: store.UUIDPtr(r.CreditsInvoiceID),
		Status: r.Status, Currency: r.Currency, Period: Period{Start: r.PeriodStart.UTC(), End: r.PeriodEnd.UTC()}, Plan: r.PlanID.String,
		Subtotal: r.SubtotalMinor, Tax: r.TaxMinor, Total: r.TotalMinor, TaxRateBP: int(r.TaxRateBp),
		Seller: Party{Name: r.SellerName, Address: r.SellerAddress, TaxID: r.SellerTaxID},
		Buyer:  Party{Name: r.BuyerName, Address: r.BuyerAddress, TaxID: r.BuyerTaxID}, IssuedAt: r.IssuedAt.UTC(),
	}
	if r.ProviderInvoiceUrl.Valid {
		inv.ProviderURL = &r.ProviderInvoiceUrl.String
	}
	return inv
}

// Profile is what an org's invoices say of it as the buyer. Updated is nil until one is
// set (the invoices then name the org by its name).
type Profile struct {
	LegalName, Address, TaxID string
	Updated                   *time.Time
}

// Limits of a billing profile's fields, in characters.
const (
	maxLegalName = 200
	maxAddress   = 1000
	maxTaxID     = 64
)

// BillingProfile returns org's billing profile, empty when none is set.
func (iv *Invoicer) BillingProfile(ctx context.Context, org uuid.UUID) (Profile, error) {
	r, err := iv.st.GetOrgBillingProfile(ctx, org)
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, nil
	}
	if err != nil {
		return Profile{}, fmt.Errorf("get billing profile: %w", err)
	}
	updated := r.UpdatedAt.UTC()
	return Profile{LegalName: r.LegalName, Address: r.Address, TaxID: r.TaxID, Updated: &updated}, nil
}

// SetBillingProfile sets what org's future invoices say of it as the buyer (issued ones
// keep theirs), audited as billing.profile_set. Errors: invalid_request for a field too
// long.
func (iv *Invoicer) SetBillingProfile(ctx context.Context, by audit.Actor, org uuid.UUID, p Profile) (Profile, error) {
	for _, f := range []struct {
		name, value string
		limit       int
	}{{"legal_name", p.LegalName, maxLegalName}, {"address", p.Address, maxAddress}, {"tax_id", p.TaxID, maxTaxID}} {
		if n := len([]rune(f.value)); n > f.limit {
			return Profile{}, errs.E(errs.Invalid, "%s is %d characters, at most %d.", f.name, n, f.limit)
		}
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var out Profile
	err := iv.st.InTx(ctx, func(q *db.Queries) error {
		r, err := q.UpsertOrgBillingProfile(ctx, db.UpsertOrgBillingProfileParams{OrgID: org, LegalName: p.LegalName, Address: p.Address,
			TaxID: p.TaxID, UpdatedAt: iv.now().UTC().Truncate(time.Microsecond)})
		if err != nil {
			return fmt.Errorf("set billing profile: %w", store.Translate(err))
		}
		updated := r.UpdatedAt.UTC()
		out = Profile{LegalName: r.LegalName, Address: r.Address, TaxID: r.TaxID, Updated: &updated}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "billing.profile_set", TargetType: "org", TargetID: org.String(),
			Data: map[string]any{"legal_name": p.LegalName, "tax_id": p.TaxID}})
	})
	if err != nil {
		return Profile{}, err
	}
	return out, nil
}

// countOverage adds a line for each count limit (seats, knowledge bases, documents,
// storage) that plan bills past (allow_and_bill): what the org has past the limit when
// the invoice is issued, at the limit's unit price for the period.
func (iv *Invoicer) countOverage(ctx context.Context, org uuid.UUID, plan Plan, add func(InvoiceLine)) error {
	var has map[string]int64
	for _, name := range LimitNames {
		l, ok := plan.Limits[name]
		if name == LimitTokens || !ok || l.Overage != AllowAndBill || l.UnitPrice <= 0 {
			continue
		}
		if has == nil {
			var err error
			if has, err = iv.bill.counts(ctx, iv.st.Queries, org); err != nil {
				return err
			}
		}
		if over := has[name] - l.Value; over > 0 {
			add(overageLine(name, l, over))
		}
	}
	return nil
}

// overageLine bills over units past limit name's l, at its unit price.
func overageLine(name string, l Limit, over int64) InvoiceLine {
	unit := limitWords[name].unit
	return InvoiceLine{Kind: LineOverage, Description: fmt.Sprintf("%s%s past the plan's %d", strings.ToUpper(unit[:1]), unit[1:], l.Value),
		Quantity: over, UnitAmount: l.UnitPrice, Amount: int64(math.Round(float64(over) * l.UnitPrice))}
}
