// Package jobs runs background work that cannot be lost. PostgreSQL is the source of
// truth: a job is a row written in the same transaction as the change that asks for it (a
// transactional outbox), so a rolled-back change leaves no job and a committed one is never
// lost. A relay hands committed jobs to Asynq, a reconciliation sweep re-enqueues jobs
// whose task Asynq no longer has, and handlers are idempotent by job id.
//
// Each kind of job is declared once, in a Registry, with its payload type, retry policy,
// timeout, queue and uniqueness window.
package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// State is where a job is in its life.
type State string

// The job states. Succeeded, Failed and Cancelled are final (a retry starts a new run).
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// Final reports whether s is a final state.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Progress is how far a running job has come.
type Progress struct {
	Done    int64
	Total   int64 // 0: unknown
	Message string
}

// Job is one job as stored.
type Job struct {
	ID          uuid.UUID
	OrgID       *uuid.UUID // nil: system work
	Kind        string
	Queue       string
	State       State
	Payload     json.RawMessage
	Progress    Progress
	Attempts    int
	MaxAttempts int
	LastError   string
	Result      json.RawMessage // nil until it succeeded (and may stay nil)
	CreatedBy   *uuid.UUID      // the user who asked for it
	APIKeyID    *uuid.UUID      // or the API key
	UniqueKey   string
	Run         int // 1, then one more per retry of a failed or cancelled job
	// TaskID is the Asynq task id the job runs under (its id for a first run).
	TaskID            string
	RunAt             time.Time
	EnqueuedAt        *time.Time // nil while it waits in the outbox
	HeartbeatAt       *time.Time
	CancelRequestedAt *time.Time
	CreatedAt         time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
	UpdatedAt         time.Time
	// traceContext is the W3C trace context the job was created in (JSON), nil outside a
	// trace: its runs' spans continue that trace.
	traceContext []byte
}

// Backoff is a retry policy's delay: full jitter over an exponential ceiling, so the
// retries of many jobs failing at once spread out. The n-th retry (n ≥ 1) waits a random
// time in [0, min(Max, Base·2^(n-1))].
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Kind declares one kind of job. Every field but Name has a default and can be overridden
// in config (jobs.kinds.<name>.*).
type Kind struct {
	// Name is the kind's stable name, e.g. "email.send" (^[a-z][a-z0-9_.:-]{0,63}$).
	Name string
	// Queue is the Asynq queue (without the deployment prefix). Default "default".
	Queue string
	// MaxAttempts is how many times it runs before it fails for good. Default 5.
	MaxAttempts int
	// Backoff is the delay between attempts. Default 10 s base, 10 min max.
	Backoff Backoff
	// Timeout bounds one attempt. Default 10 min.
	Timeout time.Duration
	// Unique is how long a job created with a unique key stands for every job of this kind
	// created later with the same key. 0: 24 h.
	Unique time.Duration
}

// Handler runs one attempt of a job. It must be idempotent by job id: an attempt can be
// repeated after a crash. A returned result (JSON-encoded) is stored when the job
// succeeds; an error wrapped with Permanent fails the job at once, any other error is
// retried while attempts remain.
type Handler func(ctx context.Context, run *Run) (result any, err error)

// Run is what a handler gets of the job it runs: the job as it was when the attempt
// started, and a way to report progress (stored, and published to the job's event
// stream). The runtime builds it.
type Run struct {
	Job
	// report stores and publishes progress; set by the runtime.
	report func(ctx context.Context, p Progress) error
}

// Report records the job's progress; followers of its events see it at once.
func (r *Run) Report(ctx context.Context, p Progress) error {
	if r.report == nil {
		return nil
	}
	return r.report(ctx, p)
}

// errPermanent marks an error that no retry can fix.
var errPermanent = errors.New("permanent job failure")

// Permanent wraps err so that the job fails at once, without further attempts.
func Permanent(err error) error { return fmt.Errorf("%w: %w", err, errPermanent) }

// IsPermanent reports whether err was wrapped with Permanent.
func IsPermanent(err error) bool { return errors.Is(err, errPermanent) }

// registered is a kind with its handler and its end hook.
type registered struct {
	Kind
	handle   Handler
	finished Finished // nil: none
}

// Registry is the one list of job kinds; build it at start, before the first Enqueue.
type Registry struct {
	kinds map[string]registered
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]registered{}} }

// Register declares kind k with a handler taking its payload decoded as P. A payload
// that does not decode fails the job at once. Registering a name twice panics: it is a
// programming error found at start.
func Register[P any](r *Registry, k Kind, fn func(ctx context.Context, run *Run, payload P) (any, error)) {
	if _, dup := r.kinds[k.Name]; dup {
		panic("jobs: kind registered twice: " + k.Name)
	}
	r.kinds[k.Name] = registered{Kind: withDefaults(k), handle: func(ctx context.Context, run *Run) (any, error) {
		var p P
		if err := json.Unmarshal(run.Payload, &p); err != nil {
			return nil, Permanent(fmt.Errorf("decode %s payload: %w", k.Name, err))
		}
		return fn(ctx, run, p)
	}}
}

// OnFinished sets the hook told, inside the transaction that ends it, of the end of every
// job of the registered kind name (succeeded, failed for good, or cancelled), after the
// Service's own Finished hook: how a kind's owner learns that its last attempt failed.
// An unknown name panics, as Register's mistakes do.
func (r *Registry) OnFinished(name string, fn Finished) {
	k, ok := r.kinds[name]
	if !ok {
		panic("jobs: OnFinished of an unregistered kind: " + name)
	}
	k.finished = fn
	r.kinds[name] = k
}

// Override replaces the settings of a registered kind with the non-zero fields of o
// (config's jobs.kinds.<name>). An unknown name is an error naming it.
func (r *Registry) Override(name string, o Kind) error {
	k, ok := r.kinds[name]
	if !ok {
		return fmt.Errorf("jobs.kinds.%s: no such job kind (known: %v)", name, r.Names())
	}
	if o.Queue != "" {
		k.Queue = o.Queue
	}
	if o.MaxAttempts > 0 {
		k.MaxAttempts = o.MaxAttempts
	}
	if o.Backoff.Base > 0 {
		k.Backoff.Base = o.Backoff.Base
	}
	if o.Backoff.Max > 0 {
		k.Backoff.Max = o.Backoff.Max
	}
	if o.Timeout > 0 {
		k.Timeout = o.Timeout
	}
	if o.Unique > 0 {
		k.Unique = o.Unique
	}
	r.kinds[name] = k
	return nil
}

// Names lists the registered kinds, sorted.
func (r *Registry) Names() []string { return slices.Sorted(maps.Keys(r.kinds)) }

// Kind returns the settings of a registered kind.
func (r *Registry) Kind(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k.Kind, ok
}

func withDefaults(k Kind) Kind {
	if k.Queue == "" {
		k.Queue = "default"
	}
	if k.MaxAttempts == 0 {
		k.MaxAttempts = 5
	}
	if k.Backoff.Base == 0 {
		k.Backoff.Base = 10 * time.Second
	}
	if k.Backoff.Max == 0 {
		k.Backoff.Max = 10 * time.Minute
	}
	if k.Timeout == 0 {
		k.Timeout = 10 * time.Minute
	}
	if k.Unique == 0 {
		k.Unique = 24 * time.Hour
	}
	return k
}

// New is a job to create.
type New struct {
	Kind      string
	OrgID     *uuid.UUID
	CreatedBy *uuid.UUID
	APIKeyID  *uuid.UUID
	// Payload is JSON-encoded into the job; it is the handler's P.
	Payload any
	// UniqueKey, when set, makes the job stand for every job of its kind created with the
	// same key within the kind's Unique window: Enqueue returns the existing one.
	UniqueKey string
	// RunAt delays the job; zero: now.
	RunAt time.Time
}

// Enqueue creates a job inside q's transaction: it reaches a worker once that transaction
// commits, and never if it rolls back. With a unique key already taken inside its window
// it returns the existing job. An unregistered kind is an invalid_request error.
func (r *Registry) Enqueue(ctx context.Context, q *db.Queries, now time.Time, n New) (Job, error) {
	k, ok := r.kinds[n.Kind]
	if !ok {
		return Job{}, errs.E(errs.Invalid, "unknown job kind %q", n.Kind)
	}
	payload, err := json.Marshal(n.Payload)
	if err != nil {
		return Job{}, fmt.Errorf("encode %s payload: %w", n.Kind, err)
	}
	var uniqueKey pgtype.Text
	var uniqueUntil *time.Time
	if n.UniqueKey != "" {
		if err := q.LockJobKey(ctx, db.LockJobKeyParams{Kind: n.Kind, UniqueKey: n.UniqueKey}); err != nil {
			return Job{}, fmt.Errorf("lock job key: %w", err)
		}
		row, err := q.GetUniqueJob(ctx, db.GetUniqueJobParams{Kind: n.Kind, UniqueKey: pgtype.Text{String: n.UniqueKey, Valid: true}, Now: &now})
		if err == nil {
			return toJob(row), nil
		}
		if errs.CodeOf(store.Translate(err)) != errs.NotFound {
			return Job{}, fmt.Errorf("find unique job: %w", err)
		}
		until := now.Add(k.Unique)
		uniqueKey, uniqueUntil = pgtype.Text{String: n.UniqueKey, Valid: true}, &until
	}
	runAt := n.RunAt
	if runAt.IsZero() {
		runAt = now
	}
	row, err := q.CreateJob(ctx, db.CreateJobParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: store.NullUUID(n.OrgID), Kind: n.Kind, Queue: k.Queue,
		Payload: payload, MaxAttempts: int32(k.MaxAttempts), CreatedBy: store.NullUUID(n.CreatedBy), //nolint:gosec // at most 100 (config validation)
		ApiKeyID: store.NullUUID(n.APIKeyID), UniqueKey: uniqueKey, UniqueUntil: uniqueUntil,
		RunAt: runAt, CreatedAt: now, TraceContext: traceContext(ctx),
	})
	if err != nil {
		return Job{}, fmt.Errorf("create %s job: %w", n.Kind, store.Translate(err))
	}
	return toJob(row), nil
}

// toJob converts a row.
func toJob(r db.Job) Job {
	return Job{
		ID: r.ID, OrgID: store.UUIDPtr(r.OrgID), Kind: r.Kind, Queue: r.Queue, State: State(r.State),
		Payload:  json.RawMessage(r.Payload),
		Progress: Progress{Done: r.ProgressDone, Total: r.ProgressTotal, Message: r.ProgressMessage},
		Attempts: int(r.Attempts), MaxAttempts: int(r.MaxAttempts), Result: nilIfEmpty(r.Result),
		LastError: r.LastError, CreatedBy: store.UUIDPtr(r.CreatedBy), APIKeyID: store.UUIDPtr(r.ApiKeyID),
		UniqueKey: r.UniqueKey.String, Run: int(r.Run), TaskID: r.TaskID,
		RunAt: r.RunAt, EnqueuedAt: r.EnqueuedAt, HeartbeatAt: r.HeartbeatAt, CancelRequestedAt: r.CancelRequestedAt,
		CreatedAt: r.CreatedAt, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, UpdatedAt: r.UpdatedAt,
		traceContext: r.TraceContext,
	}
}

// Finished is told, inside the transaction that ends a job (succeeded, failed for good,
// or cancelled), that it ended; an error rolls that transaction back and the end is
// tried again. The notification center uses it to tell a long job's creator.
type Finished func(ctx context.Context, q *db.Queries, j Job) error

func nilIfEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}
