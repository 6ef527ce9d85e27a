package wechatpay_test

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay/wechatpaytest"
)

func setup(t *testing.T) (*wechatpaytest.Server, *wechatpay.Client) {
	t.Helper()
	srv := wechatpaytest.New(t)
	c, err := wechatpay.New(srv.Config("https://kiln.example/v1/webhooks/wechatpay"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

func order(no string) wechatpay.Order {
	return wechatpay.Order{OutTradeNo: no, Description: "Kiln Pro, 1 month", Total: 9900, Currency: "CNY", ExpiresAt: time.Now().Add(30 * time.Minute)}
}

// TestOrders drives every order call against the stand-in, which checks the merchant's
// signature on each request while the client checks the platform's on each answer.
func TestOrders(t *testing.T) {
	t.Parallel()
	srv, c := setup(t)
	ctx := context.Background()

	codeURL, err := c.Native(ctx, order("native00000001"))
	if err != nil || !strings.HasPrefix(codeURL, "weixin://wxpay/") {
		t.Fatalf("native: %q, %v", codeURL, err)
	}
	h5, err := c.H5(ctx, order("h5000000000001"), "203.0.113.7")
	if err != nil || h5 == "" {
		t.Fatalf("h5: %q, %v", h5, err)
	}
	p, err := c.JSAPI(ctx, order("jsapi000000001"), "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
	if err != nil || p.Package != "prepay_id=wxjsapi000000001" || p.SignType != "RSA" || p.AppID != wechatpaytest.AppID {
		t.Fatalf("jsapi: %+v, %v", p, err)
	}
	// paySign is the merchant's signature over appId, timeStamp, nonceStr and package.
	key, err := wechatpay.ParsePrivateKey(srv.MerchantPEM)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.StdEncoding.DecodeString(p.PaySign)
	sum := sha256.Sum256([]byte(p.AppID + "\n" + p.TimeStamp + "\n" + p.NonceStr + "\n" + p.Package + "\n"))
	if rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		t.Error("paySign does not verify with the merchant key")
	}

	tr, err := c.Query(ctx, "native00000001")
	if err != nil || tr.TradeState != "NOTPAY" || tr.Paid() || tr.Amount.Total != 9900 || tr.Amount.Currency != "CNY" {
		t.Fatalf("query unpaid: %+v, %v", tr, err)
	}
	if _, err := c.Query(ctx, "nosuchorder0001"); !wechatpay.IsCode(err, "ORDER_NOT_EXIST") {
		t.Fatalf("query unknown: %v, want ORDER_NOT_EXIST", err)
	}
	if err := c.Close(ctx, "native00000001"); err != nil {
		t.Fatalf("close: %v", err)
	}
	if tr, _ := c.Query(ctx, "native00000001"); tr.TradeState != "CLOSED" {
		t.Fatalf("after close: %s", tr.TradeState)
	}

	paid := srv.Pay("h5000000000001")
	tr, err = c.Query(ctx, "h5000000000001")
	if err != nil || !tr.Paid() || tr.TransactionID != paid.TransactionID {
		t.Fatalf("query paid: %+v, %v", tr, err)
	}
	if err := c.Close(ctx, "h5000000000001"); !wechatpay.IsCode(err, "ORDERPAID") {
		t.Fatalf("close paid: %v, want ORDERPAID", err)
	}
	r, err := c.Refund(ctx, wechatpay.RefundRequest{OutTradeNo: "h5000000000001", OutRefundNo: "r1", Reason: "test", Refund: 100, Total: 9900, Currency: "CNY"})
	if err != nil || r.State() != "PROCESSING" || r.Amount.Refund != 100 {
		t.Fatalf("refund: %+v, %v", r, err)
	}
}

// TestAnswerSignature refuses an answer signed with another key than the configured
// platform key, so a man in the middle cannot fake "paid".
func TestAnswerSignature(t *testing.T) {
	t.Parallel()
	srv := wechatpaytest.New(t)
	cfg := srv.Config("https://kiln.example/notify")
	cfg.PlatformKeyPEM = srv.OtherKeyPEM()
	c, err := wechatpay.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Native(context.Background(), order("native00000002")); !errors.Is(err, wechatpay.ErrInvalid) {
		t.Fatalf("native with a forged answer: %v, want ErrInvalid", err)
	}
}

// TestParseNotify opens real notifications and refuses every forged or tampered one.
func TestParseNotify(t *testing.T) {
	t.Parallel()
	srv, c := setup(t)
	if _, err := c.Native(context.Background(), order("notify00000001")); err != nil {
		t.Fatal(err)
	}
	tr := srv.Pay("notify00000001")
	real := srv.Notify("EV-2018022511223320873", "TRANSACTION.SUCCESS", tr)
	n, err := c.ParseNotify(real.Header, real.Body)
	if err != nil {
		t.Fatalf("real notification: %v", err)
	}
	if n.ID != "EV-2018022511223320873" || n.Transaction == nil || n.Transaction.TransactionID != tr.TransactionID ||
		n.Transaction.Amount.Total != 9900 || !n.Transaction.Paid() {
		t.Fatalf("parsed %+v", n)
	}
	refund := srv.Notify("EV-refund-1", "REFUND.SUCCESS", map[string]any{"out_trade_no": "notify00000001", "out_refund_no": "r1",
		"refund_id": "50000r1", "refund_status": "SUCCESS", "amount": map[string]int64{"total": 9900, "refund": 100}})
	n, err = c.ParseNotify(refund.Header, refund.Body)
	if err != nil || n.Refund == nil || n.Refund.State() != "SUCCESS" || n.Refund.Amount.Refund != 100 {
		t.Fatalf("refund notification: %+v, %v", n, err)
	}
	for _, f := range srv.Forgeries(real) {
		t.Run(f.Kind, func(t *testing.T) {
			if _, err := c.ParseNotify(f.Header, f.Body); !errors.Is(err, wechatpay.ErrInvalid) {
				t.Fatalf("accepted (%v)", err)
			}
		})
	}
	if _, err := c.ParseNotify(http.Header{}, nil); !errors.Is(err, wechatpay.ErrInvalid) {
		t.Fatalf("empty: %v", err)
	}
}

// TestNewChecksConfig names the missing or bad setting.
func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	srv := wechatpaytest.New(t)
	for name, edit := range map[string]func(*wechatpay.Config){
		"mch_id":       func(c *wechatpay.Config) { c.MchID = "" },
		"api_v3_key":   func(c *wechatpay.Config) { c.APIv3Key = "short" },
		"merchant_key": func(c *wechatpay.Config) { c.MerchantKeyPEM = "not pem" },
		"platform_key": func(c *wechatpay.Config) { c.PlatformKeyPEM = srv.MerchantPEM },
		"base_url":     func(c *wechatpay.Config) { c.BaseURL = "ftp://x" },
	} {
		cfg := srv.Config("https://kiln.example/notify")
		edit(&cfg)
		if _, err := wechatpay.New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
