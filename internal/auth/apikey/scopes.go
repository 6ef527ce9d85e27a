package apikey

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kilnhq/kiln/internal/errs"
)

// The scopes an API key may carry.
const (
	ScopeChat        = "chat"
	ScopeKBRead      = "kb:read"
	ScopeKBWrite     = "kb:write"
	ScopeJobs        = "jobs"
	ScopeBillingRead = "billing:read"
	// ScopeAdmin implies every other scope.
	ScopeAdmin = "admin"
)

// Scopes is the catalog of scopes, in the order documented to users.
var Scopes = []string{ScopeChat, ScopeKBRead, ScopeKBWrite, ScopeJobs, ScopeBillingRead, ScopeAdmin}

// ValidateScopes returns invalid_request unless scopes is a non-empty list of catalog scopes
// without duplicates; each bad entry is named by the pointer /scopes/<index>, an empty list
// by /scopes.
func ValidateScopes(scopes []string) error {
	return errs.InvalidFields("invalid scopes", scopeFields(scopes))
}

func scopeFields(scopes []string) []errs.FieldError {
	if len(scopes) == 0 {
		return []errs.FieldError{{Pointer: "/scopes", Message: "must list at least one scope"}}
	}
	var fields []errs.FieldError
	for i, s := range scopes {
		pointer := fmt.Sprintf("/scopes/%d", i)
		switch first := slices.Index(scopes, s); {
		case !slices.Contains(Scopes, s):
			fields = append(fields, errs.FieldError{Pointer: pointer, Message: fmt.Sprintf("unknown scope %q; known scopes: %s", s, strings.Join(Scopes, ", "))})
		case first < i:
			fields = append(fields, errs.FieldError{Pointer: pointer, Message: fmt.Sprintf("duplicates /scopes/%d", first)})
		}
	}
	return fields
}

// Has reports whether a key with keyScopes may act with scope want: it carries want, or
// admin. An empty want is never granted.
func Has(keyScopes []string, want string) bool {
	if want == "" {
		return false
	}
	for _, s := range keyScopes {
		if s == want || s == ScopeAdmin {
			return true
		}
	}
	return false
}
