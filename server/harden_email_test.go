package server

import (
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

// wantEmailRefused checks that res is a 400 invalid_request naming /email with message.
func wantEmailRefused(t *testing.T, res *http.Response, message string) {
	t.Helper()
	p := decodeProblem(t, res)
	if p.Status != http.StatusBadRequest || p.Code != api.ErrorCode(errs.Invalid) || p.Errors == nil {
		t.Fatalf("problem %d %s %v, want 400 invalid_request with field errors", p.Status, p.Code, deref(p.Detail))
	}
	for _, f := range *p.Errors {
		if f.Pointer == "/email" && f.Message == message {
			return
		}
	}
	t.Fatalf("field errors %+v, want /email %q", *p.Errors, message)
}

// TestLookalikeEmails: an address is folded to one form (NFKC, lower case) wherever it
// enters, so a full-width spelling is the same account; an address with invisible
// characters or mixing look-alike scripts is refused at sign-up, login, password reset
// and invitation, naming the field.
func TestLookalikeEmails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	foo := b.person(t, "foo@example.com")

	signUp := func(email string) *http.Response {
		return b.call(t, "POST", "/v1/auth/signup", "", map[string]string{"email": email, "password": testPassword, "name": "Mallory"}, nil)
	}
	login := func(email string) *http.Response {
		return b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": testPassword}, nil)
	}

	t.Run("ErrSignUpCyrillicLookalike", func(t *testing.T) {
		wantEmailRefused(t, signUp("f\u043eo@example.com"), account.EmailMixedScripts) // Cyrillic о
		wantEmailRefused(t, signUp("foo@ex\u0430mple.com"), account.EmailMixedScripts) // Cyrillic а
	})
	t.Run("ErrSignUpBidiAndZeroWidth", func(t *testing.T) {
		wantEmailRefused(t, signUp("foo\u202e@example.com"), account.EmailInvisible)
		wantEmailRefused(t, signUp("f\u200boo@example.com"), account.EmailInvisible)
		wantEmailRefused(t, signUp("\u2066foo\u2069@example.com"), account.EmailInvisible)
		wantEmailRefused(t, signUp("\ufefffoo@example.com"), account.EmailInvisible)
	})
	t.Run("ErrSignUpFullWidthIsTheSameAccount", func(t *testing.T) {
		wantProblem(t, signUp("ｆｏｏ@example.com"), http.StatusConflict, errs.Conflict)
		wantProblem(t, signUp("ＦＯＯ＠ＥＸＡＭＰＬＥ．ＣＯＭ"), http.StatusConflict, errs.Conflict)
	})
	t.Run("OKLoginFullWidth", func(t *testing.T) {
		var pair api.TokenPair
		res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ｆｏｏ@ｅｘａｍｐｌｅ．ｃｏｍ", "password": testPassword}, &pair)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("full-width login: %d %s", res.StatusCode, readAll(res))
		}
		if me := b.currentUser(t, pair.AccessToken); me.Id != foo.id || me.Email != "foo@example.com" {
			t.Errorf("full-width login signed in as %s (%s), want %s", me.Id, me.Email, foo.id)
		}
	})
	t.Run("ErrLoginLookalike", func(t *testing.T) {
		wantEmailRefused(t, login("foo\u202e@example.com"), account.EmailInvisible)
		wantEmailRefused(t, login("f\u043eo@example.com"), account.EmailMixedScripts)
	})
	t.Run("ErrPasswordResetLookalike", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "f\u03bfo@example.com"}, nil) // Greek ο
		wantEmailRefused(t, res, account.EmailMixedScripts)
	})
	t.Run("ErrInvitationLookalike", func(t *testing.T) {
		acme := b.org(t, foo, "Acme")
		for email, message := range map[string]string{
			"b\u043eb@example.com":  account.EmailMixedScripts,
			"bob@\u0435xample.com":  account.EmailMixedScripts,
			"bob\u202e@example.com": account.EmailInvisible,
			"bob\u200d@example.com": account.EmailInvisible,
		} {
			res := b.call(t, "POST", orgPath(acme, "invitations"), foo.token, map[string]string{"email": email, "role": "member"}, nil)
			wantEmailRefused(t, res, message)
		}
	})
	t.Run("OKInvitationFullWidthReachesTheAccount", func(t *testing.T) {
		bob := b.person(t, "bob@example.com")
		acme := b.org(t, foo, "Acme 2")
		var inv api.Invitation
		res := b.call(t, "POST", orgPath(acme, "invitations"), foo.token, map[string]string{"email": "ｂｏｂ@example.com", "role": "member"}, &inv)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("invite: %d %s", res.StatusCode, readAll(res))
		}
		if inv.Email != "bob@example.com" {
			t.Errorf("invitation to %q, want the folded bob@example.com", inv.Email)
		}
		if res := b.accept(t, bob, b.invitationToken(t, "bob@example.com")); res.StatusCode != http.StatusOK {
			t.Fatalf("accept: %d %s", res.StatusCode, readAll(res))
		}
		if roles := b.members(t, foo, acme); roles[bob.id] != api.RoleMember {
			t.Errorf("members %v, want bob as a member", roles)
		}
	})
}
