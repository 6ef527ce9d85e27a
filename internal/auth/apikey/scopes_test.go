package apikey_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
)

func TestValidateScopes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		scopes   []string
		pointers []string // nil: valid
	}{
		{"OK", []string{"chat"}, nil},
		{"OKEveryScope", apikey.Scopes, nil},
		{"ErrInvalidNil", nil, []string{"/scopes"}},
		{"ErrInvalidEmpty", []string{}, []string{"/scopes"}},
		{"ErrInvalidUnknown", []string{"chat", "rag"}, []string{"/scopes/1"}},
		{"ErrInvalidCaseSensitive", []string{"Chat"}, []string{"/scopes/0"}},
		{"ErrInvalidEmptyString", []string{""}, []string{"/scopes/0"}},
		{"ErrInvalidDuplicate", []string{"jobs", "chat", "jobs"}, []string{"/scopes/2"}},
		{"ErrInvalidEach", []string{"x", "admin", "admin", "y"}, []string{"/scopes/0", "/scopes/2", "/scopes/3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkFields(t, apikey.ValidateScopes(tt.scopes), tt.pointers)
		})
	}
}

// checkFields fails unless err is nil for no pointers, or invalid_request naming exactly
// pointers.
func checkFields(t *testing.T, err error, pointers []string) {
	t.Helper()
	if pointers == nil {
		if err != nil {
			t.Fatalf("err = %v, want nil", err)
		}
		return
	}
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || e.Code != errs.Invalid {
		t.Fatalf("err = %v, want invalid_request", err)
	}
	var got []string
	for _, f := range e.Fields {
		if f.Message == "" {
			t.Errorf("field %s has no message", f.Pointer)
		}
		got = append(got, f.Pointer)
	}
	if !slices.Equal(got, pointers) {
		t.Errorf("field pointers = %q, want %q (%v)", got, pointers, err)
	}
}

func TestHas(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		scope []string
		want  string
		ok    bool
	}{
		{"GrantedWhenListed", []string{"chat", "kb:read"}, "kb:read", true},
		{"RefusedWhenNotListed", []string{"chat", "kb:read"}, "kb:write", false},
		{"RefusedWithNoScopes", nil, "chat", false},
		{"GrantedByAdmin", []string{"admin"}, "billing:read", true},
		{"AdminGrantedByAdmin", []string{"chat", "admin"}, "admin", true},
		{"AdminRefusedWithoutAdmin", apikey.Scopes[:5], "admin", false},
		{"EmptyRefusedEvenToAdmin", []string{"admin"}, "", false},
		{"NoPrefixMatching", []string{"kb:read"}, "rag", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := apikey.Has(tt.scope, tt.want); got != tt.ok {
				t.Errorf("Has(%q, %q) = %v, want %v", tt.scope, tt.want, got, tt.ok)
			}
		})
	}
}

func TestKeyActive(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	before, after := now.Add(-time.Second), now.Add(time.Second)
	for _, tt := range []struct {
		name string
		key  apikey.Key
		want bool
	}{
		{"ActiveWithoutExpiry", apikey.Key{}, true},
		{"ActiveBeforeExpiry", apikey.Key{ExpiresAt: &after}, true},
		{"InactiveAtExpiry", apikey.Key{ExpiresAt: &now}, false},
		{"InactiveAfterExpiry", apikey.Key{ExpiresAt: &before}, false},
		{"InactiveWhenRevoked", apikey.Key{RevokedAt: &before, ExpiresAt: &after}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.key.Active(now); got != tt.want {
				t.Errorf("Active = %v, want %v", got, tt.want)
			}
		})
	}
}
