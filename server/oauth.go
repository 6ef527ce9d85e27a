package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/oauth"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// oauthService returns the external-login service; without one, every provider is unknown.
func (s *Server) oauthService() (*oauth.Service, error) {
	if s.auth.OAuth == nil {
		return nil, errs.E(errs.NotFound, "No external login providers are configured.")
	}
	return s.auth.OAuth, nil
}

// ListOAuthProviders lists the configured external login providers.
func (s *Server) ListOAuthProviders(context.Context, api.ListOAuthProvidersRequestObject) (api.ListOAuthProvidersResponseObject, error) {
	out := api.ListOAuthProviders200JSONResponse{Data: []api.OAuthProviderInfo{}}
	if s.auth.OAuth == nil {
		return out, nil
	}
	for _, p := range s.auth.OAuth.Providers() {
		info := api.OAuthProviderInfo{Name: p.Name, Type: api.OAuthProviderInfoType(p.Type)}
		if p.DisplayName != "" {
			info.DisplayName = &p.DisplayName
		}
		out.Data = append(out.Data, info)
	}
	return out, nil
}

// StartOAuth redirects the browser to the provider's authorization page.
func (s *Server) StartOAuth(ctx context.Context, req api.StartOAuthRequestObject) (api.StartOAuthResponseObject, error) {
	svc, err := s.oauthService()
	if err != nil {
		return nil, err
	}
	location, err := svc.Start(ctx, req.Provider, req.Params.RedirectUri)
	if err != nil {
		return nil, err
	}
	return api.StartOAuth302Response{Headers: api.StartOAuth302ResponseHeaders{Location: &location}}, nil
}

// OauthCallback finishes the provider's side of a login and sends the browser back to the
// client with a one-time code or an error. A state Kiln does not know gets a problem: there
// is no redirect URI to trust.
func (s *Server) OauthCallback(ctx context.Context, req api.OauthCallbackRequestObject) (api.OauthCallbackResponseObject, error) {
	svc, err := s.oauthService()
	if err != nil {
		return nil, err
	}
	out, err := svc.Callback(ctx, req.Provider, oauth.CallbackParams{
		Code: queryValue(req.Params.Code), State: queryValue(req.Params.State), Error: queryValue(req.Params.Error),
	}, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	return api.OauthCallback302Response{Headers: api.OauthCallback302ResponseHeaders{Location: &out.Location}}, nil
}

// ExchangeOAuthCode trades a one-time login code for a session's tokens.
func (s *Server) ExchangeOAuthCode(ctx context.Context, req api.ExchangeOAuthCodeRequestObject) (api.ExchangeOAuthCodeResponseObject, error) {
	svc, err := s.oauthService()
	if err != nil {
		return nil, errUnauthenticatedCode
	}
	login, err := svc.Exchange(ctx, req.Body.Code, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	pair, err := s.tokenPair(ctx, login.User.ID, login.Session.ID, login.Refresh)
	if err != nil {
		return nil, err
	}
	return api.ExchangeOAuthCode200JSONResponse(pair), nil
}

var errUnauthenticatedCode = errs.E(errs.Unauthenticated, "Invalid or expired login code.")

// ListMyIdentities lists the external accounts linked to the caller.
func (s *Server) ListMyIdentities(ctx context.Context, _ api.ListMyIdentitiesRequestObject) (api.ListMyIdentitiesResponseObject, error) {
	p, _ := principalFrom(ctx)
	list, err := s.auth.Accounts.Identities(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	out := api.ListMyIdentities200JSONResponse{Data: make([]api.Identity, len(list))}
	for i, id := range list {
		out.Data[i] = api.Identity{
			Id: id.ID, Provider: id.Provider, Subject: id.Subject, CreatedAt: id.CreatedAt.UTC(), LastLoginAt: store.UTC(id.LastLoginAt),
		}
		if id.Email != "" {
			out.Data[i].Email = &id.Email
		}
	}
	return out, nil
}

// DeleteMyIdentity unlinks one of the caller's external accounts, unless it is their only
// way to sign in.
func (s *Server) DeleteMyIdentity(ctx context.Context, req api.DeleteMyIdentityRequestObject) (api.DeleteMyIdentityResponseObject, error) {
	p, _ := principalFrom(ctx)
	if err := s.auth.Accounts.UnlinkIdentity(ctx, p.UserID, req.Id, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeleteMyIdentity204Response{}, nil
}

func queryValue(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
