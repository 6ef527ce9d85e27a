// Package alipaytest runs an Alipay open-platform gateway stand-in for tests: an httptest
// server that checks each call's RSA2 signature with the app's public key, keeps trades,
// answers with Alipay's JSON signed by an "Alipay" key generated for the test, and makes
// asynchronous notifications as Alipay makes them (form-encoded, RSA2 over the sorted
// parameters less sign and sign_type).
package alipaytest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing/alipay"
)

// AppID is the app the stand-in serves.
const AppID = "2021000000000001"

// Server is the stand-in.
type Server struct {
	*httptest.Server
	t            testing.TB
	app, alipay  *rsa.PrivateKey
	AppKeyPEM    string // the app's private key
	AlipayPubPEM string // the stand-in's public key, Alipay's to the app
	Now          func() time.Time

	mu     sync.Mutex
	trades map[string]*alipay.Trade
	// refunded is the amount refunded per trade, in fen, and requests the refund numbers seen.
	refunded map[string]int64
	requests map[string]bool
	// Calls counts calls by method (alipay.trade.query, …; GET for a pay page opened).
	Calls map[string]int
}

var (
	keyOnce sync.Once
	keys    [2]*rsa.PrivateKey
)

// New starts a stand-in closed with the test. Its two RSA keys are made once per test
// binary.
func New(t testing.TB) *Server {
	t.Helper()
	keyOnce.Do(func() {
		for i := range keys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys[i] = k
		}
	})
	s := &Server{t: t, app: keys[0], alipay: keys[1], Now: time.Now, trades: map[string]*alipay.Trade{},
		refunded: map[string]int64{}, requests: map[string]bool{}, Calls: map[string]int{}}
	der := x509.MarshalPKCS1PrivateKey(s.app)
	s.AppKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}))
	pub, _ := x509.MarshalPKIXPublicKey(&s.alipay.PublicKey)
	s.AlipayPubPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Config is an app configuration that talks to the stand-in.
func (s *Server) Config(notifyURL string) alipay.Config {
	return alipay.Config{AppID: AppID, PrivateKeyPEM: s.AppKeyPEM, AlipayPublicKeyPEM: s.AlipayPubPEM,
		NotifyURL: notifyURL, ReturnURL: "https://app.example/paid", Gateway: s.URL + "/gateway.do"}
}

// AppPublicKeyPEM is the app's public key: a client configured with it as Alipay's key
// refuses the stand-in's signatures.
func (s *Server) AppPublicKeyPEM() string {
	pub, _ := x509.MarshalPKIXPublicKey(&s.app.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// Open opens a page or WAP pay URL as the payer's browser does: Alipay creates the trade.
func (s *Server) Open(payURL string) {
	s.t.Helper()
	resp, err := http.Get(payURL) //nolint:gosec,noctx // the test's own stand-in
	if err != nil {
		s.t.Fatalf("alipaytest: open %s: %v", payURL, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("alipaytest: open: HTTP %d", resp.StatusCode)
	}
}

// Trade returns a copy of the trade outTradeNo.
func (s *Server) Trade(outTradeNo string) (alipay.Trade, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		return alipay.Trade{}, false
	}
	return *t, true
}

// Pay marks the (opened) trade paid as the payer would, and returns it.
func (s *Server) Pay(outTradeNo string) alipay.Trade {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		s.t.Fatalf("alipaytest: pay: no trade %s (open its pay URL first)", outTradeNo)
	}
	t.TradeStatus = "TRADE_SUCCESS"
	t.TradeNo = "2026" + strconv.FormatInt(time.Now().UnixNano(), 10)
	t.SendPayDate = s.Now().In(time.FixedZone("CST", 8*3600)).Format("2006-01-02 15:04:05")
	return *t
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	params := r.Form
	s.mu.Lock()
	defer s.mu.Unlock()
	method := params.Get("method")
	if r.Method == http.MethodGet {
		s.Calls["GET "+method]++
	} else {
		s.Calls[method]++
	}
	if msg := s.checkSignature(params); msg != "" {
		s.reply(w, method, map[string]string{"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-signature", "sub_msg": msg})
		return
	}
	var biz map[string]string
	_ = json.Unmarshal([]byte(params.Get("biz_content")), &biz)
	no := biz["out_trade_no"]
	t, exists := s.trades[no]
	notExist := map[string]string{"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "交易不存在"}
	switch method {
	case "alipay.trade.page.pay", "alipay.trade.wap.pay":
		if r.Method != http.MethodGet || no == "" || biz["total_amount"] == "" || biz["subject"] == "" {
			http.Error(w, "bad pay request", http.StatusBadRequest)
			return
		}
		if !exists {
			s.trades[no] = &alipay.Trade{OutTradeNo: no, TradeStatus: "WAIT_BUYER_PAY", TotalAmount: biz["total_amount"]}
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, "<html><body>支付宝收银台</body></html>")
	case "alipay.trade.query":
		if !exists {
			s.reply(w, method, notExist)
			return
		}
		s.reply(w, method, map[string]string{"code": "10000", "msg": "Success", "trade_no": t.TradeNo, "out_trade_no": no,
			"trade_status": t.TradeStatus, "total_amount": t.TotalAmount, "send_pay_date": t.SendPayDate, "buyer_logon_id": "159****5620"})
	case "alipay.trade.close":
		switch {
		case !exists:
			s.reply(w, method, notExist)
		case t.TradeStatus != "WAIT_BUYER_PAY":
			s.reply(w, method, map[string]string{"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "交易状态不合法"})
		default:
			t.TradeStatus = "TRADE_CLOSED"
			s.reply(w, method, map[string]string{"code": "10000", "msg": "Success", "trade_no": t.TradeNo, "out_trade_no": no})
		}
	case "alipay.trade.refund":
		amount, err := alipay.Fen(biz["refund_amount"])
		total, _ := alipay.Fen(t.TotalAmount)
		switch {
		case !exists:
			s.reply(w, method, notExist)
			return
		case !t.Paid():
			s.reply(w, method, map[string]string{"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "交易状态不合法"})
			return
		case err != nil || amount <= 0 || s.refunded[no]+amount > total && !s.requests[biz["out_request_no"]]:
			s.reply(w, method, map[string]string{"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "sub_msg": "退款金额超限"})
			return
		}
		change := "N"
		if !s.requests[biz["out_request_no"]] {
			s.requests[biz["out_request_no"]] = true
			s.refunded[no] += amount
			change = "Y"
		}
		s.reply(w, method, map[string]string{"code": "10000", "msg": "Success", "trade_no": t.TradeNo, "out_trade_no": no,
			"fund_change": change, "refund_fee": alipay.Yuan(s.refunded[no])})
	default:
		s.reply(w, method, map[string]string{"code": "40004", "msg": "Business Failed", "sub_code": "isv.invalid-method", "sub_msg": method})
	}
}

// checkSignature verifies the app's RSA2 signature over every parameter but sign.
func (s *Server) checkSignature(p url.Values) string {
	if p.Get("app_id") != AppID || p.Get("sign_type") != "RSA2" || p.Get("charset") != "utf-8" || p.Get("version") != "1.0" {
		return "app_id, sign_type, charset or version"
	}
	if _, err := time.Parse("2006-01-02 15:04:05", p.Get("timestamp")); err != nil {
		return "timestamp"
	}
	sig, err := base64.StdEncoding.DecodeString(p.Get("sign"))
	if err != nil {
		return "sign not base64"
	}
	sum := sha256.Sum256([]byte(alipay.SignContent(p, "sign")))
	if rsa.VerifyPKCS1v15(&s.app.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "验签出错"
	}
	return ""
}

// reply answers {"<method>_response": v, "sign": …} with the signature over v's exact JSON.
func (s *Server) reply(w http.ResponseWriter, method string, v any) {
	body, _ := json.Marshal(v)
	doc := fmt.Sprintf(`{"%s_response":%s,"sign":"%s"}`, strings.ReplaceAll(method, ".", "_"), body, sign(s.alipay, string(body)))
	w.Header().Set("Content-Type", "text/html;charset=utf-8") // as Alipay labels its JSON
	// The JSON is the stand-in's own, read by the client under test, not by a browser.
	_, _ = io.WriteString(w, doc) //nolint:gosec
}

func sign(key *rsa.PrivateKey, content string) string {
	sum := sha256.Sum256([]byte(content))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// Notification is a notification ready to post, form-encoded.
type Notification struct {
	Body []byte
	Real bool   // false for a forged or tampered one, which must be refused
	Kind string // what was done to it
}

// NotifyParams are the parameters of a trade_status_sync notification about t.
func (s *Server) NotifyParams(notifyID string, t alipay.Trade) url.Values {
	p := url.Values{}
	now := s.Now().In(time.FixedZone("CST", 8*3600)).Format("2006-01-02 15:04:05")
	for k, v := range map[string]string{"notify_time": now, "notify_type": "trade_status_sync", "notify_id": notifyID,
		"app_id": AppID, "charset": "utf-8", "version": "1.0", "trade_no": t.TradeNo, "out_trade_no": t.OutTradeNo,
		"trade_status": t.TradeStatus, "total_amount": t.TotalAmount, "receipt_amount": t.TotalAmount, "buyer_pay_amount": t.TotalAmount,
		"gmt_create": now, "gmt_payment": t.SendPayDate, "subject": "Kiln", "buyer_id": "2088102122524333", "seller_id": "2088101106499364"} {
		p.Set(k, v)
	}
	return p
}

// Notify signs params as Alipay does and returns the notification.
func (s *Server) Notify(params url.Values) Notification {
	return Notification{Body: []byte(signed(s.alipay, params)), Real: true, Kind: "real"}
}

func signed(key *rsa.PrivateKey, params url.Values) string {
	p := url.Values{}
	for k, v := range params {
		p[k] = append([]string(nil), v...)
	}
	p.Set("sign_type", "RSA2")
	p.Set("sign", sign(key, alipay.SignContent(p, "sign", "sign_type")))
	return p.Encode()
}

// Forgeries returns forged and tampered variants of the notification params makes, each of
// which must be refused.
func (s *Server) Forgeries(params url.Values) []Notification {
	var out []Notification
	add := func(kind, body string) { out = append(out, Notification{Body: []byte(body), Kind: kind}) }
	good, _ := url.ParseQuery(signed(s.alipay, params))
	tampered := cloneValues(good)
	tampered.Set("total_amount", "0.01")
	add("tampered amount", tampered.Encode())
	tampered = cloneValues(good)
	tampered.Set("trade_status", "TRADE_SUCCESS")
	tampered.Set("out_trade_no", tampered.Get("out_trade_no")+"1")
	add("tampered order", tampered.Encode())
	add("other key", signed(s.app, params))
	other := cloneValues(params)
	other.Set("app_id", "2021999999999999")
	add("another app's", signed(s.alipay, other))
	unsigned := cloneValues(good)
	unsigned.Del("sign")
	add("no sign", unsigned.Encode())
	rsa1 := cloneValues(good)
	rsa1.Set("sign_type", "RSA")
	add("sign_type RSA", rsa1.Encode())
	add("not a form", "%zz&&=")
	return out
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}
