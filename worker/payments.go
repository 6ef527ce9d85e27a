package worker

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/jobs"
)

// KindResolvePaymentOrders is the periodic job that asks WeChat Pay and Alipay about the
// orders still open a few minutes after they were created: paid ones (their notification
// was lost) are credited once, unpaid ones past their expiry are closed. Two runs at once
// are harmless: the ledger records each outcome once.
var KindResolvePaymentOrders = jobs.Kind{Name: "billing.resolve_payment_orders", MaxAttempts: 3, Timeout: 5 * time.Minute,
	Backoff: jobs.Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}}

// ResolvePaymentOrdersPayload is the payload of KindResolvePaymentOrders (it takes none).
type ResolvePaymentOrdersPayload struct{}

// OrderResolver resolves open payment orders (billing.ChinaPayments).
type OrderResolver interface {
	ResolveOpenOrders(ctx context.Context) (billing.Resolved, error)
}

// RegisterResolvePaymentOrders declares KindResolvePaymentOrders, run by r; its result
// counts the orders queried, found paid, closed and not resolved.
func RegisterResolvePaymentOrders(reg *jobs.Registry, r OrderResolver) {
	jobs.Register(reg, KindResolvePaymentOrders, func(ctx context.Context, _ *jobs.Run, _ ResolvePaymentOrdersPayload) (any, error) {
		return r.ResolveOpenOrders(ctx)
	})
}
