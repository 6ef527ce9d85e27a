package billing_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/alipay/alipaytest"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay/wechatpaytest"
)

const (
	orderExpiry = 30 * time.Minute
	queryAfter  = 5 * time.Minute
)

// china is a billing bundle with WeChat Pay and Alipay stand-ins on the test's clock.
type china struct {
	bundle
	pay *billing.ChinaPayments
	wx  *wechatpaytest.Server
	ali *alipaytest.Server
}

func setupChina(t *testing.T) china {
	t.Helper()
	b := setup(t, 1000)
	wx, ali := wechatpaytest.New(t), alipaytest.New(t)
	wx.Now, ali.Now = b.clock.Now, b.clock.Now
	wc, err := wechatpay.New(wx.Config("https://kiln.example/v1/webhooks/wechatpay"), nil, b.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := alipay.New(ali.Config("https://kiln.example/v1/webhooks/alipay"), nil, b.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	pay := billing.NewChinaPayments(b.svc, billing.ChinaConfig{WeChat: wc, Alipay: ac, Expiry: orderExpiry, QueryAfter: queryAfter, Now: b.clock.Now})
	return china{bundle: b, pay: pay, wx: wx, ali: ali}
}

func (c china) topUpWeChat(t *testing.T, fen int64) billing.Order {
	t.Helper()
	out, err := c.pay.PayWeChat(t.Context(), billing.WeChatRequest{Mode: billing.WeChatNative,
		OrderRequest: billing.OrderRequest{Org: c.org, Purpose: billing.PurposeTopUp, Amount: fen, Currency: "CNY"}})
	if err != nil {
		t.Fatalf("pay with wechat: %v", err)
	}
	if out.CodeURL == "" || out.Order.Status != billing.OrderPending {
		t.Fatalf("wechat payment = %+v", out)
	}
	return out.Order
}

func (c china) topUpAlipay(t *testing.T, fen int64, open bool) billing.Order {
	t.Helper()
	out, err := c.pay.PayAlipay(t.Context(), billing.AlipayRequest{Mode: billing.AlipayPage,
		OrderRequest: billing.OrderRequest{Org: c.org, Purpose: billing.PurposeTopUp, Amount: fen, Currency: "CNY"}})
	if err != nil {
		t.Fatalf("pay with alipay: %v", err)
	}
	if open {
		c.ali.Open(out.PayURL)
	}
	return out.Order
}

func (c china) status(t *testing.T, o billing.Order) billing.OrderStatus {
	t.Helper()
	got, err := c.svc.Order(t.Context(), c.org, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got.Status
}

func (c china) resolve(t *testing.T) billing.Resolved {
	t.Helper()
	r, err := c.pay.ResolveOpenOrders(t.Context())
	if err != nil {
		t.Fatalf("resolve: %v", err)
	}
	return r
}

// TestResolveOpenOrders: orders whose notification never came are asked about once they
// are older than QueryAfter. Those the provider reports paid are credited once (a second
// run and the late notification change nothing); the unpaid ones are left until their
// expiry, then closed at the provider and here; an Alipay trade never opened is closed
// here only.
func TestResolveOpenOrders(t *testing.T) {
	t.Parallel()
	c := setupChina(t)
	unpaidWx := c.topUpWeChat(t, 100)
	paidWx := c.topUpWeChat(t, 200)
	unpaidAli := c.topUpAlipay(t, 300, true)
	paidAli := c.topUpAlipay(t, 400, true)
	neverOpened := c.topUpAlipay(t, 500, false)
	paidTx := c.wx.Pay(paidWx.ProviderOrderID)
	c.ali.Pay(paidAli.ProviderOrderID)

	if r := c.resolve(t); r != (billing.Resolved{}) {
		t.Fatalf("orders younger than QueryAfter were resolved: %+v", r)
	}
	c.clock.Advance(queryAfter + time.Second)
	if r := c.resolve(t); r != (billing.Resolved{Queried: 5, Paid: 2}) {
		t.Fatalf("first query run = %+v, want 5 queried, 2 paid", r)
	}
	if got := c.credit(t, "CNY"); got != 600 {
		t.Fatalf("credit after the paid orders were found = %d, want 600", got)
	}
	if r := c.resolve(t); r != (billing.Resolved{Queried: 3}) {
		t.Fatalf("second run = %+v, want the 3 unpaid queried again and nothing changed", r)
	}
	// The lost notification arrives at last: recorded, not applied again.
	n := c.wx.Notify("late-notify-1", "TRANSACTION.SUCCESS", paidTx)
	if err := c.pay.WeChatNotify(t.Context(), n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	if got := c.credit(t, "CNY"); got != 600 {
		t.Fatalf("credit after the late notification = %d, want 600 (credited once)", got)
	}

	c.clock.Advance(orderExpiry)
	if r := c.resolve(t); r != (billing.Resolved{Queried: 3, Closed: 3}) {
		t.Fatalf("run past the expiry = %+v, want 3 closed", r)
	}
	for _, o := range []billing.Order{unpaidWx, unpaidAli, neverOpened} {
		if st := c.status(t, o); st != billing.OrderClosed {
			t.Errorf("order of %d fen is %s, want closed", o.Amount, st)
		}
	}
	for _, o := range []billing.Order{paidWx, paidAli} {
		if st := c.status(t, o); st != billing.OrderPaid {
			t.Errorf("order of %d fen is %s, want paid", o.Amount, st)
		}
	}
	if tx, _ := c.wx.Order(unpaidWx.ProviderOrderID); tx.TradeState != "CLOSED" {
		t.Errorf("the unpaid WeChat order is %s at WeChat, want CLOSED", tx.TradeState)
	}
	if tr, _ := c.ali.Trade(unpaidAli.ProviderOrderID); tr.TradeStatus != "TRADE_CLOSED" {
		t.Errorf("the unpaid Alipay trade is %s at Alipay, want TRADE_CLOSED", tr.TradeStatus)
	}
	if r := c.resolve(t); r != (billing.Resolved{}) {
		t.Errorf("a run with nothing open = %+v", r)
	}
	if got := c.credit(t, "CNY"); got != 600 {
		t.Errorf("credit at the end = %d, want 600", got)
	}
	if n := c.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_event' AND data->>'outcome' = 'applied' AND org_id = $1", c.org); n != 5 {
		t.Errorf("applied payment events = %d, want 5 (2 paid, 3 closed)", n)
	}
}

// TestChinaRefund refunds a WeChat Pay top-up in two parts (each completed by WeChat's
// notification) and an Alipay top-up at once: the credit shrinks by what is refunded,
// once, however often the notification or the request is repeated.
func TestChinaRefund(t *testing.T) {
	t.Parallel()
	c := setupChina(t)
	by := audit.Actor{Type: audit.ActorSystem}
	wx := c.topUpWeChat(t, 1000)
	tx := c.wx.Pay(wx.ProviderOrderID)
	n := c.wx.Notify("pay-1", "TRANSACTION.SUCCESS", tx)
	if err := c.pay.WeChatNotify(t.Context(), n.Header, n.Body); err != nil {
		t.Fatal(err)
	}
	if got := c.credit(t, "CNY"); got != 1000 {
		t.Fatalf("credit after paying = %d", got)
	}
	refundNotify := func(id string, refund, total int64) {
		t.Helper()
		r := wechatpay.Refund{OutTradeNo: wx.ProviderOrderID, OutRefundNo: wx.ProviderOrderID + "R" + strconv.FormatInt(total, 10), RefundStatus: "SUCCESS"}
		r.Amount.Refund, r.Amount.Total, r.Amount.Currency = refund, 1000, "CNY"
		n := c.wx.Notify(id, "REFUND.SUCCESS", r)
		for range 3 {
			if err := c.pay.WeChatNotify(t.Context(), n.Header, n.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 { // the same total twice is the same refund
		res, err := c.pay.Refund(t.Context(), by, wx.ID, 300, "partial")
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != billing.RefundProcessing || res.Refunded != 300 {
			t.Fatalf("refund = %+v", res)
		}
		if res.Order.Refunded != 0 {
			t.Fatalf("refunded before WeChat's notification: %d", res.Order.Refunded)
		}
	}
	refundNotify("refund-1", 300, 300)
	if got := c.credit(t, "CNY"); got != 700 {
		t.Fatalf("credit after refunding 300 = %d, want 700", got)
	}
	res, err := c.pay.Refund(t.Context(), by, wx.ID, 0, "")
	if err != nil || res.Refunded != 1000 {
		t.Fatalf("refund the rest = %+v, %v", res, err)
	}
	refundNotify("refund-2", 700, 1000)
	if got, st := c.credit(t, "CNY"), c.status(t, wx); got != 0 || st != billing.OrderRefunded {
		t.Fatalf("after refunding all: credit %d, status %s", got, st)
	}
	if _, err := c.pay.Refund(t.Context(), by, wx.ID, 1, ""); err == nil {
		t.Fatal("a refund past the amount was accepted")
	}

	ali := c.topUpAlipay(t, 500, true)
	trade := c.ali.Pay(ali.ProviderOrderID)
	an := c.ali.Notify(c.ali.NotifyParams("ali-pay-1", trade))
	if err := c.pay.AlipayNotify(t.Context(), an.Body); err != nil {
		t.Fatal(err)
	}
	res, err = c.pay.Refund(t.Context(), by, ali.ID, 200, "")
	if err != nil || res.Status != billing.RefundSucceeded || res.Order.Refunded != 200 {
		t.Fatalf("alipay refund = %+v, %v", res, err)
	}
	if got := c.credit(t, "CNY"); got != 300 {
		t.Fatalf("credit after the Alipay refund = %d, want 300", got)
	}
	if n := c.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_refund_requested' AND org_id = $1", c.org); n != 4 {
		t.Errorf("refund requests audited = %d, want 4", n)
	}
}
