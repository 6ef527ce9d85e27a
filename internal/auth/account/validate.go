package account

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/errs"
)

const (
	emailMaxLength = 254 // RFC 5321 path limit, less the angle brackets
	localMaxLength = 64
	nameMaxLength  = 100
)

// normaliseEmail trims and lower-cases an address; it does not validate it.
func normaliseEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// validEmail reports whether a normalised address looks deliverable: one @, a local part
// of at most 64 characters, a domain of dot-separated non-empty labels with at least one
// dot, no spaces or control characters, at most 254 characters in all. Whether it is
// really deliverable is for verification by email to find out.
func validEmail(email string) bool {
	if len(email) > emailMaxLength || !utf8.ValidString(email) || strings.IndexFunc(email, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}) >= 0 {
		return false
	}
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || len(local) > localMaxLength || strings.Contains(domain, "@") {
		return false
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" {
			return false
		}
	}
	return true
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
	if !validEmail(email) {
		fields = append(fields, errs.FieldError{Pointer: "/email", Message: "must be a valid email address"})
	}
	if p := passwordProblem(password, email, s.cfg.PasswordMinLength); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/password", Message: p})
	}
	if p := nameProblem(name); p != "" {
		fields = append(fields, errs.FieldError{Pointer: "/name", Message: p})
	}
	return errs.InvalidFields("invalid sign-up", fields)
}
