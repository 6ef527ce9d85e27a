// Package wechatpaytest runs a WeChat Pay API v3 stand-in for tests: an httptest server
// that checks each request's merchant signature, keeps orders and refunds, answers with
// WeChat's JSON signed by a platform key generated for the test, and makes notifications
// as WeChat makes them (AES-256-GCM under the APIv3 key, SHA256withRSA over
// "timestamp\nnonce\nbody\n").
package wechatpaytest

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/billing/wechatpay"
)

// The merchant's identity in the stand-in.
const (
	MchID          = "1900000109"
	AppID          = "wxd678efh567hg6787"
	MerchantSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	PlatformSerial = "PUB_KEY_ID_0114232134912410000000000000"
)

// Server is the stand-in. Its fields are safe to read under Lock.
type Server struct {
	*httptest.Server
	t           testing.TB
	merchant    *rsa.PrivateKey
	platform    *rsa.PrivateKey
	APIv3Key    string
	MerchantPEM string
	PlatformPEM string // PUBLIC KEY
	Now         func() time.Time

	mu      sync.Mutex
	orders  map[string]*wechatpay.Transaction
	refunds map[string]*wechatpay.Refund
	// Calls counts requests by "METHOD path" (without the query).
	Calls map[string]int
}

// New starts a stand-in closed with the test.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, merchant: key(t), platform: key(t), APIv3Key: randomKey(), Now: time.Now,
		orders: map[string]*wechatpay.Transaction{}, refunds: map[string]*wechatpay.Refund{}, Calls: map[string]int{}}
	der, _ := x509.MarshalPKCS8PrivateKey(s.merchant)
	s.MerchantPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	pub, _ := x509.MarshalPKIXPublicKey(&s.platform.PublicKey)
	s.PlatformPEM = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

var keyOnce sync.Once
var keys []*rsa.PrivateKey

// key returns one of a few RSA keys made once per test binary (2048-bit keys take tens of
// milliseconds each).
func key(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			keys = append(keys, k)
		}
	})
	keyMu.Lock()
	defer keyMu.Unlock()
	k := keys[keyNext%len(keys)]
	keyNext++
	return k
}

var keyMu sync.Mutex
var keyNext int

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b) // 32 characters
}

// OtherKeyPEM returns a PUBLIC KEY that is not the platform's (a merchant configured with
// it refuses the stand-in's signatures).
func (s *Server) OtherKeyPEM() string {
	pub, _ := x509.MarshalPKIXPublicKey(&s.merchant.PublicKey)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// Config is a merchant configuration that talks to the stand-in.
func (s *Server) Config(notifyURL string) wechatpay.Config {
	return wechatpay.Config{MchID: MchID, AppID: AppID, MerchantSerial: MerchantSerial, MerchantKeyPEM: s.MerchantPEM,
		APIv3Key: s.APIv3Key, PlatformKeyPEM: s.PlatformPEM, PlatformSerial: PlatformSerial, NotifyURL: notifyURL, BaseURL: s.URL}
}

// Order returns a copy of the order outTradeNo.
func (s *Server) Order(outTradeNo string) (wechatpay.Transaction, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok {
		return wechatpay.Transaction{}, false
	}
	return *o, true
}

// Pay marks the order paid as a payer would, and returns it.
func (s *Server) Pay(outTradeNo string) wechatpay.Transaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[outTradeNo]
	if !ok {
		s.t.Fatalf("wechatpaytest: pay: no order %s", outTradeNo)
	}
	o.TradeState, o.TradeStateDesc = "SUCCESS", "支付成功"
	o.TransactionID = "4200000" + strconv.FormatInt(time.Now().UnixNano(), 10)[:15]
	o.SuccessTime = s.Now().Format(time.RFC3339)
	o.Amount.PayerTotal, o.Amount.PayerCurrency = o.Amount.Total, o.Amount.Currency
	return *o
}

var pathOrder = regexp.MustCompile(`^/v3/pay/transactions/out-trade-no/([^/]+)(/close)?$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Calls[r.Method+" "+r.URL.Path]++
	if msg := s.checkAuthorization(r, body); msg != "" {
		s.reply(w, http.StatusUnauthorized, map[string]string{"code": "SIGN_ERROR", "message": msg})
		return
	}
	switch {
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/v3/pay/transactions/") && !strings.Contains(r.URL.Path, "out-trade-no"):
		s.create(w, strings.TrimPrefix(r.URL.Path, "/v3/pay/transactions/"), body)
	case r.Method == http.MethodGet && pathOrder.MatchString(r.URL.Path):
		if r.URL.Query().Get("mchid") != MchID {
			s.reply(w, http.StatusBadRequest, map[string]string{"code": "PARAM_ERROR", "message": "mchid"})
			return
		}
		o, ok := s.orders[pathOrder.FindStringSubmatch(r.URL.Path)[1]]
		if !ok {
			s.reply(w, http.StatusNotFound, map[string]string{"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
			return
		}
		s.reply(w, http.StatusOK, o)
	case r.Method == http.MethodPost && pathOrder.MatchString(r.URL.Path):
		o, ok := s.orders[pathOrder.FindStringSubmatch(r.URL.Path)[1]]
		switch {
		case !ok:
			s.reply(w, http.StatusNotFound, map[string]string{"code": "ORDER_NOT_EXIST", "message": "订单不存在"})
		case o.TradeState == "SUCCESS" || o.TradeState == "REFUND":
			s.reply(w, http.StatusBadRequest, map[string]string{"code": "ORDERPAID", "message": "订单已支付"})
		default:
			o.TradeState, o.TradeStateDesc = "CLOSED", "订单已关闭"
			s.reply(w, http.StatusNoContent, nil)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/v3/refund/domestic/refunds":
		s.refund(w, body)
	default:
		s.reply(w, http.StatusNotFound, map[string]string{"code": "NOT_FOUND", "message": "no such API"})
	}
}

func (s *Server) create(w http.ResponseWriter, kind string, body []byte) {
	var in struct {
		AppID, MchID, Description string
		NotifyURL                 string `json:"notify_url"`
		OutTradeNoJSON            string `json:"out_trade_no"`
		Amount                    struct {
			Total    int64
			Currency string
		}
		Payer *struct {
			OpenID string `json:"openid"`
		}
		SceneInfo *struct {
			PayerClientIP string `json:"payer_client_ip"`
		} `json:"scene_info"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.AppID != AppID || in.MchID != MchID || in.OutTradeNoJSON == "" ||
		in.Amount.Total <= 0 || in.NotifyURL == "" || in.Description == "" {
		s.reply(w, http.StatusBadRequest, map[string]string{"code": "PARAM_ERROR", "message": "bad order: " + string(body)})
		return
	}
	if kind == "jsapi" && (in.Payer == nil || in.Payer.OpenID == "") || kind == "h5" && (in.SceneInfo == nil || in.SceneInfo.PayerClientIP == "") {
		s.reply(w, http.StatusBadRequest, map[string]string{"code": "PARAM_ERROR", "message": "payer or scene_info missing"})
		return
	}
	if _, ok := s.orders[in.OutTradeNoJSON]; ok {
		s.reply(w, http.StatusBadRequest, map[string]string{"code": "OUT_TRADE_NO_USED", "message": "商户订单号重复"})
		return
	}
	o := &wechatpay.Transaction{AppID: AppID, MchID: MchID, OutTradeNo: in.OutTradeNoJSON, TradeType: strings.ToUpper(kind),
		TradeState: "NOTPAY", TradeStateDesc: "订单未支付"}
	o.Amount.Total, o.Amount.Currency = in.Amount.Total, in.Amount.Currency
	if o.Amount.Currency == "" {
		o.Amount.Currency = "CNY"
	}
	s.orders[in.OutTradeNoJSON] = o
	switch kind {
	case "native":
		s.reply(w, http.StatusOK, map[string]string{"code_url": "weixin://wxpay/bizpayurl?pr=" + in.OutTradeNoJSON[:8]})
	case "jsapi":
		s.reply(w, http.StatusOK, map[string]string{"prepay_id": "wx" + in.OutTradeNoJSON})
	case "h5":
		s.reply(w, http.StatusOK, map[string]string{"h5_url": "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id=wx" + in.OutTradeNoJSON})
	default:
		s.reply(w, http.StatusNotFound, map[string]string{"code": "NOT_FOUND", "message": kind})
	}
}

func (s *Server) refund(w http.ResponseWriter, body []byte) {
	var in struct {
		OutTradeNo  string `json:"out_trade_no"`
		OutRefundNo string `json:"out_refund_no"`
		Amount      struct {
			Refund, Total int64
			Currency      string
		}
	}
	_ = json.Unmarshal(body, &in)
	o, ok := s.orders[in.OutTradeNo]
	switch {
	case !ok:
		s.reply(w, http.StatusNotFound, map[string]string{"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"})
		return
	case o.TradeState != "SUCCESS" && o.TradeState != "REFUND":
		s.reply(w, http.StatusBadRequest, map[string]string{"code": "INVALID_REQUEST", "message": "订单未支付"})
		return
	case in.Amount.Total != o.Amount.Total || in.Amount.Refund <= 0 || in.Amount.Refund > o.Amount.Total:
		s.reply(w, http.StatusBadRequest, map[string]string{"code": "PARAM_ERROR", "message": "refund amount"})
		return
	}
	if r, ok := s.refunds[in.OutRefundNo]; ok { // the same refund number answers the same refund
		s.reply(w, http.StatusOK, r)
		return
	}
	o.TradeState = "REFUND"
	r := &wechatpay.Refund{RefundID: "50000" + in.OutRefundNo, OutRefundNo: in.OutRefundNo, TransactionID: o.TransactionID,
		OutTradeNo: o.OutTradeNo, Status: "PROCESSING"}
	r.Amount.Total, r.Amount.Refund, r.Amount.Currency = o.Amount.Total, in.Amount.Refund, o.Amount.Currency
	s.refunds[in.OutRefundNo] = r
	s.reply(w, http.StatusOK, r)
}

// checkAuthorization verifies the merchant's WECHATPAY2-SHA256-RSA2048 header.
func (s *Server) checkAuthorization(r *http.Request, body []byte) string {
	scheme, rest, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme != "WECHATPAY2-SHA256-RSA2048" {
		return "no WECHATPAY2-SHA256-RSA2048 authorization"
	}
	f := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = strings.Trim(v, `"`)
	}
	if f["mchid"] != MchID || f["serial_no"] != MerchantSerial {
		return "mchid or serial_no"
	}
	sig, err := base64.StdEncoding.DecodeString(f["signature"])
	if err != nil {
		return "signature not base64"
	}
	uri := r.URL.Path
	if r.URL.RawQuery != "" {
		uri += "?" + r.URL.RawQuery
	}
	sum := sha256.Sum256([]byte(r.Method + "\n" + uri + "\n" + f["timestamp"] + "\n" + f["nonce_str"] + "\n" + string(body) + "\n"))
	if rsa.VerifyPKCS1v15(&s.merchant.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "signature does not verify"
	}
	return ""
}

// reply answers with v as JSON (nil: no body), signed as WeChat signs answers.
func (s *Server) reply(w http.ResponseWriter, status int, v any) {
	var body []byte
	if v != nil {
		body, _ = json.Marshal(v)
	}
	for k, vs := range s.Sign(body, s.Now()) {
		w.Header()[k] = vs
	}
	if v != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Sign returns the Wechatpay-* headers WeChat sends with body at time at.
func (s *Server) Sign(body []byte, at time.Time) http.Header {
	return SignWith(s.platform, PlatformSerial, body, at)
}

// SignWith signs body with key as WeChat does, naming serial.
func SignWith(key *rsa.PrivateKey, serial string, body []byte, at time.Time) http.Header {
	ts := strconv.FormatInt(at.Unix(), 10)
	n := randomKey()
	sum := sha256.Sum256([]byte(ts + "\n" + n + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", n)
	h.Set("Wechatpay-Serial", serial)
	return h
}

// ForeignKey is an RSA key that is not the platform's, for forged signatures.
func (s *Server) ForeignKey() *rsa.PrivateKey { return s.merchant }

// NotifyBody makes a notification body of eventType about resource (a Transaction or a
// Refund), encrypted under the APIv3 key as WeChat encrypts it.
func (s *Server) NotifyBody(id, eventType string, resource any) []byte {
	return s.notifyBody(s.APIv3Key, id, eventType, resource)
}

func (s *Server) notifyBody(apiV3Key, id, eventType string, resource any) []byte {
	plain, _ := json.Marshal(resource)
	originalType := "transaction"
	if strings.HasPrefix(eventType, "REFUND.") {
		originalType = "refund"
	}
	ad, nonce := originalType, randomKey()[:12]
	block, _ := aes.NewCipher([]byte(apiV3Key))
	gcm, _ := cipher.NewGCM(block)
	ct := gcm.Seal(nil, []byte(nonce), plain, []byte(ad))
	body, _ := json.Marshal(map[string]any{
		"id": id, "create_time": s.Now().Format(time.RFC3339), "event_type": eventType, "resource_type": "encrypt-resource",
		"summary": "支付成功",
		"resource": map[string]string{"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.StdEncoding.EncodeToString(ct),
			"associated_data": ad, "nonce": nonce, "original_type": originalType},
	})
	return body
}

// Notification is a notification ready to post: its headers and body.
type Notification struct {
	Header http.Header
	Body   []byte
	// Real is false for a forged or tampered one, which must be refused.
	Real bool
	Kind string // what was done to it
}

// Notify returns a real, signed notification.
func (s *Server) Notify(id, eventType string, resource any) Notification {
	body := s.NotifyBody(id, eventType, resource)
	return Notification{Header: s.Sign(body, s.Now()), Body: body, Real: true, Kind: "real"}
}

// Forgeries returns forged and tampered variants of n, each of which must be refused.
func (s *Server) Forgeries(n Notification) []Notification {
	var out []Notification
	add := func(kind string, h http.Header, body []byte) {
		out = append(out, Notification{Header: h, Body: body, Kind: kind})
	}
	tampered := []byte(strings.Replace(string(n.Body), `"id":"`, `"id":"x`, 1))
	add("tampered body", n.Header.Clone(), tampered)
	add("other key", SignWith(s.merchant, PlatformSerial, n.Body, s.Now()), n.Body)
	add("unknown serial", SignWith(s.platform, "PUB_KEY_ID_999", n.Body, s.Now()), n.Body)
	add("stale timestamp", SignWith(s.platform, PlatformSerial, n.Body, s.Now().Add(-10*time.Minute)), n.Body)
	probe := n.Header.Clone()
	probe.Set("Wechatpay-Signature", "WECHATPAY/SIGNTEST/"+probe.Get("Wechatpay-Signature"))
	add("signature probe", probe, n.Body)
	unsigned := n.Header.Clone()
	unsigned.Del("Wechatpay-Signature")
	add("no signature", unsigned, n.Body)
	// Signed by the platform, but encrypted under another APIv3 key.
	wrongKey := s.notifyBody(randomKey(), "wrong-key-"+n.Kind, "TRANSACTION.SUCCESS", map[string]string{"out_trade_no": "x"})
	add("resource under another key", s.Sign(wrongKey, s.Now()), wrongKey)
	return out
}

// String describes the stand-in for failure messages.
func (s *Server) String() string { return fmt.Sprintf("wechatpaytest at %s", s.URL) }
