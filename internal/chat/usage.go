package chat

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// Account is who a model call is accounted to, and the request that made it.
type Account struct {
	Org       uuid.UUID
	User      uuid.UUID // zero for an API key's call
	APIKey    uuid.UUID // zero for a user's call
	RequestID string
}

// UsageRecord is the usage record of one call, however it ended. ctx is the call's own: a
// call cancelled (its caller went away or asked) is recorded as cancelled, while a passed
// deadline is an error.
func UsageRecord(ctx context.Context, a Account, endpoint, alias string, start time.Time, res *Result, err error, prompt *usage.PromptUse) usage.Record {
	rec := usage.Record{
		OrgID: a.Org, UserID: a.User, APIKeyID: a.APIKey, RequestID: a.RequestID,
		Endpoint: endpoint, Alias: alias, Status: usage.StatusOK, Latency: time.Since(start), At: start.UTC(),
		Prompt: prompt,
	}
	if res != nil {
		rec.Provider, rec.Model = res.Served.Target.Provider, res.Served.Target.Model
		rec.Usage, rec.CostUSD, rec.TTFT, rec.Attempts = res.Usage, res.Cost, res.TTFT, res.Attempts
		rec.Cached = res.Cache == CacheHit
	}
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.Canceled):
		rec.Status = usage.StatusCancelled
	default:
		rec.Status, rec.ErrorCode = usage.StatusError, string(errs.CodeOf(err))
		if ue, ok := errors.AsType[*llm.Error](err); ok {
			rec.ErrorCode = string(ue.Classify().Code)
		}
	}
	return rec
}
