package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TEMPORARY: placeholders while this area is being built; replaced before it lands.

// ExchangeOAuthCode is not built yet.
func (s *Server) ExchangeOAuthCode(context.Context, api.ExchangeOAuthCodeRequestObject) (api.ExchangeOAuthCodeResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// ListOAuthProviders is not built yet.
func (s *Server) ListOAuthProviders(context.Context, api.ListOAuthProvidersRequestObject) (api.ListOAuthProvidersResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// OauthCallback is not built yet.
func (s *Server) OauthCallback(context.Context, api.OauthCallbackRequestObject) (api.OauthCallbackResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// StartOAuth is not built yet.
func (s *Server) StartOAuth(context.Context, api.StartOAuthRequestObject) (api.StartOAuthResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// ListMyIdentities is not built yet.
func (s *Server) ListMyIdentities(context.Context, api.ListMyIdentitiesRequestObject) (api.ListMyIdentitiesResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// DeleteMyIdentity is not built yet.
func (s *Server) DeleteMyIdentity(context.Context, api.DeleteMyIdentityRequestObject) (api.DeleteMyIdentityResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}
