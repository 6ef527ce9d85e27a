package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/retention"
)

// GetOrgRetention returns an org's retention settings.
func (s *Server) GetOrgRetention(ctx context.Context, req api.GetOrgRetentionRequestObject) (api.GetOrgRetentionResponseObject, error) {
	access, err := s.adminOrg(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	r, err := s.retention.Get(ctx, access.OrgID)
	if err != nil {
		return nil, err
	}
	return api.GetOrgRetention200JSONResponse(toAPIOrgRetention(r)), nil
}

// SetOrgRetention replaces an org's retention settings.
func (s *Server) SetOrgRetention(ctx context.Context, req api.SetOrgRetentionRequestObject) (api.SetOrgRetentionResponseObject, error) {
	access, err := s.adminOrg(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	b := req.Body
	r, err := s.retention.Set(ctx, access.OrgID, retention.Settings{
		DeletedPrompts: b.DeletedPromptsDays, DeletedConversations: b.DeletedConversationsDays,
		FinishedJobs: b.FinishedJobsDays, FailedJobs: b.FailedJobsDays, Usage: b.UsageDays,
	}, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.SetOrgRetention200JSONResponse(toAPIOrgRetention(r)), nil
}

func toAPIOrgRetention(r retention.Org) api.OrgRetention {
	set, eff := r.Settings, r.Effective
	out := api.OrgRetention{
		Settings: api.RetentionSettings{
			DeletedPromptsDays: set.DeletedPrompts, DeletedConversationsDays: set.DeletedConversations,
			FinishedJobsDays: set.FinishedJobs, FailedJobsDays: set.FailedJobs, UsageDays: set.Usage,
		},
		Effective: api.EffectiveRetention{
			DeletedPromptsDays: eff.DeletedPrompts, DeletedConversationsDays: eff.DeletedConversations,
			FinishedJobsDays: eff.FinishedJobs, FailedJobsDays: eff.FailedJobs,
		},
		UpdatedAt: r.UpdatedAt,
	}
	if eff.Usage > 0 {
		out.Effective.UsageDays = &eff.Usage
	}
	return out
}
