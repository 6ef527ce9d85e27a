package billing

// Payments: orders and the payments ledger, shared by every provider's adapter (Stripe,
// WeChat Pay, Alipay, an operator by hand).
//
// The contract for an adapter:
//
//  1. Before sending the payer to the provider, CreateOrder records what is to be paid
//     (an Order, status created): a plan for an interval, or a top-up, its amount and
//     currency. Give the provider Order.ID (or the ProviderOrderID set on the order, such
//     as an out_trade_no) as the merchant's reference.
//  2. Once the provider has ids of its own (a Checkout Session, a prepay id), AttachRefs
//     stores them (created → pending).
//  3. Every notification, once its signature is verified, becomes an Event passed to
//     Record (its own transaction) or RecordEvent (inside the caller's, through its
//     *db.Queries). (Provider, ID) is the dedupe key: the provider's event or notify id.
//     The event lands in the append-only ledger (payment_events) once; a duplicate is not
//     stored again and changes nothing. An event for an order is applied to the order
//     it names (Order, or ProviderOrderID, or ProviderPaymentID): its amount and currency
//     must equal the order's, else it is recorded and not applied. An order is marked
//     paid exactly once, and its effect (subscription activated or renewed, credit
//     topped up) is applied with it. Every event writes an audit event
//     (billing.payment_event, its outcome in data) in the same transaction.
//  4. RecordEvent returns applied true when the event changed something; false with a
//     nil error when it was a duplicate, did not match its order, named no known order,
//     was older than the state already applied, or had nothing left to do. Answer the
//     provider with success then: a retry would change nothing. An error is a failure
//     to record (database down): answer so that the provider retries.
//
// Events of a provider's own subscription (Stripe renews by itself) carry a
// SubscriptionState instead of, or beside, an order: the state is applied only when the
// event is not older (At) than the state the subscription already has, so events
// arriving out of order never undo a newer state.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// The payment providers.
const (
	ProviderStripe    = "stripe"
	ProviderWeChatPay = "wechatpay"
	ProviderAlipay    = "alipay"
	ProviderManual    = "manual"
)

// Purpose is what an order pays for.
type Purpose string

// The purposes of an order.
const (
	PurposeSubscription Purpose = "subscription" // a plan for one interval
	PurposeTopUp        Purpose = "topup"        // credit
)

// OrderStatus is where an order's payment stands.
type OrderStatus string

// The states of an order.
const (
	OrderCreated  OrderStatus = "created"  // recorded, not yet at the provider
	OrderPending  OrderStatus = "pending"  // the provider has it; waiting for the payer
	OrderPaid     OrderStatus = "paid"     // paid; its effect applied
	OrderClosed   OrderStatus = "closed"   // closed unpaid
	OrderRefunded OrderStatus = "refunded" // refunded in full
	OrderFailed   OrderStatus = "failed"   // the payment failed
)

// Order is one payment asked of an org.
type Order struct {
	ID       uuid.UUID
	Org      uuid.UUID
	Provider string
	Purpose  Purpose
	Plan     string // subscription only
	Interval string // subscription only: month or year
	Amount   int64  // minor units (cents, fen)
	Currency string // USD or CNY
	Status   OrderStatus
	// The provider's ids, as far as known: its order (Checkout Session, out_trade_no),
	// payment (PaymentIntent, transaction_id, trade_no), customer and subscription.
	ProviderOrderID, ProviderPaymentID, ProviderCustomerID, ProviderSubscriptionID string
	Refunded                                                                       int64 // minor units refunded so far
	CreatedBy                                                                      *uuid.UUID
	PaidAt                                                                         *time.Time
	CreatedAt                                                                      time.Time
	// ExpiresAt is when an unpaid WeChat Pay or Alipay order is closed (ChinaPayments
	// sets it); nil for others.
	ExpiresAt *time.Time
}

// NewOrder is an order to create.
type NewOrder struct {
	Org      uuid.UUID
	Provider string
	Purpose  Purpose
	Plan     string // subscription: a plan of the catalog
	Interval string // subscription: month or year
	// Amount in minor units: a top-up's; zero for a subscription takes the plan's price
	// for Interval and Currency.
	Amount   int64
	Currency string // USD or CNY
	// ProviderOrderID is the merchant's order id to give the provider, when the adapter
	// chooses it now (out_trade_no); empty: set later by AttachRefs.
	ProviderOrderID string
	CreatedBy       *uuid.UUID
}

// MaxTopUp bounds a top-up, in minor units.
const MaxTopUp = 100_000_00

// CreateOrder records an order (status created) for what org is to pay. It returns
// invalid_request naming a bad field (unknown plan, an archived plan the org is not on,
// a plan without a price for the interval and currency, a bad amount) and not_found for
// an unknown org.
func (s *Service) CreateOrder(ctx context.Context, in NewOrder) (Order, error) {
	var fields []errs.FieldError
	switch in.Provider {
	case ProviderStripe, ProviderWeChatPay, ProviderAlipay, ProviderManual:
	default:
		fields = append(fields, errs.FieldError{Pointer: "/provider", Message: "must be stripe, wechatpay, alipay or manual"})
	}
	if in.Currency != "USD" && in.Currency != "CNY" {
		fields = append(fields, errs.FieldError{Pointer: "/currency", Message: "must be USD or CNY"})
	}
	switch in.Purpose {
	case PurposeSubscription:
		if in.Interval != "month" && in.Interval != "year" {
			fields = append(fields, errs.FieldError{Pointer: "/interval", Message: "must be month or year"})
		}
		plan, why, err := s.offer(ctx, in.Org, in.Plan)
		if err != nil {
			return Order{}, err
		}
		if why != "" {
			fields = append(fields, errs.FieldError{Pointer: "/plan", Message: why})
		} else if price, ok := plan.Price(in.Interval, in.Currency); !ok || price <= 0 {
			fields = append(fields, errs.FieldError{Pointer: "/plan", Message: fmt.Sprintf("the plan has no price per %s in %s", in.Interval, in.Currency)})
		} else {
			in.Amount = price
		}
	case PurposeTopUp:
		in.Plan, in.Interval = "", ""
		if in.Amount <= 0 || in.Amount > MaxTopUp {
			fields = append(fields, errs.FieldError{Pointer: "/amount", Message: fmt.Sprintf("must be between 1 and %d minor units", MaxTopUp)})
		}
	default:
		fields = append(fields, errs.FieldError{Pointer: "/purpose", Message: "must be subscription or topup"})
	}
	if err := errs.InvalidFields("invalid order", fields); err != nil {
		return Order{}, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Order{}, fmt.Errorf("order id: %w", err)
	}
	row, err := s.st.InsertPaymentOrder(ctx, db.InsertPaymentOrderParams{
		ID: id, OrgID: in.Org, Provider: in.Provider, Purpose: string(in.Purpose), PlanID: store.Text(in.Plan),
		BillingInterval: store.Text(in.Interval), AmountMinor: in.Amount, Currency: in.Currency,
		ProviderOrderID: store.Text(in.ProviderOrderID), CreatedBy: store.NullUUID(in.CreatedBy), Now: s.now().UTC(),
	})
	if err != nil {
		err = store.Translate(err)
		if errs.CodeOf(err) == errs.Invalid {
			return Order{}, errs.E(errs.NotFound, "No org with this id.")
		}
		return Order{}, fmt.Errorf("create order: %w", err)
	}
	return toOrder(row), nil
}

// Refs are a provider's ids for an order; empty ones are left as they are.
type Refs struct {
	OrderID, PaymentID, CustomerID, SubscriptionID string
}

// AttachRefs stores the provider's ids of order id (an id already set stays) and marks a
// created order pending. It returns not_found for an unknown order and conflict when
// another order of the provider has the same id.
func (s *Service) AttachRefs(ctx context.Context, id uuid.UUID, r Refs) (Order, error) {
	row, err := s.st.SetPaymentOrderRefs(ctx, db.SetPaymentOrderRefsParams{
		ID: id, ProviderOrderID: store.Text(r.OrderID), ProviderPaymentID: store.Text(r.PaymentID),
		ProviderCustomerID: store.Text(r.CustomerID), ProviderSubscriptionID: store.Text(r.SubscriptionID),
		Pending: true, Now: s.now().UTC(),
	})
	if err != nil {
		return Order{}, fmt.Errorf("attach order refs: %w", store.Translate(err))
	}
	return toOrder(row), nil
}

// Order returns the order with id of org, not_found when org has none.
func (s *Service) Order(ctx context.Context, org, id uuid.UUID) (Order, error) {
	row, err := s.st.GetPaymentOrder(ctx, id)
	if err != nil {
		return Order{}, fmt.Errorf("get order: %w", store.Translate(err))
	}
	if row.OrgID != org {
		return Order{}, errs.E(errs.NotFound, "not found")
	}
	return toOrder(row), nil
}

// OpenOrders returns up to limit orders of provider still created or pending that were
// created before before, oldest first: for a job that queries, then closes them.
func (s *Service) OpenOrders(ctx context.Context, provider string, before time.Time, limit int) ([]Order, error) {
	rows, err := s.st.ListOpenPaymentOrders(ctx, db.ListOpenPaymentOrdersParams{Provider: provider, Before: before, Lim: int32(min(max(limit, 0), 1000))}) //nolint:gosec // clamped to 0..1000
	if err != nil {
		return nil, fmt.Errorf("list open orders: %w", err)
	}
	out := make([]Order, len(rows))
	for i, r := range rows {
		out[i] = toOrder(r)
	}
	return out, nil
}

// Credits returns org's credit balance per currency, in minor units.
func (s *Service) Credits(ctx context.Context, org uuid.UUID) (map[string]int64, error) {
	rows, err := s.st.ListOrgCredits(ctx, org)
	if err != nil {
		return nil, fmt.Errorf("list credits: %w", err)
	}
	out := map[string]int64{}
	for _, r := range rows {
		out[r.Currency] = r.BalanceMinor
	}
	return out, nil
}

// Customer returns org's customer id at provider, "" when it has none.
func (s *Service) Customer(ctx context.Context, org uuid.UUID, provider string) (string, error) {
	id, err := s.st.GetPaymentCustomer(ctx, db.GetPaymentCustomerParams{OrgID: org, Provider: provider})
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get customer: %w", err)
	}
	return id, nil
}

// CustomerOrg returns the org whose customer id at provider is customer, uuid.Nil when
// none is.
func (s *Service) CustomerOrg(ctx context.Context, provider, customer string) (uuid.UUID, error) {
	org, err := s.st.GetPaymentCustomerOrg(ctx, db.GetPaymentCustomerOrgParams{Provider: provider, CustomerID: customer})
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, nil
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("get customer's org: %w", err)
	}
	return org, nil
}

// SetCustomer stores org's customer id at provider, the first one it has; a later one is
// ignored, and so is an unknown org.
func (s *Service) SetCustomer(ctx context.Context, org uuid.UUID, provider, customer string) error {
	err := s.st.UpsertPaymentCustomer(ctx, db.UpsertPaymentCustomerParams{OrgID: org, Provider: provider, CustomerID: customer, Now: s.now().UTC()})
	if err = store.Translate(err); err != nil && errs.CodeOf(err) != errs.Invalid && errs.CodeOf(err) != errs.Conflict {
		return fmt.Errorf("set customer: %w", err)
	}
	return nil
}

func toOrder(r db.PaymentOrder) Order {
	return Order{
		ID: r.ID, Org: r.OrgID, Provider: r.Provider, Purpose: Purpose(r.Purpose), Plan: r.PlanID.String,
		Interval: r.BillingInterval.String, Amount: r.AmountMinor, Currency: r.Currency, Status: OrderStatus(r.Status),
		ProviderOrderID: r.ProviderOrderID.String, ProviderPaymentID: r.ProviderPaymentID.String,
		ProviderCustomerID: r.ProviderCustomerID.String, ProviderSubscriptionID: r.ProviderSubscriptionID.String,
		Refunded: r.RefundedMinor, CreatedBy: store.UUIDPtr(r.CreatedBy), PaidAt: r.PaidAt, CreatedAt: r.CreatedAt.UTC(),
	}
}

// EventType is what a payment event says happened.
type EventType string

// The types of payment events.
const (
	// EventPaid: the order was paid (Amount, Currency: what was paid). Once per order.
	EventPaid EventType = "paid"
	// EventFailed: a payment failed. An order still unpaid becomes failed; with a
	// SubscriptionState (a failed renewal), the subscription becomes past_due.
	EventFailed EventType = "failed"
	// EventClosed: the order was closed unpaid.
	EventClosed EventType = "closed"
	// EventRefunded: Amount is the total refunded so far on the order (events of partial
	// refunds may come in any order, and before the payment); a paid top-up's credit is
	// reduced by what is new, an unpaid one's is credited less when it is paid.
	EventRefunded EventType = "refunded"
	// EventSubscription: the provider's subscription changed (renewed, past due,
	// cancelled): SubscriptionState is its new state.
	EventSubscription EventType = "subscription"
	// EventNoted: recorded in the ledger, no effect (an event kept for the record).
	EventNoted EventType = "noted"
)

// SubscriptionState is a subscription's state as a provider reports it.
type SubscriptionState struct {
	Status   Status
	Plan     string
	Interval string // month or year
	Currency string
	Period   Period
	// ProviderSubscriptionID is the provider's id of the subscription (Stripe's sub_…).
	ProviderSubscriptionID string
}

// Event is one payment event of a provider, its signature already verified.
type Event struct {
	Provider string // stripe, wechatpay, alipay or manual
	// ID is the provider's id of the event (or notify): with Provider, the dedupe key.
	ID string
	// ProviderType is the provider's name for it (invoice.paid, TRANSACTION.SUCCESS),
	// kept in the ledger; empty: Type.
	ProviderType string
	Type         EventType
	// The order, by Kiln's id, else by the provider's order id, else by its payment id.
	Order             uuid.UUID
	ProviderOrderID   string
	ProviderPaymentID string
	// Org is the org when the event names no order (a provider's subscription event).
	Org      uuid.UUID
	Amount   int64 // minor units
	Currency string
	// At is when the provider says it happened; zero: when received.
	At time.Time
	// Subscription is the subscription's new state, for EventSubscription and a failed
	// renewal; for EventPaid of a subscription order it sets the period the provider
	// gave (else one interval from At, or from the end of a period already paid).
	Subscription *SubscriptionState
	// Refs are more provider ids to store on the order.
	Refs Refs
	// Payload is the notification as received, a JSON object; RecordEvent redacts it.
	Payload []byte
}

// Outcomes of an event, as the audit log records them.
const (
	outcomeApplied   = "applied"
	outcomeMismatch  = "amount_mismatch"
	outcomeNoOrder   = "unknown_order"
	outcomeStale     = "stale"
	outcomeNoChange  = "no_change"
	outcomeDuplicate = "duplicate"
)

// Record records e in its own transaction (RecordEvent); see RecordEvent.
func (s *Service) Record(ctx context.Context, e Event) (applied bool, err error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		applied, err = s.RecordEvent(ctx, q, e)
		return err
	})
	return applied, err
}

// RecordEvent records e in the ledger through q (the caller's transaction) once per
// (Provider, ID) and applies it: see the contract at the top of this file. It returns
// applied false and a nil error for an event that changed nothing (duplicate, mismatch,
// unknown order, stale, nothing to do), invalid_request for an event missing its
// provider, id or type, and an error when it could not record.
func (s *Service) RecordEvent(ctx context.Context, q *db.Queries, e Event) (applied bool, err error) {
	if e.Provider == "" || e.ID == "" || e.Type == "" {
		return false, errs.E(errs.Invalid, "a payment event needs a provider, an id and a type")
	}
	now := s.now().UTC()
	if e.At.IsZero() {
		e.At = now
	}
	e.At = e.At.UTC()
	order, found, err := findOrder(ctx, q, e)
	if err != nil {
		return false, err
	}
	org := e.Org
	var orderID uuid.NullUUID
	if found {
		org, orderID = order.OrgID, uuid.NullUUID{UUID: order.ID, Valid: true}
	}
	var orgRef uuid.NullUUID
	if org != uuid.Nil {
		// Serialise every change to this org's subscription and credit, and know it exists.
		if _, err := q.LockBillingOrg(ctx, org); err != nil {
			if !errors.Is(err, pgx.ErrNoRows) {
				return false, fmt.Errorf("lock org: %w", err)
			}
			org = uuid.Nil
		} else {
			orgRef = uuid.NullUUID{UUID: org, Valid: true}
		}
	}
	typ := e.ProviderType
	if typ == "" {
		typ = string(e.Type)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return false, fmt.Errorf("payment event id: %w", err)
	}
	_, err = q.InsertPaymentEvent(ctx, db.InsertPaymentEventParams{
		ID: id, OrgID: orgRef, OrderID: orderID, Provider: e.Provider, ProviderEventID: e.ID, Type: typ,
		AmountMinor: e.Amount, Currency: e.Currency, Payload: RedactPayload(e.Payload), OccurredAt: e.At, ReceivedAt: now,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // a duplicate: the first one was recorded (and audited) already
	}
	if err != nil {
		return false, fmt.Errorf("record payment event: %w", store.Translate(err))
	}
	outcome := outcomeNoOrder
	switch {
	case found:
		// The order's row lock, taken only now: the event is recorded, and the org lock
		// above already serialises every event of this org.
		row, err := q.GetPaymentOrderForUpdate(ctx, order.ID)
		if err != nil {
			return false, fmt.Errorf("lock order: %w", err)
		}
		outcome, err = s.applyToOrder(ctx, q, e, row, now)
		if err != nil {
			return false, err
		}
	case org != uuid.Nil && e.Subscription != nil:
		outcome, err = s.applySubscription(ctx, q, org, e.Provider, *e.Subscription, e.At, now)
		if err != nil {
			return false, err
		}
	case org != uuid.Nil && e.Type == EventNoted:
		outcome = outcomeNoChange
	}
	var auditOrg *uuid.UUID
	if org != uuid.Nil {
		auditOrg = &org
	}
	data := map[string]any{"provider": e.Provider, "event_id": e.ID, "type": typ, "outcome": outcome, "amount": e.Amount, "currency": e.Currency}
	target, targetID := "org", org.String()
	if found {
		target, targetID = "payment_order", order.ID.String()
	}
	if err := audit.Write(ctx, q, audit.Actor{Type: audit.ActorSystem}, audit.Event{OrgID: auditOrg, Action: "billing.payment_event",
		TargetType: target, TargetID: targetID, Data: data}); err != nil {
		return false, err
	}
	if org != uuid.Nil {
		s.forget(org)
	}
	return outcome == outcomeApplied, nil
}

// findOrder finds the order e names, if any.
func findOrder(ctx context.Context, q *db.Queries, e Event) (db.PaymentOrder, bool, error) {
	var row db.PaymentOrder
	var err error
	switch {
	case e.Order != uuid.Nil:
		row, err = q.GetPaymentOrder(ctx, e.Order)
	case e.ProviderOrderID != "":
		row, err = q.GetPaymentOrderByProviderID(ctx, db.GetPaymentOrderByProviderIDParams{Provider: e.Provider, ProviderOrderID: store.Text(e.ProviderOrderID)})
	case e.ProviderPaymentID != "":
		row, err = q.GetPaymentOrderByPaymentID(ctx, db.GetPaymentOrderByPaymentIDParams{Provider: e.Provider, ProviderPaymentID: store.Text(e.ProviderPaymentID)})
	default:
		return row, false, nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return row, false, nil
	}
	if err != nil {
		return row, false, fmt.Errorf("find order: %w", err)
	}
	if row.Provider != e.Provider {
		return row, false, nil // another provider's order: not this event's
	}
	return row, true, nil
}

// applyToOrder applies e to its order (locked) and returns the outcome.
func (s *Service) applyToOrder(ctx context.Context, q *db.Queries, e Event, o db.PaymentOrder, now time.Time) (string, error) {
	switch e.Type {
	case EventPaid:
		if e.Currency != o.Currency || e.Amount != o.AmountMinor {
			return outcomeMismatch, nil
		}
	case EventRefunded:
		if e.Currency != o.Currency || e.Amount <= 0 || e.Amount > o.AmountMinor {
			return outcomeMismatch, nil
		}
	}
	refs := e.Refs
	if refs.OrderID == "" {
		refs.OrderID = e.ProviderOrderID
	}
	if refs.PaymentID == "" {
		refs.PaymentID = e.ProviderPaymentID
	}
	if refs != (Refs{}) {
		if _, err := q.SetPaymentOrderRefs(ctx, db.SetPaymentOrderRefsParams{ID: o.ID, ProviderOrderID: store.Text(refs.OrderID),
			ProviderPaymentID: store.Text(refs.PaymentID), ProviderCustomerID: store.Text(refs.CustomerID),
			ProviderSubscriptionID: store.Text(refs.SubscriptionID), Now: now}); err != nil {
			return "", fmt.Errorf("store order refs: %w", store.Translate(err))
		}
	}
	status := OrderStatus(o.Status)
	setStatus := func(to OrderStatus) error {
		if _, err := q.SetPaymentOrderStatus(ctx, db.SetPaymentOrderStatusParams{ID: o.ID, Status: string(to), Now: now}); err != nil {
			return fmt.Errorf("set order status: %w", err)
		}
		return nil
	}
	switch e.Type {
	case EventPaid:
		if status == OrderPaid || status == OrderRefunded {
			return outcomeNoChange, nil
		}
		// Paid after it failed or was closed: the money arrived, so the order is paid.
		if err := setStatus(OrderPaid); err != nil {
			return "", err
		}
		switch Purpose(o.Purpose) {
		case PurposeTopUp:
			// Less what a refund that arrived before this payment took back already.
			credit := o.AmountMinor - o.RefundedMinor
			if _, err := q.AddOrgCredit(ctx, db.AddOrgCreditParams{OrgID: o.OrgID, Currency: o.Currency, Amount: credit, Now: now}); err != nil {
				return "", fmt.Errorf("credit top-up: %w", err)
			}
		case PurposeSubscription:
			st := SubscriptionState{Status: Active, Plan: o.PlanID.String, Interval: o.BillingInterval.String, Currency: o.Currency,
				ProviderSubscriptionID: refs.SubscriptionID}
			if e.Subscription != nil && !e.Subscription.Period.End.IsZero() {
				st.Period = e.Subscription.Period
			} else {
				p, err := s.nextPeriod(ctx, q, o.OrgID, st.Plan, st.Interval, e.At)
				if err != nil {
					return "", err
				}
				st.Period = p
			}
			if _, err := s.applySubscription(ctx, q, o.OrgID, e.Provider, st, e.At, now); err != nil {
				return "", err
			}
		}
		return outcomeApplied, nil
	case EventFailed:
		if e.Subscription != nil {
			return s.applySubscription(ctx, q, o.OrgID, e.Provider, *e.Subscription, e.At, now)
		}
		if status != OrderCreated && status != OrderPending {
			return outcomeNoChange, nil
		}
		return outcomeApplied, setStatus(OrderFailed)
	case EventClosed:
		if status != OrderCreated && status != OrderPending && status != OrderFailed {
			return outcomeNoChange, nil
		}
		return outcomeApplied, setStatus(OrderClosed)
	case EventRefunded:
		// A refund may arrive before the payment it refunds (Stripe does not order its
		// events): it is kept on the order, and the payment credits only what is left.
		if e.Amount <= o.RefundedMinor {
			return outcomeNoChange, nil
		}
		if _, err := q.SetPaymentOrderRefunded(ctx, db.SetPaymentOrderRefundedParams{ID: o.ID, RefundedMinor: e.Amount, Now: now}); err != nil {
			return "", fmt.Errorf("refund order: %w", err)
		}
		if status == OrderPaid && Purpose(o.Purpose) == PurposeTopUp {
			if _, err := q.AddOrgCredit(ctx, db.AddOrgCreditParams{OrgID: o.OrgID, Currency: o.Currency, Amount: -(e.Amount - o.RefundedMinor), Now: now}); err != nil {
				return "", fmt.Errorf("debit refund: %w", err)
			}
		}
		return outcomeApplied, nil
	case EventSubscription:
		if e.Subscription == nil {
			return outcomeNoChange, nil
		}
		return s.applySubscription(ctx, q, o.OrgID, e.Provider, *e.Subscription, e.At, now)
	}
	return outcomeNoChange, nil
}

// nextPeriod is the period a payment for plan per interval at buys: from the end of
// the current period when org is already active on plan and paid beyond at (an early
// renewal), else from at.
func (s *Service) nextPeriod(ctx context.Context, q *db.Queries, org uuid.UUID, plan, interval string, at time.Time) (Period, error) {
	start := at.Truncate(time.Second)
	cur, err := q.GetSubscription(ctx, org)
	switch {
	case err == nil:
		if cur.PlanID == plan && cur.BillingInterval == interval && (cur.Status == string(Active) || cur.Status == string(Trialing)) && cur.CurrentPeriodEnd.After(at) {
			start = cur.CurrentPeriodEnd.UTC()
		}
	case !errors.Is(err, pgx.ErrNoRows):
		return Period{}, fmt.Errorf("get subscription: %w", err)
	}
	end := start.AddDate(0, 1, 0)
	if interval == "year" {
		end = start.AddDate(1, 0, 0)
	}
	return Period{Start: start, End: end}, nil
}

// applySubscription sets org's subscription to st unless the subscription already holds
// a state from after at. A state without a plan or period keeps the current ones.
func (s *Service) applySubscription(ctx context.Context, q *db.Queries, org uuid.UUID, provider string, st SubscriptionState, at, now time.Time) (string, error) {
	cur, err := q.GetSubscription(ctx, org)
	exists := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("get subscription: %w", err)
	}
	if exists && cur.StateAt != nil && cur.StateAt.After(at) {
		return outcomeStale, nil
	}
	if !st.Status.valid() {
		return "", errs.E(errs.Invalid, "subscription state %q is not a status", st.Status)
	}
	next := db.ApplyProviderSubscriptionParams{
		OrgID: org, PlanID: st.Plan, Status: string(st.Status), BillingInterval: st.Interval, Currency: st.Currency,
		CurrentPeriodStart: st.Period.Start, CurrentPeriodEnd: st.Period.End, Provider: provider,
		ProviderSubscriptionID: store.Text(st.ProviderSubscriptionID), StateAt: at, Now: now,
	}
	def := s.defaultSubscription(org)
	fill := func(v *string, have, fallback string) {
		if *v == "" {
			*v = have
			if !exists {
				*v = fallback
			}
		}
	}
	fill(&next.PlanID, cur.PlanID, def.Plan)
	fill(&next.BillingInterval, cur.BillingInterval, def.Interval)
	fill(&next.Currency, cur.Currency, def.Currency)
	if st.Period.End.IsZero() {
		next.CurrentPeriodStart, next.CurrentPeriodEnd = def.Period.Start, def.Period.End
		if exists {
			next.CurrentPeriodStart, next.CurrentPeriodEnd = cur.CurrentPeriodStart, cur.CurrentPeriodEnd
		}
	}
	if st.Status == PastDue || st.Status == Frozen {
		next.PastDueSince = &at
		if exists && cur.PastDueSince != nil && (cur.Status == string(PastDue) || cur.Status == string(Frozen)) {
			next.PastDueSince = cur.PastDueSince
		}
	}
	if exists && cur.PlanID == next.PlanID && cur.Status == next.Status && cur.BillingInterval == next.BillingInterval &&
		cur.Currency == next.Currency && cur.CurrentPeriodStart.Equal(next.CurrentPeriodStart) && cur.CurrentPeriodEnd.Equal(next.CurrentPeriodEnd) &&
		cur.Provider == provider && (next.ProviderSubscriptionID.String == "" || cur.ProviderSubscriptionID == next.ProviderSubscriptionID) {
		return outcomeNoChange, nil
	}
	if _, err := q.ApplyProviderSubscription(ctx, next); err != nil {
		return "", fmt.Errorf("apply subscription: %w", store.Translate(err))
	}
	return outcomeApplied, nil
}

// forget drops org's cached subscription on this replica.
func (s *Service) forget(org uuid.UUID) {
	s.subs.Forget(org)
}

// redactedKeys are the payload keys whose values the ledger does not keep (matched
// case-insensitively, as a whole key or, for the first group, inside one).
var (
	redactedParts = []string{"secret", "password", "private_key", "api_key", "apikey"}
	redactedKeys  = map[string]bool{"sign": true, "signature": true, "paysign": true, "key": true, "token": true, "cvc": true}
)

// RedactPayload returns payload (a JSON object) with the values of secret-looking keys
// (client_secret, sign, signature, …) replaced by "[redacted]", at any depth. A payload
// that is not JSON is not kept (an adapter turns a form-encoded notify into an object).
func RedactPayload(payload []byte) []byte {
	if len(payload) == 0 {
		return []byte("{}")
	}
	var v any
	if err := json.Unmarshal(payload, &v); err != nil {
		out, _ := json.Marshal(map[string]any{"raw": "[not JSON: not kept]"})
		return out
	}
	if _, ok := v.(map[string]any); !ok {
		v = map[string]any{"value": v}
	}
	out, err := json.Marshal(redact(v))
	if err != nil {
		return []byte("{}")
	}
	return out
}

func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			lk := strings.ToLower(k)
			secret := redactedKeys[lk]
			for _, p := range redactedParts {
				secret = secret || strings.Contains(lk, p)
			}
			if secret && val != nil {
				t[k] = "[redacted]"
				continue
			}
			t[k] = redact(val)
		}
	case []any:
		for i := range t {
			t[i] = redact(t[i])
		}
	}
	return v
}
