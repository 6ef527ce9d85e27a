// Package worker declares Kiln's own job kinds (conversation titles, housekeeping) and
// runs the job runtime with the periodic housekeeping.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// Config configures a Worker.
type Config struct {
	// HousekeepingInterval is how often a housekeeping job is created.
	HousekeepingInterval time.Duration
}

// Queue returns the name of the deployment's default queue.
func Queue(env string) string { return env + ".default" }

// Worker runs the job runtime (relay, handlers, reconciliation) and creates a
// housekeeping job every interval.
type Worker struct {
	cfg  Config
	jobs *jobs.Service
	reg  *jobs.Registry
	st   *store.Store
	log  *slog.Logger
	now  func() time.Time
}

// New returns a Worker running svc; housekeeping jobs are created through reg in st.
func New(svc *jobs.Service, reg *jobs.Registry, st *store.Store, cfg Config, log *slog.Logger) *Worker {
	return &Worker{cfg: cfg, jobs: svc, reg: reg, st: st, log: log, now: time.Now}
}

// Run runs until ctx is done, then waits for running jobs (up to the shutdown timeout).
func (w *Worker) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = w.jobs.Run(ctx) })
	if _, ok := w.reg.Kind(KindHousekeeping.Name); ok && w.cfg.HousekeepingInterval > 0 {
		wg.Go(func() { w.housekeeping(ctx) })
	}
	wg.Wait()
	return err
}

// housekeeping creates one housekeeping job per interval: the interval's start is its
// unique key, so replicas that all tick create one job between them.
func (w *Worker) housekeeping(ctx context.Context) {
	t := time.NewTicker(w.cfg.HousekeepingInterval)
	defer t.Stop()
	for {
		if err := w.EnqueueHousekeeping(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("create housekeeping job", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// EnqueueHousekeeping creates the housekeeping job of the current interval, unless it exists.
func (w *Worker) EnqueueHousekeeping(ctx context.Context) error {
	now := w.now().UTC()
	slot := now.Truncate(w.cfg.HousekeepingInterval)
	return w.st.InTx(ctx, func(q *db.Queries) error {
		_, err := w.reg.Enqueue(ctx, q, now, jobs.New{Kind: KindHousekeeping.Name, Payload: PurgeExpiredPayload{},
			UniqueKey: slot.Format(time.RFC3339)})
		if err != nil {
			return fmt.Errorf("create housekeeping job: %w", err)
		}
		return nil
	})
}

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
