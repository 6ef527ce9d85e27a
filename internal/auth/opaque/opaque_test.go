package opaque_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/opaque"
)

const prefix = "kiln_xx_"

func TestNew(t *testing.T) {
	t.Parallel()
	token := opaque.New(prefix)
	raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimPrefix(token, prefix))
	if !strings.HasPrefix(token, prefix) || err != nil || len(raw) != 32 {
		t.Fatalf("token %q: want %s and 32 bytes of base64url (%v)", token, prefix, err)
	}
	if !opaque.WellFormed(token, prefix) {
		t.Fatalf("WellFormed(%q) = false", token)
	}
	if opaque.New(prefix) == token {
		t.Fatal("two tokens alike")
	}
}

func TestWellFormed(t *testing.T) {
	t.Parallel()
	token := opaque.New(prefix)
	for name, tt := range map[string]struct {
		token, prefix string
		want          bool
	}{
		"OK":              {token, prefix, true},
		"OKNoPrefix":      {strings.TrimPrefix(token, prefix), "", true},
		"OKZeros":         {prefix + base64.RawURLEncoding.EncodeToString(make([]byte, 32)), prefix, true},
		"ErrEmpty":        {"", prefix, false},
		"ErrPrefixOnly":   {prefix, prefix, false},
		"ErrNoPrefix":     {strings.TrimPrefix(token, prefix), prefix, false},
		"ErrOtherPrefix":  {"kiln_yy_" + strings.TrimPrefix(token, prefix), prefix, false},
		"ErrShort":        {token[:len(token)-1], prefix, false},
		"ErrLong":         {token + "A", prefix, false},
		"ErrPadded":       {token[:len(token)-1] + "=", prefix, false},
		"ErrNotBase64URL": {token[:len(token)-1] + "+", prefix, false},
		"ErrUpperCase":    {strings.ToUpper(token), prefix, false},
		// The last character carries 2 spare bits: a token with them set is not one issued.
		"ErrNonCanonical": {nonCanonical(token), prefix, false},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := opaque.WellFormed(tt.token, tt.prefix); got != tt.want {
				t.Fatalf("WellFormed(%q, %q) = %v, want %v", tt.token, tt.prefix, got, tt.want)
			}
		})
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	token := opaque.New(prefix)
	if want := sha256.Sum256([]byte(token)); !bytes.Equal(opaque.Hash(token), want[:]) {
		t.Fatalf("Hash(%q) = %x, want SHA-256 of the token", token, opaque.Hash(token))
	}
}

// nonCanonical flips the unused low bits of the token's last base64 character.
func nonCanonical(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, token[len(token)-1])
	return token[:len(token)-1] + string(alphabet[i^1])
}

func FuzzWellFormed(f *testing.F) {
	token := opaque.New(prefix)
	for _, s := range []string{token, "", prefix, token + "=", strings.ToUpper(token), prefix + strings.Repeat("_", 43)} {
		f.Add(s, prefix)
	}
	f.Add(strings.TrimPrefix(token, prefix), "")
	f.Fuzz(func(t *testing.T, s, p string) {
		if !opaque.WellFormed(s, p) {
			return
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, p))
		if err != nil || len(raw) != 32 || p+base64.RawURLEncoding.EncodeToString(raw) != s {
			t.Fatalf("WellFormed(%q, %q) accepted a token New would not return", s, p)
		}
	})
}

func FuzzNew(f *testing.F) {
	for _, p := range []string{"", prefix, "kiln_inv_", "é\x00"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		token := opaque.New(p)
		if !strings.HasPrefix(token, p) || !opaque.WellFormed(token, p) {
			t.Fatalf("New(%q) = %q, not WellFormed", p, token)
		}
	})
}
