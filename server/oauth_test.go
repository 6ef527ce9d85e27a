package server

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/oauth"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

const (
	oauthCallbackBase = "https://api.kiln.test"
	oauthClientURI    = "https://app.example.com/oauth/done"
)

// withOAuth gives the server an external-login service for providers, with the
// allow-list {oauthClientURI, https://spa.example.com/}.
func withOAuth(t testing.TB, providers ...oauth.ProviderConfig) option {
	t.Helper()
	rdb, ks := storetest.Redis(t)
	return func(d *Deps) {
		svc, err := oauth.New(oauth.Config{
			CallbackBase:      oauthCallbackBase,
			RedirectAllowlist: []string{oauthClientURI, "https://spa.example.com/"},
			Providers:         providers,
		}, d.Identity.Accounts, rdb, ks, d.Log)
		if err != nil {
			t.Fatal(err)
		}
		d.Identity.OAuth = svc
	}
}

// fakeProvider is an OIDC, GitHub, WeChat and WeCom server in one, speaking each one's wire
// format as documented: it authorizes at once (as if the user consented) and remembers
// what each code was issued for.
type fakeProvider struct {
	t   testing.TB
	srv *httptest.Server
	key *rsa.PrivateKey

	mu    sync.Mutex
	codes map[string]fakeGrant
	used  map[string]bool
	// What the next login reports.
	subject       string
	email         string
	emailVerified bool
	unionID       string
	// wrongNonce makes ID tokens carry another nonce than the one asked for.
	wrongNonce bool
	// weComTokens counts gettoken calls.
	weComTokens int
}

type fakeGrant struct {
	challenge, nonce, redirect string
}

func newFakeProvider(t testing.TB) *fakeProvider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeProvider{t: t, key: key, codes: map[string]fakeGrant{}, used: map[string]bool{},
		subject: "user-1", email: "alice@example.com", emailVerified: true}
	mux := http.NewServeMux()
	// OIDC.
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		fakeJSON(w, map[string]any{
			"issuer": f.srv.URL, "authorization_endpoint": f.srv.URL + "/authorize", "token_endpoint": f.srv.URL + "/token",
			"jwks_uri": f.srv.URL + "/jwks", "response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"}, "code_challenge_methods_supported": []string{"S256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		fakeJSON(w, map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	mux.HandleFunc("GET /authorize", f.authorize("redirect_uri"))
	mux.HandleFunc("POST /token", f.oidcToken)
	// GitHub.
	mux.HandleFunc("GET /login/oauth/authorize", f.authorize("redirect_uri"))
	mux.HandleFunc("POST /login/oauth/access_token", f.gitHubToken)
	mux.HandleFunc("GET /user", f.gitHubUser)
	mux.HandleFunc("GET /user/emails", f.gitHubEmails)
	// WeChat.
	mux.HandleFunc("GET /connect/qrconnect", f.authorize("redirect_uri"))
	mux.HandleFunc("GET /sns/oauth2/access_token", f.weChatToken)
	mux.HandleFunc("GET /sns/userinfo", f.weChatUserInfo)
	// WeCom.
	mux.HandleFunc("GET /wwopen/sso/qrConnect", f.authorize("redirect_uri"))
	mux.HandleFunc("GET /cgi-bin/gettoken", f.weComToken)
	mux.HandleFunc("GET /cgi-bin/auth/getuserinfo", f.weComUserInfo)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func fakeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// authorize issues a code for the request and sends the browser back with it and state.
func (f *fakeProvider) authorize(redirectParam string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		code := "code-" + rand.Text()
		f.mu.Lock()
		f.codes[code] = fakeGrant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirect: q.Get(redirectParam)}
		f.mu.Unlock()
		if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
			http.Error(w, "challenge method "+m, http.StatusBadRequest)
			return
		}
		back, err := url.Parse(q.Get(redirectParam))
		if err != nil {
			http.Error(w, "bad redirect", http.StatusBadRequest)
			return
		}
		bq := back.Query()
		bq.Set("code", code)
		bq.Set("state", q.Get("state"))
		back.RawQuery = bq.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}
}

// spend returns what code was issued for, once.
func (f *fakeProvider) spend(code string) (fakeGrant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.codes[code]
	if !ok || f.used[code] {
		return fakeGrant{}, false
	}
	f.used[code] = true
	return g, true
}

// pkceOK checks the verifier against the challenge (RFC 7636 S256).
func pkceOK(g fakeGrant, verifier string) bool {
	sum := sha256.Sum256([]byte(verifier))
	return g.challenge != "" && base64.RawURLEncoding.EncodeToString(sum[:]) == g.challenge
}

func (f *fakeProvider) oidcToken(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	g, ok := f.spend(r.PostForm.Get("code"))
	clientID, _, _ := r.BasicAuth()
	if clientID == "" {
		clientID = r.PostForm.Get("client_id")
	}
	if !ok || !pkceOK(g, r.PostForm.Get("code_verifier")) || r.PostForm.Get("redirect_uri") != g.redirect || clientID != "kiln-client" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	nonce := g.nonce
	if f.wrongNonce {
		nonce = "not-the-nonce"
	}
	f.mu.Lock()
	claims := jwt.MapClaims{
		"iss": f.srv.URL, "sub": f.subject, "aud": "kiln-client", "iat": time.Now().Unix(),
		"exp": time.Now().Add(5 * time.Minute).Unix(), "nonce": nonce,
		"email": f.email, "email_verified": f.emailVerified, "name": "Alice Example",
	}
	f.mu.Unlock()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "k1"
	idToken, err := tok.SignedString(f.key)
	if err != nil {
		f.t.Error(err)
	}
	fakeJSON(w, map[string]any{"access_token": "at-" + rand.Text(), "token_type": "Bearer", "expires_in": 3600, "id_token": idToken})
}

func (f *fakeProvider) gitHubToken(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	g, ok := f.spend(r.PostForm.Get("code"))
	if r.Header.Get("Accept") != "application/json" {
		// GitHub answers form-encoded unless asked for JSON.
		w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
		_, _ = w.Write([]byte("error=accept_header_missing"))
		return
	}
	if !ok || !pkceOK(g, r.PostForm.Get("code_verifier")) || r.PostForm.Get("client_secret") != "gh-secret" {
		// GitHub reports a bad code with 200 and an error field.
		fakeJSON(w, map[string]string{"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."})
		return
	}
	fakeJSON(w, map[string]string{"access_token": "gho_testtoken", "token_type": "bearer", "scope": "read:user,user:email"})
}

func (f *fakeProvider) gitHubUser(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer gho_testtoken" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	fakeJSON(w, map[string]any{"login": "octocat", "id": 583231, "name": "The Octocat", "email": nil})
}

func (f *fakeProvider) gitHubEmails(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer gho_testtoken" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fakeJSON(w, []map[string]any{
		{"email": "octocat-old@example.com", "primary": false, "verified": true, "visibility": nil},
		{"email": f.email, "primary": true, "verified": f.emailVerified, "visibility": "public"},
	})
}

func (f *fakeProvider) weChatToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("appid") != "wx-app" || q.Get("secret") != "wx-secret" || q.Get("grant_type") != "authorization_code" {
		fakeJSON(w, map[string]any{"errcode": 40013, "errmsg": "invalid appid"})
		return
	}
	if _, ok := f.spend(q.Get("code")); !ok {
		fakeJSON(w, map[string]any{"errcode": 40163, "errmsg": "code been used, rid: 6521f0a5-1e2c3d4f-5a6b7c8d"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fakeJSON(w, map[string]any{"access_token": "wx-at", "expires_in": 7200, "refresh_token": "wx-rt",
		"openid": f.subject, "scope": "snsapi_login", "unionid": f.unionID})
}

func (f *fakeProvider) weChatUserInfo(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Query().Get("access_token") != "wx-at" || r.URL.Query().Get("openid") != f.subject {
		fakeJSON(w, map[string]any{"errcode": 40003, "errmsg": "invalid openid"})
		return
	}
	fakeJSON(w, map[string]any{"openid": f.subject, "nickname": "小明", "sex": 1, "province": "", "city": "",
		"country": "CN", "headimgurl": "https://thirdwx.qlogo.cn/mmopen/x/0", "privilege": []string{}, "unionid": f.unionID})
}

func (f *fakeProvider) weComToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("corpid") != "ww-corp" || q.Get("corpsecret") != "ww-secret" {
		fakeJSON(w, map[string]any{"errcode": 40001, "errmsg": "invalid credential"})
		return
	}
	f.mu.Lock()
	f.weComTokens++
	f.mu.Unlock()
	fakeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok", "access_token": "ww-at", "expires_in": 7200})
}

func (f *fakeProvider) weComUserInfo(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("access_token") != "ww-at" {
		fakeJSON(w, map[string]any{"errcode": 42001, "errmsg": "access_token expired"})
		return
	}
	if _, ok := f.spend(q.Get("code")); !ok {
		fakeJSON(w, map[string]any{"errcode": 40029, "errmsg": "invalid code"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fakeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok", "userid": f.subject, "user_ticket": "ticket"})
}

func (f *fakeProvider) set(fn func(f *fakeProvider)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// providers configures the four providers against the fake.
func (f *fakeProvider) providers() []oauth.ProviderConfig {
	u := f.srv.URL
	return []oauth.ProviderConfig{
		{Name: "corp", Type: oauth.TypeOIDC, DisplayName: "Corp SSO", Issuer: u, ClientID: "kiln-client", ClientSecret: "oidc-secret"},
		{Name: "github", Type: oauth.TypeGitHub, ClientID: "gh-client", ClientSecret: "gh-secret",
			AuthURL: u + "/login/oauth/authorize", TokenURL: u + "/login/oauth/access_token", UserInfoURL: u + "/user"},
		{Name: "wechat", Type: oauth.TypeWeChat, DisplayName: "微信", ClientID: "wx-app", ClientSecret: "wx-secret",
			AuthURL: u + "/connect/qrconnect", TokenURL: u + "/sns/oauth2/access_token", UserInfoURL: u + "/sns/userinfo"},
		{Name: "wecom", Type: oauth.TypeWeCom, ClientID: "ww-corp", ClientSecret: "ww-secret", AgentID: "1000002",
			AuthURL: u + "/wwopen/sso/qrConnect", TokenURL: u + "/cgi-bin/gettoken", UserInfoURL: u + "/cgi-bin/auth/getuserinfo"},
	}
}

func setupOAuth(t *testing.T) (*bundle, *fakeProvider) {
	t.Helper()
	f := newFakeProvider(t)
	return setup(t, withOAuth(t, f.providers()...)), f
}

// start begins a login and returns the provider's authorization URL.
func (b *bundle) startOAuth(t testing.TB, provider, redirectURI string) *url.URL {
	t.Helper()
	res := b.do(t, httptest.NewRequest(http.MethodGet, "/v1/auth/oauth/"+provider+"/start?redirect_uri="+url.QueryEscape(redirectURI), nil))
	if res.StatusCode != http.StatusFound {
		t.Fatalf("start: status %d: %s", res.StatusCode, readAll(res))
	}
	u, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// authorize follows the authorization URL to the fake provider and returns the callback
// URL it sends the browser back to.
func followToProvider(t testing.TB, authURL *url.URL) *url.URL {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusFound {
		t.Fatalf("provider authorize: status %d", res.StatusCode)
	}
	back, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(back.String(), oauthCallbackBase+"/v1/auth/oauth/") {
		t.Fatalf("provider sent the browser to %s", back)
	}
	return back
}

// callback delivers the provider's redirect to Kiln and returns where Kiln sends the
// browser.
func (b *bundle) oauthCallback(t testing.TB, back *url.URL) *url.URL {
	t.Helper()
	res := b.do(t, httptest.NewRequest(http.MethodGet, back.RequestURI(), nil))
	if res.StatusCode != http.StatusFound {
		t.Fatalf("callback: status %d: %s", res.StatusCode, readAll(res))
	}
	u, err := url.Parse(res.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// oauthLogin runs a whole login with provider and returns the client's landing URL.
func (b *bundle) oauthLogin(t testing.TB, provider string) *url.URL {
	t.Helper()
	return b.oauthCallback(t, followToProvider(t, b.startOAuth(t, provider, oauthClientURI)))
}

// exchange trades a login code for tokens.
func (b *bundle) oauthExchange(t testing.TB, landing *url.URL) api.TokenPair {
	t.Helper()
	if e := landing.Query().Get("error"); e != "" {
		t.Fatalf("login ended with error %q\n%s", e, b.logs.String())
	}
	if !strings.HasPrefix(landing.String(), oauthClientURI+"?") {
		t.Fatalf("landed at %s", landing)
	}
	var pair api.TokenPair
	res := b.call(t, http.MethodPost, "/v1/auth/oauth/exchange", "", map[string]string{"code": landing.Query().Get("code")}, &pair)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("exchange: %d: %s", res.StatusCode, readAll(res))
	}
	return pair
}

func (b *bundle) whoAmI(t testing.TB, access string) api.Me {
	t.Helper()
	var me api.Me
	if res := b.call(t, http.MethodGet, "/v1/me", access, nil, &me); res.StatusCode != http.StatusOK {
		t.Fatalf("me: %d: %s", res.StatusCode, readAll(res))
	}
	return me
}

func (b *bundle) oauthSessionCount(t testing.TB) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM sessions").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestOAuthProviders(t *testing.T) {
	t.Parallel()
	b, _ := setupOAuth(t)
	var list api.OAuthProviderList
	if res := b.call(t, http.MethodGet, "/v1/auth/oauth/providers", "", nil, &list); res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	var names []string
	for _, p := range list.Data {
		names = append(names, p.Name+":"+string(p.Type))
	}
	if got := strings.Join(names, ","); got != "corp:oidc,github:github,wechat:wechat,wecom:wecom" {
		t.Errorf("providers %s", got)
	}
	if list.Data[0].DisplayName == nil || *list.Data[0].DisplayName != "Corp SSO" {
		t.Errorf("display name %v", list.Data[0].DisplayName)
	}

	plain := setup(t)
	if res := plain.call(t, http.MethodGet, "/v1/auth/oauth/providers", "", nil, &list); res.StatusCode != http.StatusOK || len(list.Data) != 0 {
		t.Errorf("without providers: %d %v", res.StatusCode, list.Data)
	}
}

func TestOAuthOIDCLogin(t *testing.T) {
	t.Parallel()
	b, _ := setupOAuth(t)

	authURL := b.startOAuth(t, "corp", oauthClientURI)
	q := authURL.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		t.Fatalf("authorization URL lacks PKCE, nonce or state: %s", authURL)
	}
	if !strings.Contains(q.Get("scope"), "openid") || q.Get("redirect_uri") != oauthCallbackBase+"/v1/auth/oauth/corp/callback" {
		t.Fatalf("authorization URL: %s", authURL)
	}
	landing := b.oauthCallback(t, followToProvider(t, authURL))
	pair := b.oauthExchange(t, landing)
	me := b.whoAmI(t, pair.AccessToken)
	if me.Email != "alice@example.com" || !me.EmailVerified || me.Name != "Alice Example" {
		t.Errorf("me = %+v", me)
	}

	// The same person again is the same user.
	again := b.oauthExchange(t, b.oauthLogin(t, "corp"))
	if b.whoAmI(t, again.AccessToken).Id != me.Id {
		t.Error("second login made another user")
	}
	// The refresh token works like any other.
	var refreshed api.TokenPair
	if res := b.call(t, http.MethodPost, "/v1/auth/refresh", "", map[string]string{"refresh_token": pair.RefreshToken}, &refreshed); res.StatusCode != http.StatusOK {
		t.Errorf("refresh: %d", res.StatusCode)
	}

	var n int
	err := b.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM audit_events WHERE action = 'auth.login' AND data->>'provider' = 'corp'").Scan(&n)
	if err != nil || n != 2 {
		t.Errorf("auth.login audit events: %d, %v", n, err)
	}
}

func TestOAuthExchangeCodeWorksOnce(t *testing.T) {
	t.Parallel()
	b, _ := setupOAuth(t)
	landing := b.oauthLogin(t, "corp")
	b.oauthExchange(t, landing)
	res := b.call(t, http.MethodPost, "/v1/auth/oauth/exchange", "", map[string]string{"code": landing.Query().Get("code")}, nil)
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("second exchange: %d", res.StatusCode)
	}
	res = b.call(t, http.MethodPost, "/v1/auth/oauth/exchange", "", map[string]string{"code": "made-up"}, nil)
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("made-up code: %d", res.StatusCode)
	}
}

func TestOAuthRefusals(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)

	t.Run("RedirectNotAllowed", func(t *testing.T) {
		for _, uri := range []string{
			"https://evil.example.com/oauth/done", oauthClientURI + "/more", "https://app.example.com/oauth/done#x",
			"https://spa.example.com", "https://spa.example.com.evil.com/", "https://user@spa.example.com/x",
			"javascript:alert(1)", "https://spa.example.com/../x",
		} {
			res := b.do(t, httptest.NewRequest(http.MethodGet, "/v1/auth/oauth/corp/start?redirect_uri="+url.QueryEscape(uri), nil))
			if res.StatusCode != http.StatusBadRequest || decodeProblem(t, res).Code != api.ErrorCode("invalid_request") {
				t.Errorf("%s: status %d", uri, res.StatusCode)
			}
		}
		// A prefix entry ending in / admits paths and the client's own query under it.
		b.startOAuth(t, "corp", "https://spa.example.com/auth/cb?client_state=xyz")
	})

	t.Run("UnknownProvider", func(t *testing.T) {
		res := b.do(t, httptest.NewRequest(http.MethodGet, "/v1/auth/oauth/nope/start?redirect_uri="+url.QueryEscape(oauthClientURI), nil))
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("status %d", res.StatusCode)
		}
	})

	t.Run("WrongNonce", func(t *testing.T) {
		f.set(func(f *fakeProvider) { f.wrongNonce = true })
		defer f.set(func(f *fakeProvider) { f.wrongNonce = false })
		before := b.oauthSessionCount(t)
		landing := b.oauthLogin(t, "corp")
		if landing.Query().Get("error") != "access_denied" || landing.Query().Has("code") {
			t.Errorf("landed at %s", landing)
		}
		if b.oauthSessionCount(t) != before {
			t.Error("a session was created")
		}
	})

	t.Run("PKCEVerifierChecked", func(t *testing.T) {
		// The callback of one login with the state of another: the provider sees the
		// other login's verifier, refuses, and nothing is signed in.
		back1 := followToProvider(t, b.startOAuth(t, "corp", oauthClientURI))
		back2 := followToProvider(t, b.startOAuth(t, "corp", oauthClientURI))
		q := back1.Query()
		q.Set("state", back2.Query().Get("state"))
		back1.RawQuery = q.Encode()
		before := b.oauthSessionCount(t)
		landing := b.oauthCallback(t, back1)
		if landing.Query().Get("error") != "access_denied" {
			t.Errorf("landed at %s", landing)
		}
		if b.oauthSessionCount(t) != before {
			t.Error("a session was created")
		}
	})

	t.Run("ReplayedState", func(t *testing.T) {
		back := followToProvider(t, b.startOAuth(t, "corp", oauthClientURI))
		b.oauthExchange(t, b.oauthCallback(t, back))
		before := b.oauthSessionCount(t)
		res := b.do(t, httptest.NewRequest(http.MethodGet, back.RequestURI(), nil))
		if res.StatusCode != http.StatusBadRequest || decodeProblem(t, res).Code != api.ErrorCode("invalid_request") {
			t.Errorf("replayed callback: %d", res.StatusCode)
		}
		if b.oauthSessionCount(t) != before {
			t.Error("a session was created")
		}
	})

	t.Run("UnknownState", func(t *testing.T) {
		for _, q := range []string{"?code=x&state=forged", "?code=x", ""} {
			res := b.do(t, httptest.NewRequest(http.MethodGet, "/v1/auth/oauth/corp/callback"+q, nil))
			if res.StatusCode != http.StatusBadRequest {
				t.Errorf("%q: status %d", q, res.StatusCode)
			}
		}
	})

	t.Run("StateOfAnotherProvider", func(t *testing.T) {
		back := followToProvider(t, b.startOAuth(t, "corp", oauthClientURI))
		back.Path = "/v1/auth/oauth/github/callback"
		landing := b.oauthCallback(t, back)
		if landing.Query().Get("error") != "invalid_request" || !strings.HasPrefix(landing.String(), oauthClientURI) {
			t.Errorf("landed at %s", landing)
		}
	})

	t.Run("DeclinedAtProvider", func(t *testing.T) {
		authURL := b.startOAuth(t, "corp", oauthClientURI)
		state := authURL.Query().Get("state")
		landing := b.oauthCallback(t, &url.URL{Path: "/v1/auth/oauth/corp/callback",
			RawQuery: url.Values{"state": {state}, "error": {"access_denied"}}.Encode()})
		if landing.Query().Get("error") != "access_denied" {
			t.Errorf("landed at %s", landing)
		}
	})
}

func TestOAuthWeChat(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)
	f.set(func(f *fakeProvider) { f.subject, f.unionID = "oQ_openid_AbC123", "union-42" })

	authURL := b.startOAuth(t, "wechat", oauthClientURI)
	q := authURL.Query()
	if q.Get("appid") != "wx-app" || q.Get("scope") != "snsapi_login" || q.Get("response_type") != "code" || authURL.Fragment != "wechat_redirect" {
		t.Fatalf("authorization URL %s", authURL)
	}
	back := followToProvider(t, authURL)
	pair := b.oauthExchange(t, b.oauthCallback(t, back))
	me := b.whoAmI(t, pair.AccessToken)
	if !strings.HasSuffix(me.Email, "@users.invalid") || me.EmailVerified || me.Name != "小明" {
		t.Errorf("me = %+v", me)
	}

	t.Run("ReusedCode", func(t *testing.T) {
		// WeChat answers 200 {"errcode":40163}: a new login presenting the spent code fails.
		before := b.oauthSessionCount(t)
		authURL := b.startOAuth(t, "wechat", oauthClientURI)
		replay := &url.URL{Path: back.Path, RawQuery: url.Values{"code": {back.Query().Get("code")}, "state": {authURL.Query().Get("state")}}.Encode()}
		landing := b.oauthCallback(t, replay)
		if landing.Query().Get("error") != "access_denied" {
			t.Errorf("landed at %s", landing)
		}
		if b.oauthSessionCount(t) != before {
			t.Error("a session was created")
		}
	})

	t.Run("LinkByUnionID", func(t *testing.T) {
		// Another app of the same Open Platform account: another openid, the same unionid.
		f.set(func(f *fakeProvider) { f.subject = "oQ_other_app_openid" })
		other := b.oauthExchange(t, b.oauthLogin(t, "wechat"))
		if b.whoAmI(t, other.AccessToken).Id != me.Id {
			t.Error("the unionid did not link to the same user")
		}
	})

	t.Run("Declined", func(t *testing.T) {
		// WeChat sends the browser back without a code when the user declines.
		authURL := b.startOAuth(t, "wechat", oauthClientURI)
		landing := b.oauthCallback(t, &url.URL{Path: "/v1/auth/oauth/wechat/callback", RawQuery: "state=" + url.QueryEscape(authURL.Query().Get("state"))})
		if landing.Query().Get("error") != "access_denied" {
			t.Errorf("landed at %s", landing)
		}
	})
}

func TestOAuthGitHub(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)
	f.set(func(f *fakeProvider) { f.email = "octo@example.com" })
	authURL := b.startOAuth(t, "github", oauthClientURI)
	if authURL.Query().Get("code_challenge") == "" || !strings.Contains(authURL.Query().Get("scope"), "user:email") {
		t.Fatalf("authorization URL %s", authURL)
	}
	pair := b.oauthExchange(t, b.oauthCallback(t, followToProvider(t, authURL)))
	me := b.whoAmI(t, pair.AccessToken)
	if me.Email != "octo@example.com" || !me.EmailVerified || me.Name != "The Octocat" {
		t.Errorf("me = %+v", me)
	}
	var ids api.IdentityList
	b.call(t, http.MethodGet, "/v1/me/identities", pair.AccessToken, nil, &ids)
	if len(ids.Data) != 1 || ids.Data[0].Subject != "583231" || ids.Data[0].Provider != "github" {
		t.Errorf("identities %+v", ids.Data)
	}
}

func TestOAuthWeCom(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)
	f.set(func(f *fakeProvider) { f.subject = "zhangsan" })
	authURL := b.startOAuth(t, "wecom", oauthClientURI)
	if q := authURL.Query(); q.Get("appid") != "ww-corp" || q.Get("agentid") != "1000002" {
		t.Fatalf("authorization URL %s", authURL)
	}
	pair := b.oauthExchange(t, b.oauthCallback(t, followToProvider(t, authURL)))
	var ids api.IdentityList
	b.call(t, http.MethodGet, "/v1/me/identities", pair.AccessToken, nil, &ids)
	if len(ids.Data) != 1 || ids.Data[0].Subject != "ww-corp:zhangsan" {
		t.Errorf("identities %+v", ids.Data)
	}
	// The app token is cached across logins.
	b.oauthExchange(t, b.oauthLogin(t, "wecom"))
	f.set(func(f *fakeProvider) {
		if f.weComTokens != 1 {
			t.Errorf("gettoken called %d times", f.weComTokens)
		}
	})
}

func TestOAuthLinking(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)

	t.Run("VerifiedEmailLinksToVerifiedPasswordAccount", func(t *testing.T) {
		owner := b.signUp(t, "alice@example.com")
		want := b.whoAmI(t, owner.AccessToken).Id
		if _, err := b.pool.Exec(context.Background(), "UPDATE users SET email_verified_at = now() WHERE id = $1", want); err != nil {
			t.Fatal(err)
		}
		pair := b.oauthExchange(t, b.oauthLogin(t, "corp"))
		me := b.whoAmI(t, pair.AccessToken)
		if me.Id != want || !me.EmailVerified {
			t.Errorf("me = %+v, want user %s", me, want)
		}
		// The password still works.
		res := b.call(t, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": "alice@example.com", "password": testPassword}, nil)
		if res.StatusCode != http.StatusOK {
			t.Errorf("password login: %d", res.StatusCode)
		}
	})

	// Pre-hijacking: someone registered the address before its owner, who now proves it
	// at the provider. The owner gets the account; the squatter's password and sessions die.
	t.Run("ProvenOwnerTakesBackUnverifiedPasswordAccount", func(t *testing.T) {
		squatter := b.signUp(t, "carol@example.com")
		want := b.whoAmI(t, squatter.AccessToken).Id
		f.set(func(f *fakeProvider) { f.subject, f.email = "user-carol", "carol@example.com" })
		defer f.set(func(f *fakeProvider) { f.subject, f.email = "user-1", "alice@example.com" })
		pair := b.oauthExchange(t, b.oauthLogin(t, "corp"))
		if me := b.whoAmI(t, pair.AccessToken); me.Id != want || !me.EmailVerified {
			t.Errorf("me = %+v, want user %s", me, want)
		}
		if res := b.call(t, http.MethodPost, "/v1/auth/login", "", map[string]string{"email": "carol@example.com", "password": testPassword}, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("the squatter's password still works: %d", res.StatusCode)
		}
		if res := b.call(t, http.MethodGet, "/v1/me", squatter.AccessToken, nil, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("the squatter's session still works: %d", res.StatusCode)
		}
	})

	t.Run("UnverifiedEmailDoesNotLink", func(t *testing.T) {
		owner := b.signUp(t, "bob@example.com")
		f.set(func(f *fakeProvider) { f.subject, f.email, f.emailVerified = "user-bob", "bob@example.com", false })
		pair := b.oauthExchange(t, b.oauthLogin(t, "corp"))
		me := b.whoAmI(t, pair.AccessToken)
		if me.Id == b.whoAmI(t, owner.AccessToken).Id || me.Email == "bob@example.com" {
			t.Errorf("unverified email linked: %+v", me)
		}
	})
}

func TestOAuthIdentities(t *testing.T) {
	t.Parallel()
	b, f := setupOAuth(t)
	f.set(func(f *fakeProvider) { f.subject, f.email = "carol-sub", "carol@example.com" })
	carol := b.oauthExchange(t, b.oauthLogin(t, "corp"))

	var ids api.IdentityList
	if res := b.call(t, http.MethodGet, "/v1/me/identities", carol.AccessToken, nil, &ids); res.StatusCode != http.StatusOK {
		t.Fatalf("list: %d", res.StatusCode)
	}
	if len(ids.Data) != 1 || ids.Data[0].Provider != "corp" || ids.Data[0].Subject != "carol-sub" ||
		ids.Data[0].Email == nil || *ids.Data[0].Email != "carol@example.com" || ids.Data[0].LastLoginAt == nil {
		t.Fatalf("identities %+v", ids.Data)
	}
	first := ids.Data[0].Id

	// The only way to sign in cannot be removed.
	res := b.call(t, http.MethodDelete, "/v1/me/identities/"+first.String(), carol.AccessToken, nil, nil)
	if res.StatusCode != http.StatusConflict {
		t.Fatalf("delete only identity: %d", res.StatusCode)
	}

	// Another user cannot see or remove it.
	dave := b.signUp(t, "dave@example.com")
	if res := b.call(t, http.MethodDelete, "/v1/me/identities/"+first.String(), dave.AccessToken, nil, nil); res.StatusCode != http.StatusNotFound {
		t.Errorf("delete another user's identity: %d", res.StatusCode)
	}

	// With a second identity (GitHub, same verified email) the first can go.
	f.set(func(f *fakeProvider) { f.email = "carol@example.com" })
	gh := b.oauthExchange(t, b.oauthLogin(t, "github"))
	if b.whoAmI(t, gh.AccessToken).Id != b.whoAmI(t, carol.AccessToken).Id {
		t.Fatal("GitHub login did not link by verified email")
	}
	if res := b.call(t, http.MethodDelete, "/v1/me/identities/"+first.String(), carol.AccessToken, nil, nil); res.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: %d: %s", res.StatusCode, readAll(res))
	}
	b.call(t, http.MethodGet, "/v1/me/identities", carol.AccessToken, nil, &ids)
	if len(ids.Data) != 1 || ids.Data[0].Provider != "github" {
		t.Errorf("after delete: %+v", ids.Data)
	}
	if res := b.call(t, http.MethodDelete, "/v1/me/identities/"+ids.Data[0].Id.String(), carol.AccessToken, nil, nil); res.StatusCode != http.StatusConflict {
		t.Errorf("delete the last one: %d", res.StatusCode)
	}
	if res := b.call(t, http.MethodGet, "/v1/me/identities", "", nil, nil); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous list: %d", res.StatusCode)
	}
}
