// Package wechatpay is Kiln's client of WeChat Pay API v3 (微信支付 APIv3) for a direct
// merchant: Native (QR code), JSAPI and H5 orders, order queries, closing unpaid orders,
// refunds, and the verification and decryption of WeChat's notifications.
//
// It speaks the documented wire format with the standard library: requests are signed
// with the merchant's RSA key (WECHATPAY2-SHA256-RSA2048), responses and notifications are
// verified with WeChat's platform public key or certificate (SHA256withRSA over
// "timestamp\nnonce\nbody\n"), and a notification's resource is opened with AES-256-GCM
// under the APIv3 key. The official SDK (wechatpay-apiv3/wechatpay-go) is not served by
// the module proxy this project builds from, so it is not used.
package wechatpay

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultBaseURL is WeChat Pay's API endpoint, used when Config.BaseURL is empty.
const DefaultBaseURL = "https://api.mch.weixin.qq.com"

// maxResponseBody bounds what is read of one API response.
const maxResponseBody = 1 << 20

// Config is one merchant's credentials.
type Config struct {
	MchID string // 商户号
	AppID string // the AppID the merchant is bound to (official account, mini program or app)
	// MerchantSerial is the serial number of the merchant's API certificate.
	MerchantSerial string
	// MerchantKeyPEM is the merchant's API private key (apiclient_key.pem: PKCS#8 or PKCS#1).
	MerchantKeyPEM string
	// APIv3Key is the 32-byte key that opens notification resources.
	APIv3Key string
	// PlatformKeyPEM is WeChat Pay's public key (PUBLIC KEY) or platform certificate
	// (CERTIFICATE), and PlatformSerial the id WeChat sends in Wechatpay-Serial with it
	// (PUB_KEY_ID_… for a public key; a certificate's serial when empty).
	PlatformKeyPEM string
	PlatformSerial string
	NotifyURL      string // where WeChat posts notifications (https)
	BaseURL        string // DefaultBaseURL when empty
}

// Client talks to WeChat Pay for one merchant. It is safe for concurrent use.
type Client struct {
	cfg      Config
	base     string
	http     *http.Client
	key      *rsa.PrivateKey
	platform map[string]*rsa.PublicKey // by serial
	apiV3Key []byte
	now      func() time.Time
}

// New checks cfg and parses its keys. A nil client means http.DefaultClient with a 30 s
// timeout; nil now means time.Now.
func New(cfg Config, hc *http.Client, now func() time.Time) (*Client, error) {
	for name, v := range map[string]string{"mch_id": cfg.MchID, "app_id": cfg.AppID, "merchant_serial": cfg.MerchantSerial,
		"merchant_key": cfg.MerchantKeyPEM, "api_v3_key": cfg.APIv3Key, "platform_key": cfg.PlatformKeyPEM, "notify_url": cfg.NotifyURL} {
		if v == "" {
			return nil, fmt.Errorf("wechatpay: %s is required", name)
		}
	}
	if len(cfg.APIv3Key) != 32 {
		return nil, fmt.Errorf("wechatpay: api_v3_key must be 32 bytes, got %d", len(cfg.APIv3Key))
	}
	key, err := ParsePrivateKey(cfg.MerchantKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("wechatpay: merchant_key: %w", err)
	}
	pub, serial, err := parsePlatformKey(cfg.PlatformKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("wechatpay: platform_key: %w", err)
	}
	if cfg.PlatformSerial != "" {
		serial = cfg.PlatformSerial
	}
	if serial == "" {
		return nil, errors.New("wechatpay: platform_serial is required with a public key (its PUB_KEY_ID_…)")
	}
	base := DefaultBaseURL
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("wechatpay: base_url %q is not an absolute http(s) URL", cfg.BaseURL)
		}
		base = strings.TrimRight(cfg.BaseURL, "/")
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	return &Client{cfg: cfg, base: base, http: hc, key: key, platform: map[string]*rsa.PublicKey{serial: pub},
		apiV3Key: []byte(cfg.APIv3Key), now: now}, nil
}

// ParsePrivateKey reads an RSA private key in PEM (PKCS#8 or PKCS#1).
func ParsePrivateKey(p string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

// parsePlatformKey reads a PUBLIC KEY or a CERTIFICATE (then its serial too, in the
// upper-case hex WeChat sends).
func parsePlatformKey(p string) (*rsa.PublicKey, string, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, "", errors.New("no PEM block")
	}
	if block.Type == "CERTIFICATE" {
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("parse certificate: %w", err)
		}
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, "", errors.New("certificate key is not RSA")
		}
		return pub, strings.ToUpper(hex.EncodeToString(cert.SerialNumber.Bytes())), nil
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, "", errors.New("not an RSA key")
	}
	return pub, "", nil
}

// Order is what a new payment asks for.
type Order struct {
	OutTradeNo  string // the merchant's order number: 6-32 of [0-9A-Za-z_-|*]
	Description string // shown to the payer (at most 127 characters)
	Total       int64  // in fen
	Currency    string // CNY
	ExpiresAt   time.Time
}

// APIError is a non-2xx answer of WeChat Pay: its HTTP status and its error code
// (PARAM_ERROR, ORDER_NOT_EXIST, ORDERPAID, …).
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechatpay: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an APIError with code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

type amount struct {
	Total    int64  `json:"total"`
	Currency string `json:"currency,omitempty"`
}

type orderBody struct {
	AppID       string     `json:"appid"`
	MchID       string     `json:"mchid"`
	Description string     `json:"description"`
	OutTradeNo  string     `json:"out_trade_no"`
	TimeExpire  string     `json:"time_expire,omitempty"`
	NotifyURL   string     `json:"notify_url"`
	Amount      amount     `json:"amount"`
	Payer       *payer     `json:"payer,omitempty"`
	SceneInfo   *sceneInfo `json:"scene_info,omitempty"`
}

type payer struct {
	OpenID string `json:"openid"`
}

type sceneInfo struct {
	PayerClientIP string `json:"payer_client_ip"`
	H5Info        struct {
		Type string `json:"type"`
	} `json:"h5_info"`
}

func (c *Client) orderBody(o Order) orderBody {
	b := orderBody{AppID: c.cfg.AppID, MchID: c.cfg.MchID, Description: o.Description, OutTradeNo: o.OutTradeNo,
		NotifyURL: c.cfg.NotifyURL, Amount: amount{Total: o.Total, Currency: o.Currency}}
	if !o.ExpiresAt.IsZero() {
		b.TimeExpire = o.ExpiresAt.Format(time.RFC3339)
	}
	return b
}

// Native places a Native order and returns its code_url, the weixin://wxpay/… link a QR
// code shows to the payer.
func (c *Client) Native(ctx context.Context, o Order) (string, error) {
	var out struct {
		CodeURL string `json:"code_url"`
	}
	if err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/native", c.orderBody(o), &out); err != nil {
		return "", fmt.Errorf("native order: %w", err)
	}
	if out.CodeURL == "" {
		return "", errors.New("native order: no code_url in the answer")
	}
	return out.CodeURL, nil
}

// H5 places an H5 order paid in a mobile browser from clientIP and returns its h5_url.
func (c *Client) H5(ctx context.Context, o Order, clientIP string) (string, error) {
	b := c.orderBody(o)
	b.SceneInfo = &sceneInfo{PayerClientIP: clientIP}
	b.SceneInfo.H5Info.Type = "Wap"
	var out struct {
		H5URL string `json:"h5_url"`
	}
	if err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/h5", b, &out); err != nil {
		return "", fmt.Errorf("h5 order: %w", err)
	}
	if out.H5URL == "" {
		return "", errors.New("h5 order: no h5_url in the answer")
	}
	return out.H5URL, nil
}

// JSAPIParams are what a page inside WeChat passes to WeixinJSBridge's getBrandWCPayRequest
// (or a mini program to wx.requestPayment), signed by the merchant.
type JSAPIParams struct {
	AppID     string `json:"appId"`
	TimeStamp string `json:"timeStamp"`
	NonceStr  string `json:"nonceStr"`
	Package   string `json:"package"`
	SignType  string `json:"signType"`
	PaySign   string `json:"paySign"`
}

// JSAPI places a JSAPI order for the payer openID and returns the signed parameters that
// start the payment in WeChat.
func (c *Client) JSAPI(ctx context.Context, o Order, openID string) (JSAPIParams, error) {
	b := c.orderBody(o)
	b.Payer = &payer{OpenID: openID}
	var out struct {
		PrepayID string `json:"prepay_id"`
	}
	if err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/jsapi", b, &out); err != nil {
		return JSAPIParams{}, fmt.Errorf("jsapi order: %w", err)
	}
	if out.PrepayID == "" {
		return JSAPIParams{}, errors.New("jsapi order: no prepay_id in the answer")
	}
	p := JSAPIParams{AppID: c.cfg.AppID, TimeStamp: strconv.FormatInt(c.now().Unix(), 10), NonceStr: nonce(),
		Package: "prepay_id=" + out.PrepayID, SignType: "RSA"}
	sig, err := c.sign(p.AppID + "\n" + p.TimeStamp + "\n" + p.NonceStr + "\n" + p.Package + "\n")
	if err != nil {
		return JSAPIParams{}, err
	}
	p.PaySign = sig
	return p, nil
}

// Transaction is an order as WeChat Pay reports it, in a query's answer or a
// TRANSACTION.* notification.
type Transaction struct {
	AppID          string `json:"appid"`
	MchID          string `json:"mchid"`
	OutTradeNo     string `json:"out_trade_no"`
	TransactionID  string `json:"transaction_id"`
	TradeType      string `json:"trade_type"`
	TradeState     string `json:"trade_state"` // SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR
	TradeStateDesc string `json:"trade_state_desc"`
	SuccessTime    string `json:"success_time"`
	Amount         struct {
		Total         int64  `json:"total"`
		PayerTotal    int64  `json:"payer_total"`
		Currency      string `json:"currency"`
		PayerCurrency string `json:"payer_currency"`
	} `json:"amount"`
}

// Paid reports whether the payer paid (a refunded order was paid first).
func (t Transaction) Paid() bool { return t.TradeState == "SUCCESS" || t.TradeState == "REFUND" }

// Query returns the order outTradeNo. An order WeChat never saw is an APIError with code
// ORDER_NOT_EXIST.
func (c *Client) Query(ctx context.Context, outTradeNo string) (Transaction, error) {
	var t Transaction
	path := "/v3/pay/transactions/out-trade-no/" + url.PathEscape(outTradeNo) + "?mchid=" + url.QueryEscape(c.cfg.MchID)
	if err := c.do(ctx, http.MethodGet, path, nil, &t); err != nil {
		return Transaction{}, fmt.Errorf("query order: %w", err)
	}
	return t, nil
}

// Close closes the unpaid order outTradeNo so it can no longer be paid.
func (c *Client) Close(ctx context.Context, outTradeNo string) error {
	body := map[string]string{"mchid": c.cfg.MchID}
	if err := c.do(ctx, http.MethodPost, "/v3/pay/transactions/out-trade-no/"+url.PathEscape(outTradeNo)+"/close", body, nil); err != nil {
		return fmt.Errorf("close order: %w", err)
	}
	return nil
}

// RefundRequest refunds part or all of a paid order.
type RefundRequest struct {
	OutTradeNo  string
	OutRefundNo string // the merchant's refund number, unique per refund
	Reason      string
	Refund      int64 // in fen
	Total       int64 // the order's total, in fen
	Currency    string
}

// Refund is a refund as WeChat Pay reports it, in an answer or a REFUND.* notification.
type Refund struct {
	RefundID      string `json:"refund_id"`
	OutRefundNo   string `json:"out_refund_no"`
	TransactionID string `json:"transaction_id"`
	OutTradeNo    string `json:"out_trade_no"`
	// Status is SUCCESS, CLOSED, PROCESSING or ABNORMAL (RefundStatus in a notification).
	Status       string `json:"status"`
	RefundStatus string `json:"refund_status"`
	SuccessTime  string `json:"success_time"`
	Amount       struct {
		Total    int64  `json:"total"`
		Refund   int64  `json:"refund"`
		Currency string `json:"currency"`
	} `json:"amount"`
}

// State is the refund's status, from an answer or a notification.
func (r Refund) State() string {
	if r.Status != "" {
		return r.Status
	}
	return r.RefundStatus
}

// Refund asks WeChat Pay to refund r; the answer's status is usually PROCESSING and the
// outcome arrives as a REFUND.* notification.
func (c *Client) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	body := map[string]any{"out_trade_no": r.OutTradeNo, "out_refund_no": r.OutRefundNo, "reason": r.Reason,
		"notify_url": c.cfg.NotifyURL, "amount": map[string]any{"refund": r.Refund, "total": r.Total, "currency": r.Currency}}
	var out Refund
	if err := c.do(ctx, http.MethodPost, "/v3/refund/domestic/refunds", body, &out); err != nil {
		return Refund{}, fmt.Errorf("refund: %w", err)
	}
	return out, nil
}

// do sends a signed request and decodes a verified 2xx answer into out (nil: no body).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	auth, err := c.authorization(method, path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Status: resp.StatusCode}
		var e struct{ Code, Message string }
		if json.Unmarshal(raw, &e) == nil {
			ae.Code, ae.Message = e.Code, e.Message
		}
		return ae
	}
	if err := c.verify(resp.Header, raw); err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// authorization is the WECHATPAY2-SHA256-RSA2048 header of one request: the merchant's
// signature over "METHOD\nPATH?QUERY\ntimestamp\nnonce\nbody\n".
func (c *Client) authorization(method, path string, body []byte) (string, error) {
	ts, n := strconv.FormatInt(c.now().Unix(), 10), nonce()
	sig, err := c.sign(method + "\n" + path + "\n" + ts + "\n" + n + "\n" + string(body) + "\n")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(`WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",signature="%s",timestamp="%s",serial_no="%s"`,
		c.cfg.MchID, n, sig, ts, c.cfg.MerchantSerial), nil
}

func (c *Client) sign(message string) (string, error) {
	sum := sha256.Sum256([]byte(message))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

func nonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}
