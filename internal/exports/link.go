package exports

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// linkPurpose separates the links' MAC key from every other key derived from the keyring.
const linkPurpose = "kiln privacy export link v1"

// Keyring derives the links' MAC keys from the server's master keys (secrets.Keyring).
type Keyring interface {
	Current() string
	Derive(id, purpose string) ([]byte, bool)
}

// errBadToken is a token that is malformed or not signed for the export; never more
// precise, so a forger learns nothing.
var errBadToken = errors.New("bad export link token")

// linkToken is a download link's token, "<master key id>.<expiry, unix seconds>.<MAC>":
// the MAC (HMAC-SHA256, base64url) binds the export id and the expiry, under a key
// derived from the named master key so that links outlive a key rotation.
type linkToken struct {
	KeyID   string
	Expires int64
	MAC     []byte
}

// sign makes the token of export id expiring at expires with the keyring's current key.
func sign(kr Keyring, id uuid.UUID, expires time.Time) string {
	t := linkToken{KeyID: kr.Current(), Expires: expires.Unix()}
	key, _ := kr.Derive(t.KeyID, linkPurpose) // the current key is always configured
	t.MAC = mac(key, id, t.Expires)
	return t.KeyID + "." + strconv.FormatInt(t.Expires, 10) + "." + base64.RawURLEncoding.EncodeToString(t.MAC)
}

// verify reports whether s is a token of export id signed by a configured key, and when
// it expires. Errors: errBadToken.
func verify(kr Keyring, id uuid.UUID, s string) (time.Time, error) {
	t, err := parseToken(s)
	if err != nil {
		return time.Time{}, err
	}
	key, ok := kr.Derive(t.KeyID, linkPurpose)
	if !ok || !hmac.Equal(t.MAC, mac(key, id, t.Expires)) {
		return time.Time{}, errBadToken
	}
	return time.Unix(t.Expires, 0).UTC(), nil
}

func mac(key []byte, id uuid.UUID, expires int64) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(id[:])
	h.Write([]byte(strconv.FormatInt(expires, 10)))
	return h.Sum(nil)
}

// parseToken splits a token without checking its MAC. It is the parser of untrusted input
// (FuzzParseToken). Errors: errBadToken.
func parseToken(s string) (linkToken, error) {
	if len(s) > 256 {
		return linkToken{}, errBadToken
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] == "" || len(parts[0]) > 32 {
		return linkToken{}, errBadToken
	}
	if strings.ContainsFunc(parts[0], func(c rune) bool { return !keyIDChar(c) }) {
		return linkToken{}, errBadToken
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || exp <= 0 || strconv.FormatInt(exp, 10) != parts[1] {
		return linkToken{}, errBadToken
	}
	m, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(m) != sha256.Size {
		return linkToken{}, errBadToken
	}
	return linkToken{KeyID: parts[0], Expires: exp, MAC: m}, nil
}

// keyIDChar reports whether c may be in a master key's id ([a-zA-Z0-9_-]).
func keyIDChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
