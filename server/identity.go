package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/auth/oauth"
	"github.com/kilnhq/kiln/internal/auth/token"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Identity is what the identity endpoints and the auth middleware use.
type Identity struct {
	Accounts *account.Service
	Tokens   *token.Service
	Keys     *apikey.Service
	Audit    *audit.Log
	// Members keeps org memberships, roles and invitations.
	Members *members.Service
	// OAuth runs external logins (OIDC, GitHub, WeChat, WeCom); nil means none configured.
	OAuth *oauth.Service
}

// authState is the server's view of identity: the services plus the per-route
// requirements and the membership cache.
type authState struct {
	Identity
	requirements map[string]requirement
	memberships  *membershipCache
}

// clientKey carries who is connecting (for sessions and the audit log).
type clientKey struct{}

// withClient is a strict-handler middleware giving handlers the client's address and agent.
func (s *Server) withClient(f api.StrictHandlerFunc, _ string) api.StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		host := s.clientIP(r)
		ua := r.UserAgent()
		if len(ua) > 512 {
			ua = ua[:512]
		}
		return f(context.WithValue(ctx, clientKey{}, account.Client{IP: host, UserAgent: ua}), w, r, req)
	}
}

func clientFrom(ctx context.Context) account.Client {
	c, _ := ctx.Value(clientKey{}).(account.Client)
	return c
}

// actor is who makes the request and from where, for the audit events the domain writes:
// the caller's user or API key (anonymous without one) and the client's address and agent.
func actor(ctx context.Context) audit.Actor {
	c := clientFrom(ctx)
	a := audit.Actor{Type: audit.ActorAnonymous, IP: c.IP, UserAgent: c.UserAgent}
	if p, ok := principalFrom(ctx); ok {
		if p.Key != nil {
			a.Type, a.ID = audit.ActorAPIKey, &p.Key.ID
		} else {
			a.Type, a.ID = audit.ActorUser, &p.UserID
		}
	}
	return a
}

// tokenPair issues an access token for the session and pairs it with the refresh token.
func (s *Server) tokenPair(ctx context.Context, userID, sessionID uuid.UUID, refresh string) (api.TokenPair, error) {
	access, expires, err := s.auth.Tokens.Issue(ctx, userID, sessionID)
	if err != nil {
		return api.TokenPair{}, err
	}
	return api.TokenPair{
		AccessToken:  access,
		RefreshToken: refresh,
		TokenType:    api.Bearer,
		ExpiresIn:    int(time.Until(expires).Round(time.Second).Seconds()),
	}, nil
}

// SignUp creates an account, its personal org and a session.
func (s *Server) SignUp(ctx context.Context, req api.SignUpRequestObject) (api.SignUpResponseObject, error) {
	user, session, refresh, err := s.auth.Accounts.SignUp(ctx, req.Body.Email, req.Body.Password, req.Body.Name, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	pair, err := s.tokenPair(ctx, user.ID, session.ID, refresh)
	if err != nil {
		return nil, err
	}
	return api.SignUp201JSONResponse(pair), nil
}

// Login starts a session; the account service audits it, and failures with the attempted
// email.
func (s *Server) Login(ctx context.Context, req api.LoginRequestObject) (api.LoginResponseObject, error) {
	user, session, refresh, err := s.auth.Accounts.Login(ctx, req.Body.Email, req.Body.Password, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	pair, err := s.tokenPair(ctx, user.ID, session.ID, refresh)
	if err != nil {
		return nil, err
	}
	return api.Login200JSONResponse(pair), nil
}

// RefreshTokens rotates a refresh token; reuse of a spent one revokes its session.
func (s *Server) RefreshTokens(ctx context.Context, req api.RefreshTokensRequestObject) (api.RefreshTokensResponseObject, error) {
	user, session, refresh, err := s.auth.Accounts.Refresh(ctx, req.Body.RefreshToken, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	pair, err := s.tokenPair(ctx, user.ID, session.ID, refresh)
	if err != nil {
		return nil, err
	}
	return api.RefreshTokens200JSONResponse(pair), nil
}

// Logout revokes the caller's session everywhere at once.
func (s *Server) Logout(ctx context.Context, _ api.LogoutRequestObject) (api.LogoutResponseObject, error) {
	p, _ := principalFrom(ctx)
	if err := s.auth.Accounts.RevokeSession(ctx, p.UserID, p.SessionID); err != nil {
		return nil, err
	}
	return api.Logout204Response{}, nil
}

// LogoutAll revokes every session of the caller.
func (s *Server) LogoutAll(ctx context.Context, _ api.LogoutAllRequestObject) (api.LogoutAllResponseObject, error) {
	p, _ := principalFrom(ctx)
	if err := s.auth.Accounts.LogoutAll(ctx, p.UserID, actor(ctx)); err != nil {
		return nil, err
	}
	return api.LogoutAll204Response{}, nil
}

// GetMe returns the caller and their orgs.
func (s *Server) GetMe(ctx context.Context, _ api.GetMeRequestObject) (api.GetMeResponseObject, error) {
	p, _ := principalFrom(ctx)
	user, err := s.auth.Accounts.User(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	orgs, err := s.orgMemberships(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	return api.GetMe200JSONResponse{
		Id: user.ID, Email: user.Email, Name: user.Name, EmailVerified: user.EmailVerified,
		PersonalOrgId: user.PersonalOrgID, CreatedAt: user.CreatedAt.UTC(), Orgs: orgs,
		DeletionScheduledAt: user.DeletionRequestedAt, EraseAt: user.EraseAt,
	}, nil
}

func (s *Server) orgMemberships(ctx context.Context, userID uuid.UUID) ([]api.OrgMembership, error) {
	list, err := s.auth.Accounts.Memberships(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]api.OrgMembership, len(list))
	for i, m := range list {
		out[i] = toAPIMembership(m.Org, m.Role)
	}
	return out, nil
}

func toAPIMembership(o account.Org, role string) api.OrgMembership {
	return api.OrgMembership{Id: o.ID, Name: o.Name, Personal: o.Personal, CreatedAt: o.CreatedAt.UTC(), Role: api.Role(role)}
}

// ListMySessions lists the caller's devices.
func (s *Server) ListMySessions(ctx context.Context, req api.ListMySessionsRequestObject) (api.ListMySessionsResponseObject, error) {
	p, _ := principalFrom(ctx)
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	sessions, err := s.auth.Accounts.Sessions(ctx, p.UserID, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(sessions, limit, func(ss account.Session) uuid.UUID { return ss.ID }, func(ss account.Session) api.Session {
		return api.Session{
			Id: ss.ID, Name: ss.Name, UserAgent: ss.UserAgent, Ip: ss.IP, Current: ss.ID == p.SessionID,
			CreatedAt: ss.CreatedAt.UTC(), LastSeenAt: ss.LastSeenAt.UTC(), ExpiresAt: ss.ExpiresAt.UTC(),
		}
	})
	return api.ListMySessions200JSONResponse{Data: data, NextCursor: next}, nil
}

// DeleteMySession signs one of the caller's devices out.
func (s *Server) DeleteMySession(ctx context.Context, req api.DeleteMySessionRequestObject) (api.DeleteMySessionResponseObject, error) {
	p, _ := principalFrom(ctx)
	if err := s.auth.Accounts.SignOutSession(ctx, p.UserID, req.Id, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeleteMySession204Response{}, nil
}

// ListOrgs lists the caller's orgs.
func (s *Server) ListOrgs(ctx context.Context, req api.ListOrgsRequestObject) (api.ListOrgsResponseObject, error) {
	p, _ := principalFrom(ctx)
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.auth.Accounts.MembershipsPage(ctx, p.UserID, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(m account.Membership) uuid.UUID { return m.Org.ID }, func(m account.Membership) api.OrgMembership {
		return toAPIMembership(m.Org, m.Role)
	})
	return api.ListOrgs200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateOrg creates an org owned by the caller.
func (s *Server) CreateOrg(ctx context.Context, req api.CreateOrgRequestObject) (api.CreateOrgResponseObject, error) {
	p, _ := principalFrom(ctx)
	org, err := s.auth.Accounts.CreateOrg(ctx, p.UserID, req.Body.Name, actor(ctx))
	if err != nil {
		return nil, err
	}
	s.auth.memberships.forget(p.UserID)
	return api.CreateOrg201JSONResponse(toAPIMembership(org, account.RoleOwner)), nil
}

// GetJWKS serves the public keys of the token signers.
func (s *Server) GetJWKS(ctx context.Context, _ api.GetJWKSRequestObject) (api.GetJWKSResponseObject, error) {
	raw, err := s.auth.Tokens.JWKS(ctx)
	if err != nil {
		return nil, err
	}
	var set api.JWKS
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, err
	}
	return api.GetJWKS200JSONResponse(set), nil
}

// adminOrg resolves the request's org and requires the caller to manage it.
func (s *Server) adminOrg(ctx context.Context, requested *uuid.UUID) (orgAccess, error) {
	access, err := s.orgFor(ctx, requested)
	if err != nil {
		return orgAccess{}, err
	}
	if !access.isAdmin() {
		return orgAccess{}, errs.E(errs.PermissionDenied, "Only an org owner or admin may do this.")
	}
	return access, nil
}

// ListAPIKeys lists the org's keys, newest first.
func (s *Server) ListAPIKeys(ctx context.Context, req api.ListAPIKeysRequestObject) (api.ListAPIKeysResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	keys, err := s.auth.Keys.List(ctx, access.OrgID, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(keys, limit, func(k apikey.Key) uuid.UUID { return k.ID }, toAPIKey)
	return api.ListAPIKeys200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateAPIKey creates a key and returns its secret once.
func (s *Server) CreateAPIKey(ctx context.Context, req api.CreateAPIKeyRequestObject) (api.CreateAPIKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	scopes := make([]string, len(req.Body.Scopes))
	for i, sc := range req.Body.Scopes {
		scopes[i] = string(sc)
	}
	key, secret, err := s.auth.Keys.Create(ctx, access.OrgID, actor(ctx), req.Body.Name, scopes, req.Body.ExpiresAt, req.Body.TokenBudget)
	if err != nil {
		return nil, err
	}
	return api.CreateAPIKey201JSONResponse(withSecret(key, secret)), nil
}

// GetAPIKey returns one of the org's keys.
func (s *Server) GetAPIKey(ctx context.Context, req api.GetAPIKeyRequestObject) (api.GetAPIKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	key, err := s.auth.Keys.Get(ctx, access.OrgID, req.Id)
	if err != nil {
		return nil, err
	}
	return api.GetAPIKey200JSONResponse(toAPIKey(key)), nil
}

// RevokeAPIKey revokes one of the org's keys.
func (s *Server) RevokeAPIKey(ctx context.Context, req api.RevokeAPIKeyRequestObject) (api.RevokeAPIKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.auth.Keys.Revoke(ctx, access.OrgID, req.Id, actor(ctx)); err != nil {
		return nil, err
	}
	return api.RevokeAPIKey204Response{}, nil
}

// RotateAPIKey replaces a key; the old one keeps working for the grace period.
func (s *Server) RotateAPIKey(ctx context.Context, req api.RotateAPIKeyRequestObject) (api.RotateAPIKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	var grace time.Duration
	if req.Body != nil && req.Body.GraceSeconds != nil {
		grace = time.Duration(*req.Body.GraceSeconds) * time.Second
	}
	key, secret, err := s.auth.Keys.Rotate(ctx, access.OrgID, req.Id, grace, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.RotateAPIKey201JSONResponse(withSecret(key, secret)), nil
}

func toAPIKey(k apikey.Key) api.APIKey {
	scopes := make([]api.Scope, len(k.Scopes))
	for i, sc := range k.Scopes {
		scopes[i] = api.Scope(sc)
	}
	return api.APIKey{
		Id: k.ID, Name: k.Name, Display: k.Display, Scopes: scopes, CreatedBy: k.CreatedBy,
		CreatedAt: k.CreatedAt.UTC(), ExpiresAt: store.UTC(k.ExpiresAt), RevokedAt: store.UTC(k.RevokedAt),
		LastUsedAt: store.UTC(k.LastUsedAt), RotatedTo: k.RotatedTo, TokenBudget: k.TokenBudget,
	}
}

func withSecret(k apikey.Key, secret string) api.APIKeyWithSecret {
	a := toAPIKey(k)
	return api.APIKeyWithSecret{
		Id: a.Id, Name: a.Name, Display: a.Display, Scopes: a.Scopes, CreatedBy: a.CreatedBy, CreatedAt: a.CreatedAt,
		ExpiresAt: a.ExpiresAt, RevokedAt: a.RevokedAt, LastUsedAt: a.LastUsedAt, RotatedTo: a.RotatedTo, TokenBudget: a.TokenBudget, Key: secret,
	}
}

// ListOrgAuditEvents lists an org's audit log for its owners and admins.
func (s *Server) ListOrgAuditEvents(ctx context.Context, req api.ListOrgAuditEventsRequestObject) (api.ListOrgAuditEventsResponseObject, error) {
	access, err := s.adminOrg(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	limit, before, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	events, err := s.auth.Audit.List(ctx, access.OrgID, limit+1, before, orZero(req.Params.Action))
	if err != nil {
		return nil, err
	}
	data, next := pageOf(events, limit, func(e audit.Event) uuid.UUID { return e.ID }, toAPIAuditEvent)
	return api.ListOrgAuditEvents200JSONResponse{Data: data, NextCursor: next}, nil
}

// page reads the one pagination contract: limit (default 20) and an opaque cursor naming
// the last item of the previous page.
func page(limit *int, cursor *string) (int, *uuid.UUID, error) {
	n := 20
	if limit != nil {
		n = *limit
	}
	if cursor == nil || *cursor == "" {
		return n, nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(*cursor)
	if err == nil && len(raw) == 16 {
		id, _ := uuid.FromBytes(raw)
		return n, &id, nil
	}
	return 0, nil, &errs.Error{Code: errs.Invalid, Message: "The cursor is not one this API issued.",
		Fields: []errs.FieldError{{Pointer: "/query/cursor", Message: "invalid cursor"}}}
}

// pageOf converts the first limit items of a page read with limit+1 rows, and returns the
// cursor of the next page when there is one.
func pageOf[T, A any](items []T, limit int, id func(T) uuid.UUID, convert func(T) A) ([]A, *string) {
	var next *string
	if len(items) > limit {
		items, next = items[:limit], nextCursor(id(items[limit-1]))
	}
	out := make([]A, len(items))
	for i, it := range items {
		out[i] = convert(it)
	}
	return out, next
}

func toAPIAuditEvent(e audit.Event) api.AuditEvent {
	return api.AuditEvent{
		Id: e.ID, OrgId: e.OrgID, ActorType: api.AuditEventActorType(e.ActorType), ActorId: e.ActorID,
		Action: e.Action, TargetType: e.TargetType, TargetId: e.TargetID, Ip: e.IP, UserAgent: e.UserAgent,
		Data: e.Data, CreatedAt: e.CreatedAt.UTC(),
	}
}

func nextCursor(last uuid.UUID) *string {
	c := base64.RawURLEncoding.EncodeToString(last[:])
	return &c
}
