package jobs

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// How long ended jobs are kept (their rows, results and payloads) before housekeeping
// deletes them: succeeded and cancelled ones a week, failed ones a month, for the
// failed-job audit.
const (
	FinishedRetention = 7 * 24 * time.Hour
	FailedRetention   = 30 * 24 * time.Hour
)

// PurgeFinished deletes the jobs that ended past their retention, in batches, and says
// how many it deleted. Queued and running jobs are never deleted.
func PurgeFinished(ctx context.Context, st *store.Store, now time.Time) (int64, error) {
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return st.PurgeFinishedJobs(ctx, db.PurgeFinishedJobsParams{
			FinishedBefore: now.Add(-FinishedRetention), FailedBefore: now.Add(-FailedRetention), MaxRows: limit,
		})
	})
}
