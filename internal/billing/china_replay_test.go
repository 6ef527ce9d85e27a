package billing_test

import (
	"testing"

	"github.com/kilnhq/kiln/internal/billing"
)

// TestChinaNotificationsReplayed posts every real WeChat Pay and Alipay notification 16
// times, shuffled among forged ones (bad signature, another key, unknown serial, stale,
// probes, another app's, tampered) and signed ones whose amount is not the order's, from
// 16 goroutines at once: every forgery is refused, every real one is accepted, each order
// is paid exactly once, and the credit is the sum of the orders, nothing twice.
func TestChinaNotificationsReplayed(t *testing.T) {
	t.Parallel()
	c := setupChina(t)
	var posts []replayPost
	var want int64
	var orders []billing.Order
	for i, fen := range []int64{101, 202, 303, 404} {
		o := c.topUpWeChat(t, fen)
		tx := c.wx.Pay(o.ProviderOrderID)
		real := c.wx.Notify("wx-real-"+string(rune('a'+i)), "TRANSACTION.SUCCESS", tx)
		for range 16 {
			posts = append(posts, replayPost{real: true, kind: "wechat real", send: func() error { return c.pay.WeChatNotify(t.Context(), real.Header, real.Body) }})
		}
		for _, f := range c.wx.Forgeries(real) {
			posts = append(posts, replayPost{kind: "wechat " + f.Kind, send: func() error { return c.pay.WeChatNotify(t.Context(), f.Header, f.Body) }})
		}
		cheap := tx
		cheap.Amount.Total = 1
		wrong := c.wx.Notify("wx-wrong-amount-"+string(rune('a'+i)), "TRANSACTION.SUCCESS", cheap)
		posts = append(posts, replayPost{real: true, kind: "wechat wrong amount", send: func() error { return c.pay.WeChatNotify(t.Context(), wrong.Header, wrong.Body) }})
		want += fen
		orders = append(orders, o)
	}
	for i, fen := range []int64{555, 666} {
		o := c.topUpAlipay(t, fen, true)
		trade := c.ali.Pay(o.ProviderOrderID)
		params := c.ali.NotifyParams("ali-real-"+string(rune('a'+i)), trade)
		real := c.ali.Notify(params)
		for range 16 {
			posts = append(posts, replayPost{real: true, kind: "alipay real", send: func() error { return c.pay.AlipayNotify(t.Context(), real.Body) }})
		}
		for _, f := range c.ali.Forgeries(params) {
			posts = append(posts, replayPost{kind: "alipay " + f.Kind, send: func() error { return c.pay.AlipayNotify(t.Context(), f.Body) }})
		}
		cheap := c.ali.NotifyParams("ali-wrong-amount-"+string(rune('a'+i)), trade)
		cheap.Set("total_amount", "0.01")
		wrong := c.ali.Notify(cheap)
		posts = append(posts, replayPost{real: true, kind: "alipay wrong amount", send: func() error { return c.pay.AlipayNotify(t.Context(), wrong.Body) }})
		want += fen
		orders = append(orders, o)
	}
	forged := replay(t, posts)
	t.Logf("%d posts: %d real (16 of each), %d forged, all refused", len(posts), int64(len(posts))-forged, forged)
	if got := c.credit(t, "CNY"); got != want {
		t.Errorf("credit %d, want %d (each order once)", got, want)
	}
	for _, o := range orders {
		if st := c.status(t, o); st != billing.OrderPaid {
			t.Errorf("order of %d fen is %s, want paid", o.Amount, st)
		}
	}
	if n := c.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_event' AND data->>'outcome' = 'applied' AND org_id = $1", c.org); n != len(orders) {
		t.Errorf("applied payment events = %d, want %d (one state change per order)", n, len(orders))
	}
	if n := c.count(t, "SELECT count(*) FROM audit_events WHERE action = 'billing.payment_event' AND data->>'outcome' = 'amount_mismatch' AND org_id = $1", c.org); n != len(orders) {
		t.Errorf("amount mismatches recorded = %d, want %d", n, len(orders))
	}
	if n := c.count(t, "SELECT count(*) FROM payment_events WHERE org_id = $1", c.org); n != 2*len(orders) {
		t.Errorf("ledger rows = %d, want %d (each real notification once, each mismatch once)", n, 2*len(orders))
	}
}
