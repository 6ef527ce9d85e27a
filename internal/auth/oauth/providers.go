package oauth

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// maxResponseBytes bounds what is read from a provider.
const maxResponseBytes = 1 << 20

// The providers' public endpoints. (gosec's G101 takes "token" in a URL for a credential.)
//
//nolint:gosec // endpoint URLs, not credentials
const (
	gitHubAuthURL     = "https://github.com/login/oauth/authorize"
	gitHubTokenURL    = "https://github.com/login/oauth/access_token"
	gitHubUserURL     = "https://api.github.com/user"
	weChatQRAuthURL   = "https://open.weixin.qq.com/connect/qrconnect"
	weChatMPAuthURL   = "https://open.weixin.qq.com/connect/oauth2/authorize"
	weChatTokenURL    = "https://api.weixin.qq.com/sns/oauth2/access_token"
	weChatUserInfoURL = "https://api.weixin.qq.com/sns/userinfo"
	weComAuthURL      = "https://open.work.weixin.qq.com/wwopen/sso/qrConnect"
	weComTokenURL     = "https://qyapi.weixin.qq.com/cgi-bin/gettoken"
	weComUserInfoURL  = "https://qyapi.weixin.qq.com/cgi-bin/auth/getuserinfo"
)

func or(s, fallback string) string {
	if s != "" {
		return s
	}
	return fallback
}

// getJSON GETs u and decodes a 200 answer into out.
func getJSON(ctx context.Context, client *http.Client, u string, header http.Header, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", redactQuery(u), res.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: decode: %w", redactQuery(u), err)
	}
	return nil
}

// redactQuery drops the query (secrets, codes, tokens) from a URL for error messages.
func redactQuery(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

// acceptJSON asks for JSON on every request: GitHub's token endpoint answers form-encoded
// otherwise.
type acceptJSON struct{ next http.RoundTripper }

func (t acceptJSON) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Accept") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Accept", "application/json")
	}
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r)
}

// withClient makes x/oauth2 and go-oidc use client.
func withClient(ctx context.Context, client *http.Client) context.Context {
	return oidc.ClientContext(context.WithValue(ctx, oauth2.HTTPClient, client), client)
}

// oidcProvider is OpenID Connect: discovery, authorization code with PKCE (S256), and an
// ID token verified against the issuer's JWKS, audience and nonce.
type oidcProvider struct {
	cfg      ProviderConfig
	callback string
	client   *http.Client

	mu   sync.Mutex
	disc *oidc.Provider // nil until the first successful discovery
}

func newOIDC(cfg ProviderConfig, callback string, client *http.Client) *oidcProvider {
	return &oidcProvider{cfg: cfg, callback: callback, client: client}
}

func (p *oidcProvider) info() ProviderConfig { return p.cfg }

// discover fetches the issuer's metadata once; a failure is retried at the next login.
func (p *oidcProvider) discover(ctx context.Context) (*oidc.Provider, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disc != nil {
		return p.disc, nil
	}
	d, err := oidc.NewProvider(withClient(ctx, p.client), p.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("oidc discovery: %w", err)
	}
	p.disc = d
	return d, nil
}

func (p *oidcProvider) oauth2(d *oidc.Provider) *oauth2.Config {
	ep := d.Endpoint()
	ep.AuthURL = or(p.cfg.AuthURL, ep.AuthURL)
	ep.TokenURL = or(p.cfg.TokenURL, ep.TokenURL)
	scopes := []string{oidc.ScopeOpenID, "email", "profile"}
	for _, sc := range p.cfg.Scopes {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	return &oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, Endpoint: ep, RedirectURL: p.callback, Scopes: scopes}
}

func (p *oidcProvider) authURL(ctx context.Context, state string, f flow) (string, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	return p.oauth2(d).AuthCodeURL(state, oauth2.S256ChallengeOption(f.Verifier), oidc.Nonce(f.Nonce)), nil
}

func (p *oidcProvider) exchange(ctx context.Context, code string, f flow) (Profile, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return Profile{}, err
	}
	ctx = withClient(ctx, p.client)
	tok, err := p.oauth2(d).Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return Profile{}, fmt.Errorf("token: %w", err)
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return Profile{}, errors.New("token response has no id_token")
	}
	idt, err := d.Verifier(&oidc.Config{ClientID: p.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return Profile{}, fmt.Errorf("id token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return Profile{}, errors.New("id token: nonce does not match the login's")
	}
	var claims struct {
		Email         string          `json:"email"`
		EmailVerified json.RawMessage `json:"email_verified"`
		Name          string          `json:"name"`
		Username      string          `json:"preferred_username"`
	}
	if err := idt.Claims(&claims); err != nil {
		return Profile{}, fmt.Errorf("id token claims: %w", err)
	}
	return Profile{
		Subject: idt.Subject, Email: claims.Email, EmailVerified: truthy(claims.EmailVerified),
		Name: or(claims.Name, claims.Username),
	}, nil
}

// truthy reads email_verified, which some providers send as the string "true".
func truthy(raw json.RawMessage) bool {
	s := strings.Trim(string(raw), `"`)
	return s == "true"
}

// gitHubProvider is GitHub's OAuth app flow: the id from GET /user, the primary verified
// address from GET /user/emails.
type gitHubProvider struct {
	cfg     ProviderConfig
	oauth   *oauth2.Config
	userURL string
	client  *http.Client
}

func newGitHub(cfg ProviderConfig, callback string, client *http.Client) *gitHubProvider {
	scopes := []string{"read:user", "user:email"}
	for _, sc := range cfg.Scopes {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	tokenClient := *client
	tokenClient.Transport = acceptJSON{next: client.Transport}
	return &gitHubProvider{
		cfg: cfg,
		oauth: &oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: callback, Scopes: scopes,
			Endpoint: oauth2.Endpoint{
				AuthURL: or(cfg.AuthURL, gitHubAuthURL), TokenURL: or(cfg.TokenURL, gitHubTokenURL),
				AuthStyle: oauth2.AuthStyleInParams,
			},
		},
		userURL: strings.TrimRight(or(cfg.UserInfoURL, gitHubUserURL), "/"),
		client:  &tokenClient,
	}
}

func (p *gitHubProvider) info() ProviderConfig { return p.cfg }

func (p *gitHubProvider) authURL(_ context.Context, state string, f flow) (string, error) {
	return p.oauth.AuthCodeURL(state, oauth2.S256ChallengeOption(f.Verifier)), nil
}

func (p *gitHubProvider) exchange(ctx context.Context, code string, f flow) (Profile, error) {
	tok, err := p.oauth.Exchange(withClient(ctx, p.client), code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		return Profile{}, fmt.Errorf("token: %w", err)
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok.AccessToken)
	h.Set("Accept", "application/vnd.github+json")
	h.Set("X-GitHub-Api-Version", "2022-11-28")
	var user struct {
		ID    int64  `json:"id"`
		Login string `json:"login"`
		Name  string `json:"name"`
	}
	if err := getJSON(ctx, p.client, p.userURL, h, &user); err != nil {
		return Profile{}, fmt.Errorf("user: %w", err)
	}
	if user.ID == 0 {
		return Profile{}, errors.New("user: no id")
	}
	var emails []struct {
		Email    string `json:"email"`
		Primary  bool   `json:"primary"`
		Verified bool   `json:"verified"`
	}
	if err := getJSON(ctx, p.client, p.userURL+"/emails", h, &emails); err != nil {
		return Profile{}, fmt.Errorf("user emails: %w", err)
	}
	prof := Profile{Subject: strconv.FormatInt(user.ID, 10), Name: or(user.Name, user.Login)}
	for _, e := range emails {
		if e.Primary && e.Verified {
			prof.Email, prof.EmailVerified = e.Email, true
		}
	}
	return prof, nil
}

// weChatError is how WeChat and WeCom report failure: HTTP 200 with a nonzero errcode.
type weChatError struct {
	ErrCode int    `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

func (e weChatError) err() error {
	if e.ErrCode == 0 {
		return nil
	}
	return fmt.Errorf("errcode %d: %s", e.ErrCode, e.ErrMsg)
}

// weChatProvider is WeChat login: website QR login (snsapi_login, the default) or, with the
// snsapi_userinfo scope, login inside WeChat's browser. The subject is the openid; the
// unionid, when the app is bound to an Open Platform account, links the person's other apps.
type weChatProvider struct {
	cfg      ProviderConfig
	callback string
	scope    string
	client   *http.Client
}

func newWeChat(cfg ProviderConfig, callback string, client *http.Client) *weChatProvider {
	scope := "snsapi_login"
	if slices.Contains(cfg.Scopes, "snsapi_userinfo") {
		scope = "snsapi_userinfo"
	}
	return &weChatProvider{cfg: cfg, callback: callback, scope: scope, client: client}
}

func (p *weChatProvider) info() ProviderConfig { return p.cfg }

func (p *weChatProvider) authURL(_ context.Context, state string, _ flow) (string, error) {
	base := weChatQRAuthURL
	if p.scope == "snsapi_userinfo" {
		base = weChatMPAuthURL
	}
	// WeChat checks the parameter order and needs the #wechat_redirect fragment.
	q := "appid=" + url.QueryEscape(p.cfg.ClientID) + "&redirect_uri=" + url.QueryEscape(p.callback) +
		"&response_type=code&scope=" + p.scope + "&state=" + url.QueryEscape(state)
	return or(p.cfg.AuthURL, base) + "?" + q + "#wechat_redirect", nil
}

func (p *weChatProvider) exchange(ctx context.Context, code string, _ flow) (Profile, error) {
	q := url.Values{"appid": {p.cfg.ClientID}, "secret": {p.cfg.ClientSecret}, "code": {code}, "grant_type": {"authorization_code"}}
	var tok struct {
		weChatError
		AccessToken string `json:"access_token"`
		OpenID      string `json:"openid"`
		UnionID     string `json:"unionid"`
	}
	if err := getJSON(ctx, p.client, or(p.cfg.TokenURL, weChatTokenURL)+"?"+q.Encode(), nil, &tok); err != nil {
		return Profile{}, fmt.Errorf("access token: %w", err)
	}
	if err := tok.err(); err != nil {
		return Profile{}, fmt.Errorf("access token: %w", err)
	}
	if tok.OpenID == "" || tok.AccessToken == "" {
		return Profile{}, errors.New("access token: no openid")
	}
	var user struct {
		weChatError
		OpenID   string `json:"openid"`
		Nickname string `json:"nickname"`
		UnionID  string `json:"unionid"`
	}
	q = url.Values{"access_token": {tok.AccessToken}, "openid": {tok.OpenID}}
	if err := getJSON(ctx, p.client, or(p.cfg.UserInfoURL, weChatUserInfoURL)+"?"+q.Encode(), nil, &user); err != nil {
		return Profile{}, fmt.Errorf("userinfo: %w", err)
	}
	if err := user.err(); err != nil {
		return Profile{}, fmt.Errorf("userinfo: %w", err)
	}
	if user.OpenID != tok.OpenID {
		return Profile{}, errors.New("userinfo: another openid than the token's")
	}
	return Profile{Subject: tok.OpenID, Name: user.Nickname, UnionID: or(tok.UnionID, user.UnionID)}, nil
}

// weComProvider is WeCom (WeChat Work) web login for a company's members. The subject is
// corpid:userid. The app's access token is cached until shortly before it expires, as
// WeCom asks (gettoken is rate-limited).
type weComProvider struct {
	cfg      ProviderConfig
	callback string
	client   *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

func newWeCom(cfg ProviderConfig, callback string, client *http.Client) *weComProvider {
	return &weComProvider{cfg: cfg, callback: callback, client: client}
}

func (p *weComProvider) info() ProviderConfig { return p.cfg }

func (p *weComProvider) authURL(_ context.Context, state string, _ flow) (string, error) {
	q := url.Values{"appid": {p.cfg.ClientID}, "agentid": {p.cfg.AgentID}, "redirect_uri": {p.callback}, "state": {state}}
	return or(p.cfg.AuthURL, weComAuthURL) + "?" + q.Encode(), nil
}

// accessToken returns the cached app token, fetching a new one when it is missing or fresh
// is set (WeCom said it expired).
func (p *weComProvider) accessToken(ctx context.Context, fresh bool) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !fresh && p.token != "" && time.Now().Before(p.expires) {
		return p.token, nil
	}
	q := url.Values{"corpid": {p.cfg.ClientID}, "corpsecret": {p.cfg.ClientSecret}}
	var res struct {
		weChatError
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := getJSON(ctx, p.client, or(p.cfg.TokenURL, weComTokenURL)+"?"+q.Encode(), nil, &res); err != nil {
		return "", fmt.Errorf("gettoken: %w", err)
	}
	if err := res.err(); err != nil {
		return "", fmt.Errorf("gettoken: %w", err)
	}
	if res.AccessToken == "" {
		return "", errors.New("gettoken: no access_token")
	}
	ttl := time.Duration(res.ExpiresIn)*time.Second - 5*time.Minute
	p.token, p.expires = res.AccessToken, time.Now().Add(max(ttl, 0))
	return p.token, nil
}

// weComTokenExpired are the errcodes of an invalid or expired app access token.
var weComTokenExpired = []int{40014, 42001}

func (p *weComProvider) exchange(ctx context.Context, code string, _ flow) (Profile, error) {
	var user struct {
		weChatError
		UserID string `json:"userid"`
	}
	for attempt := range 2 {
		user.weChatError, user.UserID = weChatError{}, ""
		token, err := p.accessToken(ctx, attempt > 0)
		if err != nil {
			return Profile{}, err
		}
		q := url.Values{"access_token": {token}, "code": {code}}
		if err := getJSON(ctx, p.client, or(p.cfg.UserInfoURL, weComUserInfoURL)+"?"+q.Encode(), nil, &user); err != nil {
			return Profile{}, fmt.Errorf("getuserinfo: %w", err)
		}
		if !slices.Contains(weComTokenExpired, user.ErrCode) {
			break
		}
	}
	if err := user.err(); err != nil {
		return Profile{}, fmt.Errorf("getuserinfo: %w", err)
	}
	if user.UserID == "" {
		// Not a member of the company (WeCom gives an openid instead): not ours to sign in.
		return Profile{}, errors.New("getuserinfo: not a member of the company")
	}
	return Profile{Subject: p.cfg.ClientID + ":" + user.UserID, Name: user.UserID}, nil
}
