package secrets_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/platform/secrets"
)

func key(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func TestKeyring(t *testing.T) {
	t.Parallel()
	old, err := secrets.ParseKeyring("k1:" + key(1))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := old.Seal([]byte("private key"), []byte("row-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("private key")) || secrets.KeyID(sealed) != "k1" {
		t.Fatalf("sealed %q", sealed)
	}
	// Rotation: k2 seals, k1 still opens.
	rotated, err := secrets.ParseKeyring("k2:" + key(2) + ", k1:" + key(1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := rotated.Open(sealed, []byte("row-1")); err != nil || string(got) != "private key" {
		t.Fatalf("open after rotation: %q %v", got, err)
	}
	resealed, _ := rotated.Seal([]byte("x"), nil)
	if secrets.KeyID(resealed) != "k2" {
		t.Errorf("sealed with %q, want the current key k2", secrets.KeyID(resealed))
	}
	if _, err := rotated.Open(sealed, []byte("row-2")); err == nil {
		t.Error("opened with another aad")
	}
	tampered := append([]byte{}, sealed...)
	tampered[len(tampered)-1] ^= 1
	if _, err := rotated.Open(tampered, []byte("row-1")); err == nil {
		t.Error("opened a tampered ciphertext")
	}
	onlyNew, _ := secrets.ParseKeyring("k2:" + key(2))
	if _, err := onlyNew.Open(sealed, []byte("row-1")); !errors.Is(err, secrets.ErrUnknownKey) {
		t.Errorf("open with a dropped key: %v", err)
	}
	if _, err := secrets.ParseKeyring(secrets.DevMasterKeys); err != nil {
		t.Errorf("dev keys: %v", err)
	}
}

func TestParseKeyringErrors(t *testing.T) {
	t.Parallel()
	for name, spec := range map[string]string{
		"ErrNoID":      key(1),
		"ErrShortKey":  "k:" + base64.StdEncoding.EncodeToString([]byte("short")),
		"ErrBadBase64": "k:***",
		"ErrDuplicate": "k:" + key(1) + ",k:" + key(2),
		"ErrBadID":     "k y:" + key(1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := secrets.ParseKeyring(spec)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), strings.SplitN(spec, ":", 2)[len(strings.SplitN(spec, ":", 2))-1]) && len(spec) > 20 {
				t.Errorf("the error quotes key material: %v", err)
			}
		})
	}
}
