package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/alipay/alipaytest"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay/wechatpaytest"
)

// withChinaPayments serves WeChat Pay through wx and Alipay through ali (nil: that
// provider is not configured), orders expiring after 30 minutes.
func withChinaPayments(t testing.TB, wx *wechatpaytest.Server, ali *alipaytest.Server) option {
	return func(d *Deps) {
		cfg := billing.ChinaConfig{Expiry: 30 * time.Minute, QueryAfter: 5 * time.Minute, Log: d.Log}
		if wx != nil {
			c, err := wechatpay.New(wx.Config("https://kiln.example/v1/webhooks/wechatpay"), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.WeChat = c
		}
		if ali != nil {
			c, err := alipay.New(ali.Config("https://kiln.example/v1/webhooks/alipay"), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			cfg.Alipay = c
		}
		d.ChinaPayments = billing.NewChinaPayments(d.LLM.Billing, cfg)
	}
}

// postWeChatNotify posts a WeChat Pay notification as WeChat does.
func (b *bundle) postWeChatNotify(t testing.TB, n wechatpaytest.Notification) *http.Response {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/webhooks/wechatpay", bytes.NewReader(n.Body))
	for k, vs := range n.Header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	return b.do(t, req)
}

// postAlipayNotify posts an Alipay notification as Alipay does.
func (b *bundle) postAlipayNotify(t testing.TB, body []byte) *http.Response {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/webhooks/alipay", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	return b.do(t, req)
}

func readAllString(res *http.Response) string {
	raw, _ := io.ReadAll(res.Body)
	return string(raw)
}

// TestWeChatPay pays for a plan and a top-up with WeChat Pay over HTTP: the three modes,
// who may pay, the notification applied once however often it comes, every forgery
// refused in WeChat's words, and an admin's refund completed by WeChat's notification.
func TestWeChatPay(t *testing.T) {
	t.Parallel()
	wx := wechatpaytest.New(t)
	b := setup(t, withChinaPayments(t, wx, nil))
	adminPair, _ := b.signUpAdmin(t, "root@example.com")
	owner := b.person(t, "owner@example.com")
	org := owner.personalOrg
	path := fmt.Sprintf("/v1/orgs/%s/payments/wechatpay", org)

	var native api.WeChatPayPayment
	res := b.call(t, "POST", path, owner.token, map[string]any{"purpose": "subscription", "plan": "team", "interval": "month", "currency": "CNY", "mode": "native"}, &native)
	if res.StatusCode != 201 || native.CodeUrl == nil || !strings.HasPrefix(*native.CodeUrl, "weixin://wxpay/") || native.Order.Amount != 9900 ||
		native.Order.Status != api.PaymentOrderStatusPending || native.Order.ExpiresAt == nil || native.Order.ProviderOrderId == nil {
		t.Fatalf("native payment: %d %+v", res.StatusCode, native)
	}
	if got := native.Order.ExpiresAt.Sub(native.Order.CreatedAt); got < 29*time.Minute || got > 31*time.Minute {
		t.Errorf("expires %s after creation, want 30m", got)
	}
	var jsapi api.WeChatPayPayment
	res = b.call(t, "POST", path, owner.token, map[string]any{"purpose": "top_up", "amount": 500, "currency": "CNY", "mode": "jsapi", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}, &jsapi)
	if res.StatusCode != 201 || jsapi.Jsapi == nil || !strings.HasPrefix(jsapi.Jsapi.Package, "prepay_id=") || jsapi.Jsapi.PaySign == "" || jsapi.Order.Purpose != api.PaymentPurposeTopUp {
		t.Fatalf("jsapi payment: %d %+v", res.StatusCode, jsapi)
	}
	var h5 api.WeChatPayPayment
	if res := b.call(t, "POST", path, owner.token, map[string]any{"purpose": "top_up", "amount": 100, "currency": "CNY", "mode": "h5"}, &h5); res.StatusCode != 201 || h5.H5Url == nil {
		t.Fatalf("h5 payment: %d %+v", res.StatusCode, h5)
	}
	for name, body := range map[string]map[string]any{
		"jsapi without openid": {"purpose": "top_up", "amount": 100, "currency": "CNY", "mode": "jsapi"},
		"unknown plan":         {"purpose": "subscription", "plan": "gold", "interval": "month", "currency": "CNY", "mode": "native"},
		"plan without CNY":     {"purpose": "subscription", "plan": "free", "interval": "month", "currency": "CNY", "mode": "native"},
		"USD":                  {"purpose": "top_up", "amount": 100, "currency": "USD", "mode": "native"},
	} {
		if res := b.call(t, "POST", path, owner.token, body, nil); res.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", name, res.StatusCode)
		}
	}
	stranger := b.person(t, "stranger@example.com")
	if res := b.call(t, "POST", path, stranger.token, map[string]any{"purpose": "top_up", "amount": 100, "currency": "CNY", "mode": "native"}, nil); res.StatusCode != 404 {
		t.Errorf("another org's payment: %d, want 404", res.StatusCode)
	}
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/payments/%s", stranger.personalOrg, native.Order.Id), stranger.token, nil, nil); res.StatusCode != 404 {
		t.Errorf("another org's order: %d, want 404", res.StatusCode)
	}
	if res := b.call(t, "POST", fmt.Sprintf("/v1/orgs/%s/payments/alipay", org), owner.token,
		map[string]any{"purpose": "top_up", "amount": 100, "currency": "CNY", "mode": "page"}, nil); res.StatusCode != 422 ||
		decodeProblem(t, res).Code != "provider_not_configured" {
		t.Errorf("alipay, not configured: %d, want 422 provider_not_configured", res.StatusCode)
	}
	if res := b.postAlipayNotify(t, []byte("notify_id=1")); res.StatusCode != 404 {
		t.Errorf("alipay's notification, not configured: %d, want 404", res.StatusCode)
	}

	// The plan is paid: WeChat notifies (three times), the subscription is on team.
	tx := wx.Pay(*native.Order.ProviderOrderId)
	paid := wx.Notify("EV-native-1", "TRANSACTION.SUCCESS", tx)
	for range 3 {
		if res := b.postWeChatNotify(t, paid); res.StatusCode != 204 {
			t.Fatalf("notification: %d %s", res.StatusCode, readAllString(res))
		}
	}
	var order api.PaymentOrder
	orderPath := fmt.Sprintf("/v1/orgs/%s/payments/%s", org, native.Order.Id)
	if res := b.call(t, "GET", orderPath, owner.token, nil, &order); res.StatusCode != 200 || order.Status != api.PaymentOrderStatusPaid || order.PaidAt == nil {
		t.Fatalf("order after the notification: %d %+v", res.StatusCode, order)
	}
	var sub api.Subscription
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/subscription", org), owner.token, nil, &sub); res.StatusCode != 200 ||
		sub.Plan != "team" || sub.Provider != api.SubscriptionProviderWechatpay || sub.Status != api.SubscriptionActive {
		t.Fatalf("subscription after paying: %+v", sub)
	}

	// Forgeries of the notification of the top-up: refused, and nothing credited.
	topUp := wx.Pay(*jsapi.Order.ProviderOrderId)
	real := wx.Notify("EV-jsapi-1", "TRANSACTION.SUCCESS", topUp)
	for _, forged := range wx.Forgeries(real) {
		res := b.postWeChatNotify(t, forged)
		var fail struct{ Code, Message string }
		if res.StatusCode != 401 || json.NewDecoder(res.Body).Decode(&fail) != nil || fail.Code != "FAIL" {
			t.Errorf("%s: %d %+v, want 401 FAIL", forged.Kind, res.StatusCode, fail)
		}
	}
	if credit := b.creditCNY(t, org); credit != 0 {
		t.Fatalf("credit after forgeries: %d", credit)
	}
	if res := b.postWeChatNotify(t, real); res.StatusCode != 204 {
		t.Fatalf("real top-up notification: %d", res.StatusCode)
	}
	if credit := b.creditCNY(t, org); credit != 500 {
		t.Fatalf("credit after the top-up: %d, want 500", credit)
	}

	// An admin refunds the top-up; WeChat's notification completes it.
	refundPath := fmt.Sprintf("/v1/admin/payments/%s/refund", jsapi.Order.Id)
	if res := b.call(t, "POST", refundPath, owner.token, map[string]any{}, nil); res.StatusCode != 403 {
		t.Errorf("a refund by a non-admin: %d, want 403", res.StatusCode)
	}
	var refund api.PaymentRefund
	if res := b.call(t, "POST", refundPath, adminPair.AccessToken, map[string]any{"reason": "asked"}, &refund); res.StatusCode != 200 ||
		refund.RefundStatus != api.Processing || refund.Refunded != 500 {
		t.Fatalf("refund: %d %+v", res.StatusCode, refund)
	}
	r := wechatpay.Refund{OutTradeNo: *jsapi.Order.ProviderOrderId, OutRefundNo: *jsapi.Order.ProviderOrderId + "R500", RefundStatus: "SUCCESS"}
	r.Amount.Refund, r.Amount.Total, r.Amount.Currency = 500, 500, "CNY"
	if res := b.postWeChatNotify(t, wx.Notify("EV-refund-1", "REFUND.SUCCESS", r)); res.StatusCode != 204 {
		t.Fatalf("refund notification: %d", res.StatusCode)
	}
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/payments/%s", org, jsapi.Order.Id), owner.token, nil, &order); res.StatusCode != 200 ||
		order.Status != api.PaymentOrderStatusRefunded || order.Refunded != 500 {
		t.Fatalf("order after the refund: %+v", order)
	}
	if credit := b.creditCNY(t, org); credit != 0 {
		t.Fatalf("credit after the refund: %d, want 0", credit)
	}
	if n := b.auditCount(t, "billing.payment_refund_requested", jsapi.Order.Id.String()); n != 1 {
		t.Errorf("refund requests audited: %d, want 1", n)
	}
}

// TestAlipay pays for a top-up with Alipay over HTTP: the pay URL opens Alipay's cashier,
// the notification is answered with the literal success and applied once, forgeries and
// a signed notification of another amount credit nothing, and an admin's refund is done
// at once.
func TestAlipay(t *testing.T) {
	t.Parallel()
	ali := alipaytest.New(t)
	b := setup(t, withChinaPayments(t, nil, ali))
	adminPair, _ := b.signUpAdmin(t, "root@example.com")
	owner := b.person(t, "owner@example.com")
	org := owner.personalOrg
	path := fmt.Sprintf("/v1/orgs/%s/payments/alipay", org)

	var page api.AlipayPayment
	if res := b.call(t, "POST", path, owner.token, map[string]any{"purpose": "top_up", "amount": 1234, "currency": "CNY", "mode": "page"}, &page); res.StatusCode != 201 ||
		!strings.HasPrefix(page.PayUrl, ali.URL) || !strings.Contains(page.PayUrl, "alipay.trade.page.pay") {
		t.Fatalf("page payment: %d %+v", res.StatusCode, page)
	}
	var wap api.AlipayPayment
	if res := b.call(t, "POST", path, owner.token, map[string]any{"purpose": "subscription", "plan": "team", "interval": "month", "currency": "CNY", "mode": "wap",
		"quit_url": "https://app.example/cancel"}, &wap); res.StatusCode != 201 || !strings.Contains(wap.PayUrl, "alipay.trade.wap.pay") || wap.Order.Amount != 9900 {
		t.Fatalf("wap payment: %d %+v", res.StatusCode, wap)
	}
	if res := b.call(t, "POST", fmt.Sprintf("/v1/orgs/%s/payments/wechatpay", org), owner.token,
		map[string]any{"purpose": "top_up", "amount": 100, "currency": "CNY", "mode": "native"}, nil); res.StatusCode != 422 {
		t.Errorf("wechat pay, not configured: %d, want 422", res.StatusCode)
	}
	ali.Open(page.PayUrl)
	trade := ali.Pay(*page.Order.ProviderOrderId)
	params := ali.NotifyParams("ali-notify-1", trade)

	for _, forged := range ali.Forgeries(params) {
		if res := b.postAlipayNotify(t, forged.Body); res.StatusCode < 400 || readAllString(res) == alipay.Success {
			t.Errorf("%s: %d, want refused", forged.Kind, res.StatusCode)
		}
	}
	// Signed by Alipay, but of another amount than the order's: recorded, not applied.
	cheap := ali.NotifyParams("ali-notify-cheap", trade)
	cheap.Set("total_amount", "0.01")
	if res := b.postAlipayNotify(t, ali.Notify(cheap).Body); res.StatusCode != 200 || readAllString(res) != alipay.Success {
		t.Fatalf("a signed notification of another amount: %d", res.StatusCode)
	}
	if credit := b.creditCNY(t, org); credit != 0 {
		t.Fatalf("credit after forgeries and a wrong amount: %d", credit)
	}
	real := ali.Notify(params)
	for range 3 {
		if res := b.postAlipayNotify(t, real.Body); res.StatusCode != 200 || readAllString(res) != alipay.Success ||
			!strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("notification: %d", res.StatusCode)
		}
	}
	if credit := b.creditCNY(t, org); credit != 1234 {
		t.Fatalf("credit after the notification: %d, want 1234", credit)
	}

	var refund api.PaymentRefund
	if res := b.call(t, "POST", fmt.Sprintf("/v1/admin/payments/%s/refund", page.Order.Id), adminPair.AccessToken, map[string]any{"amount": 234}, &refund); res.StatusCode != 200 ||
		refund.RefundStatus != api.Succeeded || refund.Order.Refunded != 234 || refund.Order.Status != api.PaymentOrderStatusPaid {
		t.Fatalf("refund: %d %+v", res.StatusCode, refund)
	}
	if credit := b.creditCNY(t, org); credit != 1000 {
		t.Fatalf("credit after refunding 234: %d, want 1000", credit)
	}
	if res := b.call(t, "POST", fmt.Sprintf("/v1/admin/payments/%s/refund", wap.Order.Id), adminPair.AccessToken, map[string]any{}, nil); res.StatusCode != 409 {
		t.Errorf("refund of an unpaid order: %d, want 409", res.StatusCode)
	}
	if res := b.call(t, "POST", fmt.Sprintf("/v1/admin/payments/%s/refund", uuid.Must(uuid.NewV7())), adminPair.AccessToken, map[string]any{}, nil); res.StatusCode != 404 {
		t.Errorf("refund of no order: %d, want 404", res.StatusCode)
	}
}

// creditCNY is org's CNY credit, in fen.
func (b *bundle) creditCNY(t testing.TB, org uuid.UUID) int64 {
	t.Helper()
	var fen int64
	err := b.pool.QueryRow(t.Context(), "SELECT COALESCE((SELECT balance_minor FROM org_credits WHERE org_id = $1 AND currency = 'CNY'), 0)", org).Scan(&fen)
	if err != nil {
		t.Fatal(err)
	}
	return fen
}
