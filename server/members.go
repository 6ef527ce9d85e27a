package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TEMPORARY: placeholders while this area is being built; replaced before it lands.

// AcceptInvitation is not built yet.
func (s *Server) AcceptInvitation(context.Context, api.AcceptInvitationRequestObject) (api.AcceptInvitationResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// ListOrgInvitations is not built yet.
func (s *Server) ListOrgInvitations(context.Context, api.ListOrgInvitationsRequestObject) (api.ListOrgInvitationsResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// CreateOrgInvitation is not built yet.
func (s *Server) CreateOrgInvitation(context.Context, api.CreateOrgInvitationRequestObject) (api.CreateOrgInvitationResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// RevokeOrgInvitation is not built yet.
func (s *Server) RevokeOrgInvitation(context.Context, api.RevokeOrgInvitationRequestObject) (api.RevokeOrgInvitationResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// ListOrgMembers is not built yet.
func (s *Server) ListOrgMembers(context.Context, api.ListOrgMembersRequestObject) (api.ListOrgMembersResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// RemoveOrgMember is not built yet.
func (s *Server) RemoveOrgMember(context.Context, api.RemoveOrgMemberRequestObject) (api.RemoveOrgMemberResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// UpdateOrgMember is not built yet.
func (s *Server) UpdateOrgMember(context.Context, api.UpdateOrgMemberRequestObject) (api.UpdateOrgMemberResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// TransferOrgOwnership is not built yet.
func (s *Server) TransferOrgOwnership(context.Context, api.TransferOrgOwnershipRequestObject) (api.TransferOrgOwnershipResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}
