// Package opaque makes and checks Kiln's opaque secret tokens: refresh tokens, invitation,
// email verification and password reset tokens, and OAuth states, login codes, PKCE
// verifiers and nonces.
//
// A token is a prefix naming its kind (e.g. "kiln_rt_"), so that one pasted into the wrong
// place is recognised by people and secret scanners, followed by 32 bytes from crypto/rand
// in unpadded base64url. Where a token is kept, only its [Hash] is stored.
package opaque

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

const (
	randomBytes = 32
	// encodedLength is randomBytes in unpadded base64url.
	encodedLength = (randomBytes*8 + 5) / 6
)

// New returns a fresh token: prefix followed by 32 random bytes in unpadded base64url.
func New(prefix string) string {
	b := make([]byte, randomBytes)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// WellFormed reports whether token could have been returned by New(prefix): the prefix,
// then exactly 32 bytes in canonical unpadded base64url. It does no I/O, to spare the
// lookups for garbage.
func WellFormed(token, prefix string) bool {
	if len(token) != len(prefix)+encodedLength || !strings.HasPrefix(token, prefix) {
		return false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(token[len(prefix):])
	return err == nil && len(b) == randomBytes
}

// Hash is what is stored of a token: SHA-256 of the whole string. A token carries 256
// random bits, so a fast hash is enough.
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
