package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash/crc32"

	"github.com/kilnhq/kiln/internal/errs"
)

const (
	prefix = "kiln_"
	// alphabet is base62 in ASCII order; index i encodes the digit i.
	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	// randomLen base62 characters carry 32·log2(62) ≈ 190.5 bits.
	randomLen = 32
	// checksumLen base62 digits hold any CRC32 (62^6 > 2^32).
	checksumLen = 6
	maxEnvLen   = 8
	// fixedLen is everything but the env: prefix, env separator, random, separator, checksum.
	fixedLen = len(prefix) + 1 + randomLen + 1 + checksumLen
	minLen   = fixedLen + 1
	maxLen   = fixedLen + maxEnvLen
	// rejectAbove drops random bytes ≥ 248 (4·62) so that b % 62 is uniform.
	rejectAbove = 256 - 256%len(alphabet)
)

// Parsed is the content of a well-formed API key.
type Parsed struct {
	// Env names the deployment the key was issued for, e.g. "live" or "test".
	Env string
	// Random is the key's 32 base62 secret characters.
	Random string
}

// Generate returns a new API key kiln_<env>_<random>_<checksum>: random is 32 base62
// characters from crypto/rand and checksum the CRC32 (IEEE) of everything before its
// separator, in base62, left-padded with zeros to 6 characters. It returns invalid_request
// when env does not match ^[a-z0-9]{1,8}$.
func Generate(env string) (string, error) {
	if !validEnv(env) {
		return "", errs.E(errs.Invalid, "api key env must match ^[a-z0-9]{1,8}$, got %q", env)
	}
	b := make([]byte, 0, fixedLen+len(env))
	b = append(b, prefix...)
	b = append(b, env...)
	b = append(b, '_')
	var buf [48]byte
	for n := 0; n < randomLen; {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("generate api key: %w", err)
		}
		for _, c := range buf {
			if int(c) >= rejectAbove {
				continue
			}
			b = append(b, alphabet[int(c)%len(alphabet)])
			if n++; n == randomLen {
				break
			}
		}
	}
	sum := crc32IEEE(b)
	b = append(b, '_')
	cs := encodeChecksum(sum)
	b = append(b, cs[:]...)
	return string(b), nil
}

// Parse reports whether s is a well-formed API key and returns its parts. It does no I/O:
// a wrong prefix, a wrong length, a character outside the alphabet or a checksum mismatch
// fails here. A checksum catches every single-character change (CRC32 detects every burst
// of up to 32 bits), so typos and truncations never reach the cache or the database.
// It does not allocate.
func Parse(s string) (Parsed, bool) {
	n := len(s)
	if n < minLen || n > maxLen || s[:len(prefix)] != prefix {
		return Parsed{}, false
	}
	// Parse from the end, where the lengths are fixed; the env is what is left.
	checksum := s[n-checksumLen:]
	body := s[:n-checksumLen-1]
	random := body[len(body)-randomLen:]
	env := body[len(prefix) : len(body)-randomLen-1]
	if s[n-checksumLen-1] != '_' || body[len(body)-randomLen-1] != '_' || !validEnv(env) || !base62(random) {
		return Parsed{}, false
	}
	if want := encodeChecksum(crc32IEEE(body)); string(want[:]) != checksum {
		return Parsed{}, false
	}
	return Parsed{Env: env, Random: random}, true
}

// Hash returns the SHA-256 of secret, the only form in which a key is stored.
func Hash(secret string) []byte {
	h := hashOf(secret)
	return h[:]
}

// hashOf is Hash without the allocation, for the authentication hot path.
func hashOf(secret string) [sha256.Size]byte {
	if len(secret) <= maxLen {
		var buf [maxLen]byte
		return sha256.Sum256(append(buf[:0], secret...))
	}
	return sha256.Sum256([]byte(secret))
}

// Display returns what may be shown for a key, kiln_<env>_ followed by the first 6 random
// characters and an ellipsis: enough to recognise a key, far too little to use it. It
// returns "" when secret is not a well-formed key.
func Display(secret string) string {
	p, ok := Parse(secret)
	if !ok {
		return ""
	}
	return prefix + p.Env + "_" + p.Random[:6] + "…"
}

// crc32IEEE is crc32.ChecksumIEEE that also takes a string, without the copy to a []byte
// that would escape through the hash package's assembly dispatch and cost Parse an
// allocation.
func crc32IEEE[T string | []byte](s T) uint32 {
	crc := ^uint32(0)
	for i := range len(s) {
		crc = crc32.IEEETable[byte(crc)^s[i]] ^ crc>>8 //nolint:gosec // truncating to the low byte is the algorithm
	}
	return ^crc
}

// encodeChecksum writes sum in base62, most significant digit first, zero-padded.
func encodeChecksum(sum uint32) [checksumLen]byte {
	var out [checksumLen]byte
	v := uint64(sum)
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = alphabet[v%uint64(len(alphabet))]
		v /= uint64(len(alphabet))
	}
	return out
}

func validEnv(env string) bool {
	if len(env) < 1 || len(env) > maxEnvLen {
		return false
	}
	for i := range len(env) {
		if c := env[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func base62(s string) bool {
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}
