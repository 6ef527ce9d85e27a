package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/errs"
)

// Target is one provider model an alias can be served by.
type Target struct {
	Provider string
	Model    string
	// Weight shares first attempts among weighted targets; 0 makes a fallback.
	Weight         int
	Timeout        time.Duration // per attempt: a blocking call, or a stream until its first event
	MaxConcurrency int           // 0: unbounded
	Price          Price
}

func (t Target) String() string { return t.Provider + "/" + t.Model }

// Price is a price table in US dollars per million tokens.
type Price struct {
	Input, Output, Cached float64
}

// Cost prices usage: cached prompt tokens at the cached rate, the rest at the input rate.
func (p Price) Cost(u Usage) float64 {
	uncached := max(u.PromptTokens-u.CachedTokens, 0)
	return (float64(uncached)*p.Input + float64(u.CachedTokens)*p.Cached + float64(u.CompletionTokens)*p.Output) / 1e6
}

// GatewayConfig is what a Gateway is built from.
type GatewayConfig struct {
	Providers map[string]Provider
	// Aliases maps each model alias to its targets, in failover order.
	Aliases         map[string][]Target
	Timeout         time.Duration // default per-attempt timeout
	Retries         int           // extra attempts at one target on a retryable error
	MaxRetryAfter   time.Duration // a longer Retry-After moves on to the next target
	BreakerFailures int
	BreakerCooldown time.Duration
	Log             *slog.Logger
	Registry        prometheus.Registerer
	// Backoff is the first retry's base delay (jittered, doubling); default 100 ms.
	Backoff time.Duration
	// OrgKeys, when set, finds an org's own key for a provider (bring your own key); the
	// org is read from the context (WithOrg). WithKey builds the configured provider with
	// that key instead of the deployment's.
	OrgKeys interface {
		Lookup(ctx context.Context, org uuid.UUID, provider string) (string, bool, error)
	}
	WithKey func(provider, apiKey string) (Provider, error)
	// Tracing, when set, makes a span of every attempt at a provider with the OpenTelemetry
	// GenAI attributes; prompt and completion text only with RecordContent.
	Tracing       trace.TracerProvider
	RecordContent bool
	// Meter, when set, holds every call of an org (WithOrg) to its quota; DefaultMaxTokens
	// bounds the reply of a request that sets no max tokens.
	Meter            Meter
	DefaultMaxTokens int
}

type orgKey struct{}

// WithOrg tells the gateway which org a call is for, so the org's own provider keys apply.
func WithOrg(ctx context.Context, org uuid.UUID) context.Context {
	return context.WithValue(ctx, orgKey{}, org)
}

type apiKeyKey struct{}

// WithAPIKey tells the gateway's Meter which API key a call is made with, so the key's
// own token budget holds it too.
func WithAPIKey(ctx context.Context, key uuid.UUID) context.Context {
	return context.WithValue(ctx, apiKeyKey{}, key)
}

// APIKeyOf is the API key a call is made with (WithAPIKey), uuid.Nil when none.
func APIKeyOf(ctx context.Context) uuid.UUID {
	key, _ := ctx.Value(apiKeyKey{}).(uuid.UUID)
	return key
}

// Gateway routes requests for a model alias to its targets, with retries, failover before
// the first byte, a circuit breaker and a concurrency limit per target.
type Gateway struct {
	cfg     GatewayConfig
	tracer  trace.Tracer            // nil: tracing off
	targets map[string]*targetState // by Target.String()
	metrics gatewayMetrics
	now     func() time.Time

	mu        sync.Mutex
	orgClient map[string]Provider // by provider name and org key
}

type targetState struct {
	Target
	provider Provider
	slots    chan struct{} // nil: unbounded
	breaker  breaker
}

type gatewayMetrics struct {
	attempts  *prometheus.CounterVec
	failovers *prometheus.CounterVec
	circuit   *prometheus.GaugeVec
}

// Attempt is one try at a target.
type Attempt struct {
	Target   string        `json:"target"`
	Error    string        `json:"error,omitempty"`
	Duration time.Duration `json:"-"`
}

// Served tells which target served a call and what was tried before it.
type Served struct {
	Alias    string
	Target   Target
	Attempts []Attempt
}

// NewGateway checks that every alias names configured providers and registers the metrics.
func NewGateway(cfg GatewayConfig) (*Gateway, error) {
	if cfg.Backoff == 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, targets: map[string]*targetState{}, now: time.Now, orgClient: map[string]Provider{}}
	if cfg.Tracing != nil {
		g.tracer = cfg.Tracing.Tracer("github.com/kilnhq/kiln/internal/llm")
	}
	for alias, ts := range cfg.Aliases {
		if len(ts) == 0 {
			return nil, fmt.Errorf("model alias %q has no targets", alias)
		}
		for _, t := range ts {
			p, ok := cfg.Providers[t.Provider]
			if !ok {
				return nil, fmt.Errorf("model alias %q: unknown provider %q", alias, t.Provider)
			}
			if _, seen := g.targets[t.String()]; seen {
				continue
			}
			st := &targetState{Target: t, provider: p, breaker: breaker{threshold: cfg.BreakerFailures, cooldown: cfg.BreakerCooldown}}
			if st.Timeout == 0 {
				st.Timeout = cfg.Timeout
			}
			if t.MaxConcurrency > 0 {
				st.slots = make(chan struct{}, t.MaxConcurrency)
			}
			g.targets[t.String()] = st
		}
	}
	g.metrics = gatewayMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_llm_attempts_total", Help: "Upstream attempts by provider, model and outcome (ok or an error kind).",
		}, []string{"provider", "model", "outcome"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_llm_failovers_total", Help: "Calls that moved on from a target to the next, by alias and the target left.",
		}, []string{"alias", "from"}),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_llm_circuit_open", Help: "1 while a target's circuit breaker is open.",
		}, []string{"provider", "model"}),
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{g.metrics.attempts, g.metrics.failovers, g.metrics.circuit} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register llm metrics: %w", err)
			}
		}
	}
	return g, nil
}

// Aliases lists the model aliases, sorted.
func (g *Gateway) Aliases() []string {
	out := make([]string, 0, len(g.cfg.Aliases))
	for a := range g.cfg.Aliases {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Targets returns alias's targets in configured order.
func (g *Gateway) Targets(alias string) []Target { return g.cfg.Aliases[alias] }

// Has reports whether alias is in the catalog.
func (g *Gateway) Has(alias string) bool { _, ok := g.cfg.Aliases[alias]; return ok }

// Chat runs req on alias's targets until one answers. With a Meter, the org's quota
// holds the call's most (prompt bound plus max tokens) first, then what it used.
func (g *Gateway) Chat(ctx context.Context, alias string, req *Request) (*Response, Served, error) {
	held, err := g.reserveFor(ctx, alias, PromptBound(req)+g.maxTokens(req))
	if err != nil {
		return nil, Served{Alias: alias}, err
	}
	resp, served, err := blocking(ctx, g, alias, semconv.GenAIOperationNameChat, req.Messages, func(ctx context.Context, p Provider, model string) (*Response, error) {
		r := *req
		r.Model = model
		return p.Chat(ctx, &r)
	})
	used := 0
	if err == nil {
		used = resp.Usage.Total()
	}
	settle(ctx, held, used)
	return resp, served, err
}

// reserveFor reserves tokens for a call to alias; an unknown alias reserves nothing, so
// its not_found is what the caller sees.
func (g *Gateway) reserveFor(ctx context.Context, alias string, tokens int) (Reservation, error) {
	if !g.Has(alias) {
		return nil, nil
	}
	return g.reserve(ctx, tokens)
}

// ChatStream opens a stream on alias's targets. A target counts as answering once its
// first event arrives; until then failures fail over, after it they reach the caller.
func (g *Gateway) ChatStream(ctx context.Context, alias string, req *Request) (Stream, Served, error) {
	reserved := PromptBound(req) + g.maxTokens(req)
	held, err := g.reserveFor(ctx, alias, reserved)
	if err != nil {
		return nil, Served{Alias: alias}, err
	}
	var out *peekedStream
	served, release, err := g.route(ctx, alias, func(ctx context.Context, t *targetState, p Provider) error {
		r := *req
		r.Model = t.Model
		sctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(t.Timeout, cancel)
		sctx, span := g.startSpan(sctx, semconv.GenAIOperationNameChat, t, req.Messages)
		s, err := p.ChatStream(sctx, &r)
		var first Event
		if err != nil {
			g.endSpan(span, "", Usage{}, "", "", err)
		} else if span != nil {
			s = &tracedStream{Stream: s, g: g, span: span, model: t.Model} // the span ends with the stream
		}
		if err == nil {
			first, err = s.Next()
			if errors.Is(err, io.EOF) {
				err = ProtocolError(t.Provider, "the stream ended before its first event")
			}
			if err != nil {
				_ = s.Close()
			}
		}
		timedOut := !timer.Stop()
		if err != nil {
			cancel()
			if timedOut && ctx.Err() == nil {
				err = &Error{Provider: t.Provider, Kind: KindTimeout, Message: fmt.Sprintf("no first event within %s", t.Timeout)}
			}
			return err
		}
		out = &peekedStream{Stream: s, first: first, cancel: cancel}
		return nil
	})
	if err != nil {
		settle(ctx, held, 0)
		return nil, served, err
	}
	out.release = release
	if held == nil {
		return out, served, nil
	}
	return &meteredStream{Stream: out, ctx: ctx, res: held, reserved: reserved}, served, nil
}

// Embed runs req on alias's targets until one answers.
func (g *Gateway) Embed(ctx context.Context, alias string, req *EmbedRequest) (*EmbedResponse, Served, error) {
	bound := 0
	for _, in := range req.Input {
		bound += len(in) + messageOverhead
	}
	held, err := g.reserveFor(ctx, alias, bound)
	if err != nil {
		return nil, Served{Alias: alias}, err
	}
	resp, served, err := blocking(ctx, g, alias, semconv.GenAIOperationNameEmbeddings, req.Input, func(ctx context.Context, p Provider, model string) (*EmbedResponse, error) {
		r := *req
		r.Model = model
		return p.Embed(ctx, &r)
	})
	used := 0
	if err == nil {
		used = resp.Usage.Total()
	}
	settle(ctx, held, used)
	return resp, served, err
}

// blocking routes a call whose answer comes whole, each attempt bounded by its target's
// timeout.
// Each attempt is a span of operation op (input is its content, recorded only with
// RecordContent).
func blocking[T any](ctx context.Context, g *Gateway, alias string, op attribute.KeyValue, input any, call func(context.Context, Provider, string) (T, error)) (T, Served, error) {
	var res T
	served, release, err := g.route(ctx, alias, func(ctx context.Context, t *targetState, p Provider) error {
		actx, cancel := context.WithTimeout(ctx, t.Timeout)
		defer cancel()
		sctx, span := g.startSpan(actx, op, t, input)
		var err error
		res, err = call(sctx, p, t.Model)
		err = timeoutAs(actx, ctx, t, err)
		switch r := any(res).(type) {
		case *Response:
			if err == nil {
				g.endSpan(span, r.Model, r.Usage, r.FinishReason, r.Message.Text(), nil)
				return nil
			}
		case *EmbedResponse:
			if err == nil {
				g.endSpan(span, r.Model, r.Usage, "", "", nil)
				return nil
			}
		}
		g.endSpan(span, "", Usage{}, "", "", err)
		return err
	})
	release()
	return res, served, err
}

// timeoutAs reports an attempt's own deadline as a KindTimeout upstream error.
func timeoutAs(attemptCtx, callerCtx context.Context, t *targetState, err error) error {
	if err != nil && attemptCtx.Err() == context.DeadlineExceeded && callerCtx.Err() == nil {
		return &Error{Provider: t.Provider, Kind: KindTimeout, Message: fmt.Sprintf("no answer within %s", t.Timeout), Err: err}
	}
	return err
}

// ErrNoTarget is wrapped by the error returned when every target is unavailable (circuit
// open or at its concurrency limit) without any attempt made. It classifies itself as
// model_unavailable (errs.Classifier).
var ErrNoTarget error = noTarget{}

type noTarget struct{}

func (noTarget) Error() string { return "no target available" }

func (noTarget) Classify() *errs.Error {
	return errs.E(errs.ModelUnavailable, "Every target of the model is unavailable right now (circuit open or at its concurrency limit); retry shortly.")
}

func noop() {}

// route tries alias's targets in order with retries; try makes one attempt. On success it
// returns the release of the target's concurrency slot, which the caller calls when done
// (a stream at Close); on failure release is a no-op.
func (g *Gateway) route(ctx context.Context, alias string, try func(context.Context, *targetState, Provider) error) (Served, func(), error) {
	targets, ok := g.cfg.Aliases[alias]
	if !ok {
		return Served{Alias: alias}, noop, errs.E(errs.NotFound, "No model named %q; GET /v1/models lists them.", alias)
	}
	served := Served{Alias: alias}
	var lastErr error
	for i, t := range g.order(targets) {
		st := g.targets[t.String()]
		if i > 0 && len(served.Attempts) > 0 {
			g.metrics.failovers.WithLabelValues(alias, served.Attempts[len(served.Attempts)-1].Target).Inc()
		}
		p, byok, err := g.providerFor(ctx, st)
		if err != nil {
			return served, noop, err
		}
		if byok {
			// The org's own key: its failures and its quota are the org's, so they neither
			// trip the shared breaker nor take the shared concurrency slots.
			_, err := g.attempt(ctx, &served, st, t.String()+" (org key)", p, try)
			if err == nil {
				return served, noop, nil
			}
			if ue, ok := errors.AsType[*Error](err); !ok || !ue.Retryable() && ue.Kind != KindAuth {
				return served, noop, err
			}
			lastErr = err
			continue
		}
		if st.slots != nil {
			select {
			case st.slots <- struct{}{}:
			default:
				served.Attempts = append(served.Attempts, Attempt{Target: t.String(), Error: "at max concurrency"})
				continue
			}
		}
		if !st.breaker.allow(g.now()) {
			st.release()
			served.Attempts = append(served.Attempts, Attempt{Target: t.String(), Error: "circuit open"})
			continue
		}
		// Every way out below settles the breaker: success, failure, or endProbe when the
		// attempt says nothing about the target's health.
		for attempt := 0; ; attempt++ {
			d, err := g.attempt(ctx, &served, st, t.String(), p, try)
			if err == nil {
				st.breaker.success()
				g.metrics.circuit.WithLabelValues(t.Provider, t.Model).Set(0)
				return served, st.release, nil
			}
			if ctx.Err() != nil {
				st.breaker.endProbe()
				st.release()
				return served, noop, ctx.Err()
			}
			lastErr = err
			ue, upstream := errors.AsType[*Error](err)
			g.cfg.Log.WarnContext(ctx, "llm attempt failed", "alias", alias, "target", t.String(), "attempt", attempt+1, "error", err, "duration", d)
			if !upstream || ue.Kind == KindInvalid || ue.Kind == KindUnsupported {
				if upstream {
					st.breaker.success() // the upstream answered: it is healthy, the request is not
				} else {
					st.breaker.endProbe()
				}
				st.release()
				return served, noop, err // the request is at fault: another target would refuse it too
			}
			if st.breaker.failure(g.now()) {
				g.metrics.circuit.WithLabelValues(t.Provider, t.Model).Set(1)
				g.cfg.Log.WarnContext(ctx, "llm circuit opened", "target", t.String(), "cooldown", g.cfg.BreakerCooldown)
				break // no more attempts at an open circuit
			}
			if !ue.Retryable() || attempt >= g.cfg.Retries {
				break
			}
			wait := ue.RetryAfter
			if wait > g.cfg.MaxRetryAfter {
				break // not worth waiting here: the next target may answer now
			}
			if wait == 0 {
				wait = time.Duration(float64(g.cfg.Backoff<<attempt) * (0.5 + rand.Float64())) //nolint:gosec // jitter, not a secret
			}
			select {
			case <-ctx.Done():
				st.release()
				return served, noop, ctx.Err() // the last attempt's failure settled the breaker
			case <-time.After(wait):
			}
		}
		st.release()
	}
	if lastErr == nil {
		return served, noop, fmt.Errorf("model %q: %w: every target is unavailable (circuit open or at max concurrency)", alias, ErrNoTarget)
	}
	return served, noop, lastErr
}

// providerFor returns the provider a call to st uses: built with the org's own key when
// the org has one (byok), the configured one otherwise.
func (g *Gateway) providerFor(ctx context.Context, st *targetState) (Provider, bool, error) {
	org, _ := ctx.Value(orgKey{}).(uuid.UUID)
	if g.cfg.OrgKeys == nil || org == uuid.Nil {
		return st.provider, false, nil
	}
	key, ok, err := g.cfg.OrgKeys.Lookup(ctx, org, st.Provider)
	if err != nil || !ok {
		return st.provider, false, err
	}
	id := st.Provider + "\x00" + key
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.orgClient[id]; ok {
		return p, true, nil
	}
	p, err := g.cfg.WithKey(st.Provider, key)
	if err != nil {
		return nil, false, fmt.Errorf("provider %s with the org's key: %w", st.Provider, err)
	}
	if len(g.orgClient) >= 10_000 {
		g.orgClient = map[string]Provider{}
	}
	g.orgClient[id] = p
	return p, true, nil
}

// attempt makes one try at st with provider p, timing it and, unless the caller went away
// (which says nothing of the target), counting it in the metrics and listing it in served
// under label; on success st serves.
func (g *Gateway) attempt(ctx context.Context, served *Served, st *targetState, label string, p Provider, try func(context.Context, *targetState, Provider) error) (time.Duration, error) {
	start := g.now()
	err := try(ctx, st, p)
	d := g.now().Sub(start)
	if err != nil && ctx.Err() != nil {
		return d, err
	}
	a := Attempt{Target: label, Duration: d}
	outcome := "ok"
	if err != nil {
		a.Error = err.Error()
		outcome = "error"
		if ue, ok := errors.AsType[*Error](err); ok {
			outcome = string(ue.Kind)
		}
	}
	g.metrics.attempts.WithLabelValues(st.Provider, st.Model, outcome).Inc()
	served.Attempts = append(served.Attempts, a)
	if err == nil {
		served.Target = st.Target
	}
	return d, err
}

// release frees a concurrency slot taken by route.
func (st *targetState) release() {
	if st.slots != nil {
		<-st.slots
	}
}

// order returns the targets to try: one weighted target drawn by weight first, the other
// weighted targets after it in configured order, then the fallbacks (weight 0).
func (g *Gateway) order(targets []Target) []Target {
	total := 0
	for _, t := range targets {
		total += t.Weight
	}
	if total == 0 || len(targets) == 1 {
		return targets
	}
	n := rand.IntN(total) //nolint:gosec // load spreading, not a secret
	first := 0
	for i, t := range targets {
		if n < t.Weight {
			first = i
			break
		}
		n -= t.Weight
	}
	out := make([]Target, 0, len(targets))
	out = append(out, targets[first])
	for i, t := range targets {
		if i != first && t.Weight > 0 {
			out = append(out, t)
		}
	}
	for _, t := range targets {
		if t.Weight == 0 {
			out = append(out, t)
		}
	}
	return out
}

// peekedStream is a stream whose first event was read to decide on failover.
type peekedStream struct {
	Stream
	first   Event
	peeked  bool
	cancel  context.CancelFunc
	release func()
	once    sync.Once
}

func (s *peekedStream) Next() (Event, error) {
	if !s.peeked {
		s.peeked = true
		return s.first, nil
	}
	return s.Stream.Next()
}

func (s *peekedStream) Close() error {
	err := s.Stream.Close()
	s.once.Do(func() {
		s.cancel()
		if s.release != nil {
			s.release()
		}
	})
	return err
}

// breaker is a consecutive-failure circuit breaker: threshold failures in a row open it
// for cooldown; then one probe is let through, whose outcome closes or reopens it.
type breaker struct {
	mu        sync.Mutex
	threshold int
	cooldown  time.Duration
	failures  int
	openUntil time.Time
	probing   bool
}

func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold || b.threshold <= 0 {
		return true
	}
	if now.Before(b.openUntil) || b.probing {
		return false
	}
	b.probing = true
	return true
}

// endProbe ends an attempt that told nothing of the target's health (the caller went
// away): a probe may be let through again.
func (b *breaker) endProbe() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) success() {
	b.mu.Lock()
	b.failures, b.probing = 0, false
	b.mu.Unlock()
}

// failure counts a failure and reports whether it opened the circuit.
func (b *breaker) failure(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	b.probing = false
	if b.threshold > 0 && b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
		return true
	}
	return false
}
