package rag

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// The usage endpoints of the embedding calls knowledge bases make (GET /v1/usage).
const (
	UsageIngest   = "rag.ingest"
	UsageSearch   = "rag.search"
	UsageReindex  = "rag.reindex"
	UsageEvaluate = "rag.evaluate"
)

type usageEndpointKey struct{}

// withUsageEndpoint names what the embedding calls made in ctx are for.
func withUsageEndpoint(ctx context.Context, endpoint string) context.Context {
	return context.WithValue(ctx, usageEndpointKey{}, endpoint)
}

// UsageEndpointOf is the usage endpoint of an embedding call made in ctx (rag.search
// unless the service named another).
func UsageEndpointOf(ctx context.Context) string {
	if e, ok := ctx.Value(usageEndpointKey{}).(string); ok {
		return e
	}
	return UsageSearch
}

// GatewayEmbedder embeds through the LLM gateway, with the org's own provider keys when
// it has them, and records every call in Usage (when set) as the org's, under the
// endpoint the call was for (rag.ingest, rag.search, rag.reindex, rag.evaluate).
type GatewayEmbedder struct {
	Gateway *llm.Gateway
	Usage   *usage.Recorder
}

// Embed asks model (an alias) for vectors of dims dimensions.
func (e GatewayEmbedder) Embed(ctx context.Context, org uuid.UUID, model string, dims int, texts []string) ([][]float32, error) {
	start := time.Now()
	res, served, err := e.Gateway.Embed(llm.WithOrg(ctx, org), model, &llm.EmbedRequest{Input: texts, Dimensions: &dims})
	if e.Usage != nil {
		rec := usage.Record{
			OrgID: org, RequestID: logging.RequestID(ctx), Endpoint: UsageEndpointOf(ctx), Alias: model,
			Provider: served.Target.Provider, Model: served.Target.Model, Status: usage.StatusOK,
			Latency: time.Since(start), Attempts: len(served.Attempts), At: start.UTC(),
		}
		switch {
		case err == nil:
			rec.Usage, rec.CostUSD = res.Usage, served.Target.Price.Cost(res.Usage)
		case errors.Is(ctx.Err(), context.Canceled):
			rec.Status = usage.StatusCancelled
		default:
			rec.Status, rec.ErrorCode = usage.StatusError, string(errs.CodeOf(err))
			if ue, ok := errors.AsType[*llm.Error](err); ok {
				rec.ErrorCode = string(ue.Classify().Code)
			}
		}
		e.Usage.Record(rec)
	}
	if err != nil {
		return nil, err
	}
	return res.Vectors, nil
}
