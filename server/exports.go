package server

import (
	"context"
	"fmt"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/exports"
)

func (s *Server) exportsReady() error {
	if s.exports == nil {
		return errs.E(errs.NotReady, "Exports are not configured on this server.")
	}
	return nil
}

// ExportMe starts an export of the caller's own data (a user's access token).
func (s *Server) ExportMe(ctx context.Context, _ api.ExportMeRequestObject) (api.ExportMeResponseObject, error) {
	if err := s.exportsReady(); err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	if p.Key != nil {
		return nil, errs.E(errs.PermissionDenied, "An API key has no user to export; sign in as the user.")
	}
	personal, err := s.orgFor(ctx, nil)
	if err != nil {
		return nil, err
	}
	j, err := s.exports.Request(ctx, actor(ctx), exports.Subject{Kind: exports.SubjectUser, ID: p.UserID}, personal.OrgID)
	if err != nil {
		return nil, err
	}
	return api.ExportMe202JSONResponse(toAPIJob(j)), nil
}

// ExportOrg starts an export of an org's data (its owners and admins, or its admin keys).
func (s *Server) ExportOrg(ctx context.Context, req api.ExportOrgRequestObject) (api.ExportOrgResponseObject, error) {
	if err := s.exportsReady(); err != nil {
		return nil, err
	}
	access, err := s.adminOrg(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	j, err := s.exports.Request(ctx, actor(ctx), exports.Subject{Kind: exports.SubjectOrg, ID: access.OrgID}, access.OrgID)
	if err != nil {
		return nil, err
	}
	return api.ExportOrg202JSONResponse(toAPIJob(j)), nil
}

// DownloadExport serves an export's archive once, to whoever holds its signed link.
func (s *Server) DownloadExport(ctx context.Context, req api.DownloadExportRequestObject) (api.DownloadExportResponseObject, error) {
	if err := s.exportsReady(); err != nil {
		return nil, err
	}
	a, err := s.exports.Download(ctx, actor(ctx), req.Id, req.Params.Token)
	if err != nil {
		return nil, err
	}
	disposition := fmt.Sprintf("attachment; filename=%q", a.Filename)
	// The generated response closes the archive once sent, which deletes its bytes.
	return api.DownloadExport200ApplicationzipResponse{Body: a, ContentLength: a.Size,
		Headers: api.DownloadExport200ResponseHeaders{ContentDisposition: &disposition}}, nil
}

// GetExport returns an export with its link to its requester (a user's) or to the org's
// owners and admins (an org's); API keys are refused.
func (s *Server) GetExport(ctx context.Context, req api.GetExportRequestObject) (api.GetExportResponseObject, error) {
	if err := s.exportsReady(); err != nil {
		return nil, err
	}
	p, _ := principalFrom(ctx)
	if p.Key != nil {
		return nil, errs.E(errs.PermissionDenied, "An export's link is its requester's: sign in as the user (or an owner or admin of the org).")
	}
	e, err := s.exports.Get(ctx, p.UserID, req.Id)
	if err != nil {
		return nil, err
	}
	return api.GetExport200JSONResponse(toAPIExport(e)), nil
}

func toAPIExport(e exports.Export) api.DataExport {
	out := api.DataExport{Id: e.ID, Subject: api.DataExportSubject(e.Subject), OrgId: e.OrgID, JobId: e.JobID, State: api.DataExportState(e.State),
		Size: e.Size, ExpiresAt: e.ExpiresAt, CreatedAt: e.CreatedAt, FinishedAt: e.FinishedAt, DownloadedAt: e.DownloadedAt}
	if e.SHA256 != "" {
		out.Sha256 = &e.SHA256
	}
	if e.DownloadURL != "" {
		out.DownloadUrl = &e.DownloadURL
	}
	return out
}
