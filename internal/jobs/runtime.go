package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/group"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
)

// The event types of a job's stream.
const (
	EventProgress  = "job.progress"
	EventSucceeded = "job.succeeded"
	EventFailed    = "job.failed"
	EventCancelled = "job.cancelled"
)

// notifyChannel is the channel the jobs table's trigger notifies on commit.
const notifyChannel = "kiln_jobs"

// reconcileLock is the advisory lock (session level, on a dedicated connection) held by
// the one replica that reconciles.
const reconcileLock = 7243012

// staleBeats is how many heartbeats a running job may miss before it is an orphan.
const staleBeats = 3

// Delay returns the wait before retry n (n ≥ 1): a random time in [0, min(Max, Base·2^(n-1))].
func (b Backoff) Delay(n int) time.Duration {
	ceiling := b.Max
	if n < 1 {
		n = 1
	}
	if n <= 62 {
		if d := b.Base << (n - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1) //nolint:gosec // jitter, not a secret
}

// Config configures a Service's worker side.
type Config struct {
	// Env prefixes the Asynq queues: a kind's queue q is "<env>.q".
	Env string
	// Concurrency is how many jobs one process runs at once; 0: no handlers run here
	// (the relay and the reconciler still do).
	Concurrency int
	// PollInterval is how often the relay looks for due jobs without a notification.
	PollInterval time.Duration
	// ReconcileInterval is how often the leader repairs Asynq against PostgreSQL.
	ReconcileInterval time.Duration
	// Heartbeat is how often a running job's heartbeat is stored; a job that missed three
	// is an orphan.
	Heartbeat time.Duration
	// ProgressInterval bounds how often a job's progress is written to PostgreSQL (every
	// report is published to its followers at once).
	ProgressInterval time.Duration
	// BatchSize is how many jobs the relay hands over per transaction.
	BatchSize int
	// ShutdownTimeout is how long running jobs get to end when the worker stops.
	ShutdownTimeout time.Duration
	// Retention holds the deployment's default retention of ended jobs (config
	// retention.*), which bounds the restore of a deleted job; zero fields take
	// retention.Builtin's.
	Retention retention.Days
}

func (c Config) withDefaults() Config {
	if c.Retention.FinishedJobs <= 0 {
		c.Retention.FinishedJobs = retention.Builtin.FinishedJobs
	}
	if c.Retention.FailedJobs <= 0 {
		c.Retention.FailedJobs = retention.Builtin.FailedJobs
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = 15 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = time.Second
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	return c
}

// Deps are what a Service works with.
type Deps struct {
	Registry *Registry
	Store    *store.Store
	Redis    redis.UniversalClient
	// Bus carries each run's events (stream "job:<id>:<run>") and its cancellation.
	Bus *streams.Bus
	// Finished, when set, is told of every job's end inside the transaction that ends it.
	Finished Finished
	Log      *slog.Logger
	Now      func() time.Time
	// Tracing, when set, makes a span of every attempt, in the trace the job was created in
	// (or a trace of its own); nil: tracing off.
	Tracing trace.TracerProvider
}

// Service runs jobs (relay, handlers, heartbeats, reconciliation: Run) and serves them
// to the API (Get, List, Cancel, Retry, Follow).
type Service struct {
	Deps
	cfg       Config
	client    *asynq.Client
	inspector *asynq.Inspector
	tracer    trace.Tracer // nil: tracing off

	// starts and ends group the attempts' starts and ends of concurrent handlers into one
	// statement each (docs/performance.md, Jobs).
	starts *group.Group[startCall, started]
	ends   *group.Group[endCall, *Job]

	mu      sync.Mutex
	running map[uuid.UUID]struct{} // attempts running in this process, for the heartbeat
	rt      *store.Store           // the runtime's pool while Run runs (runtimeQueries)
}

// NewService returns a Service; zero fields of cfg take the defaults.
func NewService(d Deps, cfg Config) *Service {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{
		Deps: d, cfg: cfg.withDefaults(),
		client:    asynq.NewClientFromRedisClient(d.Redis),
		inspector: asynq.NewInspectorFromRedisClient(d.Redis),
		running:   map[uuid.UUID]struct{}{},
	}
	if d.Tracing != nil {
		s.tracer = d.Tracing.Tracer(tracerName)
	}
	s.starts = group.New(maxGroup, s.startAttempts)
	s.ends = group.New(maxGroup, s.endAttempts)
	return s
}

// maxGroup bounds how many starts or ends one statement carries.
const maxGroup = 256

// Queue returns the Asynq queue of a kind's queue q.
func (s *Service) Queue(q string) string { return s.cfg.Env + "." + q }

// Queues lists the Asynq queues of every registered kind.
func (s *Service) Queues() []string {
	seen := map[string]bool{}
	var out []string
	for _, name := range s.Registry.Names() {
		k, _ := s.Registry.Kind(name)
		if q := s.Queue(k.Queue); !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}

// Inspector is the Asynq inspector of the Service's Redis (queue monitoring).
func (s *Service) Inspector() *asynq.Inspector { return s.inspector }

// StreamID is the event stream of run `run` of job id.
func StreamID(id uuid.UUID, run int) string { return "job:" + id.String() + ":" + strconv.Itoa(run) }

// Run runs the relay, the reconciler (when this replica leads) and, with a concurrency,
// the handlers, until ctx ends; running jobs then get the shutdown timeout to end.
func (s *Service) Run(ctx context.Context) error {
	closePool, err := s.openRuntimePool(ctx)
	if err != nil {
		return err
	}
	defer closePool()
	var srv *asynq.Server
	if s.cfg.Concurrency > 0 {
		queues := map[string]int{}
		for _, q := range s.Queues() {
			queues[q] = 1
		}
		if len(queues) == 0 {
			queues[s.Queue("default")] = 1
		}
		srv = asynq.NewServerFromRedisClient(s.Redis, asynq.Config{
			Concurrency:     s.cfg.Concurrency,
			Queues:          queues,
			Logger:          asynqLogger{s.Log},
			ShutdownTimeout: s.cfg.ShutdownTimeout,
			// An idle worker looks for tasks this often (Asynq's default, 1 s, would be
			// most of a job's latency); a check is one cheap Redis call.
			TaskCheckInterval: 100 * time.Millisecond,
			// Retries wait in Asynq's retry set, moved when due at this interval (default 5 s).
			DelayedTaskCheckInterval: s.cfg.PollInterval,
			RetryDelayFunc:           s.retryDelay,
			// A failed attempt is the job's business, recorded in PostgreSQL; Asynq's
			// failure count stays for queue monitoring.
			ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
				s.Log.DebugContext(ctx, "job attempt failed", "kind", t.Type(), "error", err)
			}),
		})
		if err := srv.Start(asynq.HandlerFunc(s.ProcessTask)); err != nil {
			return fmt.Errorf("start job handlers: %w", err)
		}
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { s.relay(bg) })
	wg.Go(func() { s.reconcile(bg) })
	wg.Go(func() { s.heartbeat(bg) })
	s.Log.InfoContext(ctx, "jobs started", "queues", s.Queues(), "concurrency", s.cfg.Concurrency)
	<-ctx.Done()
	if srv != nil {
		srv.Shutdown()
	}
	stop()
	wg.Wait()
	s.Log.Info("jobs stopped")
	return nil
}

// waitLock is the advisory lock an idle relay holds shared: the jobs table's trigger
// notifies only while some relay holds it (a NOTIFY serialises commits).
const waitLock = 7243013

// busyPoll is how soon a relay that found work looks again, without notifications.
const busyPoll = 10 * time.Millisecond

// relay hands committed, due jobs to Asynq. While it finds work it polls every busyPoll;
// idle, it asks for notifications (holding waitLock shared on a connection of its own)
// and waits for one, or for the poll interval in case one was missed.
func (s *Service) relay(ctx context.Context) {
	wake := make(chan struct{}, 1)
	go s.listen(ctx, wake)
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	var flag *pgx.Conn // holds waitLock while the relay waits
	defer func() {
		if flag != nil {
			_ = flag.Close(context.WithoutCancel(ctx))
		}
	}()
	drain := func() int {
		total := 0
		for {
			n, err := s.RelayOnce(ctx)
			total += n
			if err != nil {
				if ctx.Err() == nil {
					s.Log.Error("job relay", "error", err)
				}
				return total
			}
			if n < s.cfg.BatchSize {
				return total
			}
		}
	}
	for ctx.Err() == nil {
		if drain() > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(busyPoll):
			}
			continue
		}
		if flag == nil {
			c, err := pgx.ConnectConfig(ctx, s.Store.Pool.Config().ConnConfig.Copy())
			if err != nil && ctx.Err() == nil {
				s.Log.Warn("job relay: connect", "error", err)
			}
			flag = c
		}
		held := false
		if flag != nil {
			if _, err := flag.Exec(ctx, "SELECT pg_advisory_lock_shared($1)", waitLock); err != nil {
				_ = flag.Close(context.WithoutCancel(ctx))
				flag = nil
			} else {
				held = true
			}
		}
		// Jobs committed before the lock was held notified no one.
		if !held || drain() == 0 {
			select {
			case <-ctx.Done():
			case <-wake:
			case <-t.C:
			}
		}
		if held {
			if _, err := flag.Exec(ctx, "SELECT pg_advisory_unlock_shared($1)", waitLock); err != nil {
				_ = flag.Close(context.WithoutCancel(ctx))
				flag = nil
			}
		}
	}
}

// listen LISTENs on a dedicated connection and wakes the relay at each notification; it
// reconnects after an error, waking the relay for what it may have missed meanwhile.
func (s *Service) listen(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for delay := 100 * time.Millisecond; ctx.Err() == nil; {
		err := func() error {
			conn, err := pgx.ConnectConfig(ctx, s.Store.Pool.Config().ConnConfig.Copy())
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
				return err
			}
			delay = 100 * time.Millisecond
			signal()
			for {
				if _, err := conn.WaitForNotification(ctx); err != nil {
					return err
				}
				signal()
			}
		}()
		if ctx.Err() != nil {
			return
		}
		s.Log.Warn("job notifications: reconnecting", "error", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// runtimeQueries are the queries of the runtime's own writes (relay, start, end, heartbeat,
// progress): on a pool of their own while Run runs, so they never wait behind the API's
// connections, whose sessions commit without waiting for the WAL flush. A job's creation
// never goes through it: if PostgreSQL crashes before a flush, the last transitions are
// lost and the job runs again (queued again, or running with a stale heartbeat), which
// handlers, idempotent by job id, allow. Flushed, the two commits per run would cost two
// more disk flushes per job (docs/performance.md, Jobs).
func (s *Service) runtimeQueries() *store.Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rt != nil {
		return s.rt
	}
	return s.Store
}

// openRuntimePool opens the runtime's pool (see runtimeQueries).
func (s *Service) openRuntimePool(ctx context.Context) (func(), error) {
	cfg := s.Store.Pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	// A handler holds a connection only for its start and its end.
	cfg.MaxConns = int32(min(max(s.cfg.Concurrency/2+2, 4), 32)) //nolint:gosec // bounded
	cfg.MinConns = 0
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open the job runtime's pool: %w", err)
	}
	s.mu.Lock()
	s.rt = store.New(pool)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.rt = nil
		s.mu.Unlock()
		pool.Close()
	}, nil
}

// taskPayload is an Asynq task's payload: the job's id (the job itself is read from
// PostgreSQL).
type taskPayload struct {
	Job uuid.UUID `json:"job"`
}

// RelayOnce hands one batch of due jobs to Asynq and says how many it claimed. The batch is
// marked handed over, then enqueued; the jobs it could not enqueue are unmarked. A task id
// Asynq already has is the job already handed over.
func (s *Service) RelayOnce(ctx context.Context) (int, error) {
	now := s.Now().UTC()
	rows, err := s.runtimeQueries().ClaimOutbox(ctx, db.ClaimOutboxParams{Now: &now, MaxRows: int32(s.cfg.BatchSize)}) //nolint:gosec // bounded
	if err != nil {
		return 0, fmt.Errorf("claim outbox: %w", err)
	}
	// One enqueue is a Redis round trip: in parallel, a batch takes a few of them.
	var mu sync.Mutex
	var failed []uuid.UUID
	var errsSeen error
	var wg sync.WaitGroup
	sem := make(chan struct{}, relayParallelism)
	for _, r := range rows {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.enqueue(ctx, r); err != nil {
				mu.Lock()
				failed, errsSeen = append(failed, r.ID), err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		if uerr := s.runtimeQueries().UnmarkJobsEnqueued(context.WithoutCancel(ctx), failed); uerr != nil {
			errsSeen = errors.Join(errsSeen, fmt.Errorf("unmark jobs: %w", uerr))
		}
		return len(rows), fmt.Errorf("%d of %d jobs not enqueued: %w", len(failed), len(rows), errsSeen)
	}
	return len(rows), nil
}

// relayParallelism is how many enqueues into Asynq the relay has in flight.
const relayParallelism = 16

// enqueue puts job r's task into Asynq under its task id.
func (s *Service) enqueue(ctx context.Context, r db.Job) error {
	timeout := 10 * time.Minute
	if k, ok := s.Registry.Kind(r.Kind); ok {
		timeout = k.Timeout
	}
	payload, _ := json.Marshal(taskPayload{Job: r.ID}) //nolint:errchkjson // a uuid always encodes
	// Asynq may retry one more time than the attempts left: a retry after a lost lease
	// (counted by Asynq, maybe not by the job) must not archive a job with attempts left;
	// the handler decides when the job has failed for good.
	_, err := s.client.EnqueueContext(ctx, asynq.NewTask(r.Kind, payload),
		asynq.TaskID(r.TaskID), asynq.Queue(s.Queue(r.Queue)),
		asynq.MaxRetry(max(1, int(r.MaxAttempts-r.Attempts))),
		// The handler's own deadline is the kind's timeout; Asynq's is a backstop past the
		// time the end takes to store.
		asynq.Timeout(timeout+time.Minute))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue job %s: %w", r.ID, err)
	}
	return nil
}

// retryError carries the delay the job's backoff chose for its next attempt.
type retryError struct {
	delay time.Duration
	err   error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// retryDelay is Asynq's retry delay: the one the handler chose, else (a lost lease) the
// kind's backoff.
func (s *Service) retryDelay(n int, err error, t *asynq.Task) time.Duration {
	var re *retryError
	if errors.As(err, &re) {
		return re.delay
	}
	if k, ok := s.Registry.Kind(t.Type()); ok {
		return k.Backoff.Delay(n + 1)
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}

// ProcessTask runs one attempt of the job a task carries. A job already ended, or one
// another task now carries, is skipped: handlers run at least once, never twice at once.
func (s *Service) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var p taskPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("decode job task: %w: %w", err, asynq.SkipRetry)
	}
	k, ok := s.Registry.kinds[t.Type()]
	if !ok {
		// Maybe a replica of a newer version registered it: leave it to Asynq's retries.
		return fmt.Errorf("no handler for job kind %q", t.Type())
	}
	taskID, _ := asynq.GetTaskID(ctx)
	st, err := s.starts.Do(ctx, startCall{ctx: ctx, id: p.Job, taskID: taskID})
	if err != nil {
		return fmt.Errorf("start job %s: %w", p.Job, err)
	}
	if st.ctx == nil {
		return s.notStarted(ctx, p.Job)
	}
	defer st.stop()
	job, watched := st.job, st.ctx
	stream := StreamID(job.ID, job.Run)
	spanCtx, span := s.startRunSpan(watched, job)
	runCtx, cancel := context.WithTimeout(spanCtx, k.Timeout)
	defer cancel()

	s.mu.Lock()
	s.running[job.ID] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, job.ID)
		s.mu.Unlock()
	}()

	rep := &reporter{s: s, job: job, pub: s.Bus.Publisher(stream), progress: job.Progress}
	run := &Run{Job: job, report: rep.report}
	result, herr := safeHandle(runCtx, k.handle, run)

	end := attemptEnd{progress: rep.last()}
	switch {
	case herr == nil:
		end.state = Succeeded
		if result != nil {
			b, err := json.Marshal(result)
			if err != nil {
				end.state, end.err = Failed, fmt.Sprintf("encode result: %v", err)
				break
			}
			end.result = b
		}
	case errors.Is(context.Cause(watched), streams.ErrCancelled):
		end.state, end.err = Cancelled, "cancelled"
	case ctx.Err() != nil:
		// The worker is stopping: Asynq puts the task back; the job waits for it.
		end.state, end.err = Queued, "interrupted by a worker shutdown"
	case IsPermanent(herr) || job.Attempts >= job.MaxAttempts:
		end.state, end.err = Failed, herr.Error()
	default:
		end.state, end.err = Queued, herr.Error()
	}
	if errors.Is(herr, context.DeadlineExceeded) && runCtx.Err() != nil && end.state != Cancelled {
		end.err = fmt.Sprintf("timed out after %s", k.Timeout)
	}
	endRunSpan(span, end)
	ended, err := s.ends.Do(ctx, endCall{job: job, end: end})
	if err != nil {
		// The grouped statement failed (maybe another job's Finished hook): this end
		// alone, as it would be without company.
		ended, err = s.endAttempt(context.WithoutCancel(ctx), job, end)
	}
	if err != nil {
		// The row stays running; its heartbeat stops and the reconciler runs it again.
		return fmt.Errorf("end job %s: %w", job.ID, err)
	}
	if ended == nil {
		return nil // superseded: another attempt owns the job now
	}
	switch end.state {
	case Failed:
		return fmt.Errorf("job %s failed: %s: %w", job.ID, end.err, asynq.SkipRetry)
	case Queued:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &retryError{delay: k.Backoff.Delay(job.Attempts), err: herr}
	}
	return nil
}

// safeHandle runs the handler, turning a panic into a permanent failure.
func safeHandle(ctx context.Context, h Handler, run *Run) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = Permanent(fmt.Errorf("handler panicked: %v", r))
		}
	}()
	return h(ctx, run)
}

// notStarted handles a task whose job did not start: ended, carried by another task, or
// gone.
func (s *Service) notStarted(ctx context.Context, id uuid.UUID) error {
	row, err := s.Store.GetJob(ctx, id)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil // its org was deleted
	}
	if err != nil {
		return fmt.Errorf("read job %s: %w", id, err)
	}
	j := toJob(row)
	if j.State == Queued && j.CancelRequestedAt != nil {
		_, err := s.cancelQueued(ctx, j)
		return err
	}
	return nil
}

// startCall is a handler's request to start the attempt its task carries.
type startCall struct {
	ctx    context.Context // the handler's: its run's cancellation watch derives from it
	id     uuid.UUID
	taskID string
}

// started is a started attempt: the job as it started, the handler's context that a
// cancel of the run also ends, and stop, which ends that watch. A nil ctx: the job did
// not start (ended, carried by another task, or gone).
type started struct {
	job  Job
	ctx  context.Context
	stop func()
}

// startAttempts starts the attempts of calls in one statement and watches their runs'
// cancellation with one Redis round trip.
func (s *Service) startAttempts(ctx context.Context, calls []startCall) ([]started, error) {
	ids, taskIDs := make([]uuid.UUID, len(calls)), make([]string, len(calls))
	for i, c := range calls {
		ids[i], taskIDs[i] = c.id, c.taskID
	}
	rows, err := s.runtimeQueries().StartJobs(ctx, db.StartJobsParams{Now: ptr(s.Now().UTC()), Ids: ids, TaskIds: taskIDs})
	if err != nil {
		return nil, err
	}
	byID := make(map[uuid.UUID]db.Job, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	out := make([]started, len(calls))
	var parents []context.Context
	var streamIDs []string
	var at []int
	for i, c := range calls {
		r, ok := byID[c.id]
		if !ok || r.TaskID != c.taskID {
			continue
		}
		delete(byID, c.id) // the same task twice in a batch starts once
		out[i].job = toJob(r)
		parents, streamIDs, at = append(parents, c.ctx), append(streamIDs, StreamID(r.ID, int(r.Run))), append(at, i)
	}
	if len(at) > 0 {
		ctxs, stops := s.Bus.WatchAll(ctx, parents, streamIDs)
		for k, i := range at {
			out[i].ctx, out[i].stop = ctxs[k], stops[k]
		}
	}
	return out, nil
}

// attemptEnd is how an attempt ended.
type attemptEnd struct {
	state    State // Queued: to be retried
	result   json.RawMessage
	err      string
	progress Progress
}

// endCall is an attempt's end to store.
type endCall struct {
	job Job
	end attemptEnd
}

// endAttempt stores one attempt's end (endAttempts), trying a failing transaction three
// times. nil: the attempt was superseded.
func (s *Service) endAttempt(ctx context.Context, job Job, end attemptEnd) (*Job, error) {
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 200 * time.Millisecond)
		}
		var ended []*Job
		if ended, err = s.endAttempts(ctx, []endCall{{job: job, end: end}}); err == nil {
			return ended[0], nil
		}
	}
	return nil, err
}

// endAttempts stores the ends of attempts in one transaction, telling the Finished hook of
// each final one in it, then publishes their final events. ended[i] is calls[i]'s job as
// it ended, nil when that attempt was superseded.
func (s *Service) endAttempts(ctx context.Context, calls []endCall) ([]*Job, error) {
	var ended []*Job
	var final []Job
	err := s.runtimeQueries().InTx(ctx, func(q *db.Queries) error {
		p := db.EndJobAttemptsParams{Now: s.Now().UTC()}
		for _, c := range calls {
			e := c.end
			p.Ids, p.Attempts = append(p.Ids, c.job.ID), append(p.Attempts, int32(c.job.Attempts)) //nolint:gosec // small
			p.States, p.Results, p.LastErrors = append(p.States, string(e.state)), append(p.Results, e.result), append(p.LastErrors, e.err)
			p.ProgressDone, p.ProgressTotal = append(p.ProgressDone, e.progress.Done), append(p.ProgressTotal, e.progress.Total)
			p.ProgressMessages = append(p.ProgressMessages, e.progress.Message)
		}
		rows, err := q.EndJobAttempts(ctx, p)
		if err != nil {
			return err
		}
		byID := make(map[uuid.UUID]db.Job, len(rows))
		for _, r := range rows {
			byID[r.ID] = r
		}
		ended, final = make([]*Job, len(calls)), final[:0]
		for i, c := range calls {
			r, ok := byID[c.job.ID]
			if !ok || int(r.Attempts) != c.job.Attempts {
				continue
			}
			j := toJob(r)
			ended[i] = &j
			if !j.State.Final() {
				continue
			}
			final = append(final, j)
			if err := s.finished(ctx, q, j); err != nil {
				return fmt.Errorf("finished hook of job %s: %w", j.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("end job attempts: %w", err)
	}
	s.publishEnds(ctx, final)
	return ended, nil
}

// finished tells the Service's Finished hook, then the hook of j's kind, that j ended.
func (s *Service) finished(ctx context.Context, q *db.Queries, j Job) error {
	if s.Finished != nil {
		if err := s.Finished(ctx, q, j); err != nil {
			return err
		}
	}
	if k, ok := s.Registry.kinds[j.Kind]; ok && k.finished != nil {
		return k.finished(ctx, q, j)
	}
	return nil
}

// EndEvent is the data of a job's final event (job.succeeded, job.failed, job.cancelled).
type EndEvent struct {
	JobID    uuid.UUID       `json:"job_id"`
	State    State           `json:"state"`
	Attempts int             `json:"attempts"`
	Error    string          `json:"error,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Progress ProgressEvent   `json:"progress"`
}

// ProgressEvent is the data of a job.progress event.
type ProgressEvent struct {
	JobID   uuid.UUID `json:"job_id"`
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Message string    `json:"message"`
}

// endEvent is the final event of job j's current run.
func endEvent(j Job) (string, EndEvent) {
	ev := EndEvent{JobID: j.ID, State: j.State, Attempts: j.Attempts, Result: j.Result,
		Progress: ProgressEvent{JobID: j.ID, Done: j.Progress.Done, Total: j.Progress.Total, Message: j.Progress.Message}}
	typ := EventSucceeded
	switch j.State {
	case Failed:
		typ, ev.Error = EventFailed, j.LastError
	case Cancelled:
		typ = EventCancelled
	}
	return typ, ev
}

// followTTL is how long a follower's mark lasts (Follow renews it at half of that).
const followTTL = 10 * time.Minute

// followKey names the mark of a job's followers (streams.Bus.MarkFollowed).
func followKey(id uuid.UUID) string { return "job:" + id.String() }

// publishEnds publishes the final events of ended runs that have a follower, checked in one
// Redis round trip: most runs have none, and a final event costs two round trips. Follow
// marks a job followed before it reads it, so a follower either reads the run ended (and
// gets the final event from the row when the stream lacks it) or is seen here.
func (s *Service) publishEnds(ctx context.Context, ended []Job) {
	if len(ended) == 0 {
		return
	}
	keys := make([]string, len(ended))
	for i, j := range ended {
		keys[i] = followKey(j.ID)
	}
	followed, err := s.Bus.Followed(ctx, keys)
	if err != nil {
		s.Log.WarnContext(ctx, "check job followers", "error", err)
	}
	for i, j := range ended {
		if err == nil && !followed[i] {
			continue
		}
		typ, ev := endEvent(j)
		if _, err := s.Bus.Publisher(StreamID(j.ID, j.Run)).Finish(ctx, typ, ev); err != nil && !errors.Is(err, streams.ErrFinished) {
			s.Log.WarnContext(ctx, "publish job end", "job", j.ID, "error", err)
		}
	}
}

// reporter publishes a running attempt's progress at each report and stores it at most
// once per progress interval (the attempt's end stores the last one).
type reporter struct {
	s   *Service
	job Job
	pub *streams.Publisher

	mu       sync.Mutex
	progress Progress
	stored   time.Time
}

func (r *reporter) report(ctx context.Context, p Progress) error {
	r.mu.Lock()
	r.progress = p
	store := time.Since(r.stored) >= r.s.cfg.ProgressInterval
	if store {
		r.stored = time.Now()
	}
	r.mu.Unlock()
	if _, err := r.pub.Publish(ctx, EventProgress, ProgressEvent{JobID: r.job.ID, Done: p.Done, Total: p.Total, Message: p.Message}); err != nil {
		return fmt.Errorf("publish job progress: %w", err)
	}
	if store {
		err := r.s.runtimeQueries().SetJobProgress(ctx, db.SetJobProgressParams{ID: r.job.ID, ProgressDone: p.Done, ProgressTotal: p.Total,
			ProgressMessage: p.Message, Attempt: int32(r.job.Attempts)}) //nolint:gosec // small
		if err != nil {
			return fmt.Errorf("store job progress: %w", err)
		}
	}
	return nil
}

func (r *reporter) last() Progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.progress
}

// heartbeat stores, every heartbeat interval and in one statement, that the jobs this
// process runs are alive.
func (s *Service) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		ids := make([]uuid.UUID, 0, len(s.running))
		for id := range s.running {
			ids = append(ids, id)
		}
		s.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		if err := s.runtimeQueries().HeartbeatJobs(ctx, db.HeartbeatJobsParams{Now: ptr(s.Now().UTC()), Ids: ids}); err != nil && ctx.Err() == nil {
			s.Log.Warn("job heartbeat", "error", err)
		}
	}
}

// reconcile runs ReconcileOnce every reconcile interval while this replica holds the
// reconciliation lock: a session advisory lock on a dedicated connection, so a replica
// that dies (or loses its connection) hands the lead to another at its next try.
func (s *Service) reconcile(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	leader := false
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		if conn == nil {
			c, err := pgx.ConnectConfig(ctx, s.Store.Pool.Config().ConnConfig.Copy())
			if err == nil {
				conn = c
			} else if ctx.Err() == nil {
				s.Log.Warn("job reconciler: connect", "error", err)
			}
		}
		if conn != nil {
			var err error
			if leader {
				_, err = conn.Exec(ctx, "SELECT 1") // the lock lives as long as the session
			} else {
				err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", reconcileLock).Scan(&leader)
			}
			if err != nil {
				leader = false
				_ = conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		}
		if leader {
			if n, err := s.ReconcileOnce(ctx); err != nil && ctx.Err() == nil {
				s.Log.Error("job reconciliation", "error", err)
			} else if n > 0 {
				s.Log.Info("job reconciliation requeued jobs", "jobs", n)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconcileOnce repairs Asynq against PostgreSQL and says how many jobs it put back into
// the outbox (the relay then enqueues them):
//   - a queued job handed to Asynq whose task Asynq does not have (Redis lost it) or holds
//     as archived or completed goes back, under a new task id if Asynq still has the old;
//   - a running job whose heartbeat is stale (its worker died) goes back under a new task
//     id, so it runs again now rather than after Asynq's lease recovery (1–2 min), and a
//     stale task that Asynq recovers later is skipped; with no attempt left it fails.
//
// A running job with a live heartbeat is left alone, whatever Asynq says.
func (s *Service) ReconcileOnce(ctx context.Context) (int, error) {
	var after uuid.NullUUID
	requeued := 0
	for {
		now := s.Now().UTC()
		// A job handed over within the last heartbeat may still be on its way into Asynq.
		handedBefore, staleBefore := now.Add(-s.cfg.Heartbeat), now.Add(-staleBeats*s.cfg.Heartbeat)
		rows, err := s.Store.ListActiveJobs(ctx, db.ListActiveJobsParams{After: after, MaxRows: 1000, HandedBefore: &handedBefore, StaleBefore: &staleBefore})
		if err != nil {
			return requeued, fmt.Errorf("list active jobs: %w", err)
		}
		page := make([]Job, len(rows))
		for i, r := range rows {
			page[i] = toJob(r)
		}
		states, err := s.taskStates(ctx, page)
		if err != nil {
			return requeued, err
		}
		for i, j := range page {
			ok, err := s.repair(ctx, j, states[i])
			if err != nil {
				return requeued, err
			}
			if ok {
				requeued++
			}
		}
		if len(rows) < 1000 {
			return requeued, nil
		}
		after = uuid.NullUUID{UUID: rows[len(rows)-1].ID, Valid: true}
	}
}

// taskStates reads, in one pipeline, the state in which Asynq holds each queued job's task
// ("" when it has no such task, or for a job that is not queued). A sweep checks every
// queued job, and the inspector's GetTaskInfo costs two round trips a task, so this reads
// the field Asynq keeps the state in, in the task's hash asynq:{<queue>}:t:<task id>
// (Asynq's storage layout, which TestTaskStates holds to).
func (s *Service) taskStates(ctx context.Context, js []Job) ([]string, error) {
	pipe := s.Redis.Pipeline()
	cmds := make([]*redis.StringCmd, len(js))
	for i, j := range js {
		if j.State == Queued {
			cmds[i] = pipe.HGet(ctx, "asynq:{"+s.Queue(j.Queue)+"}:t:"+j.TaskID, "state")
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command's error is looked at below
	}
	states := make([]string, len(js))
	for i, c := range cmds {
		if c == nil {
			continue
		}
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read the task states of queued jobs: %w", err)
		}
		states[i] = c.Val()
	}
	return states, nil
}

// repair puts job j back into the outbox when Asynq lost it (taskState "") or its worker
// died.
func (s *Service) repair(ctx context.Context, j Job, taskState string) (bool, error) {
	now := s.Now().UTC()
	staleBefore := now.Add(-staleBeats * s.cfg.Heartbeat)
	newTask := j.ID.String() + "." + strconv.FormatInt(now.UnixMicro(), 36)
	var taskID, why string
	switch j.State {
	case Running:
		if j.HeartbeatAt == nil || !j.HeartbeatAt.Before(staleBefore) {
			return false, nil
		}
		if j.Attempts >= j.MaxAttempts {
			ended, err := s.endAttempt(ctx, j, attemptEnd{state: Failed, err: "its worker stopped during the last attempt", progress: j.Progress})
			return ended != nil, err
		}
		taskID, why = newTask, "its worker stopped during attempt "+strconv.Itoa(j.Attempts)
	case Queued:
		switch taskState {
		case "":
			taskID, why = j.TaskID, "its task was lost"
		case asynq.TaskStateArchived.String(), asynq.TaskStateCompleted.String():
			taskID, why = newTask, "its task had ended"
		default:
			return false, nil
		}
	default:
		return false, nil
	}
	n, err := s.Store.RequeueJob(ctx, db.RequeueJobParams{TaskID: taskID, LastError: strings.TrimSpace(j.LastError + "; requeued: " + why),
		Now: now, ID: j.ID, Seen: j.UpdatedAt, StaleBefore: &staleBefore})
	if err != nil {
		return false, fmt.Errorf("requeue job %s: %w", j.ID, err)
	}
	return n > 0, nil
}

// asynqLogger routes Asynq's logs into slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) {
	l.log.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
}

func ptr[T any](v T) *T { return &v }
