package exports

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/platform/secrets"
)

func testKeyring(t testing.TB, spec string) *secrets.Keyring {
	t.Helper()
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestLinkToken: a token verifies for its export only, under the key that signed it even
// after a rotation, and not once that key is gone or a byte of it changed.
func TestLinkToken(t *testing.T) {
	t.Parallel()
	old := testKeyring(t, secrets.DevMasterKeys)
	id := uuid.Must(uuid.NewV7())
	expires := time.Unix(1_900_000_000, 0).UTC()
	token := sign(old, id, expires)

	rotated := testKeyring(t, "new:"+strings.Repeat("A", 43)+"=,"+secrets.DevMasterKeys)
	for name, kr := range map[string]*secrets.Keyring{"OK": old, "OKAfterRotation": rotated} {
		got, err := verify(kr, id, token)
		if err != nil || !got.Equal(expires) {
			t.Errorf("%s: %v, %v", name, got, err)
		}
	}
	if sign(rotated, id, expires) == token {
		t.Error("the rotated keyring signs with the old key")
	}
	bad := map[string]string{
		"ErrOtherExport": token,
		"ErrKeyGone":     token,
		"ErrLaterExpiry": strings.Replace(token, ".1900000000.", ".1900000001.", 1),
		"ErrFlippedMAC":  token[:len(token)-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(token, "A")],
		"ErrEmpty":       "",
		"ErrTwoParts":    "dev.1900000000",
	}
	for name, tok := range bad {
		kr, export := Keyring(old), id
		switch name {
		case "ErrOtherExport":
			export = uuid.Must(uuid.NewV7())
		case "ErrKeyGone":
			kr = testKeyring(t, "new:"+strings.Repeat("A", 43)+"=")
		}
		if _, err := verify(kr, export, tok); !errors.Is(err, errBadToken) {
			t.Errorf("%s: %v, want errBadToken", name, err)
		}
	}
}

// FuzzParseToken: the parser of the links' untrusted tokens never panics, and what it
// accepts has a well-formed key id, a positive expiry and a MAC of SHA-256's size, and
// prints back to the same token.
func FuzzParseToken(f *testing.F) {
	kr := testKeyring(f, secrets.DevMasterKeys)
	f.Add(sign(kr, uuid.Nil, time.Unix(1_900_000_000, 0)))
	f.Add("dev.1.AAAA")
	f.Add("..")
	f.Add("dev.-1." + strings.Repeat("A", 43))
	f.Add("dev.01." + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseToken(s)
		if err != nil {
			return
		}
		if tok.KeyID == "" || len(tok.KeyID) > 32 || tok.Expires <= 0 || len(tok.MAC) != sha256.Size {
			t.Fatalf("accepted %q as %+v", s, tok)
		}
		if _, err := verify(kr, uuid.Nil, s); err != nil && !errors.Is(err, errBadToken) {
			t.Fatalf("verify %q: %v", s, err)
		}
	})
}

// TestChunkWriterCap: an archive past the cap fails with errTooLarge before anything past
// it is stored.
func TestChunkWriterCap(t *testing.T) {
	t.Parallel()
	w := &chunkWriter{max: 10, hash: sha256.New()}
	if n, err := w.Write([]byte("0123456789")); n != 10 || err != nil {
		t.Fatalf("up to the cap: %d, %v", n, err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, errTooLarge) {
		t.Fatalf("past the cap: %v, want errTooLarge", err)
	}
	if w.size != 10 || len(w.buf) != 10 {
		t.Fatalf("size %d, buffered %d", w.size, len(w.buf))
	}
}
