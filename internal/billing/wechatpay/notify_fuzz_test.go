package wechatpay

import (
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"testing"
	"time"
)

// FuzzOpenNotify feeds the notification parser (past the signature check) any body: it
// must never panic and never accept a resource that does not open under the APIv3 key.
func FuzzOpenNotify(f *testing.F) {
	f.Add([]byte(`{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"AAAA","associated_data":"transaction","nonce":"0123456789ab"}}`))
	f.Add([]byte(`{"id":"EV-1","event_type":"REFUND.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"","nonce":""}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"short"}}`))
	c := &Client{apiV3Key: []byte("0123456789abcdef0123456789abcdef")}
	f.Fuzz(func(t *testing.T, body []byte) {
		if n, err := c.openNotify(body); err == nil {
			t.Fatalf("accepted %q as %+v without the key", body, n)
		}
	})
}

// FuzzVerify feeds the signature headers any values: nothing but a real signature passes.
func FuzzVerify(f *testing.F) {
	f.Add("WECHATPAY/SIGNTEST/abc", "1700000000", "nonce", "PUB_KEY_ID_1", []byte("{}"))
	f.Add("c2lnbmF0dXJl", "-1", "", "PUB_KEY_ID_1", []byte(""))
	f.Add("!!!", "99999999999999999999", "n", "PUB_KEY_ID_1", []byte("x"))
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	now := func() time.Time { return time.Unix(1700000000, 0) }
	c := &Client{platform: map[string]*rsa.PublicKey{"PUB_KEY_ID_1": &key.PublicKey}, now: now}
	f.Fuzz(func(t *testing.T, sig, ts, nonce, serial string, body []byte) {
		h := http.Header{}
		h.Set("Wechatpay-Signature", sig)
		h.Set("Wechatpay-Timestamp", ts)
		h.Set("Wechatpay-Nonce", nonce)
		h.Set("Wechatpay-Serial", serial)
		if err := c.verify(h, body); err == nil {
			t.Fatalf("verified %q without the platform key", sig)
		}
	})
}
