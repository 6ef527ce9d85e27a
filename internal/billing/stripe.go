package billing

// Stripe: Checkout Sessions (a subscription to a plan, or a top-up), the billing portal,
// and the webhook, over the orders and ledger of payments.go. An order is recorded before
// the Checkout Session is created; the session, its PaymentIntent (and so its charge) and
// the subscription carry the order's and the org's ids in their metadata, so every event
// finds its order or org whatever order the events arrive in. Stripe renews
// subscriptions by itself: those events carry a SubscriptionState, applied only when not
// older than the state the org's subscription already has.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/kilnhq/kiln/internal/errs"
)

// StripeConfig configures StripePayments. An empty SecretKey leaves Stripe unconfigured:
// its operations answer provider_not_configured (checkout, portal) or not_found (the
// webhook).
type StripeConfig struct {
	SecretKey     string
	WebhookSecret string // whsec_…: verifies Stripe-Signature
	BaseURL       string // empty: Stripe's API (tests: stripe-mock)
	HTTPClient    *http.Client
	Log           *slog.Logger
}

// StripePayments creates Stripe Checkout and billing portal sessions and applies
// Stripe's webhook events.
type StripePayments struct {
	svc    *Service
	cfg    StripeConfig
	client *stripe.Client // nil: not configured
}

// Metadata keys Kiln sets on what it creates at Stripe.
const (
	stripeOrderKey = "kiln_order"
	stripeOrgKey   = "kiln_org"
)

// NewStripePayments builds the Stripe adapter over svc's orders and ledger.
func NewStripePayments(svc *Service, cfg StripeConfig) *StripePayments {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &StripePayments{svc: svc, cfg: cfg}
	if cfg.SecretKey == "" {
		return p
	}
	bc := &stripe.BackendConfig{HTTPClient: cfg.HTTPClient, LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull}}
	if cfg.BaseURL != "" {
		bc.URL = stripe.String(strings.TrimSuffix(cfg.BaseURL, "/"))
	}
	p.client = stripe.NewClient(cfg.SecretKey, stripe.WithBackends(stripe.NewBackendsWithConfig(bc)))
	return p
}

// Configured reports whether Stripe has a secret key.
func (p *StripePayments) Configured() bool { return p != nil && p.client != nil }

// StripeNotConfigured is the error of a Stripe operation on a server without
// billing.stripe.
func StripeNotConfigured() error {
	return errs.E(errs.ProviderNotConfigured, "Stripe is not configured on this server (billing.stripe).")
}

// CheckoutRequest is a Stripe Checkout to open for an org.
type CheckoutRequest struct {
	OrderRequest
	SuccessURL string // where Stripe sends the payer after paying
	CancelURL  string // where a payer who gives up goes; empty: SuccessURL
}

// Checkout is an order and the Checkout Session that pays it.
type Checkout struct {
	Order     Order
	SessionID string
	URL       string
}

// Checkout records an order and creates the Stripe Checkout Session that pays it: a
// subscription to the plan's Stripe Price for the interval and currency, or a one-off
// payment of a top-up. It returns provider_not_configured, invalid_request naming a bad
// field (a plan without a Stripe Price for the interval and currency among them),
// not_found for an unknown org, and upstream_error when Stripe refused or failed (the
// order stays created).
func (p *StripePayments) Checkout(ctx context.Context, in CheckoutRequest) (Checkout, error) {
	if !p.Configured() {
		return Checkout{}, StripeNotConfigured()
	}
	var price string
	if in.Purpose == PurposeSubscription {
		if plan, ok := p.svc.Plans().Get(in.Plan); ok {
			price = plan.stripePrice(in.Interval, in.Currency)
			if price == "" {
				return Checkout{}, errs.InvalidFields("invalid checkout", []errs.FieldError{{Pointer: "/plan",
					Message: fmt.Sprintf("the plan has no Stripe Price per %s in %s (billing.plans.%s.stripe_prices, or the price's stripe_price of a plan of the admin API)", in.Interval, in.Currency, in.Plan)}})
			}
		}
	}
	o, err := p.svc.CreateOrder(ctx, NewOrder{Org: in.Org, Provider: ProviderStripe, Purpose: in.Purpose, Plan: in.Plan, Interval: in.Interval,
		Amount: in.Amount, Currency: in.Currency, CreatedBy: in.CreatedBy})
	if err != nil {
		return Checkout{}, err
	}
	customer, err := p.customer(ctx, o.Org)
	if err != nil {
		return Checkout{}, err
	}
	meta := map[string]string{stripeOrderKey: o.ID.String(), stripeOrgKey: o.Org.String()}
	cancel := in.CancelURL
	if cancel == "" {
		cancel = in.SuccessURL
	}
	params := &stripe.CheckoutSessionCreateParams{
		Customer: stripe.String(customer), ClientReferenceID: stripe.String(o.ID.String()), Metadata: meta,
		SuccessURL: stripe.String(in.SuccessURL), CancelURL: stripe.String(cancel),
	}
	if o.Purpose == PurposeSubscription {
		params.Mode = stripe.String(string(stripe.CheckoutSessionModeSubscription))
		params.LineItems = []*stripe.CheckoutSessionCreateLineItemParams{{Price: stripe.String(price), Quantity: stripe.Int64(1)}}
		params.SubscriptionData = &stripe.CheckoutSessionCreateSubscriptionDataParams{Metadata: meta}
	} else {
		params.Mode = stripe.String(string(stripe.CheckoutSessionModePayment))
		params.LineItems = []*stripe.CheckoutSessionCreateLineItemParams{{Quantity: stripe.Int64(1),
			PriceData: &stripe.CheckoutSessionCreateLineItemPriceDataParams{Currency: stripe.String(strings.ToLower(o.Currency)),
				UnitAmount: stripe.Int64(o.Amount), ProductData: &stripe.CheckoutSessionCreateLineItemPriceDataProductDataParams{Name: stripe.String("Credit top-up")}}}}
		// The charge inherits the PaymentIntent's metadata: a refund finds its order by it,
		// even when it arrives before the session's completion.
		params.PaymentIntentData = &stripe.CheckoutSessionCreatePaymentIntentDataParams{Metadata: meta}
	}
	params.SetIdempotencyKey("kiln-checkout-" + o.ID.String())
	s, err := p.client.V1CheckoutSessions.Create(ctx, params)
	if err != nil {
		return Checkout{}, stripeUpstream(err)
	}
	if o, err = p.svc.AttachRefs(ctx, o.ID, Refs{OrderID: s.ID, CustomerID: customer}); err != nil {
		return Checkout{}, err
	}
	return Checkout{Order: o, SessionID: s.ID, URL: s.URL}, nil
}

// customer returns org's Stripe customer, created the first time (with an idempotency
// key per org, so that concurrent checkouts make one).
func (p *StripePayments) customer(ctx context.Context, org uuid.UUID) (string, error) {
	id, err := p.svc.Customer(ctx, org, ProviderStripe)
	if err != nil || id != "" {
		return id, err
	}
	params := &stripe.CustomerCreateParams{Metadata: map[string]string{stripeOrgKey: org.String()}}
	params.SetIdempotencyKey("kiln-customer-" + org.String())
	c, err := p.client.V1Customers.Create(ctx, params)
	if err != nil {
		return "", stripeUpstream(err)
	}
	if err := p.svc.SetCustomer(ctx, org, ProviderStripe, c.ID); err != nil {
		return "", err
	}
	// Another replica may have stored one first: use the one kept.
	return p.svc.Customer(ctx, org, ProviderStripe)
}

// Portal returns the URL of a Stripe billing portal session for org's customer, which
// returns to returnURL (empty: the portal's default). It returns
// provider_not_configured, not_found when org has never checked out with Stripe, and
// upstream_error.
func (p *StripePayments) Portal(ctx context.Context, org uuid.UUID, returnURL string) (string, error) {
	if !p.Configured() {
		return "", StripeNotConfigured()
	}
	customer, err := p.svc.Customer(ctx, org, ProviderStripe)
	if err != nil {
		return "", err
	}
	if customer == "" {
		return "", errs.E(errs.NotFound, "This org has no Stripe customer yet: it gets one at its first checkout.")
	}
	params := &stripe.BillingPortalSessionCreateParams{Customer: stripe.String(customer)}
	if returnURL != "" {
		params.ReturnURL = stripe.String(returnURL)
	}
	s, err := p.client.V1BillingPortalSessions.Create(ctx, params)
	if err != nil {
		return "", stripeUpstream(err)
	}
	return s.URL, nil
}

// stripeSubscription returns org's live Stripe subscription id, "" when it has none (no
// subscription, one not paid through Stripe, or one cancelled).
func (p *StripePayments) stripeSubscription(ctx context.Context, org uuid.UUID) (string, error) {
	sub, err := p.svc.st.GetSubscription(ctx, org)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get subscription: %w", err)
	}
	if sub.Provider != ProviderStripe || !sub.ProviderSubscriptionID.Valid || sub.Status == "cancelled" {
		return "", nil
	}
	if !p.Configured() {
		return "", StripeNotConfigured()
	}
	return sub.ProviderSubscriptionID.String, nil
}

// CancelSubscriptionAtPeriodEnd stops the renewal of org's Stripe subscription: it runs to
// the end of the period paid for and is not charged again (the org's deletion is pending).
// Nothing to do without a Stripe subscription. Errors: provider_not_configured when org
// has one but Stripe is not configured; upstream_error when Stripe refused or failed.
func (p *StripePayments) CancelSubscriptionAtPeriodEnd(ctx context.Context, org uuid.UUID) error {
	return p.setRenewal(ctx, org, false)
}

// ResumeSubscription undoes CancelSubscriptionAtPeriodEnd: org's Stripe subscription
// renews again (the org's deletion was undone). Errors as CancelSubscriptionAtPeriodEnd.
func (p *StripePayments) ResumeSubscription(ctx context.Context, org uuid.UUID) error {
	return p.setRenewal(ctx, org, true)
}

func (p *StripePayments) setRenewal(ctx context.Context, org uuid.UUID, renew bool) error {
	id, err := p.stripeSubscription(ctx, org)
	if err != nil || id == "" {
		return err
	}
	if _, err := p.client.V1Subscriptions.Update(ctx, id, &stripe.SubscriptionUpdateParams{CancelAtPeriodEnd: stripe.Bool(!renew)}); err != nil {
		return fmt.Errorf("set cancel_at_period_end=%t on Stripe subscription %s: %w", !renew, id, stripeUpstream(err))
	}
	return nil
}

// CancelSubscriptionNow cancels org's Stripe subscription at once (the org is being
// erased); one Stripe already ended, or no longer knows, is done. Errors as
// CancelSubscriptionAtPeriodEnd.
func (p *StripePayments) CancelSubscriptionNow(ctx context.Context, org uuid.UUID) error {
	id, err := p.stripeSubscription(ctx, org)
	if err != nil || id == "" {
		return err
	}
	sub, err := p.client.V1Subscriptions.Retrieve(ctx, id, nil)
	if stripeMissing(err) || (err == nil && (sub.Status == stripe.SubscriptionStatusCanceled || sub.Status == stripe.SubscriptionStatusIncompleteExpired)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read Stripe subscription %s: %w", id, stripeUpstream(err))
	}
	if _, err := p.client.V1Subscriptions.Cancel(ctx, id, &stripe.SubscriptionCancelParams{}); err != nil && !stripeMissing(err) {
		return fmt.Errorf("cancel Stripe subscription %s: %w", id, stripeUpstream(err))
	}
	return nil
}

// stripeMissing reports whether Stripe answered that the object does not exist.
func stripeMissing(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.Code == stripe.ErrorCodeResourceMissing
}

// stripeUpstream turns Stripe's failure into upstream_error, naming its code.
func stripeUpstream(err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		return &errs.Error{Code: errs.UpstreamError, Message: fmt.Sprintf("Stripe refused: %s %s", se.Code, se.Msg)}
	}
	return &errs.Error{Code: errs.UpstreamError, Message: "Stripe could not be reached or answered badly; try again."}
}

// Webhook verifies a Stripe webhook (its Stripe-Signature header and raw body: HMAC-SHA256
// with the endpoint's secret, within 300 s) and records its event. It returns not_found
// when Stripe is not configured, an error wrapping ErrNotBelieved for one not believed
// (a bad, missing or stale signature, a body that is not an event of this API version),
// nil once it is recorded (applied now, before, or not at all: answer 2xx), and another
// error when it could not be recorded (answer 5xx: Stripe sends it again).
func (p *StripePayments) Webhook(ctx context.Context, signature string, body []byte) error {
	if !p.Configured() {
		return errs.E(errs.NotFound, "Stripe is not configured on this server.")
	}
	e, customer, err := p.verify(signature, body)
	if err != nil {
		return err
	}
	if e.Org == uuid.Nil && e.Order == uuid.Nil && customer != "" {
		if e.Org, err = p.svc.CustomerOrg(ctx, ProviderStripe, customer); err != nil {
			return err
		}
	}
	if _, err := p.svc.Record(ctx, e); err != nil {
		return fmt.Errorf("record stripe event: %w", err)
	}
	return nil
}

// verify checks body's Stripe-Signature and decodes its event; an error wraps
// ErrNotBelieved.
func (p *StripePayments) verify(signature string, body []byte) (Event, string, error) {
	ev, err := webhook.ConstructEventWithOptions(body, signature, p.cfg.WebhookSecret, webhook.ConstructEventOptions{})
	if err != nil {
		return Event{}, "", fmt.Errorf("%w: %w", ErrNotBelieved, err)
	}
	e, customer, err := p.decodeEvent(ev, body)
	if err != nil {
		return Event{}, "", fmt.Errorf("%w: %w", ErrNotBelieved, err)
	}
	return e, customer, nil
}

// stripeObject is the part of the objects of Stripe's events Kiln reads: a Checkout
// Session, a subscription, an invoice or a charge. Expandable ids are strings here.
type stripeObject struct {
	ID                string            `json:"id"`
	Metadata          map[string]string `json:"metadata"`
	ClientReferenceID string            `json:"client_reference_id"`
	Customer          stripeRef         `json:"customer"`
	Currency          string            `json:"currency"`
	// Checkout Session
	AmountTotal   int64     `json:"amount_total"`
	PaymentStatus string    `json:"payment_status"`
	PaymentIntent stripeRef `json:"payment_intent"`
	Subscription  stripeRef `json:"subscription"`
	// Subscription
	Status string `json:"status"`
	Items  struct {
		Data []struct {
			CurrentPeriodStart int64 `json:"current_period_start"`
			CurrentPeriodEnd   int64 `json:"current_period_end"`
			Price              struct {
				ID        string `json:"id"`
				Recurring struct {
					Interval string `json:"interval"`
				} `json:"recurring"`
			} `json:"price"`
		} `json:"data"`
	} `json:"items"`
	// Invoice
	AmountPaid int64 `json:"amount_paid"`
	AmountDue  int64 `json:"amount_due"`
	Parent     struct {
		SubscriptionDetails *struct {
			Metadata     map[string]string `json:"metadata"`
			Subscription stripeRef         `json:"subscription"`
		} `json:"subscription_details"`
	} `json:"parent"`
	Lines struct {
		Data []struct {
			Period struct {
				Start int64 `json:"start"`
				End   int64 `json:"end"`
			} `json:"period"`
		} `json:"data"`
	} `json:"lines"`
	// Charge
	AmountRefunded int64 `json:"amount_refunded"`
}

// stripeRef is an expandable field: an id, or the object with its id.
type stripeRef string

// UnmarshalJSON reads an id or an object's id.
func (r *stripeRef) UnmarshalJSON(b []byte) error {
	var id string
	if err := json.Unmarshal(b, &id); err == nil {
		*r = stripeRef(id)
		return nil
	}
	var obj struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("stripe reference: %w", err)
	}
	*r = stripeRef(obj.ID)
	return nil
}

// stripeStatuses maps a Stripe subscription's status to Kiln's; incomplete ones (the
// first payment not made yet) have none and change nothing.
var stripeStatuses = map[string]Status{
	"trialing": Trialing, "active": Active, "past_due": PastDue, "unpaid": PastDue, "paused": Frozen, "canceled": Cancelled,
}

// decodeEvent turns a verified Stripe event into a payment event, and the customer it
// names (to find the org of an event naming neither order nor org). An event of another
// type is recorded without effect.
func (p *StripePayments) decodeEvent(ev stripe.Event, raw []byte) (Event, string, error) {
	if ev.ID == "" || ev.Type == "" || ev.Data == nil {
		return Event{}, "", errors.New("not a Stripe event: no id, type or data")
	}
	var o stripeObject
	if err := json.Unmarshal(ev.Data.Raw, &o); err != nil {
		return Event{}, "", fmt.Errorf("stripe %s object: %w", ev.Type, err)
	}
	e := Event{Provider: ProviderStripe, ID: ev.ID, ProviderType: string(ev.Type), Type: EventNoted, Currency: strings.ToUpper(o.Currency),
		Payload: raw, Org: metadataUUID(o.Metadata, stripeOrgKey)}
	if ev.Created > 0 {
		e.At = time.Unix(ev.Created, 0)
	}
	customer := string(o.Customer)
	switch ev.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded":
		e.Order = metadataUUID(o.Metadata, stripeOrderKey)
		if e.Order == uuid.Nil {
			e.Order, _ = uuid.Parse(o.ClientReferenceID)
		}
		e.ProviderOrderID, e.Amount = o.ID, o.AmountTotal
		e.Refs = Refs{PaymentID: string(o.PaymentIntent), CustomerID: customer, SubscriptionID: string(o.Subscription)}
		if o.PaymentStatus == "paid" || o.PaymentStatus == "no_payment_required" {
			e.Type = EventPaid
		}
	case "checkout.session.async_payment_failed":
		e.Order, e.ProviderOrderID, e.Type = metadataUUID(o.Metadata, stripeOrderKey), o.ID, EventFailed
	case "checkout.session.expired":
		e.Order, e.ProviderOrderID, e.Type = metadataUUID(o.Metadata, stripeOrderKey), o.ID, EventClosed
	case "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted":
		status, ok := stripeStatuses[o.Status]
		if !ok {
			break
		}
		st := SubscriptionState{Status: status, Currency: e.Currency, ProviderSubscriptionID: o.ID}
		if len(o.Items.Data) > 0 {
			item := o.Items.Data[0]
			if plan, interval, ok := p.svc.Plans().byStripePrice(item.Price.ID); ok {
				st.Plan, st.Interval = plan, interval
			}
			st.Period = stripePeriod(item.CurrentPeriodStart, item.CurrentPeriodEnd)
		}
		e.Type, e.Subscription = EventSubscription, &st
	case "invoice.paid", "invoice.payment_failed":
		sub := o.Parent.SubscriptionDetails
		if sub == nil {
			break // a one-off invoice: recorded only
		}
		if e.Org == uuid.Nil {
			e.Org = metadataUUID(sub.Metadata, stripeOrgKey)
		}
		st := SubscriptionState{Status: Active, ProviderSubscriptionID: string(sub.Subscription)}
		e.Type, e.Amount = EventSubscription, o.AmountPaid
		if ev.Type == "invoice.payment_failed" {
			st.Status, e.Type, e.Amount = PastDue, EventFailed, o.AmountDue
		} else if len(o.Lines.Data) > 0 {
			st.Period = stripePeriod(o.Lines.Data[0].Period.Start, o.Lines.Data[0].Period.End)
		}
		e.Subscription = &st
	case "charge.refunded":
		e.Type, e.Amount = EventRefunded, o.AmountRefunded
		e.Order, e.ProviderPaymentID = metadataUUID(o.Metadata, stripeOrderKey), string(o.PaymentIntent)
	}
	if e.Order != uuid.Nil || e.ProviderPaymentID != "" {
		e.Org = uuid.Nil // the order names its org
	}
	return e, customer, nil
}

// stripePeriod is the period between two Unix times; zero when either is missing or
// they are out of order.
func stripePeriod(start, end int64) Period {
	if start <= 0 || end <= start {
		return Period{}
	}
	return Period{Start: time.Unix(start, 0).UTC(), End: time.Unix(end, 0).UTC()}
}

func metadataUUID(m map[string]string, key string) uuid.UUID {
	id, err := uuid.Parse(m[key])
	if err != nil {
		return uuid.Nil
	}
	return id
}
