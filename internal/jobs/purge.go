package jobs

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
)

// PurgeFinished deletes the jobs (their rows, results and payloads), deleted or not, that
// ended longer ago than their org's retention for their state (def's FinishedJobs for
// succeeded and cancelled ones, FailedJobs, kept longer for the failed-job audit, for
// failed ones, where the org set none), in batches, and says how many it deleted. Queued
// and running jobs are never deleted.
func PurgeFinished(ctx context.Context, st *store.Store, now time.Time, def retention.Days) (int64, error) {
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return st.PurgeFinishedJobs(ctx, db.PurgeFinishedJobsParams{
			Now: now, FinishedDays: int32(def.FinishedJobs), FailedDays: int32(def.FailedJobs), MaxRows: limit, //nolint:gosec // bounded by retention.Days.Check
		})
	})
}
