// Package worker runs Kiln's background tasks on Asynq: task types, payloads, handlers
// and the scheduler of periodic tasks.
package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Config configures a Worker.
type Config struct {
	// Env isolates this deployment's queues from others on the same Redis.
	Env                  string
	Concurrency          int
	HousekeepingInterval time.Duration
}

// Queue returns the name of the deployment's default queue.
func Queue(env string) string { return env + ".default" }

// Worker processes tasks and enqueues the periodic ones.
type Worker struct {
	cfg       Config
	log       *slog.Logger
	server    *asynq.Server
	scheduler *asynq.Scheduler
	mux       *asynq.ServeMux
}

// New builds a worker on rdb; purgers are run by the periodic housekeeping task.
func New(rdb redis.UniversalClient, cfg Config, log *slog.Logger, purgers []Purger) (*Worker, error) {
	w := &Worker{cfg: cfg, log: log, mux: asynq.NewServeMux()}
	w.server = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:     cfg.Concurrency,
		Queues:          map[string]int{Queue(cfg.Env): 1},
		Logger:          asynqLogger{log},
		ShutdownTimeout: 10 * time.Second,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			log.ErrorContext(ctx, "task failed", "type", t.Type(), "error", err)
		}),
	})
	w.scheduler = asynq.NewSchedulerFromRedisClient(rdb, &asynq.SchedulerOpts{Logger: asynqLogger{log}})
	w.mux.Handle(TypePurgeExpired, purgeHandler{purgers: purgers, log: log})

	task, err := NewPurgeExpiredTask()
	if err != nil {
		return nil, err
	}
	// Unique: with several replicas scheduling, one run per interval is enqueued.
	if _, err := w.scheduler.Register(fmt.Sprintf("@every %s", cfg.HousekeepingInterval), task,
		asynq.Queue(Queue(cfg.Env)), asynq.Unique(cfg.HousekeepingInterval), asynq.MaxRetry(3)); err != nil {
		return nil, fmt.Errorf("schedule housekeeping: %w", err)
	}
	return w, nil
}

// Handle registers the handler of a task type; call it before Run.
func (w *Worker) Handle(taskType string, h asynq.Handler) { w.mux.Handle(taskType, h) }

// Run processes tasks until ctx is done, then waits for running tasks (up to the
// shutdown timeout) and returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.server.Start(w.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	if err := w.scheduler.Start(); err != nil {
		w.server.Shutdown()
		return fmt.Errorf("start scheduler: %w", err)
	}
	w.log.InfoContext(ctx, "worker started", "queue", Queue(w.cfg.Env), "concurrency", w.cfg.Concurrency)
	<-ctx.Done()
	w.scheduler.Shutdown()
	w.server.Shutdown()
	w.log.Info("worker stopped")
	return nil
}

// TypePurgeExpired is the periodic housekeeping task that deletes expired rows.
const TypePurgeExpired = "housekeeping:purge_expired"

// PurgeExpiredPayload is the payload of TypePurgeExpired.
type PurgeExpiredPayload struct {
	// Only, when set, names the purgers to run; all run otherwise.
	Only []string `json:"only,omitempty"`
}

// NewPurgeExpiredTask returns a housekeeping task running every purger.
func NewPurgeExpiredTask(only ...string) (*asynq.Task, error) {
	b, err := json.Marshal(PurgeExpiredPayload{Only: only})
	if err != nil {
		return nil, fmt.Errorf("encode purge payload: %w", err)
	}
	return asynq.NewTask(TypePurgeExpired, b), nil
}

// Purger deletes one kind of expired row and says how many it deleted.
type Purger struct {
	Name  string
	Purge func(ctx context.Context) (int64, error)
}

type purgeHandler struct {
	purgers []Purger
	log     *slog.Logger
}

// ProcessTask runs the purgers; an undecodable payload is not retried.
func (h purgeHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p PurgeExpiredPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode purge payload: %w: %w", err, asynq.SkipRetry)
	}
	wanted := map[string]bool{}
	for _, name := range p.Only {
		wanted[name] = true
	}
	for _, pg := range h.purgers {
		if len(wanted) > 0 && !wanted[pg.Name] {
			continue
		}
		n, err := pg.Purge(ctx)
		if err != nil {
			return fmt.Errorf("purge %s: %w", pg.Name, err)
		}
		h.log.InfoContext(ctx, "purged expired rows", "purger", pg.Name, "rows", n)
	}
	return nil
}

// asynqLogger routes Asynq's logs into slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) {
	msg := fmt.Sprint(args...)
	// A scheduler on a shared client reports, as an error, that it left the client open on
	// every shutdown (hibiken/asynq#1068); the client is ours to close, so it is not one.
	if strings.Contains(msg, "redis connection is shared") {
		l.log.Debug(msg, "component", "asynq")
		return
	}
	l.log.Error(msg, "component", "asynq")
}
func (l asynqLogger) Fatal(args ...any) {
	l.log.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}
