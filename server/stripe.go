package server

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
)

// stripePayments returns the Stripe adapter, provider_not_configured when this server
// has none.
func (s *Server) stripePayments() (*billing.StripePayments, error) {
	if !s.stripe.Configured() {
		return nil, billing.StripeNotConfigured()
	}
	return s.stripe, nil
}

// CreateStripeCheckout opens a Stripe Checkout Session for the org.
func (s *Server) CreateStripeCheckout(ctx context.Context, req api.CreateStripeCheckoutRequestObject) (api.CreateStripeCheckoutResponseObject, error) {
	p, err := s.stripePayments()
	if err != nil {
		return nil, err
	}
	base, err := s.payingOrg(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	b := req.Body
	in := billing.CheckoutRequest{SuccessURL: b.SuccessUrl,
		OrderRequest: base.orderRequest(b.Purpose, b.Plan, (*string)(b.Interval), b.Amount, string(b.Currency))}
	if b.CancelUrl != nil {
		in.CancelURL = *b.CancelUrl
	}
	out, err := p.Checkout(ctx, in)
	if err != nil {
		return nil, err
	}
	return api.CreateStripeCheckout201JSONResponse{Order: toAPIPaymentOrder(out.Order), SessionId: out.SessionID, Url: out.URL}, nil
}

// CreateStripePortal opens a Stripe billing portal session for the org's customer.
func (s *Server) CreateStripePortal(ctx context.Context, req api.CreateStripePortalRequestObject) (api.CreateStripePortalResponseObject, error) {
	p, err := s.stripePayments()
	if err != nil {
		return nil, err
	}
	base, err := s.payingOrg(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	var returnURL string
	if req.Body != nil && req.Body.ReturnUrl != nil {
		returnURL = *req.Body.ReturnUrl
	}
	url, err := p.Portal(ctx, base.org, returnURL)
	if err != nil {
		return nil, err
	}
	return api.CreateStripePortal200JSONResponse{Url: url}, nil
}

// stripeWebhook serves POST /v1/webhooks/stripe beside the strict handler: the signature
// covers the raw body. 204 once recorded; a problem otherwise (400 not believed, 404 not
// configured, 500 not recorded: Stripe sends it again).
func (s *Server) stripeWebhook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	err = s.stripe.Webhook(r.Context(), r.Header.Get("Stripe-Signature"), body)
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, billing.ErrNotBelieved):
		s.log.WarnContext(r.Context(), "stripe webhook refused", "reason", err.Error())
		s.respondError(w, r, errs.E(errs.Invalid, "The Stripe-Signature does not verify this event with the endpoint's secret within 300 s."))
	default:
		s.respondError(w, r, err)
	}
}
