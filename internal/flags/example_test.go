package flags_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// One Evaluator per process, listening for other replicas' changes for as long as the
// process runs; handlers only call Enabled.
func ExampleEvaluator() {
	var (
		ctx = context.Background()
		st  *store.Store          // from store.New
		rdb redis.UniversalClient // from redisclient.Open
	)
	ff := flags.New(st, rdb, redisclient.Keyspace{Env: "production"},
		map[string]bool{"chat.streaming_v2": false}, time.Minute, slog.Default(), time.Now)
	go ff.Run(ctx) //nolint:errcheck // in Kiln, run by the composition root's errgroup

	orgID, userID := uuid.New(), uuid.New() // from the authenticated request
	if ff.Enabled(ctx, "chat.streaming_v2", flags.Subject{OrgID: orgID, UserID: userID}) {
		// serve the new behaviour
	}
}
