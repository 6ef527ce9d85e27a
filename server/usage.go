package server

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// GetUsage reports the org's model usage. A key without billing:read sees its own calls.
func (s *Server) GetUsage(ctx context.Context, req api.GetUsageRequestObject) (api.GetUsageResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	f := usage.Filter{OrgID: access.OrgID, From: now.AddDate(0, 0, -30), To: now, GroupBy: "day"}
	if req.Params.From != nil {
		f.From = req.Params.From.UTC()
	}
	if req.Params.To != nil {
		f.To = req.Params.To.UTC()
	}
	if !f.From.Before(f.To) {
		return nil, errs.InvalidFields("invalid window", []errs.FieldError{{Pointer: "/query/from", Message: "must be before to"}})
	}
	if req.Params.Model != nil {
		f.Alias = *req.Params.Model
	}
	if req.Params.ApiKeyId != nil {
		f.APIKeyID = *req.Params.ApiKeyId
	}
	if req.Params.GroupBy != nil {
		f.GroupBy = string(*req.Params.GroupBy)
	}
	if p, ok := principalFrom(ctx); ok && p.Key != nil && !apikey.Has(p.Key.Scopes, apikey.ScopeBillingRead) {
		if f.APIKeyID != uuid.Nil && f.APIKeyID != p.Key.ID {
			return nil, errs.E(errs.PermissionDenied, "A key without the billing:read scope sees only its own usage.")
		}
		f.APIKeyID = p.Key.ID
	}
	buckets, total, err := s.llm.Usage.Report(ctx, f)
	if err != nil {
		return nil, err
	}
	out := api.GetUsage200JSONResponse{GroupBy: api.UsageReportGroupBy(f.GroupBy), From: f.From, To: f.To, Data: make([]api.UsageBucket, len(buckets)), Total: toAPIBucket(total)}
	for i, b := range buckets {
		out.Data[i] = toAPIBucket(b)
	}
	return out, nil
}

func toAPIBucket(b usage.Bucket) api.UsageBucket {
	return api.UsageBucket{
		Key: b.Key, Requests: b.Requests, Errors: b.Errors, CachedRequests: b.CachedRequests,
		PromptTokens: b.PromptTokens, CompletionTokens: b.CompletionTokens, CachedTokens: b.CachedTokens,
		CostUsd: b.CostUSD, LatencyMsAvg: b.LatencyMsAvg,
	}
}
