package server

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/errs"
)

// chinaPayments returns the WeChat Pay and Alipay adapter, or not_ready when this server
// has none.
func (s *Server) chinaPayments() (*billing.ChinaPayments, error) {
	if s.payments == nil {
		return nil, errs.E(errs.NotReady, "Payments are not configured on this server.")
	}
	return s.payments, nil
}

// payingOrg resolves the org a payment is for; only its owners and admins (or an API key
// with admin) may pay for it.
func (s *Server) payingOrg(ctx context.Context, id uuid.UUID) (orderRequestBase, error) {
	access, err := s.orgFor(ctx, &id)
	if err != nil {
		return orderRequestBase{}, err
	}
	if !access.isAdmin() {
		return orderRequestBase{}, errs.E(errs.PermissionDenied, "Only the org's owners and admins can pay for it.")
	}
	return orderRequestBase{org: access.OrgID, by: actor(ctx).UserID()}, nil
}

type orderRequestBase struct {
	org uuid.UUID
	by  *uuid.UUID
}

// orderRequest converts the fields every payment request shares.
func (b orderRequestBase) orderRequest(purpose api.PaymentPurpose, plan *string, interval *string, amount *int64, currency string) billing.OrderRequest {
	in := billing.OrderRequest{Org: b.org, Purpose: billing.PurposeSubscription, Currency: currency, CreatedBy: b.by}
	if purpose == api.PaymentPurposeTopUp {
		in.Purpose = billing.PurposeTopUp
	}
	if plan != nil {
		in.Plan = *plan
	}
	if interval != nil {
		in.Interval = *interval
	}
	if amount != nil {
		in.Amount = *amount
	}
	return in
}

// CreateWeChatPayPayment places a WeChat Pay order for the org.
func (s *Server) CreateWeChatPayPayment(ctx context.Context, req api.CreateWeChatPayPaymentRequestObject) (api.CreateWeChatPayPaymentResponseObject, error) {
	p, err := s.chinaPayments()
	if err != nil {
		return nil, err
	}
	base, err := s.payingOrg(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	b := req.Body
	in := billing.WeChatRequest{Mode: string(b.Mode), ClientIP: clientFrom(ctx).IP,
		OrderRequest: base.orderRequest(b.Purpose, b.Plan, (*string)(b.Interval), b.Amount, string(b.Currency))}
	if b.Openid != nil {
		in.OpenID = *b.Openid
	}
	out, err := p.PayWeChat(ctx, in)
	if err != nil {
		return nil, err
	}
	res := api.CreateWeChatPayPayment201JSONResponse{Order: toAPIPaymentOrder(out.Order)}
	if out.CodeURL != "" {
		res.CodeUrl = &out.CodeURL
	}
	if out.H5URL != "" {
		res.H5Url = &out.H5URL
	}
	if j := out.JSAPI; j != nil {
		res.Jsapi = &api.WeChatPayJSAPIParams{AppId: j.AppID, TimeStamp: j.TimeStamp, NonceStr: j.NonceStr, Package: j.Package,
			SignType: api.WeChatPayJSAPIParamsSignType(j.SignType), PaySign: j.PaySign}
	}
	return res, nil
}

// CreateAlipayPayment records an Alipay order for the org and returns its pay URL.
func (s *Server) CreateAlipayPayment(ctx context.Context, req api.CreateAlipayPaymentRequestObject) (api.CreateAlipayPaymentResponseObject, error) {
	p, err := s.chinaPayments()
	if err != nil {
		return nil, err
	}
	base, err := s.payingOrg(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	b := req.Body
	in := billing.AlipayRequest{Mode: string(b.Mode),
		OrderRequest: base.orderRequest(b.Purpose, b.Plan, (*string)(b.Interval), b.Amount, string(b.Currency))}
	if b.QuitUrl != nil {
		in.QuitURL = *b.QuitUrl
	}
	out, err := p.PayAlipay(ctx, in)
	if err != nil {
		return nil, err
	}
	return api.CreateAlipayPayment201JSONResponse{Order: toAPIPaymentOrder(out.Order), PayUrl: out.PayURL}, nil
}

// GetOrgPayment returns one of the org's orders to its owners and admins (or an API key
// with billing:read).
func (s *Server) GetOrgPayment(ctx context.Context, req api.GetOrgPaymentRequestObject) (api.GetOrgPaymentResponseObject, error) {
	// The WeChat Pay and Alipay adapter adds their orders' expiry; without it (a server
	// with Stripe only) the billing service has every order.
	order := s.llm.Billing.Order
	if s.payments != nil {
		order = s.payments.Order
	} else if !s.stripe.Configured() {
		return nil, errs.E(errs.NotReady, "Payments are not configured on this server.")
	}
	access, err := s.orgFor(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	if !access.isAdmin() {
		return nil, errs.E(errs.PermissionDenied, "Only the org's owners and admins can read its payments.")
	}
	o, err := order(ctx, access.OrgID, req.OrderId)
	if err != nil {
		return nil, err
	}
	return api.GetOrgPayment200JSONResponse(toAPIPaymentOrder(o)), nil
}

// AdminRefundPayment refunds a paid WeChat Pay or Alipay order (audited by the domain).
func (s *Server) AdminRefundPayment(ctx context.Context, req api.AdminRefundPaymentRequestObject) (api.AdminRefundPaymentResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	p, err := s.chinaPayments()
	if err != nil {
		return nil, err
	}
	var amount int64
	var reason string
	if req.Body.Amount != nil {
		amount = *req.Body.Amount
	}
	if req.Body.Reason != nil {
		reason = *req.Body.Reason
	}
	out, err := p.Refund(ctx, actor(ctx), req.OrderId, amount, reason)
	if err != nil {
		return nil, err
	}
	return api.AdminRefundPayment200JSONResponse{Order: toAPIPaymentOrder(out.Order), RefundStatus: api.PaymentRefundRefundStatus(out.Status),
		Refunded: out.Refunded}, nil
}

// wechatpayNotify serves POST /v1/webhooks/wechatpay beside the strict handler: the
// signature covers the raw body, and WeChat expects its own answers, not problems.
func (s *Server) wechatpayNotify(w http.ResponseWriter, r *http.Request) {
	s.paymentNotification(w, r, "wechatpay", func(p *billing.ChinaPayments, body []byte) error {
		return p.WeChatNotify(r.Context(), r.Header, body)
	}, func(status int, message string) {
		writeErrorBody(w, "application/json", jsonRaw(wechatpay.Failure(message)), status)
	}, func() { w.WriteHeader(http.StatusNoContent) })
}

// alipayNotify serves POST /v1/webhooks/alipay beside the strict handler: the signature
// covers the form as sent, and Alipay reads the literal success or fail.
func (s *Server) alipayNotify(w http.ResponseWriter, r *http.Request) {
	text := func(status int, body string) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
	s.paymentNotification(w, r, "alipay", func(p *billing.ChinaPayments, body []byte) error {
		return p.AlipayNotify(r.Context(), body)
	}, func(status int, _ string) {
		if status == http.StatusUnauthorized {
			status = http.StatusBadRequest
		}
		text(status, alipay.Failure)
	}, func() { text(http.StatusOK, alipay.Success) })
}

// paymentNotification reads a provider's notification and answers it in the provider's words: ok once
// recorded, fail(401) when not believed, fail(500) when it could not be recorded (the
// provider sends it again). Only an unconfigured provider is a problem (404).
func (s *Server) paymentNotification(w http.ResponseWriter, r *http.Request, provider string, apply func(*billing.ChinaPayments, []byte) error,
	fail func(status int, message string), ok func()) {
	p, err := s.chinaPayments()
	if err != nil {
		s.respondError(w, r, errs.E(errs.NotFound, "Payments are not configured on this server."))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	err = apply(p, body)
	switch {
	case err == nil:
		ok()
	case errors.Is(err, billing.ErrNotBelieved):
		s.log.WarnContext(r.Context(), "payment notification refused", "provider", provider, "reason", err.Error())
		fail(http.StatusUnauthorized, "signature not verified")
	case errs.CodeOf(err) == errs.NotFound:
		s.respondError(w, r, err)
	default:
		_ = s.classify(r, err) // logs it once
		fail(http.StatusInternalServerError, "not recorded; send it again")
	}
}

// jsonRaw lets writeErrorBody send bytes that are JSON already.
type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) { return j, nil }

func toAPIPaymentOrder(o billing.Order) api.PaymentOrder {
	out := api.PaymentOrder{Id: o.ID, OrgId: o.Org, Provider: api.PaymentOrderProvider(o.Provider), Purpose: api.PaymentPurposeSubscription,
		Amount: o.Amount, Currency: api.PaymentOrderCurrency(o.Currency), Status: api.PaymentOrderStatus(o.Status), Refunded: o.Refunded,
		CreatedAt: o.CreatedAt.UTC(), PaidAt: o.PaidAt, ExpiresAt: o.ExpiresAt}
	if o.Purpose == billing.PurposeTopUp {
		out.Purpose = api.PaymentPurposeTopUp
	}
	if o.Plan != "" {
		out.Plan = &o.Plan
	}
	if o.Interval != "" {
		interval := api.PaymentOrderInterval(o.Interval)
		out.Interval = &interval
	}
	if o.ProviderOrderID != "" {
		out.ProviderOrderId = &o.ProviderOrderID
	}
	return out
}
