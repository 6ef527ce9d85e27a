// Package oauth signs people in with external login providers: OpenID Connect (discovery,
// PKCE, nonce), GitHub, WeChat and WeCom.
//
// A login is a browser round trip. Start stores a random state in Redis binding the
// provider, the client's redirect URI (which must be on the allow-list), a PKCE verifier
// and an OIDC nonce, and returns the provider's authorization URL. Callback spends the
// state (once: GETDEL), trades the provider's code for a Profile, resolves the Kiln user
// (account.ResolveExternal links by identity, WeChat unionid or verified email, or creates
// a user) and sends the browser back to the client with a one-time code. Exchange spends
// that code (once, within CodeTTL) and starts the session; tokens never travel in a URL.
package oauth

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/opaque"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

// The provider types.
const (
	TypeOIDC   = "oidc"
	TypeGitHub = "github"
	TypeWeChat = "wechat"
	TypeWeCom  = "wecom"
)

// StateTTL bounds a login from Start to Callback; CodeTTL from Callback to Exchange.
const (
	StateTTL = 10 * time.Minute
	CodeTTL  = 60 * time.Second
)

// The error values Callback sends to the client's redirect URI (RFC 6749 §4.1.2.1).
const (
	ErrAccessDenied   = "access_denied"   // the user declined, or the provider refused the code
	ErrInvalidRequest = "invalid_request" // the callback does not belong to the flow its state began
	ErrServerError    = "server_error"    // Kiln failed; the details are in its log
)

// ProviderConfig is one configured provider (auth.oauth.providers[]).
type ProviderConfig struct {
	Name         string // in URLs: /v1/auth/oauth/<name>/start
	Type         string // TypeOIDC, TypeGitHub, TypeWeChat or TypeWeCom
	DisplayName  string
	Issuer       string // oidc: discovery at <issuer>/.well-known/openid-configuration
	ClientID     string // WeChat: appid; WeCom: corpid
	ClientSecret string // WeCom: the app's secret
	AgentID      string // WeCom only
	Scopes       []string
	// Endpoint overrides; empty means the provider's public endpoints (or, for OIDC, the
	// discovered ones).
	AuthURL     string
	TokenURL    string
	UserInfoURL string
}

// Config configures the Service.
type Config struct {
	// CallbackBase is this API's public base URL; providers send the browser to
	// <CallbackBase>/v1/auth/oauth/<name>/callback.
	CallbackBase string
	// RedirectAllowlist is where a login may end: an entry matches a redirect URI equal to
	// it, or, when the entry ends in "/", one it is a prefix of.
	RedirectAllowlist []string
	Providers         []ProviderConfig
	// HTTPClient calls the providers; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
}

// ProviderInfo is what a login page shows of a provider.
type ProviderInfo struct {
	Name        string
	Type        string
	DisplayName string
}

// Profile is the account the provider vouches for after a successful code exchange.
type Profile struct {
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	UnionID       string // WeChat only
}

// flow is what one login carries from Start to Callback.
type flow struct {
	Provider    string `json:"provider"`
	RedirectURI string `json:"redirect_uri"` // the client's
	Verifier    string `json:"verifier,omitempty"`
	Nonce       string `json:"nonce,omitempty"`
}

// provider speaks one provider's protocol.
type provider interface {
	info() ProviderConfig
	// authURL is where Start sends the browser.
	authURL(ctx context.Context, state string, f flow) (string, error)
	// exchange trades the callback's code for the account; errors mean "refused".
	exchange(ctx context.Context, code string, f flow) (Profile, error)
}

// Service runs external logins.
type Service struct {
	accounts  *account.Service
	rdb       redis.UniversalClient
	ks        redisclient.Keyspace
	log       *slog.Logger
	allowlist []string
	providers map[string]provider
	order     []string
}

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// New returns a Service for cfg. It does no I/O: OIDC discovery happens at the first login
// with each provider, so a provider that is down does not stop Kiln from starting. It
// fails on a configuration it cannot serve (unknown type, duplicate or malformed name,
// missing client id, issuer or callback base).
func New(cfg Config, accounts *account.Service, rdb redis.UniversalClient, ks redisclient.Keyspace, log *slog.Logger) (*Service, error) {
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	s := &Service{accounts: accounts, rdb: rdb, ks: ks, log: log, allowlist: cfg.RedirectAllowlist, providers: map[string]provider{}}
	base := strings.TrimRight(cfg.CallbackBase, "/")
	if len(cfg.Providers) > 0 {
		if u, err := url.Parse(base); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("oauth: callback_base %q is not an absolute http(s) URL", cfg.CallbackBase)
		}
	}
	for i, pc := range cfg.Providers {
		if !providerName.MatchString(pc.Name) {
			return nil, fmt.Errorf("oauth: providers[%d].name %q must match %s", i, pc.Name, providerName)
		}
		if _, dup := s.providers[pc.Name]; dup {
			return nil, fmt.Errorf("oauth: providers[%d].name %q is used twice", i, pc.Name)
		}
		if pc.ClientID == "" {
			return nil, fmt.Errorf("oauth: providers[%d] (%s): client_id is required", i, pc.Name)
		}
		callback := base + "/v1/auth/oauth/" + pc.Name + "/callback"
		var p provider
		switch pc.Type {
		case TypeOIDC:
			if pc.Issuer == "" {
				return nil, fmt.Errorf("oauth: providers[%d] (%s): issuer is required for oidc", i, pc.Name)
			}
			p = newOIDC(pc, callback, client)
		case TypeGitHub:
			p = newGitHub(pc, callback, client)
		case TypeWeChat:
			p = newWeChat(pc, callback, client)
		case TypeWeCom:
			if pc.AgentID == "" {
				return nil, fmt.Errorf("oauth: providers[%d] (%s): agent_id is required for wecom", i, pc.Name)
			}
			p = newWeCom(pc, callback, client)
		default:
			return nil, fmt.Errorf("oauth: providers[%d] (%s): unknown type %q (want oidc, github, wechat or wecom)", i, pc.Name, pc.Type)
		}
		s.providers[pc.Name] = p
		s.order = append(s.order, pc.Name)
	}
	return s, nil
}

// Providers lists the configured providers in configuration order.
func (s *Service) Providers() []ProviderInfo {
	out := make([]ProviderInfo, 0, len(s.order))
	for _, name := range s.order {
		c := s.providers[name].info()
		out = append(out, ProviderInfo{Name: c.Name, Type: c.Type, DisplayName: c.DisplayName})
	}
	return out
}

func (s *Service) provider(name string) (provider, error) {
	p, ok := s.providers[name]
	if !ok {
		return nil, errs.E(errs.NotFound, "No login provider %q.", name)
	}
	return p, nil
}

// Start begins a login with provider that ends at redirectURI, and returns the provider's
// authorization URL. Errors: not_found for an unknown provider; invalid_request when
// redirectURI is not on the allow-list.
func (s *Service) Start(ctx context.Context, providerName, redirectURI string) (string, error) {
	p, err := s.provider(providerName)
	if err != nil {
		return "", err
	}
	if !allowed(s.allowlist, redirectURI) {
		return "", &errs.Error{Code: errs.Invalid, Message: "redirect_uri is not on the allow-list.",
			Fields: []errs.FieldError{{Pointer: "/query/redirect_uri", Message: "not allowed"}}}
	}
	state := opaque.New("")
	f := flow{Provider: providerName, RedirectURI: redirectURI, Verifier: opaque.New(""), Nonce: opaque.New("")}
	location, err := p.authURL(ctx, state, f)
	if err != nil {
		return "", fmt.Errorf("start %s login: %w", providerName, err)
	}
	raw, _ := json.Marshal(f)
	if err := s.rdb.Set(ctx, s.key("state", state), raw, StateTTL).Err(); err != nil {
		return "", fmt.Errorf("store oauth state: %w", err)
	}
	return location, nil
}

// CallbackParams are the query parameters the provider sent the browser back with.
type CallbackParams struct {
	Code  string
	State string
	Error string
}

// Outcome is where Callback sends the browser: the client's redirect URI with either a
// one-time code or an error.
type Outcome struct {
	Location string
	// Error is "" on success, else ErrAccessDenied, ErrInvalidRequest or ErrServerError.
	Error string
	// User and Link are set on success.
	User account.User
	Link account.Link
}

// Callback completes the provider's side of a login. An unknown, expired or spent state
// has no trustworthy redirect URI, so it is an error (invalid_request); every other
// failure is an Outcome redirecting to the client with an error, and none creates a
// session. A new link of an identity is audited with the user as the actor, from where c
// is. Errors: not_found for an unknown provider; invalid_request for a bad state.
func (s *Service) Callback(ctx context.Context, providerName string, cp CallbackParams, c account.Client) (Outcome, error) {
	p, err := s.provider(providerName)
	if err != nil {
		return Outcome{}, err
	}
	if cp.State == "" {
		return Outcome{}, errs.E(errs.Invalid, "The callback carries no state.")
	}
	raw, err := s.rdb.GetDel(ctx, s.key("state", cp.State)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Outcome{}, errs.E(errs.Invalid, "Unknown or expired login state; start the login again.")
	}
	if err != nil {
		return Outcome{}, fmt.Errorf("spend oauth state: %w", err)
	}
	var f flow
	if err := json.Unmarshal(raw, &f); err != nil {
		return Outcome{}, fmt.Errorf("decode oauth state: %w", err)
	}
	fail := func(code string) Outcome {
		return Outcome{Location: withQuery(f.RedirectURI, "error", code), Error: code}
	}
	switch {
	case f.Provider != providerName:
		s.log.WarnContext(ctx, "oauth callback for another provider than its state", "provider", providerName, "state_provider", f.Provider)
		return fail(ErrInvalidRequest), nil
	case cp.Error != "":
		s.log.InfoContext(ctx, "oauth login declined at the provider", "provider", providerName, "error", cp.Error)
		return fail(ErrAccessDenied), nil
	case cp.Code == "":
		return fail(ErrAccessDenied), nil // WeChat sends no code, and no error, when the user declines
	}
	profile, err := p.exchange(ctx, cp.Code, f)
	if err != nil {
		s.log.WarnContext(ctx, "oauth code exchange refused", "provider", providerName, "error", err)
		return fail(ErrAccessDenied), nil
	}
	user, _, link, err := s.accounts.ResolveExternal(ctx, account.External{
		Provider: providerName, Subject: profile.Subject, Email: profile.Email,
		EmailVerified: profile.EmailVerified, Name: profile.Name, UnionID: profile.UnionID,
	}, c)
	if err != nil {
		if errs.CodeOf(err) == errs.Internal {
			s.log.ErrorContext(ctx, "oauth sign-in failed", "provider", providerName, "error", err)
			return fail(ErrServerError), nil
		}
		s.log.InfoContext(ctx, "oauth sign-in refused", "provider", providerName, "error", err)
		return fail(ErrAccessDenied), nil
	}
	code := opaque.New("")
	grant, _ := json.Marshal(grant{UserID: user.ID, Provider: providerName})
	if err := s.rdb.Set(ctx, s.key("code", code), grant, CodeTTL).Err(); err != nil {
		s.log.ErrorContext(ctx, "store oauth login code", "error", err)
		return fail(ErrServerError), nil
	}
	return Outcome{Location: withQuery(f.RedirectURI, "code", code), User: user, Link: link}, nil
}

// grant is what a one-time login code stands for.
type grant struct {
	UserID   uuid.UUID `json:"user_id"`
	Provider string    `json:"provider"`
}

// Login is a session started by Exchange.
type Login struct {
	User     account.User
	Session  account.Session
	Refresh  string
	Provider string
}

// Exchange spends a one-time login code and starts a session for c, audited as a login
// with the code's provider. Errors:
// unauthenticated for an unknown, expired or spent code, and for a user disabled since.
func (s *Service) Exchange(ctx context.Context, code string, c account.Client) (Login, error) {
	raw, err := s.rdb.GetDel(ctx, s.key("code", code)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Login{}, errs.E(errs.Unauthenticated, "Invalid or expired login code.")
	}
	if err != nil {
		return Login{}, fmt.Errorf("spend login code: %w", err)
	}
	var g grant
	if err := json.Unmarshal(raw, &g); err != nil {
		return Login{}, fmt.Errorf("decode login code: %w", err)
	}
	user, session, refresh, err := s.accounts.StartSession(ctx, g.UserID, g.Provider, c)
	if err != nil {
		return Login{}, err
	}
	return Login{User: user, Session: session, Refresh: refresh, Provider: g.Provider}, nil
}

// key names a state or code in Redis by its hash, so a Redis dump holds no usable secret.
func (s *Service) key(kind, secret string) string {
	return s.ks.Key("oauth", 1, kind+":"+hex.EncodeToString(opaque.Hash(secret)))
}

// withQuery appends name=value to u's query, keeping the client's own parameters as sent.
func withQuery(u, name, value string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + url.QueryEscape(name) + "=" + url.QueryEscape(value)
}

// allowed reports whether redirectURI may end a login: an absolute http(s) URL without
// fragment or user info, equal to an allow-list entry or under an entry ending in "/".
func allowed(allowlist []string, redirectURI string) bool {
	if strings.ContainsAny(redirectURI, "\\#") || strings.ContainsFunc(redirectURI, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return false
	}
	u, err := url.Parse(redirectURI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return false
	}
	for _, entry := range allowlist {
		if redirectURI == entry {
			return true
		}
		if strings.HasSuffix(entry, "/") && strings.HasPrefix(redirectURI, entry) && !strings.Contains(redirectURI[len(entry):], "..") {
			return true
		}
	}
	return false
}
