// Package usage accounts for model calls: every call becomes a Record, counted in the
// metrics at once and written to Postgres in batches off the request path. Run drains the
// buffer before it returns, so a graceful shutdown loses nothing.
package usage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store"
)

// The statuses of a call.
const (
	StatusOK        = "ok"
	StatusError     = "error"
	StatusCancelled = "cancelled"
)

// Record is one model call.
type Record struct {
	OrgID     uuid.UUID
	UserID    uuid.UUID // zero for API-key calls
	APIKeyID  uuid.UUID // zero for user-token calls
	RequestID string
	Endpoint  string // chat, conversation, openai.chat, openai.responses, openai.embeddings, websocket
	Alias     string
	Provider  string // empty when no target served
	Model     string
	Status    string
	ErrorCode string
	Usage     llm.Usage
	CostUSD   float64
	Latency   time.Duration
	TTFT      time.Duration // zero: not streamed
	Cached    bool
	Attempts  int
	At        time.Time
	// Prompt is the stored prompt the call used, if any.
	Prompt *PromptUse
}

// PromptUse names the prompt version a call used and the experiment that drew it.
type PromptUse struct {
	Name         string
	Version      int
	ExperimentID *uuid.UUID // nil: the version was not drawn by a split
}

// batchSize is the most records one write carries.
const batchSize = 1000

// Recorder buffers records and writes them in batches.
type Recorder struct {
	store   *store.Store
	log     *slog.Logger
	every   time.Duration
	ch      chan Record
	metrics metrics
	series  sync.Map // seriesKey → *series
}

type metrics struct {
	requests *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	cost     *prometheus.CounterVec
	ttft     *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	written  prometheus.Counter
	dropped  prometheus.Counter
}

// NewRecorder returns a recorder writing to st every flushEvery (or every 1,000 records).
func NewRecorder(st *store.Store, log *slog.Logger, reg prometheus.Registerer, flushEvery time.Duration) (*Recorder, error) {
	buckets := []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_llm_requests_total", Help: "Model calls by provider, model, alias and status (ok, error, cancelled)."}, []string{"provider", "model", "alias", "status"}),
		tokens:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_llm_tokens_total", Help: "Tokens by provider, model, alias and type (prompt, completion, cached)."}, []string{"provider", "model", "alias", "type"}),
		cost:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_llm_cost_usd_total", Help: "Cost in US dollars from the price tables, by provider, model and alias."}, []string{"provider", "model", "alias"}),
		ttft:     prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_llm_time_to_first_token_seconds", Help: "Time to the first streamed event, by provider and model.", Buckets: buckets}, []string{"provider", "model"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_llm_request_duration_seconds", Help: "Model call duration, by provider and model.", Buckets: buckets}, []string{"provider", "model"}),
		written:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_llm_usage_records_written_total", Help: "Usage records written to the database."}),
		dropped:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_llm_usage_records_dropped_total", Help: "Usage records lost after the database refused them repeatedly."}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.tokens, m.cost, m.ttft, m.duration, m.written, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register usage metrics: %w", err)
		}
	}
	return &Recorder{store: st, log: log, every: flushEvery, ch: make(chan Record, 4*batchSize), metrics: m}, nil
}

// Record counts rec in the metrics and queues it for writing. It blocks only when the
// buffer (4,000 records) is full, that is when the database has fallen far behind.
func (r *Recorder) Record(rec Record) {
	provider, model := rec.Provider, rec.Model
	if provider == "" {
		provider, model = "none", "none"
	}
	k := seriesKey{provider: provider, model: model, alias: rec.Alias, status: rec.Status}
	s := r.seriesOf(k)
	s.requests.Inc()
	if u := rec.Usage; u.Total() > 0 {
		s.tokensOnce.Do(func() {
			s.prompt = r.metrics.tokens.WithLabelValues(k.provider, k.model, k.alias, "prompt")
			s.completion = r.metrics.tokens.WithLabelValues(k.provider, k.model, k.alias, "completion")
			s.cached = r.metrics.tokens.WithLabelValues(k.provider, k.model, k.alias, "cached")
		})
		s.prompt.Add(float64(u.PromptTokens))
		s.completion.Add(float64(u.CompletionTokens))
		s.cached.Add(float64(u.CachedTokens))
	}
	if rec.CostUSD > 0 {
		s.costOnce.Do(func() { s.cost = r.metrics.cost.WithLabelValues(k.provider, k.model, k.alias) })
		s.cost.Add(rec.CostUSD)
	}
	if rec.TTFT > 0 {
		s.ttftOnce.Do(func() { s.ttft = r.metrics.ttft.WithLabelValues(k.provider, k.model) })
		s.ttft.Observe(rec.TTFT.Seconds())
	}
	s.duration.Observe(rec.Latency.Seconds())
	r.ch <- rec
}

// seriesKey names the metric series of one kind of call.
type seriesKey struct{ provider, model, alias, status string }

// series are the metric children of one kind of call, found once: finding them by label
// values on every call hashed and allocated the labels up to seven times. A child is
// made on first use, as before, so /metrics shows no series a call never touched.
type series struct {
	requests                         prometheus.Counter
	duration                         prometheus.Observer
	tokensOnce, costOnce, ttftOnce   sync.Once
	prompt, completion, cached, cost prometheus.Counter
	ttft                             prometheus.Observer
}

func (r *Recorder) seriesOf(k seriesKey) *series {
	if s, ok := r.series.Load(k); ok {
		return s.(*series) //nolint:forcetypeassert // the map holds *series only
	}
	s := &series{
		requests: r.metrics.requests.WithLabelValues(k.provider, k.model, k.alias, k.status),
		duration: r.metrics.duration.WithLabelValues(k.provider, k.model),
	}
	actual, _ := r.series.LoadOrStore(k, s)
	return actual.(*series) //nolint:forcetypeassert // the map holds *series only
}

// Run writes queued records until ctx is done, then writes what is left and returns.
// Stop the HTTP server before cancelling ctx, so no call records after Run returns.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(r.every)
	defer t.Stop()
	batch := make([]Record, 0, batchSize)
	for {
		select {
		case rec := <-r.ch:
			if batch = append(batch, rec); len(batch) == batchSize {
				batch = r.write(ctx, batch)
			}
		case <-t.C:
			batch = r.write(ctx, batch)
		case <-ctx.Done():
			for {
				select {
				case rec := <-r.ch:
					if batch = append(batch, rec); len(batch) == batchSize {
						batch = r.write(context.WithoutCancel(ctx), batch)
					}
				default:
					r.write(context.WithoutCancel(ctx), batch)
					return
				}
			}
		}
	}
}

// write stores batch, retrying a failed write three times; it returns the emptied batch.
func (r *Recorder) write(ctx context.Context, batch []Record) []Record {
	if len(batch) == 0 {
		return batch
	}
	rows := make([]db.InsertUsageParams, len(batch))
	for i, rec := range batch {
		rows[i] = toRow(rec)
	}
	var err error
	for attempt := range 4 {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, err = r.store.InsertUsage(wctx, rows)
		cancel()
		if err == nil {
			r.metrics.written.Add(float64(len(rows)))
			return batch[:0]
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	r.metrics.dropped.Add(float64(len(rows)))
	r.log.ErrorContext(ctx, "usage records lost", "records", len(rows), "error", err)
	return batch[:0]
}

func toRow(rec Record) db.InsertUsageParams {
	var ttft pgtype.Int4
	if rec.TTFT > 0 {
		ttft = pgtype.Int4{Int32: int32(rec.TTFT.Milliseconds()), Valid: true} //nolint:gosec // bounded by the stream timeout
	}
	row := db.InsertUsageParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: rec.OrgID,
		UserID: nullable(rec.UserID), ApiKeyID: nullable(rec.APIKeyID),
		RequestID: rec.RequestID, Endpoint: rec.Endpoint, Alias: rec.Alias,
		Provider: rec.Provider, Model: rec.Model, Status: rec.Status, ErrorCode: rec.ErrorCode,
		PromptTokens: int32(rec.Usage.PromptTokens), CompletionTokens: int32(rec.Usage.CompletionTokens), //nolint:gosec // token counts fit
		CachedTokens: int32(rec.Usage.CachedTokens), CostUsd: rec.CostUSD, //nolint:gosec // token counts fit
		LatencyMs: int32(rec.Latency.Milliseconds()), TtftMs: ttft, //nolint:gosec // durations are bounded by the stream timeout
		Cached: rec.Cached, Attempts: int32(rec.Attempts), CreatedAt: rec.At, //nolint:gosec // a handful of attempts
	}
	if p := rec.Prompt; p != nil {
		row.PromptName = pgtype.Text{String: p.Name, Valid: true}
		row.PromptVersion = pgtype.Int4{Int32: int32(p.Version), Valid: true} //nolint:gosec // version numbers fit
		row.ExperimentID = store.NullUUID(p.ExperimentID)
	}
	return row
}

// nullable is id as a column value, NULL for the zero UUID (no user, no key).
func nullable(id uuid.UUID) uuid.NullUUID { return uuid.NullUUID{UUID: id, Valid: id != uuid.Nil} }

// Filter selects the calls a report covers.
type Filter struct {
	OrgID    uuid.UUID
	From, To time.Time
	Alias    string    // empty: every alias
	APIKeyID uuid.UUID // zero: every caller
	GroupBy  string    // day or model
}

// Bucket is one row of a report.
type Bucket struct {
	Key                                          string
	Requests, Errors, CachedRequests             int64
	PromptTokens, CompletionTokens, CachedTokens int64
	CostUSD, LatencyMsAvg                        float64
}

// Report buckets the calls f selects, and totals them.
func (r *Recorder) Report(ctx context.Context, f Filter) ([]Bucket, Bucket, error) {
	p := db.UsageReportParams{GroupBy: f.GroupBy, OrgID: f.OrgID, FromTime: f.From, ToTime: f.To, ApiKeyID: nullable(f.APIKeyID)}
	if f.Alias != "" {
		p.Alias = pgtype.Text{String: f.Alias, Valid: true}
	}
	rows, err := r.store.UsageReport(ctx, p)
	if err != nil {
		return nil, Bucket{}, fmt.Errorf("usage report: %w", err)
	}
	out := make([]Bucket, len(rows))
	total := Bucket{Key: "total"}
	var latencySum float64
	for i, row := range rows {
		b := Bucket{Key: row.Key, Requests: row.Requests, Errors: row.Errors, CachedRequests: row.CachedRequests,
			PromptTokens: row.PromptTokens, CompletionTokens: row.CompletionTokens, CachedTokens: row.CachedTokens,
			CostUSD: row.CostUsd, LatencyMsAvg: row.LatencyMsAvg}
		out[i] = b
		total.Requests += b.Requests
		total.Errors += b.Errors
		total.CachedRequests += b.CachedRequests
		total.PromptTokens += b.PromptTokens
		total.CompletionTokens += b.CompletionTokens
		total.CachedTokens += b.CachedTokens
		total.CostUSD += b.CostUSD
		latencySum += b.LatencyMsAvg * float64(b.Requests)
	}
	if total.Requests > 0 {
		total.LatencyMsAvg = latencySum / float64(total.Requests)
	}
	return out, total, nil
}
