// Package alipay is Kiln's client of Alipay's open platform (支付宝开放平台) in public-key
// mode: page (computer website) and WAP (mobile website) pay URLs, trade queries, closing
// unpaid trades, refunds, and the verification of Alipay's asynchronous notifications.
//
// It speaks the documented wire format with the standard library: every request is signed
// RSA2 (SHA256withRSA) with the app's private key over its parameters sorted by name as
// k=v&…, answers are verified with Alipay's public key over the raw JSON of their
// …_response member, and notifications over their sorted parameters less sign and
// sign_type. smartwalle/alipay is not served by the module proxy this project builds from,
// so it is not used. Certificate mode (app_cert_sn, alipay_root_cert_sn) is not supported.
package alipay

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultGateway is Alipay's production gateway, used when Config.Gateway is empty.
const DefaultGateway = "https://openapi.alipay.com/gateway.do"

// maxResponseBody bounds what is read of one answer.
const maxResponseBody = 1 << 20

// china is the time zone of Alipay's timestamps (UTC+8, no daylight saving).
var china = time.FixedZone("CST", 8*3600)

const timeLayout = "2006-01-02 15:04:05"

// Config is one app's credentials.
type Config struct {
	AppID string
	// PrivateKeyPEM is the app's RSA2 private key (PKCS#8 or PKCS#1, in PEM).
	PrivateKeyPEM string
	// AlipayPublicKeyPEM is Alipay's public key of the app (支付宝公钥), in PEM.
	AlipayPublicKeyPEM string
	NotifyURL          string // where Alipay posts notifications
	ReturnURL          string // where the payer's browser returns after paying (optional)
	Gateway            string // DefaultGateway when empty (the sandbox's to test)
}

// Client talks to Alipay for one app. It is safe for concurrent use.
type Client struct {
	cfg     Config
	gateway string
	http    *http.Client
	key     *rsa.PrivateKey
	alipay  *rsa.PublicKey
	now     func() time.Time
}

// New checks cfg and parses its keys. A nil client means one with a 30 s timeout; nil now
// means time.Now.
func New(cfg Config, hc *http.Client, now func() time.Time) (*Client, error) {
	for name, v := range map[string]string{"app_id": cfg.AppID, "private_key": cfg.PrivateKeyPEM,
		"public_key": cfg.AlipayPublicKeyPEM, "notify_url": cfg.NotifyURL} {
		if v == "" {
			return nil, fmt.Errorf("alipay: %s is required", name)
		}
	}
	key, err := parsePrivateKey(cfg.PrivateKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("alipay: private_key: %w", err)
	}
	pub, err := ParsePublicKey(cfg.AlipayPublicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("alipay: public_key: %w", err)
	}
	gw := DefaultGateway
	if cfg.Gateway != "" {
		u, err := url.Parse(cfg.Gateway)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("alipay: gateway %q is not an absolute http(s) URL", cfg.Gateway)
		}
		gw = cfg.Gateway
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	if now == nil {
		now = time.Now
	}
	return &Client{cfg: cfg, gateway: gw, http: hc, key: key, alipay: pub, now: now}, nil
}

func parsePrivateKey(p string) (*rsa.PrivateKey, error) {
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

// ParsePublicKey reads an RSA public key in PEM (PUBLIC KEY or RSA PUBLIC KEY).
func ParsePublicKey(p string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return pub, nil
}

// SignContent is the text Alipay signs: the non-empty parameters but skip, sorted by name,
// as k=v joined by & (values as they are, not URL-encoded).
func SignContent(params url.Values, skip ...string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if params.Get(k) == "" || contains(skip, k) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params.Get(k))
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Order is what a new payment asks for.
type Order struct {
	OutTradeNo string // the merchant's order number (at most 64 of [0-9A-Za-z_])
	Subject    string // shown to the payer (at most 256 characters)
	Total      int64  // in fen (Alipay's total_amount is in yuan, two decimals)
	ExpiresAt  time.Time
}

// PagePayURL returns the URL that opens Alipay's cashier for o in a computer's browser
// (alipay.trade.page.pay). Nothing is sent: Alipay creates the trade when the payer opens it.
func (c *Client) PagePayURL(o Order) (string, error) {
	return c.payURL("alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY", o, "")
}

// WAPPayURL returns the URL that opens Alipay for o in a phone's browser
// (alipay.trade.wap.pay); quitURL is where the payer goes who gives up.
func (c *Client) WAPPayURL(o Order, quitURL string) (string, error) {
	return c.payURL("alipay.trade.wap.pay", "QUICK_WAP_WAY", o, quitURL)
}

func (c *Client) payURL(method, product string, o Order, quitURL string) (string, error) {
	biz := map[string]string{"out_trade_no": o.OutTradeNo, "total_amount": Yuan(o.Total), "subject": o.Subject, "product_code": product}
	if !o.ExpiresAt.IsZero() {
		biz["time_expire"] = o.ExpiresAt.In(china).Format(timeLayout)
	}
	if quitURL != "" {
		biz["quit_url"] = quitURL
	}
	params, err := c.params(method, biz)
	if err != nil {
		return "", fmt.Errorf("%s: %w", method, err)
	}
	if c.cfg.ReturnURL != "" {
		params.Set("return_url", c.cfg.ReturnURL)
	}
	if err := c.sign(params); err != nil {
		return "", err
	}
	return c.gateway + "?" + params.Encode(), nil
}

// params are the common parameters of one call with its biz_content.
func (c *Client) params(method string, biz any) (url.Values, error) {
	content, err := json.Marshal(biz)
	if err != nil {
		return nil, err
	}
	p := url.Values{}
	p.Set("app_id", c.cfg.AppID)
	p.Set("method", method)
	p.Set("format", "JSON")
	p.Set("charset", "utf-8")
	p.Set("sign_type", "RSA2")
	p.Set("timestamp", c.now().In(china).Format(timeLayout))
	p.Set("version", "1.0")
	p.Set("notify_url", c.cfg.NotifyURL)
	p.Set("biz_content", string(content))
	return p, nil
}

// sign adds the RSA2 signature over params (sign_type included, sign not).
func (c *Client) sign(params url.Values) error {
	sum := sha256.Sum256([]byte(SignContent(params, "sign")))
	sig, err := rsa.SignPKCS1v15(rand.Reader, c.key, crypto.SHA256, sum[:])
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	params.Set("sign", base64.StdEncoding.EncodeToString(sig))
	return nil
}

// Yuan writes fen as Alipay's amount: yuan with two decimals.
func Yuan(fen int64) string {
	sign := ""
	if fen < 0 {
		sign, fen = "-", -fen
	}
	return fmt.Sprintf("%s%d.%02d", sign, fen/100, fen%100)
}

var amountPattern = regexp.MustCompile(`^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$`)

// Fen reads an amount in yuan ("88.8", "88.88", "88") as fen; anything else is an error.
func Fen(yuan string) (int64, error) {
	if !amountPattern.MatchString(yuan) {
		return 0, fmt.Errorf("amount %.32q is not yuan with at most two decimals", yuan)
	}
	whole, frac, _ := strings.Cut(yuan, ".")
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, err
	}
	for len(frac) < 2 {
		frac += "0"
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	return w*100 + f, nil
}

// APIError is an answer whose code is not 10000: Alipay's code, msg, sub_code
// (ACQ.TRADE_NOT_EXIST, ACQ.TRADE_HAS_SUCCESS, …) and sub_msg.
type APIError struct {
	Code, Msg, SubCode, SubMsg string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("alipay: %s %s: %s %s", e.Code, e.Msg, e.SubCode, e.SubMsg)
}

// IsSubCode reports whether err is an APIError with subCode.
func IsSubCode(err error, subCode string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.SubCode == subCode
}

// ErrInvalid wraps every reason a notification or answer is not believed: a missing or
// bad signature, another app's, a malformed body or amount.
var ErrInvalid = errors.New("alipay: invalid signature or message")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

type result struct {
	Code    string `json:"code"`
	Msg     string `json:"msg"`
	SubCode string `json:"sub_code"`
	SubMsg  string `json:"sub_msg"`
}

// call posts one signed call and decodes its verified …_response member into out.
func (c *Client) call(ctx context.Context, method string, biz, out any) error {
	params, err := c.params(method, biz)
	if err != nil {
		return err
	}
	if err := c.sign(params); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.gateway, strings.NewReader(params.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("alipay: HTTP %d", resp.StatusCode)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(raw, &doc); err != nil {
		return invalid("answer is not JSON: %v", err)
	}
	name := strings.ReplaceAll(method, ".", "_") + "_response"
	body, ok := doc[name]
	if !ok {
		return invalid("answer has no %s", name)
	}
	var r result
	if err := json.Unmarshal(body, &r); err != nil {
		return invalid("%s: %v", name, err)
	}
	var sig string
	if s, ok := doc["sign"]; ok {
		_ = json.Unmarshal(s, &sig)
	}
	// An error answer may come unsigned (a bad app_id); a success must be signed.
	if sig != "" || r.Code == "10000" {
		if err := c.verify(body, sig); err != nil {
			return err
		}
	}
	if r.Code != "10000" {
		return &APIError{Code: r.Code, Msg: r.Msg, SubCode: r.SubCode, SubMsg: r.SubMsg}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode %s: %w", name, err)
		}
	}
	return nil
}

func (c *Client) verify(content []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || sig == "" {
		return invalid("sign is missing or not base64")
	}
	sum := sha256.Sum256(content)
	if rsa.VerifyPKCS1v15(c.alipay, crypto.SHA256, sum[:], raw) != nil {
		return invalid("the signature does not verify with Alipay's public key")
	}
	return nil
}

// Trade is a trade as alipay.trade.query reports it.
type Trade struct {
	TradeNo     string `json:"trade_no"`
	OutTradeNo  string `json:"out_trade_no"`
	TradeStatus string `json:"trade_status"` // WAIT_BUYER_PAY, TRADE_CLOSED, TRADE_SUCCESS, TRADE_FINISHED
	TotalAmount string `json:"total_amount"`
	SendPayDate string `json:"send_pay_date"`
}

// Paid reports whether the buyer paid.
func (t Trade) Paid() bool {
	return t.TradeStatus == "TRADE_SUCCESS" || t.TradeStatus == "TRADE_FINISHED"
}

// Query returns the trade outTradeNo. A trade the payer never opened is an APIError with
// sub code ACQ.TRADE_NOT_EXIST.
func (c *Client) Query(ctx context.Context, outTradeNo string) (Trade, error) {
	var t Trade
	if err := c.call(ctx, "alipay.trade.query", map[string]string{"out_trade_no": outTradeNo}, &t); err != nil {
		return Trade{}, fmt.Errorf("query trade: %w", err)
	}
	return t, nil
}

// Close closes the unpaid trade outTradeNo (ACQ.TRADE_NOT_EXIST when the payer never
// opened it, ACQ.TRADE_STATUS_ERROR when it is paid).
func (c *Client) Close(ctx context.Context, outTradeNo string) error {
	if err := c.call(ctx, "alipay.trade.close", map[string]string{"out_trade_no": outTradeNo}, nil); err != nil {
		return fmt.Errorf("close trade: %w", err)
	}
	return nil
}

// RefundRequest refunds part or all of a paid trade.
type RefundRequest struct {
	OutTradeNo   string
	OutRequestNo string // the merchant's refund number: the same number repeats the same refund
	Amount       int64  // in fen
	Reason       string
}

// Refund is alipay.trade.refund's answer.
type Refund struct {
	TradeNo    string `json:"trade_no"`
	OutTradeNo string `json:"out_trade_no"`
	FundChange string `json:"fund_change"` // Y: money moved by this call
	RefundFee  string `json:"refund_fee"`  // refunded so far, in yuan
}

// Refund refunds r; Alipay answers synchronously.
func (c *Client) Refund(ctx context.Context, r RefundRequest) (Refund, error) {
	var out Refund
	biz := map[string]string{"out_trade_no": r.OutTradeNo, "refund_amount": Yuan(r.Amount), "out_request_no": r.OutRequestNo, "refund_reason": r.Reason}
	if err := c.call(ctx, "alipay.trade.refund", biz, &out); err != nil {
		return Refund{}, fmt.Errorf("refund: %w", err)
	}
	return out, nil
}
