package worker

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/jobs"
)

// KindIssueInvoices is the periodic job that issues every org's invoices and credit notes
// for its last ended billing period. Issuing is idempotent per org and period, so runs
// after the first, and two at once, issue nothing twice.
var KindIssueInvoices = jobs.Kind{Name: "billing.issue_invoices", MaxAttempts: 3, Timeout: 30 * time.Minute,
	Backoff: jobs.Backoff{Base: time.Minute, Max: 15 * time.Minute}}

// IssueInvoicesPayload is the payload of KindIssueInvoices (it takes none).
type IssueInvoicesPayload struct{}

// InvoiceIssuer issues the invoices that are due (billing.Invoicer).
type InvoiceIssuer interface {
	IssueDue(ctx context.Context) (billing.Issued, error)
}

// RegisterIssueInvoices declares KindIssueInvoices, run by iv; its result counts the orgs
// looked at and the invoices and credit notes issued.
func RegisterIssueInvoices(reg *jobs.Registry, iv InvoiceIssuer) {
	jobs.Register(reg, KindIssueInvoices, func(ctx context.Context, _ *jobs.Run, _ IssueInvoicesPayload) (any, error) {
		return iv.IssueDue(ctx)
	})
}
