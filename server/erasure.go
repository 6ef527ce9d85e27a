package server

import (
	"context"
	"net/http"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/erasure"
	"github.com/kilnhq/kiln/internal/errs"
)

// erasureService returns the erasure, or not_ready on a server without one.
func (s *Server) erasureService() (*erasure.Service, error) {
	if s.erasure == nil {
		return nil, errs.E(errs.NotReady, "Account and org deletion is not configured on this server.")
	}
	return s.erasure, nil
}

// DeleteMe schedules the caller's account for erasure after the grace period.
func (s *Server) DeleteMe(ctx context.Context, req api.DeleteMeRequestObject) (api.DeleteMeResponseObject, error) {
	e, err := s.erasureService()
	if err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	proof := erasure.Proof{TokenIssuedAt: p.IssuedAt, KeepSessionID: p.SessionID, PasswordAbsent: true}
	if req.Body != nil && req.Body.Password != nil {
		proof.Password, proof.PasswordAbsent = *req.Body.Password, false
	}
	sch, err := e.DeleteUser(ctx, p.UserID, proof, actor(ctx))
	if err != nil {
		return nil, err
	}
	s.auth.memberships.forget(p.UserID)
	return api.DeleteMe202JSONResponse(toAPIDeletion(sch)), nil
}

// RestoreMe undoes the caller's pending account deletion.
func (s *Server) RestoreMe(ctx context.Context, _ api.RestoreMeRequestObject) (api.RestoreMeResponseObject, error) {
	e, err := s.erasureService()
	if err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	if err := e.RestoreUser(ctx, p.UserID, actor(ctx)); err != nil {
		return nil, err
	}
	return api.RestoreMe204Response{}, nil
}

// DeleteOrg schedules an org the caller owns for erasure after the grace period.
func (s *Server) DeleteOrg(ctx context.Context, req api.DeleteOrgRequestObject) (api.DeleteOrgResponseObject, error) {
	e, err := s.erasureService()
	if err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	sch, err := e.DeleteOrg(ctx, req.Id, p.UserID, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.DeleteOrg202JSONResponse(toAPIDeletion(sch)), nil
}

// RestoreOrg undoes an org's pending deletion.
func (s *Server) RestoreOrg(ctx context.Context, req api.RestoreOrgRequestObject) (api.RestoreOrgResponseObject, error) {
	e, err := s.erasureService()
	if err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	if err := e.RestoreOrg(ctx, req.Id, p.UserID, actor(ctx)); err != nil {
		return nil, err
	}
	return api.RestoreOrg204Response{}, nil
}

func toAPIDeletion(s erasure.Scheduled) api.DeletionScheduled {
	return api.DeletionScheduled{DeletionScheduledAt: s.RequestedAt.UTC(), EraseAt: s.EraseAt.UTC()}
}

// orgWritable refuses, with org_deletion_pending, the requests that would change an org
// whose deletion is pending (every method but GET and HEAD: writes and model calls);
// reads go on.
func (s *Server) orgWritable(ctx context.Context, r *http.Request, org uuid.UUID) error {
	if s.erasure == nil || r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	return s.erasure.Writable(ctx, org)
}
