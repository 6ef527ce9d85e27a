package alipay

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// FuzzParseNotify feeds the notification parser any body: it must never panic and never
// accept one not signed with Alipay's key.
func FuzzParseNotify(f *testing.F) {
	f.Add([]byte("notify_id=1&out_trade_no=a&trade_status=TRADE_SUCCESS&total_amount=1.00&app_id=2021&sign_type=RSA2&sign=AAAA"))
	f.Add([]byte("sign_type=RSA2&sign=%%%"))
	f.Add([]byte("a=1&a=2"))
	f.Add([]byte(""))
	f.Add([]byte("total_amount=99999999999999999999&sign_type=RSA2"))
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	c := &Client{cfg: Config{AppID: "2021"}, alipay: &key.PublicKey}
	f.Fuzz(func(t *testing.T, body []byte) {
		if n, err := c.ParseNotify(body); err == nil {
			t.Fatalf("accepted %q as %+v without Alipay's key", body, n)
		}
	})
}

// FuzzFen reads any amount without panicking, and what it accepts writes back the same.
func FuzzFen(f *testing.F) {
	for _, s := range []string{"0.01", "88.8", "1.234", "-1", "999999999999.99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fen, err := Fen(s)
		if err != nil {
			return
		}
		if back, err := Fen(Yuan(fen)); err != nil || back != fen {
			t.Fatalf("Fen(%q) = %d, Yuan = %s reads back %d, %v", s, fen, Yuan(fen), back, err)
		}
	})
}
