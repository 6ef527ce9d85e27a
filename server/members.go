package server

import (
	"context"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/members"
)

// The members endpoints take a user's access token only (the spec says so, the middleware
// enforces it), so the principal is always a user. The members service checks the caller's
// membership and role in the database itself: the membership cache may lag on other
// replicas, and a role decides what these endpoints may do. Every change drops the cached
// memberships of the users it touched on this replica.

// ListOrgMembers lists the org's members to any of them.
func (s *Server) ListOrgMembers(ctx context.Context, req api.ListOrgMembersRequestObject) (api.ListOrgMembersResponseObject, error) {
	p, _ := principalFrom(ctx)
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.auth.Members.List(ctx, p.UserID, req.Id, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(m members.Member) uuid.UUID { return m.UserID }, toAPIMember)
	return api.ListOrgMembers200JSONResponse{Data: data, NextCursor: next}, nil
}

// UpdateOrgMember changes a member's role.
func (s *Server) UpdateOrgMember(ctx context.Context, req api.UpdateOrgMemberRequestObject) (api.UpdateOrgMemberResponseObject, error) {
	m, from, err := s.auth.Members.ChangeRole(ctx, actor(ctx), req.Id, req.UserId, string(req.Body.Role))
	if err != nil {
		return nil, err
	}
	if from != m.Role {
		s.auth.memberships.forget(m.UserID)
	}
	return api.UpdateOrgMember200JSONResponse(toAPIMember(m)), nil
}

// RemoveOrgMember removes a member, or lets the caller leave.
func (s *Server) RemoveOrgMember(ctx context.Context, req api.RemoveOrgMemberRequestObject) (api.RemoveOrgMemberResponseObject, error) {
	m, err := s.auth.Members.Remove(ctx, actor(ctx), req.Id, req.UserId)
	if err != nil {
		return nil, err
	}
	s.auth.memberships.forget(m.UserID)
	return api.RemoveOrgMember204Response{}, nil
}

// TransferOrgOwnership makes another member the owner and the caller an admin.
func (s *Server) TransferOrgOwnership(ctx context.Context, req api.TransferOrgOwnershipRequestObject) (api.TransferOrgOwnershipResponseObject, error) {
	p, _ := principalFrom(ctx)
	if _, err := s.auth.Members.TransferOwnership(ctx, actor(ctx), req.Id, req.Body.UserId); err != nil {
		return nil, err
	}
	s.auth.memberships.forget(p.UserID)
	s.auth.memberships.forget(req.Body.UserId)
	return api.TransferOrgOwnership204Response{}, nil
}

// ListOrgInvitations lists the org's pending invitations to its owners and admins.
func (s *Server) ListOrgInvitations(ctx context.Context, req api.ListOrgInvitationsRequestObject) (api.ListOrgInvitationsResponseObject, error) {
	p, _ := principalFrom(ctx)
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.auth.Members.Invitations(ctx, p.UserID, req.Id, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(inv members.Invitation) uuid.UUID { return inv.ID }, toAPIInvitation)
	return api.ListOrgInvitations200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateOrgInvitation invites an address and emails it the link (a job queued with the
// invitation); the token is in the email only.
func (s *Server) CreateOrgInvitation(ctx context.Context, req api.CreateOrgInvitationRequestObject) (api.CreateOrgInvitationResponseObject, error) {
	inv, err := s.auth.Members.Invite(ctx, actor(ctx), req.Id, req.Body.Email, string(req.Body.Role))
	if err != nil {
		return nil, err
	}
	return api.CreateOrgInvitation201JSONResponse(toAPIInvitation(inv)), nil
}

// RevokeOrgInvitation withdraws a pending invitation.
func (s *Server) RevokeOrgInvitation(ctx context.Context, req api.RevokeOrgInvitationRequestObject) (api.RevokeOrgInvitationResponseObject, error) {
	if _, err := s.auth.Members.Withdraw(ctx, actor(ctx), req.Id, req.InvitationId); err != nil {
		return nil, err
	}
	return api.RevokeOrgInvitation204Response{}, nil
}

// AcceptInvitation makes the caller a member of the org an invitation token names.
func (s *Server) AcceptInvitation(ctx context.Context, req api.AcceptInvitationRequestObject) (api.AcceptInvitationResponseObject, error) {
	p, _ := principalFrom(ctx)
	m, _, err := s.auth.Members.Accept(ctx, actor(ctx), req.Body.Token)
	if err != nil {
		return nil, err
	}
	s.auth.memberships.forget(p.UserID)
	return api.AcceptInvitation200JSONResponse(toAPIMembership(m.Org, m.Role)), nil
}

func toAPIMember(m members.Member) api.Member {
	return api.Member{UserId: m.UserID, Email: m.Email, Name: m.Name, Role: api.Role(m.Role), JoinedAt: m.JoinedAt}
}

func toAPIInvitation(inv members.Invitation) api.Invitation {
	return api.Invitation{
		Id: inv.ID, OrgId: inv.OrgID, Email: inv.Email, Role: api.Role(inv.Role), InvitedBy: inv.InvitedBy,
		CreatedAt: inv.CreatedAt, ExpiresAt: inv.ExpiresAt,
	}
}
