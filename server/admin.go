package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TEMPORARY: placeholders while this area is being built; replaced before it lands.

// AdminListAuditEvents is not built yet.
func (s *Server) AdminListAuditEvents(context.Context, api.AdminListAuditEventsRequestObject) (api.AdminListAuditEventsResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminListFeatureFlags is not built yet.
func (s *Server) AdminListFeatureFlags(context.Context, api.AdminListFeatureFlagsRequestObject) (api.AdminListFeatureFlagsResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminDeleteFeatureFlag is not built yet.
func (s *Server) AdminDeleteFeatureFlag(context.Context, api.AdminDeleteFeatureFlagRequestObject) (api.AdminDeleteFeatureFlagResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminGetFeatureFlag is not built yet.
func (s *Server) AdminGetFeatureFlag(context.Context, api.AdminGetFeatureFlagRequestObject) (api.AdminGetFeatureFlagResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminPutFeatureFlag is not built yet.
func (s *Server) AdminPutFeatureFlag(context.Context, api.AdminPutFeatureFlagRequestObject) (api.AdminPutFeatureFlagResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminListOrgs is not built yet.
func (s *Server) AdminListOrgs(context.Context, api.AdminListOrgsRequestObject) (api.AdminListOrgsResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminListUsers is not built yet.
func (s *Server) AdminListUsers(context.Context, api.AdminListUsersRequestObject) (api.AdminListUsersResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminDisableUser is not built yet.
func (s *Server) AdminDisableUser(context.Context, api.AdminDisableUserRequestObject) (api.AdminDisableUserResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// AdminEnableUser is not built yet.
func (s *Server) AdminEnableUser(context.Context, api.AdminEnableUserRequestObject) (api.AdminEnableUserResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}
