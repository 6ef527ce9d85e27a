package account

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/kilnhq/kiln/internal/errs"
)

const (
	emailMaxLength = 254 // RFC 5321 path limit, less the angle brackets
	localMaxLength = 64
	nameMaxLength  = 100
)

// NormaliseEmail folds an address to the one form Kiln stores, compares and looks up:
// Unicode NFKC (so the full-width "ｆｏｏ＠example.com" is "foo@example.com"), then
// lower-cased, then trimmed. Every path that takes an address in folds it here first, so
// two spellings of one address are one account, one invitation and one rate-limit key.
// It does not validate: EmailProblem does.
func NormaliseEmail(email string) string {
	// Lower-casing after NFKC keeps the result NFKC (checked for every code point), and
	// NFKC maps some characters to spaces (U+3000), hence the trim last.
	return strings.TrimSpace(strings.ToLower(norm.NFKC.String(email)))
}

// EmailProblem returns why a normalised address (NormaliseEmail) may not be an account's
// address, or "": the shape sign-up takes (EmailMalformed), no invisible characters
// (EmailInvisible), and no part that mixes scripts a reader could confuse
// (EmailMixedScripts). It is the one rule for every address Kiln takes: sign-up, login,
// password reset, invitations, provider-verified emails and the CLI.
func EmailProblem(email string) string {
	switch {
	case strings.IndexFunc(email, invisible) >= 0:
		return EmailInvisible
	case !wellFormedEmail(email):
		return EmailMalformed
	case mixesScripts(email):
		return EmailMixedScripts
	}
	return ""
}

// The messages of EmailProblem, for the field errors that name the address.
const (
	EmailMalformed    = "must be a valid email address"
	EmailInvisible    = "must not contain invisible characters (bidi controls, zero-width or other formatting characters)"
	EmailMixedScripts = "must not mix scripts that look alike (such as Latin with Cyrillic or Greek) in its local part or in a domain label"
)

// invisible reports whether r is drawn as nothing or reorders what is drawn: the format
// characters (Cf: bidi controls U+202A..202E and U+2066..2069, zero-width U+200B..200D,
// U+FEFF, soft hyphen) and the other default-ignorable code points (Hangul fillers,
// variation selectors). Two addresses that differ only by them look the same.
func invisible(r rune) bool {
	return unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)
}

// wellFormedEmail reports whether a normalised address looks deliverable: one @, a local
// part of at most 64 bytes, a domain of dot-separated non-empty labels with at least one
// dot, only letters, marks, digits, punctuation and symbols (no spaces, controls,
// private-use or unassigned code points), at most 254 bytes in all. Whether it is really
// deliverable is for verification by email to find out.
func wellFormedEmail(email string) bool {
	if len(email) > emailMaxLength || !utf8.ValidString(email) || strings.IndexFunc(email, func(r rune) bool {
		return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
	}) >= 0 {
		return false
	}
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || len(local) > localMaxLength || strings.Contains(domain, "@") {
		return false
	}
	labels := strings.Split(domain, ".")
	return len(labels) >= 2 && !slices.Contains(labels, "")
}

// mixesScripts reports whether the local part or a domain label of a well-formed address
// fails UTS #39's "highly restrictive" level: its characters, less those of the Common and
// Inherited scripts (digits, punctuation, combining marks), must be of one script, or of
// Latin with Han, Hiragana and Katakana (Japanese), with Han and Bopomofo (Chinese) or with
// Han and Hangul (Korean). So "pаypal" with a Cyrillic "а" is refused, and so are Latin
// with Greek and Cyrillic with Greek, while "пример", "例え" and "tanaka太郎" are taken.
// Each part is judged alone: a Cyrillic local part at a Latin domain is a real address.
func mixesScripts(email string) bool {
	local, domain, _ := strings.Cut(email, "@")
	if mixed(local) {
		return true
	}
	return slices.ContainsFunc(strings.Split(domain, "."), mixed)
}

// cjkScripts are the script sets UTS #39 lets one identifier mix.
var cjkScripts = [][]*unicode.RangeTable{
	{unicode.Latin, unicode.Han, unicode.Hiragana, unicode.Katakana},
	{unicode.Latin, unicode.Han, unicode.Bopomofo},
	{unicode.Latin, unicode.Han, unicode.Hangul},
}

// mixed reports whether part's scripts (Common and Inherited aside) are more than one and
// not all within one of cjkScripts.
func mixed(part string) bool {
	var scripts []*unicode.RangeTable
	for _, r := range part {
		if s := scriptOf(r); s != nil && !slices.Contains(scripts, s) {
			scripts = append(scripts, s)
		}
	}
	if len(scripts) <= 1 {
		return false
	}
	for _, allowed := range cjkScripts {
		if !slices.ContainsFunc(scripts, func(s *unicode.RangeTable) bool { return !slices.Contains(allowed, s) }) {
			return false
		}
	}
	return true
}

// scriptOf returns the script of r, or nil for the Common and Inherited scripts (and for
// a code point of no script).
func scriptOf(r rune) *unicode.RangeTable {
	if r < utf8.RuneSelf {
		if unicode.IsLetter(r) {
			return unicode.Latin
		}
		return nil
	}
	if unicode.In(r, unicode.Common, unicode.Inherited) {
		return nil
	}
	for _, table := range unicode.Scripts {
		if unicode.Is(table, r) {
			return table
		}
	}
	return nil
}

// checkEmail returns an invalid_request error naming /email when email fails
// EmailProblem, or nil.
func checkEmail(what, email string) error {
	if p := EmailProblem(email); p != "" {
		return errs.InvalidFields(what, []errs.FieldError{{Pointer: "/email", Message: p}})
	}
	return nil
}

// nameProblem returns why name (already trimmed) may not be a user or org name, or "".
// An empty name is judged by the caller.
func nameProblem(name string) string {
	switch {
	case utf8.RuneCountInString(name) > nameMaxLength:
		return "must be at most 100 characters"
	case !utf8.ValidString(name):
		return "must be valid UTF-8"
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "must not contain control characters"
	}
	return ""
}

// validateSignUp returns an invalid_request error naming every bad field, or nil.
func (s *Service) validateSignUp(email, password, name string) error {
	var fields []errs.FieldError
	if p := EmailProblem(email); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/email", Message: p})
	}
	if p := passwordProblem(password, email, s.cfg.PasswordMinLength); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/password", Message: p})
	}
	if p := nameProblem(name); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/name", Message: p})
	}
	return errs.InvalidFields("invalid sign-up", fields)
}
