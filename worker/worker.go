// Package worker declares Kiln's own job kinds (conversation titles, housekeeping); the
// job runtime (internal/jobs) runs them, and housekeeping runs on a built-in schedule.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kilnhq/kiln/internal/jobs"
)

// Queue returns the name of the deployment's default queue.
func Queue(env string) string { return env + ".default" }

// KindHousekeeping is the periodic job that deletes expired rows.
var KindHousekeeping = jobs.Kind{Name: "housekeeping.purge_expired", MaxAttempts: 3, Timeout: 10 * time.Minute,
	Backoff: jobs.Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}}

// PurgeExpiredPayload is the payload of KindHousekeeping.
type PurgeExpiredPayload struct {
	// Only, when set, names the purgers to run; all run otherwise.
	Only []string `json:"only,omitempty"`
}

// Purger deletes one kind of expired row and says how many it deleted.
type Purger struct {
	Name  string
	Purge func(ctx context.Context) (int64, error)
}

// RegisterHousekeeping declares KindHousekeeping, running purgers; its result is the rows
// each purger deleted.
func RegisterHousekeeping(r *jobs.Registry, purgers []Purger, log *slog.Logger) {
	jobs.Register(r, KindHousekeeping, func(ctx context.Context, _ *jobs.Run, p PurgeExpiredPayload) (any, error) {
		return purge(ctx, purgers, p, log)
	})
}

func purge(ctx context.Context, purgers []Purger, p PurgeExpiredPayload, log *slog.Logger) (map[string]int64, error) {
	wanted := map[string]bool{}
	for _, name := range p.Only {
		wanted[name] = true
	}
	out := map[string]int64{}
	for _, pg := range purgers {
		if len(wanted) > 0 && !wanted[pg.Name] {
			continue
		}
		n, err := pg.Purge(ctx)
		if err != nil {
			return out, fmt.Errorf("purge %s: %w", pg.Name, err)
		}
		out[pg.Name] = n
		log.InfoContext(ctx, "purged expired rows", "purger", pg.Name, "rows", n)
	}
	return out, nil
}
