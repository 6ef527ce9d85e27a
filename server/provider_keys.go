package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm/orgkeys"
)

// ListProviderKeys lists the org's own provider keys (never their secrets).
func (s *Server) ListProviderKeys(ctx context.Context, req api.ListProviderKeysRequestObject) (api.ListProviderKeysResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	keys, err := s.llm.OrgKeys.List(ctx, access.OrgID)
	if err != nil {
		return nil, err
	}
	out := api.ListProviderKeys200JSONResponse{Data: make([]api.ProviderKey, len(keys))}
	for i, k := range keys {
		out.Data[i] = toAPIProviderKey(k)
	}
	return out, nil
}

// SetProviderKey stores the org's own key for a configured provider.
func (s *Server) SetProviderKey(ctx context.Context, req api.SetProviderKeyRequestObject) (api.SetProviderKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	key, err := s.llm.OrgKeys.Set(ctx, access.OrgID, req.Provider, req.Body.ApiKey, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.SetProviderKey200JSONResponse(toAPIProviderKey(key)), nil
}

// DeleteProviderKey removes the org's own key for a provider.
func (s *Server) DeleteProviderKey(ctx context.Context, req api.DeleteProviderKeyRequestObject) (api.DeleteProviderKeyResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.llm.OrgKeys.Delete(ctx, access.OrgID, req.Provider, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeleteProviderKey204Response{}, nil
}

func toAPIProviderKey(k orgkeys.Key) api.ProviderKey {
	return api.ProviderKey{Provider: k.Provider, Hint: k.Hint, CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt}
}
