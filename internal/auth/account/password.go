package account

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// passwordMaxLength bounds what a user may choose; argon2id itself takes any length.
const passwordMaxLength = 128

const (
	saltLength = 16
	keyLength  = 32
)

// kdf derives an argon2id key: argon2.IDKey, replaced in tests to count calls.
type kdf func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte

// argon2Params are the cost parameters of one hash.
type argon2Params struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

// hasher hashes new passwords with the configured parameters and verifies stored hashes
// with their own.
type hasher struct {
	params argon2Params
	kdf    kdf
}

func newHasher(cfg Config) hasher {
	return hasher{
		params: argon2Params{memory: cfg.Argon2Memory, time: cfg.Argon2Time, threads: cfg.Argon2Threads},
		kdf:    argon2.IDKey,
	}
}

// hash returns password hashed with a fresh random salt, in PHC string form:
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>, base64 without padding.
func (h hasher) hash(password string) string {
	salt := make([]byte, saltLength)
	_, _ = rand.Read(salt) // never fails: crypto/rand aborts the program instead
	key := h.kdf([]byte(password), salt, h.params.time, h.params.memory, h.params.threads, keyLength)
	return formatPHC(h.params, salt, key)
}

// dummy returns a well-formed hash with the configured parameters that no password
// matches, to verify against when there is no real hash: it costs what a real one costs.
func (h hasher) dummy() string {
	return formatPHC(h.params, make([]byte, saltLength), make([]byte, keyLength))
}

// verify reports whether password matches the PHC string phc, and whether phc was made
// with the configured parameters (false means it should be rehashed). The keys are
// compared in constant time.
func (h hasher) verify(password, phc string) (ok, current bool, err error) {
	p, salt, key, err := parsePHC(phc)
	if err != nil {
		// Spend the usual time anyway, so a corrupt row is not a timing oracle.
		h.kdf([]byte(password), make([]byte, saltLength), h.params.time, h.params.memory, h.params.threads, keyLength)
		return false, false, err
	}
	got := h.kdf([]byte(password), salt, p.time, p.memory, p.threads, uint32(len(key))) //nolint:gosec // len(key) ≤ 64, checked by parsePHC
	return subtle.ConstantTimeCompare(got, key) == 1, p == h.params && len(key) == keyLength, nil
}

func formatPHC(p argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// Bounds on parameters read back from a stored hash, so that a corrupt or planted row
// cannot make one login allocate gigabytes or run for minutes.
const (
	maxArgon2Memory = 1 << 20 // KiB: 1 GiB
	maxArgon2Time   = 64
)

var errBadPHC = errors.New("malformed argon2id PHC string")

// parsePHC reads the parameters, salt and key of an argon2id PHC string.
func parsePHC(s string) (argon2Params, []byte, []byte, error) {
	var p argon2Params
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return p, nil, nil, errBadPHC
	}
	var threads uint32
	n, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &threads)
	if err != nil || n != 3 || parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", p.memory, p.time, threads) {
		return p, nil, nil, errBadPHC
	}
	if threads < 1 || threads > 255 || p.time < 1 || p.time > maxArgon2Time || p.memory < 8*threads || p.memory > maxArgon2Memory {
		return p, nil, nil, fmt.Errorf("%w: parameters out of range", errBadPHC)
	}
	p.threads = uint8(threads)
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return p, nil, nil, fmt.Errorf("%w: salt", errBadPHC)
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) < 16 || len(key) > 64 {
		return p, nil, nil, fmt.Errorf("%w: key", errBadPHC)
	}
	return p, salt, key, nil
}

// commonPasswordList is ~1,100 lower-case passwords that lead breach corpora or follow
// their patterns: words, names, keyboard walks, digit runs, years. One per line.
//
//go:embed common_passwords.txt
var commonPasswordList []byte

var commonPasswords = func() map[string]struct{} {
	m := make(map[string]struct{}, 1200)
	sc := bufio.NewScanner(bytes.NewReader(commonPasswordList))
	for sc.Scan() {
		if w := strings.TrimSpace(sc.Text()); w != "" {
			m[w] = struct{}{}
		}
	}
	return m
}()

// passwordProblem returns why password may not be chosen by the owner of email, or "" when
// it may. Length is counted in characters (runes).
func passwordProblem(password, email string, minLength int) string {
	n := utf8.RuneCountInString(password)
	switch {
	case n < minLength:
		return fmt.Sprintf("must be at least %d characters", minLength)
	case n > passwordMaxLength:
		return fmt.Sprintf("must be at most %d characters", passwordMaxLength)
	case repeated(password):
		return "must not be one character or a short pattern repeated"
	case sequence(password):
		return "must not be a sequence such as abcdef or 987654"
	case isCommon(password):
		return "is too common; choose one that is hard to guess"
	case containsLocalPart(password, email):
		return "must not contain your email address"
	}
	return ""
}

// repeated reports whether s is a unit of at most four characters repeated, the last
// repetition possibly cut short: "aaaaaaaaaa", "abcabcabcabc", "1999199919".
func repeated(s string) bool {
	r := []rune(s)
	for unit := 1; unit <= 4 && unit < len(r); unit++ {
		same := true
		for i := unit; i < len(r) && same; i++ {
			same = r[i] == r[i-unit]
		}
		if same {
			return true
		}
	}
	return false
}

// sequence reports whether each character of s follows the one before by +1, or each by
// -1, ignoring case: "abcdefghij", "0123456789", "9876543210".
func sequence(s string) bool {
	r := []rune(strings.ToLower(s))
	if len(r) < 3 {
		return false
	}
	step := r[1] - r[0]
	if step != 1 && step != -1 {
		return false
	}
	for i := 2; i < len(r); i++ {
		if r[i]-r[i-1] != step {
			return false
		}
	}
	return true
}

// isCommon reports whether password, lower-cased, is in the common list: whole, once the
// digits and symbols around it are cut ("Password2024!"), or with look-alike characters
// read as letters once the digits and symbols after it are cut ("P@ssw0rd123", "1loveyou!").
func isCommon(password string) bool {
	notLetter := func(r rune) bool { return !unicode.IsLetter(r) }
	lower := strings.ToLower(password)
	head := strings.TrimRightFunc(lower, notLetter)
	candidates := []string{lower, strings.TrimFunc(lower, notLetter)}
	for _, one := range []rune{'i', 'l'} {
		read := unLeet(head, one)
		candidates = append(candidates, read, strings.TrimFunc(read, notLetter))
	}
	for _, c := range candidates {
		if _, ok := commonPasswords[c]; ok {
			return true
		}
	}
	return false
}

// leet maps look-alike digits and symbols to the letters they stand for; one is read as
// the given letter (i or l).
var leet = strings.NewReplacer("0", "o", "3", "e", "4", "a", "@", "a", "5", "s", "$", "s", "7", "t", "!", "i", "8", "b")

// unLeet reads s's look-alike characters as letters, the digit one as one.
func unLeet(s string, one rune) string {
	return strings.ReplaceAll(leet.Replace(s), "1", string(one))
}

// containsLocalPart reports whether password contains the part of email before the @,
// ignoring case, when that part is long enough to matter.
func containsLocalPart(password, email string) bool {
	local, _, _ := strings.Cut(email, "@")
	if utf8.RuneCountInString(local) < 3 {
		return false
	}
	return strings.Contains(strings.ToLower(password), local)
}
