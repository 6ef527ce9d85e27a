package wechatpay

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Tolerance is how far a signed timestamp may be from now, either way.
const Tolerance = 5 * time.Minute

// ErrInvalid wraps every reason a notification (or an answer) is not believed: a probe,
// a missing or bad signature, an unknown serial, a stale timestamp, a resource that does
// not open or does not parse.
var ErrInvalid = errors.New("wechatpay: invalid notification")

// signTestPrefix starts the signature of WeChat's probes, sent to check that a merchant
// verifies signatures: they must be refused.
const signTestPrefix = "WECHATPAY/SIGNTEST/"

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// verify checks the Wechatpay-* headers of a notification or answer over body.
func (c *Client) verify(h http.Header, body []byte) error {
	sig, ts, n, serial := h.Get("Wechatpay-Signature"), h.Get("Wechatpay-Timestamp"), h.Get("Wechatpay-Nonce"), h.Get("Wechatpay-Serial")
	if strings.HasPrefix(sig, signTestPrefix) {
		return invalid("a signature probe (%s…)", signTestPrefix)
	}
	if sig == "" || ts == "" || n == "" || serial == "" {
		return invalid("Wechatpay-Signature, -Timestamp, -Nonce and -Serial are required")
	}
	pub, ok := c.platform[serial]
	if !ok {
		return invalid("unknown Wechatpay-Serial %.64q", serial)
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return invalid("Wechatpay-Timestamp is not a number")
	}
	if d := c.now().Sub(time.Unix(secs, 0)); d > Tolerance || d < -Tolerance {
		return invalid("Wechatpay-Timestamp is %s from now", d.Round(time.Second))
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return invalid("Wechatpay-Signature is not base64")
	}
	sum := sha256.Sum256([]byte(ts + "\n" + n + "\n" + string(body) + "\n"))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], raw) != nil {
		return invalid("the signature does not verify")
	}
	return nil
}

// Notification is a verified, decrypted notification of WeChat Pay.
type Notification struct {
	ID        string // the notification's id, the same on every retry
	EventType string // TRANSACTION.SUCCESS, REFUND.SUCCESS, REFUND.ABNORMAL, REFUND.CLOSED
	CreatedAt string
	// Resource is the decrypted resource (original_type transaction or refund).
	Resource []byte
	// Transaction is set for TRANSACTION.* events and Refund for REFUND.* ones.
	Transaction *Transaction
	Refund      *Refund
}

type envelope struct {
	ID           string `json:"id"`
	CreateTime   string `json:"create_time"`
	EventType    string `json:"event_type"`
	ResourceType string `json:"resource_type"`
	Resource     struct {
		Algorithm      string `json:"algorithm"`
		Ciphertext     string `json:"ciphertext"`
		AssociatedData string `json:"associated_data"`
		Nonce          string `json:"nonce"`
		OriginalType   string `json:"original_type"`
	} `json:"resource"`
}

// ParseNotify verifies a notification's signature headers over its body, opens its
// resource and decodes it. Any failure wraps ErrInvalid.
func (c *Client) ParseNotify(h http.Header, body []byte) (Notification, error) {
	if err := c.verify(h, body); err != nil {
		return Notification{}, err
	}
	return c.openNotify(body)
}

func (c *Client) openNotify(body []byte) (Notification, error) {
	var e envelope
	if err := json.Unmarshal(body, &e); err != nil {
		return Notification{}, invalid("body is not JSON: %v", err)
	}
	if e.ID == "" || e.EventType == "" {
		return Notification{}, invalid("id and event_type are required")
	}
	if e.Resource.Algorithm != "AEAD_AES_256_GCM" {
		return Notification{}, invalid("resource algorithm %.32q, want AEAD_AES_256_GCM", e.Resource.Algorithm)
	}
	plain, err := Decrypt(c.apiV3Key, e.Resource.AssociatedData, e.Resource.Nonce, e.Resource.Ciphertext)
	if err != nil {
		return Notification{}, invalid("resource: %v", err)
	}
	n := Notification{ID: e.ID, EventType: e.EventType, CreatedAt: e.CreateTime, Resource: plain}
	switch {
	case strings.HasPrefix(e.EventType, "TRANSACTION."):
		var t Transaction
		if err := json.Unmarshal(plain, &t); err != nil {
			return Notification{}, invalid("transaction resource: %v", err)
		}
		n.Transaction = &t
	case strings.HasPrefix(e.EventType, "REFUND."):
		var r Refund
		if err := json.Unmarshal(plain, &r); err != nil {
			return Notification{}, invalid("refund resource: %v", err)
		}
		n.Refund = &r
	}
	return n, nil
}

// Decrypt opens an AEAD_AES_256_GCM resource: ciphertext (base64, the tag at its end)
// under key with the nonce and associated data given beside it.
func Decrypt(key []byte, associatedData, nonce, ciphertext string) ([]byte, error) {
	ct, err := base64.StdEncoding.DecodeString(ciphertext)
	if err != nil {
		return nil, errors.New("ciphertext is not base64")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCMWithNonceSize(block, 12)
	if err != nil {
		return nil, err
	}
	if len(nonce) != gcm.NonceSize() {
		return nil, fmt.Errorf("nonce is %d bytes, want %d", len(nonce), gcm.NonceSize())
	}
	plain, err := gcm.Open(nil, []byte(nonce), ct, []byte(associatedData))
	if err != nil {
		return nil, errors.New("does not decrypt under the APIv3 key")
	}
	return plain, nil
}

// Failure is the body WeChat expects with a 4xx or 5xx answer to a notification it
// should send again.
func Failure(message string) []byte {
	b, _ := json.Marshal(map[string]string{"code": "FAIL", "message": message})
	return b
}
