// Package secrets encrypts secrets at rest (signing keys, provider credentials) with
// AES-256-GCM under a master key named by an id, so the master key can rotate: new
// ciphertexts use the current key, old ones still open with the key that sealed them.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// DevMasterKeys is the master key used in development and tests when none is configured.
// It is public: never use it for data that matters (the server refuses it in production).
const DevMasterKeys = "dev:a2lsbi1kZXZlbG9wbWVudC1vbmx5LWtleS0zMmJ5dGU="

// Keyring holds the master keys; the first is current.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
	keys    map[string][]byte
}

var keyID = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,32}$`)

// ParseKeyring reads "id:base64key[,id:base64key…]" (32-byte keys, standard base64); the
// first key seals, every key opens.
func ParseKeyring(spec string) (*Keyring, error) {
	kr := &Keyring{aeads: map[string]cipher.AEAD{}, keys: map[string][]byte{}}
	for i, part := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !keyID.MatchString(id) {
			return nil, fmt.Errorf("master key %d: want id:base64 with an id of [a-zA-Z0-9_-]", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("master key %q: want 32 bytes in standard base64", id)
		}
		if _, dup := kr.aeads[id]; dup {
			return nil, fmt.Errorf("master key %q appears twice", id)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("master key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("master key %q: %w", id, err)
		}
		kr.aeads[id] = aead
		kr.keys[id] = key
		if i == 0 {
			kr.current = id
		}
	}
	return kr, nil
}

// Current is the id of the key that seals.
func (k *Keyring) Current() string { return k.current }

// Seal encrypts plaintext; aad binds the ciphertext to its context (e.g. a row id) so it
// cannot be moved to another row. The result is "<key id>:" followed by nonce‖ciphertext.
func (k *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	aead := k.aeads[k.current]
	out := make([]byte, 0, len(k.current)+1+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, k.current...)
	out = append(out, ':')
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, aad), nil
}

// Derive returns a 32-byte key for purpose derived (HKDF-SHA256) from master key id, for
// MACs of signed links and tokens: each purpose gets its own key and the master key never
// leaves the keyring. ok is false for an id not configured.
func (k *Keyring) Derive(id, purpose string) (key []byte, ok bool) {
	master, ok := k.keys[id]
	if !ok {
		return nil, false
	}
	key, err := hkdf.Key(sha256.New, master, nil, purpose, 32)
	if err != nil { // only for a length past 255 hashes
		panic(err)
	}
	return key, true
}

// ErrUnknownKey means a ciphertext was sealed with a master key no longer configured.
var ErrUnknownKey = errors.New("sealed with an unknown master key")

// Open decrypts what Seal produced with the same aad.
func (k *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	id, rest, ok := strings.Cut(string(sealed), ":")
	if !ok {
		return nil, errors.New("open: malformed ciphertext")
	}
	aead, ok := k.aeads[id]
	if !ok {
		return nil, fmt.Errorf("open: %w: %q", ErrUnknownKey, id)
	}
	if len(rest) < aead.NonceSize() {
		return nil, errors.New("open: malformed ciphertext")
	}
	nonce, ct := []byte(rest[:aead.NonceSize()]), []byte(rest[aead.NonceSize():])
	plain, err := aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return plain, nil
}

// KeyID returns the id of the master key that sealed a ciphertext.
func KeyID(sealed []byte) string {
	id, _, _ := strings.Cut(string(sealed), ":")
	return id
}
