package billing

// WeChat Pay and Alipay: the glue between their wire clients (wechatpay, alipay) and the
// orders and ledger of payments.go. An order is recorded before the provider hears of it,
// with the merchant's order number (out_trade_no) chosen then, so an order whose placement
// failed half-way (a timeout after WeChat created it) is still found by that number.
// Every notification, once believed, and every answer of a query that says an order was
// paid or closed becomes an Event through Record: the ledger's dedupe and the order's
// paid-once rule make a notification and a query that report the same payment credit it
// once.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// ChinaConfig configures ChinaPayments. A nil client leaves its provider unconfigured:
// its operations answer provider_not_configured (creating, refunding) or not_found
// (notifications).
type ChinaConfig struct {
	WeChat *wechatpay.Client
	Alipay *alipay.Client
	// Expiry is how long an order can be paid (the time_expire given to the provider);
	// after it the order query job closes it.
	Expiry time.Duration
	// QueryAfter is how old an open order is before the order query job asks the
	// provider about it (its notification was lost, or the payer has not paid yet).
	QueryAfter time.Duration
	Log        *slog.Logger
	Now        func() time.Time // nil: time.Now
}

// ChinaPayments places WeChat Pay and Alipay orders, applies their notifications, refunds,
// and resolves orders whose notification never came.
type ChinaPayments struct {
	svc *Service
	cfg ChinaConfig
}

// NewChinaPayments builds the WeChat Pay and Alipay adapter over svc's orders and ledger.
func NewChinaPayments(svc *Service, cfg ChinaConfig) *ChinaPayments {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &ChinaPayments{svc: svc, cfg: cfg}
}

// Configured reports whether provider (wechatpay or alipay) has a client.
func (p *ChinaPayments) Configured(provider string) bool {
	switch provider {
	case ProviderWeChatPay:
		return p.cfg.WeChat != nil
	case ProviderAlipay:
		return p.cfg.Alipay != nil
	}
	return false
}

func notConfigured(provider string) error {
	name := map[string]string{ProviderWeChatPay: "WeChat Pay", ProviderAlipay: "Alipay"}[provider]
	return errs.E(errs.ProviderNotConfigured, "%s is not configured on this server (billing.%s).", name, provider)
}

// OrderRequest is what an org asks to pay for, as in NewOrder.
type OrderRequest struct {
	Org       uuid.UUID
	Purpose   Purpose
	Plan      string // subscription
	Interval  string // subscription
	Amount    int64  // top-up, in fen
	Currency  string // CNY
	CreatedBy *uuid.UUID
}

// The ways a WeChat Pay order is paid.
const (
	WeChatNative = "native" // a QR code
	WeChatJSAPI  = "jsapi"  // inside WeChat, for an openid
	WeChatH5     = "h5"     // a mobile browser
)

// WeChatRequest is a WeChat Pay order to place.
type WeChatRequest struct {
	OrderRequest
	Mode     string // WeChatNative, WeChatJSAPI or WeChatH5
	OpenID   string // WeChatJSAPI
	ClientIP string // WeChatH5: the payer's IP
}

// WeChatPayment is a placed WeChat Pay order and what starts its payment, by mode.
type WeChatPayment struct {
	Order   Order
	CodeURL string
	JSAPI   *wechatpay.JSAPIParams
	H5URL   string
}

// PayWeChat records an order and places it at WeChat Pay. It returns
// provider_not_configured, invalid_request naming a bad field, not_found for an unknown
// org, and upstream_error when WeChat Pay refused or failed (the order stays open; the
// order query job closes it).
func (p *ChinaPayments) PayWeChat(ctx context.Context, in WeChatRequest) (WeChatPayment, error) {
	wc := p.cfg.WeChat
	if wc == nil {
		return WeChatPayment{}, notConfigured(ProviderWeChatPay)
	}
	switch {
	case in.Mode == WeChatJSAPI && in.OpenID == "":
		return WeChatPayment{}, errs.InvalidFields("invalid payment", []errs.FieldError{{Pointer: "/openid", Message: "is required for mode jsapi"}})
	case in.Mode == WeChatH5 && in.ClientIP == "":
		return WeChatPayment{}, errs.E(errs.Invalid, "mode h5 needs the payer's IP address")
	case in.Mode != WeChatNative && in.Mode != WeChatJSAPI && in.Mode != WeChatH5:
		return WeChatPayment{}, errs.InvalidFields("invalid payment", []errs.FieldError{{Pointer: "/mode", Message: "must be native, jsapi or h5"}})
	}
	o, err := p.create(ctx, ProviderWeChatPay, in.OrderRequest)
	if err != nil {
		return WeChatPayment{}, err
	}
	wo := wechatpay.Order{OutTradeNo: o.ProviderOrderID, Description: p.description(o), Total: o.Amount, Currency: o.Currency, ExpiresAt: *o.ExpiresAt}
	out := WeChatPayment{}
	switch in.Mode {
	case WeChatNative:
		out.CodeURL, err = wc.Native(ctx, wo)
	case WeChatJSAPI:
		var params wechatpay.JSAPIParams
		params, err = wc.JSAPI(ctx, wo, in.OpenID)
		out.JSAPI = &params
	case WeChatH5:
		out.H5URL, err = wc.H5(ctx, wo, in.ClientIP)
	}
	if err != nil {
		return WeChatPayment{}, upstream("WeChat Pay", err)
	}
	if out.Order, err = p.placed(ctx, o); err != nil {
		return WeChatPayment{}, err
	}
	return out, nil
}

// The ways an Alipay order is paid.
const (
	AlipayPage = "page" // a computer's browser
	AlipayWAP  = "wap"  // a phone's browser
)

// AlipayRequest is an Alipay order to pay.
type AlipayRequest struct {
	OrderRequest
	Mode    string // AlipayPage or AlipayWAP
	QuitURL string // AlipayWAP, optional
}

// AlipayPayment is an Alipay order and the URL of Alipay's cashier for it.
type AlipayPayment struct {
	Order  Order
	PayURL string
}

// PayAlipay records an order and signs the URL that opens Alipay's cashier for it (Alipay
// creates the trade when the payer opens it). Errors as PayWeChat.
func (p *ChinaPayments) PayAlipay(ctx context.Context, in AlipayRequest) (AlipayPayment, error) {
	ac := p.cfg.Alipay
	if ac == nil {
		return AlipayPayment{}, notConfigured(ProviderAlipay)
	}
	if in.Mode != AlipayPage && in.Mode != AlipayWAP {
		return AlipayPayment{}, errs.InvalidFields("invalid payment", []errs.FieldError{{Pointer: "/mode", Message: "must be page or wap"}})
	}
	o, err := p.create(ctx, ProviderAlipay, in.OrderRequest)
	if err != nil {
		return AlipayPayment{}, err
	}
	ao := alipay.Order{OutTradeNo: o.ProviderOrderID, Subject: p.description(o), Total: o.Amount, ExpiresAt: *o.ExpiresAt}
	var url string
	if in.Mode == AlipayPage {
		url, err = ac.PagePayURL(ao)
	} else {
		url, err = ac.WAPPayURL(ao, in.QuitURL)
	}
	if err != nil {
		return AlipayPayment{}, fmt.Errorf("alipay pay URL: %w", err)
	}
	if o, err = p.placed(ctx, o); err != nil {
		return AlipayPayment{}, err
	}
	return AlipayPayment{Order: o, PayURL: url}, nil
}

// create records the order, CNY only, with its out_trade_no: 32 hex digits, within both
// providers' limits (WeChat's 6–32 of [0-9A-Za-z_-|*], Alipay's 64 of [0-9A-Za-z_]).
func (p *ChinaPayments) create(ctx context.Context, provider string, in OrderRequest) (Order, error) {
	if in.Currency != "CNY" {
		return Order{}, errs.InvalidFields("invalid payment", []errs.FieldError{{Pointer: "/currency", Message: "must be CNY"}})
	}
	no, err := uuid.NewV7()
	if err != nil {
		return Order{}, fmt.Errorf("out_trade_no: %w", err)
	}
	o, err := p.svc.CreateOrder(ctx, NewOrder{Org: in.Org, Provider: provider, Purpose: in.Purpose, Plan: in.Plan, Interval: in.Interval,
		Amount: in.Amount, Currency: in.Currency, ProviderOrderID: strings.ReplaceAll(no.String(), "-", ""), CreatedBy: in.CreatedBy})
	if err != nil {
		return Order{}, err
	}
	return p.withExpiry(o), nil
}

// placed marks o pending: the provider has it.
func (p *ChinaPayments) placed(ctx context.Context, o Order) (Order, error) {
	o, err := p.svc.AttachRefs(ctx, o.ID, Refs{})
	if err != nil {
		return Order{}, err
	}
	return p.withExpiry(o), nil
}

func (p *ChinaPayments) withExpiry(o Order) Order {
	if o.Provider == ProviderWeChatPay || o.Provider == ProviderAlipay {
		at := o.CreatedAt.Add(p.cfg.Expiry).Truncate(time.Second)
		o.ExpiresAt = &at
	}
	return o
}

// Order returns org's order id, with its expiry; not_found when org has none.
func (p *ChinaPayments) Order(ctx context.Context, org, id uuid.UUID) (Order, error) {
	o, err := p.svc.Order(ctx, org, id)
	if err != nil {
		return Order{}, err
	}
	return p.withExpiry(o), nil
}

// description is what the payer sees: the plan and interval, or a top-up.
func (p *ChinaPayments) description(o Order) string {
	if o.Purpose == PurposeSubscription {
		name := o.Plan
		if plan, ok := p.svc.Plans().Get(o.Plan); ok && plan.Name != "" {
			name = plan.Name
		}
		return fmt.Sprintf("%s (1 %s)", name, o.Interval)
	}
	return "Credit top-up"
}

// upstream turns a provider's failure into upstream_error, naming its code.
func upstream(provider string, err error) error {
	var we *wechatpay.APIError
	var ae *alipay.APIError
	switch {
	case errors.As(err, &we):
		return &errs.Error{Code: errs.UpstreamError, Message: fmt.Sprintf("%s refused the order: %s %s", provider, we.Code, we.Message)}
	case errors.As(err, &ae):
		return &errs.Error{Code: errs.UpstreamError, Message: fmt.Sprintf("%s refused: %s %s", provider, ae.SubCode, ae.SubMsg)}
	}
	return &errs.Error{Code: errs.UpstreamError, Message: provider + " could not be reached or answered badly; try again."}
}

// ErrNotBelieved wraps every reason a notification is refused: a bad, missing or probing
// signature, an unknown serial or key, a stale timestamp, another app's, a malformed body.
var ErrNotBelieved = errors.New("notification not believed")

// WeChatNotify verifies and applies a WeChat Pay notification (its headers and raw body).
// It returns not_found when WeChat Pay is not configured, an error wrapping ErrNotBelieved
// for one not believed (answer 401), nil once it is recorded (applied now, before, or not
// at all: answer success), and another error when it could not be recorded (answer 500:
// WeChat sends it again).
func (p *ChinaPayments) WeChatNotify(ctx context.Context, h http.Header, body []byte) error {
	wc := p.cfg.WeChat
	if wc == nil {
		return errs.E(errs.NotFound, "WeChat Pay is not configured on this server.")
	}
	n, err := wc.ParseNotify(h, body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotBelieved, err)
	}
	e := Event{Provider: ProviderWeChatPay, ID: n.ID, ProviderType: n.EventType, Type: EventNoted, Payload: n.Resource}
	switch {
	case n.Transaction != nil:
		t := n.Transaction
		e.ProviderOrderID, e.Refs.PaymentID = t.OutTradeNo, t.TransactionID
		e.Amount, e.Currency, e.At = t.Amount.Total, t.Amount.Currency, wechatTime(t.SuccessTime)
		if n.EventType == "TRANSACTION.SUCCESS" && t.TradeState == "SUCCESS" {
			e.Type = EventPaid
		}
	case n.Refund != nil:
		r := n.Refund
		e.ProviderOrderID, e.Currency, e.At = r.OutTradeNo, r.Amount.Currency, wechatTime(r.SuccessTime)
		e.Amount = r.Amount.Refund
		// A refund Kiln asked for names the order's refunded total in its number (see
		// refundNumber), which is what EventRefunded carries; another (made on WeChat's
		// merchant platform) is kept for the record only.
		if total, ok := refundTotal(r.OutTradeNo, r.OutRefundNo); ok && n.EventType == "REFUND.SUCCESS" && r.State() == "SUCCESS" {
			e.Type, e.Amount = EventRefunded, total
		}
	}
	if _, err := p.svc.Record(ctx, e); err != nil {
		return fmt.Errorf("record wechatpay notification: %w", err)
	}
	return nil
}

// wechatTime reads WeChat's RFC 3339 time; zero when absent or malformed (Record uses
// the time received then).
func wechatTime(s string) time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// AlipayNotify verifies and applies an Alipay notification (its raw form body). Errors as
// WeChatNotify.
func (p *ChinaPayments) AlipayNotify(ctx context.Context, body []byte) error {
	ac := p.cfg.Alipay
	if ac == nil {
		return errs.E(errs.NotFound, "Alipay is not configured on this server.")
	}
	n, err := ac.ParseNotify(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotBelieved, err)
	}
	payload := map[string]string{}
	for k := range n.Params {
		payload[k] = n.Params.Get(k)
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("alipay notification payload: %w", err)
	}
	e := Event{Provider: ProviderAlipay, ID: n.NotifyID, ProviderType: n.NotifyType + "." + n.TradeStatus, Type: EventNoted,
		ProviderOrderID: n.OutTradeNo, Amount: n.Total, Currency: "CNY", Refs: Refs{PaymentID: n.TradeNo}, Payload: raw}
	switch {
	case n.Refunded():
		e.Type, e.Amount, e.At = EventRefunded, n.RefundFee, alipayTime(n.GmtRefund)
	case n.Paid():
		e.Type, e.At = EventPaid, alipayTime(n.Params.Get("gmt_payment"))
	case n.TradeStatus == "TRADE_CLOSED":
		e.Type, e.At = EventClosed, alipayTime(n.Params.Get("gmt_close"))
	}
	if _, err := p.svc.Record(ctx, e); err != nil {
		return fmt.Errorf("record alipay notification: %w", err)
	}
	return nil
}

var china = time.FixedZone("CST", 8*3600)

// alipayTime reads Alipay's "2006-01-02 15:04:05" (China time, with or without
// milliseconds); zero when absent or malformed.
func alipayTime(s string) time.Time {
	s, _, _ = strings.Cut(s, ".")
	t, _ := time.ParseInLocation("2006-01-02 15:04:05", s, china)
	return t
}

// RefundStatus is where a refund stands after the provider's answer.
type RefundStatus string

// The states of a refund asked for.
const (
	RefundSucceeded  RefundStatus = "succeeded"
	RefundProcessing RefundStatus = "processing" // the provider reports the outcome by notification
)

// RefundResult is a refund as the provider answered it.
type RefundResult struct {
	Order  Order
	Status RefundStatus
	// Refunded is the order's refunded total once this refund succeeds.
	Refunded int64
}

// Refund refunds amount fen of the paid order id (0: all not refunded yet) at its
// provider, audited as billing.payment_refund_requested; an Alipay refund (answered at
// once) and a WeChat Pay refund that succeeded at once are recorded as events too. It
// returns not_found for an unknown order, provider_not_configured for an order of a
// provider without a client (or of another provider), conflict for an order that is not
// paid, invalid_request for an amount past what is left, and upstream_error when the
// provider refused or failed.
func (p *ChinaPayments) Refund(ctx context.Context, by audit.Actor, id uuid.UUID, amount int64, reason string) (RefundResult, error) {
	row, err := p.svc.st.GetPaymentOrder(ctx, id)
	if err != nil {
		return RefundResult{}, fmt.Errorf("get order: %w", store.Translate(err))
	}
	o := toOrder(row)
	if !p.Configured(o.Provider) {
		return RefundResult{}, errs.E(errs.ProviderNotConfigured, "Refunds go through WeChat Pay or Alipay; this order's provider (%s) is not configured here.", o.Provider)
	}
	if o.Status != OrderPaid {
		return RefundResult{}, errs.E(errs.Conflict, "Only a paid order can be refunded; this one is %s.", o.Status)
	}
	left := o.Amount - o.Refunded
	if amount == 0 {
		amount = left
	}
	if amount <= 0 || amount > left {
		return RefundResult{}, errs.InvalidFields("invalid refund", []errs.FieldError{{Pointer: "/amount", Message: fmt.Sprintf("must be between 1 and %d fen (not refunded yet)", left)}})
	}
	if reason == "" {
		reason = "Refund"
	}
	total := o.Refunded + amount
	number := refundNumber(o.ProviderOrderID, total)
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	if err := audit.Write(ctx, p.svc.st.Queries, by, audit.Event{OrgID: &o.Org, Action: "billing.payment_refund_requested",
		TargetType: "payment_order", TargetID: o.ID.String(),
		Data: map[string]any{"provider": o.Provider, "amount": amount, "refunded_total": total, "currency": o.Currency, "refund_no": number}}); err != nil {
		return RefundResult{}, err
	}
	out := RefundResult{Status: RefundProcessing, Refunded: total}
	event := Event{Provider: o.Provider, ID: "refund." + number, Type: EventRefunded, Order: o.ID, Amount: total, Currency: o.Currency}
	switch o.Provider {
	case ProviderWeChatPay:
		r, err := p.cfg.WeChat.Refund(ctx, wechatpay.RefundRequest{OutTradeNo: o.ProviderOrderID, OutRefundNo: number, Reason: reason,
			Refund: amount, Total: o.Amount, Currency: o.Currency})
		if err != nil {
			return RefundResult{}, upstream("WeChat Pay", err)
		}
		if r.State() == "SUCCESS" {
			out.Status, event.ProviderType = RefundSucceeded, "refund.SUCCESS"
		}
	case ProviderAlipay:
		r, err := p.cfg.Alipay.Refund(ctx, alipay.RefundRequest{OutTradeNo: o.ProviderOrderID, OutRequestNo: number, Amount: amount, Reason: reason})
		if err != nil {
			return RefundResult{}, upstream("Alipay", err)
		}
		// Alipay's refund_fee is the trade's refunded total, which may include a refund
		// made on its own platform.
		if fee, err := alipay.Fen(r.RefundFee); err == nil && fee >= total {
			event.Amount, out.Refunded = fee, fee
		}
		out.Status, event.ProviderType = RefundSucceeded, "alipay.trade.refund"
	}
	if out.Status == RefundSucceeded {
		if _, err := p.svc.Record(ctx, event); err != nil {
			return RefundResult{}, err
		}
	}
	if o, err = p.svc.Order(ctx, o.Org, o.ID); err != nil {
		return RefundResult{}, err
	}
	out.Order = p.withExpiry(o)
	return out, nil
}

// refundNumber is the merchant's refund number of the refund that brings the order
// outTradeNo's refunded total to total: asking again for the same total repeats the same
// refund at the provider instead of making a second one, and a WeChat refund notification
// (which carries this refund's amount only) tells the total back.
func refundNumber(outTradeNo string, total int64) string {
	return outTradeNo + "R" + strconv.FormatInt(total, 10)
}

// refundTotal reads the refunded total back from a refund number of refundNumber.
func refundTotal(outTradeNo, number string) (int64, bool) {
	rest, ok := strings.CutPrefix(number, outTradeNo+"R")
	if !ok || outTradeNo == "" {
		return 0, false
	}
	total, err := strconv.ParseInt(rest, 10, 64)
	return total, err == nil && total > 0
}

// Resolved counts what ResolveOpenOrders did.
type Resolved struct {
	Queried int `json:"queried"`
	Paid    int `json:"paid"`   // found paid (their notification was lost) and credited
	Closed  int `json:"closed"` // unpaid past their expiry, closed at the provider and here
	Failed  int `json:"failed"` // could not be asked or closed; tried again next time
}

// resolveBatch bounds the orders one run of ResolveOpenOrders looks at per provider.
const resolveBatch = 200

// ResolveOpenOrders asks the provider about every open WeChat Pay and Alipay order older
// than QueryAfter: one it reports paid is credited once (the same Record as its
// notification), one it reports closed is closed, and one still unpaid past its expiry is
// closed at the provider, then here. A failure with one order is logged and counted, and
// the others go on; the error is for the database.
func (p *ChinaPayments) ResolveOpenOrders(ctx context.Context) (Resolved, error) {
	var out Resolved
	now := p.cfg.Now()
	for _, provider := range []string{ProviderWeChatPay, ProviderAlipay} {
		if !p.Configured(provider) {
			continue
		}
		orders, err := p.svc.OpenOrders(ctx, provider, now.Add(-p.cfg.QueryAfter), resolveBatch)
		if err != nil {
			return out, err
		}
		for _, o := range orders {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			out.Queried++
			outcome, err := p.resolve(ctx, p.withExpiry(o), now)
			if err != nil {
				out.Failed++
				p.cfg.Log.WarnContext(ctx, "payment order not resolved", "provider", provider, "order", o.ID, "error", err)
				continue
			}
			switch outcome {
			case EventPaid:
				out.Paid++
			case EventClosed:
				out.Closed++
			}
		}
	}
	return out, nil
}

// providerState is an order as its provider reports it.
type providerState struct {
	exists, paid, closed bool
	amount               int64
	currency             string
	paymentID            string
	at                   time.Time
}

// resolve queries o's provider and records what it says; it returns EventPaid or
// EventClosed when the order was applied so, "" when it is left open.
func (p *ChinaPayments) resolve(ctx context.Context, o Order, now time.Time) (EventType, error) {
	st, err := p.query(ctx, o)
	if err != nil {
		return "", err
	}
	e := Event{Provider: o.Provider, Order: o.ID, Currency: o.Currency}
	switch {
	case st.paid:
		e.ID, e.ProviderType, e.Type = "query.paid."+o.ProviderOrderID, "query.paid", EventPaid
		e.Amount, e.Currency, e.At, e.Refs.PaymentID = st.amount, st.currency, st.at, st.paymentID
	case st.closed:
		e.ID, e.ProviderType, e.Type = "query.closed."+o.ProviderOrderID, "query.closed", EventClosed
	case now.Before(*o.ExpiresAt):
		return "", nil // the payer may still pay
	default:
		if st.exists {
			if err := p.closeAt(ctx, o); err != nil {
				return "", err
			}
		}
		e.ID, e.ProviderType, e.Type = "expired."+o.ProviderOrderID, "expired", EventClosed
	}
	applied, err := p.svc.Record(ctx, e)
	if err != nil || !applied {
		return "", err
	}
	return e.Type, nil
}

// query asks o's provider about it. An order the provider never saw (a WeChat order whose
// placement failed, an Alipay trade whose pay URL was never opened) exists not.
func (p *ChinaPayments) query(ctx context.Context, o Order) (providerState, error) {
	if o.ProviderOrderID == "" {
		return providerState{}, nil
	}
	switch o.Provider {
	case ProviderWeChatPay:
		t, err := p.cfg.WeChat.Query(ctx, o.ProviderOrderID)
		if wechatpay.IsCode(err, "ORDER_NOT_EXIST") {
			return providerState{}, nil
		}
		if err != nil {
			return providerState{}, err
		}
		return providerState{exists: true, paid: t.Paid(), closed: t.TradeState == "CLOSED" || t.TradeState == "REVOKED",
			amount: t.Amount.Total, currency: t.Amount.Currency, paymentID: t.TransactionID, at: wechatTime(t.SuccessTime)}, nil
	case ProviderAlipay:
		t, err := p.cfg.Alipay.Query(ctx, o.ProviderOrderID)
		if alipay.IsSubCode(err, "ACQ.TRADE_NOT_EXIST") {
			return providerState{}, nil
		}
		if err != nil {
			return providerState{}, err
		}
		st := providerState{exists: true, paid: t.Paid(), closed: t.TradeStatus == "TRADE_CLOSED", currency: "CNY", paymentID: t.TradeNo,
			at: alipayTime(t.SendPayDate)}
		if st.paid {
			if st.amount, err = alipay.Fen(t.TotalAmount); err != nil {
				return providerState{}, fmt.Errorf("alipay total_amount: %w", err)
			}
		}
		return st, nil
	}
	return providerState{}, fmt.Errorf("provider %q has no query", o.Provider)
}

// closeAt closes o at its provider so it can no longer be paid. An order paid meanwhile
// is an error: it stays open, and the next run finds it paid.
func (p *ChinaPayments) closeAt(ctx context.Context, o Order) error {
	switch o.Provider {
	case ProviderWeChatPay:
		return p.cfg.WeChat.Close(ctx, o.ProviderOrderID)
	case ProviderAlipay:
		err := p.cfg.Alipay.Close(ctx, o.ProviderOrderID)
		if alipay.IsSubCode(err, "ACQ.TRADE_NOT_EXIST") {
			return nil
		}
		return err
	}
	return nil
}
