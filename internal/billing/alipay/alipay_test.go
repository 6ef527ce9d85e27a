package alipay_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/alipay/alipaytest"
)

func setup(t *testing.T) (*alipaytest.Server, *alipay.Client) {
	t.Helper()
	srv := alipaytest.New(t)
	c, err := alipay.New(srv.Config("https://kiln.example/v1/webhooks/alipay"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func order(no string) alipay.Order {
	return alipay.Order{OutTradeNo: no, Subject: "Kiln Pro, 1 month", Total: 9900, ExpiresAt: time.Now().Add(30 * time.Minute)}
}

// TestTrades drives page and WAP pay, query, close and refund against the stand-in, which
// checks the app's signature on each call while the client checks Alipay's on each answer.
func TestTrades(t *testing.T) {
	t.Parallel()
	srv, c := setup(t)
	ctx := context.Background()

	page, err := c.PagePayURL(order("page0001"))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(page)
	if q := u.Query(); q.Get("method") != "alipay.trade.page.pay" || !strings.Contains(q.Get("biz_content"), `"total_amount":"99.00"`) ||
		!strings.Contains(q.Get("biz_content"), "FAST_INSTANT_TRADE_PAY") || q.Get("return_url") == "" {
		t.Fatalf("page pay URL %s", page)
	}
	if _, err := c.Query(ctx, "page0001"); !alipay.IsSubCode(err, "ACQ.TRADE_NOT_EXIST") {
		t.Fatalf("query before the payer opened the page: %v", err)
	}
	srv.Open(page)
	tr, err := c.Query(ctx, "page0001")
	if err != nil || tr.TradeStatus != "WAIT_BUYER_PAY" || tr.Paid() || tr.TotalAmount != "99.00" {
		t.Fatalf("query opened: %+v, %v", tr, err)
	}
	if err := c.Close(ctx, "page0001"); err != nil {
		t.Fatalf("close: %v", err)
	}
	if tr, _ := c.Query(ctx, "page0001"); tr.TradeStatus != "TRADE_CLOSED" {
		t.Fatalf("after close: %s", tr.TradeStatus)
	}

	wap, err := c.WAPPayURL(order("wap0001"), "https://app.example/cancel")
	if err != nil || !strings.Contains(wap, "alipay.trade.wap.pay") || !strings.Contains(wap, "QUICK_WAP_WAY") {
		t.Fatalf("wap: %s, %v", wap, err)
	}
	srv.Open(wap)
	paid := srv.Pay("wap0001")
	tr, err = c.Query(ctx, "wap0001")
	if err != nil || !tr.Paid() || tr.TradeNo != paid.TradeNo {
		t.Fatalf("query paid: %+v, %v", tr, err)
	}
	if err := c.Close(ctx, "wap0001"); !alipay.IsSubCode(err, "ACQ.TRADE_STATUS_ERROR") {
		t.Fatalf("close paid: %v", err)
	}
	for range 2 { // the same refund number refunds once
		r, err := c.Refund(ctx, alipay.RefundRequest{OutTradeNo: "wap0001", OutRequestNo: "r1", Amount: 1050, Reason: "test"})
		if err != nil || r.RefundFee != "10.50" {
			t.Fatalf("refund: %+v, %v", r, err)
		}
	}
}

// TestAnswerSignature refuses an answer not signed with the configured Alipay key.
func TestAnswerSignature(t *testing.T) {
	t.Parallel()
	srv := alipaytest.New(t)
	cfg := srv.Config("https://kiln.example/notify")
	cfg.AlipayPublicKeyPEM = srv.AppPublicKeyPEM()
	c, err := alipay.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Query(context.Background(), "x1"); !errors.Is(err, alipay.ErrInvalid) {
		t.Fatalf("query with a forged answer: %v, want ErrInvalid", err)
	}
}

// TestParseNotify accepts a real notification and refuses every forged or tampered one.
func TestParseNotify(t *testing.T) {
	t.Parallel()
	srv, c := setup(t)
	page, _ := c.PagePayURL(order("notify0001"))
	srv.Open(page)
	params := srv.NotifyParams("2026120700222100000000000001", srv.Pay("notify0001"))
	n, err := c.ParseNotify(srv.Notify(params).Body)
	if err != nil {
		t.Fatalf("real: %v", err)
	}
	if n.NotifyID != "2026120700222100000000000001" || !n.Paid() || n.Total != 9900 || n.OutTradeNo != "notify0001" || n.Refunded() {
		t.Fatalf("parsed %+v", n)
	}
	for _, f := range srv.Forgeries(params) {
		t.Run(f.Kind, func(t *testing.T) {
			if _, err := c.ParseNotify(f.Body); !errors.Is(err, alipay.ErrInvalid) {
				t.Fatalf("accepted (%v)", err)
			}
		})
	}
}

func TestAmounts(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0.01": 1, "88.8": 8880, "88.88": 8888, "88": 8800, "0": 0, "1000000.00": 100000000} {
		if got, err := alipay.Fen(in); err != nil || got != want {
			t.Errorf("Fen(%q) = %d, %v; want %d", in, got, err, want)
		}
		if want > 0 {
			if back, _ := alipay.Fen(alipay.Yuan(want)); back != want {
				t.Errorf("Yuan(%d) = %s does not read back", want, alipay.Yuan(want))
			}
		}
	}
	for _, bad := range []string{"", "-1", "1.234", "01", "1e3", " 1", "1.", ".5", "99999999999999999"} {
		if _, err := alipay.Fen(bad); err == nil {
			t.Errorf("Fen(%q) accepted", bad)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	srv := alipaytest.New(t)
	for name, edit := range map[string]func(*alipay.Config){
		"app_id":      func(c *alipay.Config) { c.AppID = "" },
		"private_key": func(c *alipay.Config) { c.PrivateKeyPEM = "x" },
		"public_key":  func(c *alipay.Config) { c.AlipayPublicKeyPEM = srv.AppKeyPEM },
		"gateway":     func(c *alipay.Config) { c.Gateway = "/relative" },
	} {
		cfg := srv.Config("https://kiln.example/notify")
		edit(&cfg)
		if _, err := alipay.New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
