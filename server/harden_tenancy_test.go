package server

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/gen/api"
)

// TestForeignOrgIsNotFoundEverywhere names another user's org in Kiln-Org on every
// operation of the spec that takes the header (GET /v1/models ignored it): each is a 404,
// whatever else is wrong with the request, and the org's existence is not confirmed.
func TestForeignOrgIsNotFoundEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "tenant-alice@example.com").AccessToken
	var bob api.Me
	b.call(t, "GET", "/v1/me", b.signUp(t, "tenant-bob@example.com").AccessToken, nil, &bob)
	key := b.createKey(t, alice, []string{"admin"}).Key
	const id = "0190a1b2-0000-7000-8000-000000000001"
	n := 0
	for path, item := range testSpec(t).Paths.Map() {
		for method, op := range item.Operations() {
			params := slices.Concat(item.Parameters, op.Parameters)
			if !slices.ContainsFunc(params, func(p *openapi3.ParameterRef) bool { return p.Value.In == "header" && p.Value.Name == orgHeader }) {
				continue
			}
			n++
			target := path
			for _, p := range params {
				if p.Value.In == openapi3.ParameterInPath {
					target = strings.ReplaceAll(target, "{"+p.Value.Name+"}", id)
				}
			}
			route := method + " " + path
			for _, credential := range []string{alice, key} {
				t.Run(route, func(t *testing.T) {
					t.Parallel()
					req := httptest.NewRequest(method, target, nil)
					req.Header.Set("Authorization", "Bearer "+credential)
					req.Header.Set(orgHeader, bob.PersonalOrgId.String())
					rec := httptest.NewRecorder()
					b.srv.ServeHTTP(rec, req)
					res := rec.Result()
					if isOpenAIRoute(req) {
						if res.StatusCode != http.StatusNotFound {
							t.Fatalf("status %d, want 404: %s", res.StatusCode, readAll(res))
						}
						return
					}
					if req := b.srv.auth.requirements[route]; (credential == key && !req.apiKey) || (credential == alice && !req.userToken) {
						return // the credential is refused for what it is
					}
					if p := decodeProblem(t, res); res.StatusCode != http.StatusNotFound || p.Code != "not_found" {
						t.Fatalf("status %d %s, want a 404 not_found", res.StatusCode, p.Code)
					}
				})
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d operations take Kiln-Org: the walk of the spec is broken", n)
	}
}

// TestIdempotencyScopeIsTheResolvedOrg: the same request with the personal org spelled out
// and left out acts for one org, so its Idempotency-Key replays one resource (it made two).
func TestIdempotencyScopeIsTheResolvedOrg(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "idem-org@example.com").AccessToken
	var me api.Me
	b.call(t, "GET", "/v1/me", alice, nil, &me)
	body := map[string]any{"title": "once"}
	var first, second api.Conversation
	res := b.call(t, "POST", "/v1/conversations", alice, body, &first, "Idempotency-Key", "org-scope-1")
	wantStatus(t, res, 201)
	res = b.call(t, "POST", "/v1/conversations", alice, body, &second, "Idempotency-Key", "org-scope-1", orgHeader, me.PersonalOrgId.String())
	wantStatus(t, res, 201)
	if res.Header.Get("Idempotent-Replayed") != "true" || first.Id != second.Id {
		t.Fatalf("second request made conversation %s (first %s, replayed %q)", second.Id, first.Id, res.Header.Get("Idempotent-Replayed"))
	}
}

// TestPasswordChangeLimitedPerAccount: a stolen access token guessing the current password
// from many addresses is limited per account, as login is (it was per IP only: 33 tries
// from 3 addresses).
func TestPasswordChangeLimitedPerAccount(t *testing.T) {
	t.Parallel()
	b := setup(t)
	token := b.signUp(t, "guessed@example.com").AccessToken
	guess := func(i int) *http.Response {
		req := jsonRequest("POST", "/v1/me/password", `{"current_password":"wrong guess `+strconv.Itoa(i)+`","new_password":"a brand new passphrase 9"}`)
		req.Header.Set("Authorization", "Bearer "+token)
		req.RemoteAddr = "198.51.100." + strconv.Itoa(1+i%3) + ":4000" // three addresses, each under its own limit
		return b.do(t, req)
	}
	for i := range 10 {
		if res := guess(i); res.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("guess %d refused already", i+1)
		}
	}
	res := guess(10)
	if p := decodeProblem(t, res); res.StatusCode != http.StatusTooManyRequests || p.Code != "rate_limited" ||
		!strings.Contains(res.Header.Get("RateLimit-Policy"), `"password-change-account"`) || res.Header.Get("Retry-After") == "" {
		t.Fatalf("11th guess from a third address: %d %s, policy %q", res.StatusCode, p.Code, res.Header.Get("RateLimit-Policy"))
	}
}
