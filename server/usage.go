package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// GetUsage reports the org's model usage. A key without billing:read sees its own calls.
func (s *Server) GetUsage(ctx context.Context, req api.GetUsageRequestObject) (api.GetUsageResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	q := usage.Query{From: req.Params.From, To: req.Params.To, Alias: orZero(req.Params.Model),
		APIKeyID: orZero(req.Params.ApiKeyId), GroupBy: string(orZero(req.Params.GroupBy))}
	if p, ok := principalFrom(ctx); ok && p.Key != nil && !apikey.Has(p.Key.Scopes, apikey.ScopeBillingRead) {
		q.OwnKey = &p.Key.ID
	}
	r, err := s.llm.Usage.Query(ctx, access.OrgID, q)
	if err != nil {
		return nil, err
	}
	out := api.GetUsage200JSONResponse{GroupBy: api.UsageReportGroupBy(r.Filter.GroupBy), From: r.Filter.From, To: r.Filter.To,
		Data: make([]api.UsageBucket, len(r.Buckets)), Total: toAPIBucket(r.Total)}
	for i, b := range r.Buckets {
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
