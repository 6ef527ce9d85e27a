package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

const testPassword = "correct horse battery staple 7"

// call sends a JSON request with an optional bearer credential and decodes a 2xx body into out.
func (b *bundle) call(t testing.TB, method, path, credential string, body any, out any, header ...string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Header.Set("User-Agent", "kiln-test/1.0")
	res := b.do(t, req)
	if out != nil && res.StatusCode < 300 {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return res
}

// signUp creates an account and returns its tokens.
func (b *bundle) signUp(t testing.TB, email string) api.TokenPair {
	t.Helper()
	var pair api.TokenPair
	res := b.call(t, "POST", "/v1/auth/signup", "", map[string]string{"email": email, "password": testPassword, "name": "Ada"}, &pair)
	if res.StatusCode != 201 {
		t.Fatalf("signup: %d %s", res.StatusCode, readAll(res))
	}
	return pair
}

func (b *bundle) createKey(t testing.TB, credential string, scopes []string, header ...string) api.APIKeyWithSecret {
	t.Helper()
	var key api.APIKeyWithSecret
	res := b.call(t, "POST", "/v1/api-keys", credential, map[string]any{"name": "ci", "scopes": scopes}, &key, header...)
	if res.StatusCode != 201 {
		t.Fatalf("create key: %d %s", res.StatusCode, readAll(res))
	}
	return key
}

func readAll(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// problemOf reads a problem with its per-request fields blanked, as JSON, so bodies can be
// compared.
func problemOf(t testing.TB, res *http.Response) string {
	t.Helper()
	p := decodeProblem(t, res)
	if p.Code != api.ErrorCode(errs.Unauthenticated) || p.Status != 401 {
		t.Fatalf("problem %+v, want a 401 unauthenticated", p)
	}
	p.RequestId, p.Instance = "", nil
	b, _ := json.Marshal(p)
	return string(b)
}

func TestSignUpLoginMe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.signUp(t, "Ada@Example.com")
	if pair.TokenType != api.Bearer || pair.ExpiresIn < 800 || pair.ExpiresIn > 900 || !strings.HasPrefix(pair.RefreshToken, "kiln_rt_") {
		t.Fatalf("pair %+v", pair)
	}
	var me api.Me
	if res := b.call(t, "GET", "/v1/me", pair.AccessToken, nil, &me); res.StatusCode != 200 {
		t.Fatalf("me: %d", res.StatusCode)
	}
	if me.Email != "ada@example.com" || len(me.Orgs) != 1 || me.Orgs[0].Id != me.PersonalOrgId || me.Orgs[0].Role != api.RoleOwner || !me.Orgs[0].Personal {
		t.Fatalf("me %+v", me)
	}

	t.Run("ErrDuplicateEmail", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/auth/signup", "", map[string]string{"email": "ada@example.com", "password": testPassword, "name": "Eve"}, nil)
		if res.StatusCode != 409 {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
	t.Run("ErrWeakPassword", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/auth/signup", "", map[string]string{"email": "weak@example.com", "password": "password123", "name": "W"}, nil)
		if p := decodeProblem(t, res); res.StatusCode != 400 || p.Errors == nil || (*p.Errors)[0].Pointer != "/password" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("OKLogin", func(t *testing.T) {
		var again api.TokenPair
		res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ADA@example.com", "password": testPassword}, &again)
		if res.StatusCode != 200 || again.AccessToken == "" {
			t.Fatalf("login %d", res.StatusCode)
		}
	})
	t.Run("ErrLoginIsTheSameForEveryFailure", func(t *testing.T) {
		wrong := problemOf(t, b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ada@example.com", "password": "not the password"}, nil))
		unknown := problemOf(t, b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": "not the password"}, nil))
		if wrong != unknown {
			t.Fatalf("wrong password %+v\nunknown email %+v", wrong, unknown)
		}
	})
}

// forge builds tokens that must all be refused.
func forgedTokens(t *testing.T, b *bundle, valid string) map[string]string {
	t.Helper()
	claims := jwt.MapClaims{"iss": "kiln", "aud": "kiln-api", "sub": uuid.NewString(), "sid": uuid.NewString(),
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	// HS256 keyed with the server's public key: the classic algorithm-confusion forgery.
	var jwks api.JWKS
	b.call(t, "GET", "/.well-known/jwks.json", "", nil, &jwks)
	pub, _ := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hs.Header["kid"] = jwks.Keys[0].Kid
	hs.Header["typ"] = "at+jwt"
	hsSigned, _ := hs.SignedString(pub)
	// Right shape, wrong key.
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	other := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	other.Header["kid"] = jwks.Keys[0].Kid
	other.Header["typ"] = "at+jwt"
	otherSigned, _ := other.SignedString(otherKey)
	parts := strings.Split(valid, ".")
	return map[string]string{
		"garbage":             "not-a-token",
		"alg_none":            none,
		"hs256_public_key":    hsSigned,
		"other_signing_key":   otherSigned,
		"tampered_signature":  parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])),
		"malformed_api_key":   "kiln_test_abc_def",
		"unknown_api_key":     "", // filled by the caller with a well-formed, never-issued key
		"kiln_prefix_garbage": "kiln_",
	}
}

func TestBadCredentialsAllLookTheSame(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.signUp(t, "bob@example.com")
	key := b.createKey(t, pair.AccessToken, []string{"admin"})
	if res := b.call(t, "DELETE", "/v1/api-keys/"+key.Id.String(), pair.AccessToken, nil, nil); res.StatusCode != 204 {
		t.Fatalf("revoke: %d", res.StatusCode)
	}
	forged := forgedTokens(t, b, pair.AccessToken)
	forged["revoked_api_key"] = key.Key
	forged["unknown_api_key"] = b.createKey(t, pair.AccessToken, []string{"chat"}).Key[:len(key.Key)-6] + "AAAAAA"
	forged["missing"] = ""

	first := ""
	for name, credential := range forged {
		t.Run(name, func(t *testing.T) {
			res := b.call(t, "GET", "/v1/api-keys", credential, nil, nil)
			if res.StatusCode != 401 {
				t.Fatalf("status %d: %s", res.StatusCode, readAll(res))
			}
			if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Error("401 without WWW-Authenticate")
			}
			p := problemOf(t, res)
			if first == "" {
				first = p
			} else if first != p {
				t.Errorf("401 bodies differ:\n%s\n%s", first, p)
			}
		})
	}
}

func TestRefreshAndLogout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := b.signUp(t, "carol@example.com")

	var second api.TokenPair
	if res := b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": first.RefreshToken}, &second); res.StatusCode != 200 {
		t.Fatalf("refresh: %d %s", res.StatusCode, readAll(res))
	}
	if second.RefreshToken == first.RefreshToken {
		t.Fatal("the refresh token did not rotate")
	}
	// Reusing the spent token (no grace in tests) revokes the whole session.
	if res := b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": first.RefreshToken}, nil); res.StatusCode != 401 {
		t.Fatalf("reuse: %d", res.StatusCode)
	}
	if res := b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": second.RefreshToken}, nil); res.StatusCode != 401 {
		t.Fatalf("refresh after reuse detection: %d", res.StatusCode)
	}
	if res := b.call(t, "GET", "/v1/me", second.AccessToken, nil, nil); res.StatusCode != 401 {
		t.Fatalf("access token of a revoked session: %d", res.StatusCode)
	}

	// Two devices; logout-all ends both.
	var laptop, phone api.TokenPair
	b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "carol@example.com", "password": testPassword}, &laptop)
	b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "carol@example.com", "password": testPassword}, &phone)
	var sessions api.SessionList
	b.call(t, "GET", "/v1/me/sessions", laptop.AccessToken, nil, &sessions)
	if len(sessions.Data) != 2 {
		t.Fatalf("sessions %+v", sessions.Data)
	}
	current := 0
	for _, s := range sessions.Data {
		if s.Current {
			current++
		}
		if s.UserAgent != "kiln-test/1.0" {
			t.Errorf("session user agent %q", s.UserAgent)
		}
	}
	if current != 1 {
		t.Errorf("%d sessions marked current", current)
	}
	if res := b.call(t, "POST", "/v1/auth/logout-all", laptop.AccessToken, nil, nil); res.StatusCode != 204 {
		t.Fatalf("logout-all: %d", res.StatusCode)
	}
	for name, pair := range map[string]api.TokenPair{"laptop": laptop, "phone": phone} {
		if res := b.call(t, "GET", "/v1/me", pair.AccessToken, nil, nil); res.StatusCode != 401 {
			t.Errorf("%s access token after logout-all: %d", name, res.StatusCode)
		}
		if res := b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": pair.RefreshToken}, nil); res.StatusCode != 401 {
			t.Errorf("%s refresh after logout-all: %d", name, res.StatusCode)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "alice@example.com")
	mallory := b.signUp(t, "mallory@example.com")
	admin := b.createKey(t, alice.AccessToken, []string{"admin"})
	chat := b.createKey(t, alice.AccessToken, []string{"chat"})
	if !strings.HasPrefix(admin.Key, "kiln_test_") || !strings.HasPrefix(admin.Key, strings.TrimSuffix(admin.Display, "…")) {
		t.Fatalf("key %q display %q", admin.Key, admin.Display)
	}

	t.Run("OKKeyManagesKeys", func(t *testing.T) {
		var list api.APIKeyList
		if res := b.call(t, "GET", "/v1/api-keys?limit=1", admin.Key, nil, &list); res.StatusCode != 200 {
			t.Fatalf("%d", res.StatusCode)
		}
		if len(list.Data) != 1 || list.NextCursor == nil {
			t.Fatalf("page 1 %+v", list)
		}
		var rest api.APIKeyList
		b.call(t, "GET", "/v1/api-keys?limit=10&cursor="+*list.NextCursor, admin.Key, nil, &rest)
		if len(rest.Data) != 1 || rest.NextCursor != nil || rest.Data[0].Id == list.Data[0].Id {
			t.Fatalf("page 2 %+v", rest)
		}
	})
	t.Run("ErrMissingScope", func(t *testing.T) {
		res := b.call(t, "GET", "/v1/api-keys", chat.Key, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 403 || p.Detail == nil || !strings.Contains(*p.Detail, `"admin"`) {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrMalformedID", func(t *testing.T) {
		res := b.call(t, "GET", "/v1/api-keys/not-a-uuid", admin.Key, nil, nil)
		p := decodeProblem(t, res)
		if res.StatusCode != 400 || p.Errors == nil || (*p.Errors)[0].Pointer != "/path/id" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrKeyOnUserOnlyRoute", func(t *testing.T) {
		if res := b.call(t, "GET", "/v1/me", admin.Key, nil, nil); res.StatusCode != 403 {
			t.Fatalf("%d", res.StatusCode)
		}
	})
	t.Run("ErrOtherOrgsKeyIsNotFound", func(t *testing.T) {
		for _, cred := range []string{mallory.AccessToken, b.createKey(t, mallory.AccessToken, []string{"admin"}).Key} {
			if res := b.call(t, "GET", "/v1/api-keys/"+admin.Id.String(), cred, nil, nil); res.StatusCode != 404 {
				t.Errorf("get: %d", res.StatusCode)
			}
			if res := b.call(t, "DELETE", "/v1/api-keys/"+admin.Id.String(), cred, nil, nil); res.StatusCode != 404 {
				t.Errorf("revoke: %d", res.StatusCode)
			}
		}
	})
	t.Run("ErrOtherOrgByHeaderIsNotFound", func(t *testing.T) {
		var me api.Me
		b.call(t, "GET", "/v1/me", alice.AccessToken, nil, &me)
		if res := b.call(t, "GET", "/v1/api-keys", mallory.AccessToken, nil, nil, "Kiln-Org", me.PersonalOrgId.String()); res.StatusCode != 404 {
			t.Fatalf("%d", res.StatusCode)
		}
	})
	t.Run("OKRotateWithoutGrace", func(t *testing.T) {
		old := b.createKey(t, alice.AccessToken, []string{"admin"})
		var fresh api.APIKeyWithSecret
		if res := b.call(t, "POST", "/v1/api-keys/"+old.Id.String()+"/rotate", alice.AccessToken, map[string]int{"grace_seconds": 0}, &fresh); res.StatusCode != 201 {
			t.Fatalf("rotate: %d %s", res.StatusCode, readAll(res))
		}
		if res := b.call(t, "GET", "/v1/api-keys", fresh.Key, nil, nil); res.StatusCode != 200 {
			t.Errorf("new key: %d", res.StatusCode)
		}
		if res := b.call(t, "GET", "/v1/api-keys", old.Key, nil, nil); res.StatusCode != 401 {
			t.Errorf("old key after rotation without grace: %d", res.StatusCode)
		}
	})
	t.Run("OKOrgSwitchAndAudit", func(t *testing.T) {
		var org api.OrgMembership
		if res := b.call(t, "POST", "/v1/orgs", alice.AccessToken, map[string]string{"name": "Acme"}, &org); res.StatusCode != 201 || org.Role != api.RoleOwner {
			t.Fatalf("create org: %d %+v", res.StatusCode, org)
		}
		key := b.createKey(t, alice.AccessToken, []string{"chat"}, "Kiln-Org", org.Id.String())
		var events api.AuditEventList
		if res := b.call(t, "GET", "/v1/orgs/"+org.Id.String()+"/audit-events", alice.AccessToken, nil, &events); res.StatusCode != 200 {
			t.Fatalf("audit: %d", res.StatusCode)
		}
		actions := map[string]bool{}
		for _, e := range events.Data {
			actions[e.Action] = true
			if e.Action == "api_key.create" && (e.TargetId != key.Id.String() || e.ActorType != api.AuditEventActorTypeUser || e.UserAgent != "kiln-test/1.0") {
				t.Errorf("event %+v", e)
			}
		}
		if !actions["org.create"] || !actions["api_key.create"] {
			t.Errorf("audit actions %v", actions)
		}
		if res := b.call(t, "GET", "/v1/orgs/"+org.Id.String()+"/audit-events", mallory.AccessToken, nil, nil); res.StatusCode != 404 {
			t.Errorf("another user's org audit: %d", res.StatusCode)
		}
	})
}

// TestNoSecretsAtRest: neither passwords nor API keys nor refresh tokens are stored or
// logged in plaintext.
func TestNoSecretsAtRest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.signUp(t, "dave@example.com")
	key := b.createKey(t, pair.AccessToken, []string{"chat"})
	var dump strings.Builder
	rows, err := b.pool.Query(context.Background(), `
		SELECT row_to_json(t)::text FROM (
			SELECT * FROM users) t
		UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM api_keys) t
		UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM refresh_tokens) t
		UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM audit_events) t
		UNION ALL SELECT row_to_json(t)::text FROM (SELECT kid, private_key_enc FROM signing_keys) t`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		dump.WriteString(s)
	}
	for what, secret := range map[string]string{"password": testPassword, "api key": key.Key, "refresh token": pair.RefreshToken} {
		if strings.Contains(dump.String(), secret) {
			t.Errorf("the %s is stored in plaintext", what)
		}
		if strings.Contains(b.logs.String(), secret) {
			t.Errorf("the %s is in the logs", what)
		}
	}
}
