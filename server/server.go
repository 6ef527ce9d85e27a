// Package server is Kiln's HTTP adapter: the strict-server implementation of the spec, the
// middleware every request goes through, and the one mapping from errors to problems.
package server

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-redis/redis_rate/v10"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"sigs.k8s.io/yaml"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/erasure"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/exports"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/idempotency"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/errreport"
	"github.com/kilnhq/kiln/internal/platform/health"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/retention"
)

var _ api.StrictServerInterface = (*Server)(nil)

// Deps is everything the server needs; cmd/kiln builds it.
type Deps struct {
	Config   config.HTTP
	Log      *slog.Logger
	Registry *prometheus.Registry
	// Spec is the OpenAPI document requests are validated against (api.GetSpec()).
	Spec *openapi3.T
	// Checks are the readiness checks /ready runs.
	Checks []health.Check
	// Identity authenticates callers and serves the identity endpoints.
	Identity Identity
	// Flags is the feature-flag evaluator the admin endpoints manage.
	Flags *flags.Evaluator
	// Admin serves the platform-admin endpoints.
	Admin *admin.Service
	// Redis and Keyspace hold the shared rate-limit counters.
	Redis    redis.UniversalClient
	Keyspace redisclient.Keyspace
	// LimitAbuse turns on the per-IP and per-account limits of the auth routes.
	LimitAbuse bool
	// APILimits are the per-key, per-user and per-org limits of authenticated requests
	// (ratelimit.api); a zero rate is no limit.
	APILimits config.APIRateLimits
	// LLM serves the model endpoints.
	LLM LLM
	// Prompts is the prompt store.
	Prompts *prompts.Service
	// Conversations serves the conversation endpoints.
	Conversations Conversations
	// Jobs serves the job endpoints.
	Jobs *jobs.Service
	// Retention keeps the orgs' retention settings.
	Retention *retention.Service
	// Idempotency stores the responses of requests made with an Idempotency-Key; nil
	// turns Idempotency-Key support off.
	Idempotency *idempotency.Store
	// JobsAdmin serves the platform-admin endpoints of jobs (schedules, queues, failed jobs).
	JobsAdmin JobsAdmin
	// Notifications is the notification center.
	Notifications *notify.Center
	// Knowledge serves the knowledge bases; nil answers their operations not_ready.
	Knowledge *rag.Service
	// Tracing makes a span of every request; nil (tracing off) leaves the middleware out.
	Tracing trace.TracerProvider
	// ChinaPayments serves the WeChat Pay and Alipay payments and notifications; nil
	// answers them not_ready (notifications not_found).
	ChinaPayments *billing.ChinaPayments
	// ErrorReports sends panics and 5xx answers to Sentry; nil sends nothing.
	ErrorReports *errreport.Reporter
	// Invoices serves the invoices; a nil Invoicer answers them not_ready.
	Invoices Invoices
	// Metrics says where GET /metrics is served (this server, or MetricsServer when
	// Listen is set) and the token it asks for.
	Metrics config.Metrics
	// StripePayments serves Stripe Checkout, the billing portal and the webhook; nil or
	// unconfigured answers them provider_not_configured (the webhook not_found).
	StripePayments *billing.StripePayments
	// Exports serves the privacy exports; nil answers them not_ready.
	Exports *exports.Service
	// Erasure deletes accounts and orgs after their grace period; nil answers the deletion
	// endpoints not_ready and refuses no org's writes.
	Erasure *erasure.Service
}

// Server serves Kiln's HTTP API.
type Server struct {
	cfg     config.HTTP
	log     *slog.Logger
	mux     *http.ServeMux
	handler http.Handler
	metrics httpMetrics
	checks  []health.Check
	auth    authState
	flags   *flags.Evaluator
	admin   *admin.Service
	limits  *rateLimiter // nil: no abuse limits
	api     *apiLimiter  // nil: no API limits
	// trustedProxies may name the client in X-Forwarded-For.
	trustedProxies []netip.Prefix
	cors           *corsPolicy
	security       securityHeaders
	llm            LLM
	prompts        *prompts.Service
	conv           Conversations
	jobs           *jobs.Service
	retention      *retention.Service
	notify         *notify.Center
	rag            *rag.Service
	payments       *billing.ChinaPayments
	stripe         *billing.StripePayments
	invoices       Invoices
	exports        *exports.Service
	erasure        *erasure.Service
	// bodyLimits are the routes whose bodies may exceed http.max_body_bytes (uploads).
	bodyLimits map[string]int64
	// frameSchemas validate the data of the WebSocket's frames, by frame type.
	frameSchemas map[string]*openapi3.Schema
	started      time.Time
	streaming    map[string]bool // route templates exempt from the request deadline
	heartbeat    time.Duration   // between SSE heartbeats
	idem         *idempotency.Store
	idemRoutes   map[string]bool // route templates that take an Idempotency-Key
	jobsAdmin    JobsAdmin
	reports      *errreport.Reporter // nil: no error reports
	// metricsOnly serves GET /metrics on metrics.listen; nil when /metrics is served here.
	metricsOnly http.Handler

	specJSON  []byte
	specYAML  func() ([]byte, error) // made on first request: a large allocation, rarely asked
	drainOnce sync.Once
	draining  chan struct{}
}

// httpMetrics are the request metrics, labelled by route template.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	ready    prometheus.Gauge
}

//go:embed docs
var docsFS embed.FS

// New builds the server: routes from the spec, served through the middleware stack.
func New(d Deps) (*Server, error) {
	specJSON, err := json.Marshal(d.Spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	s := &Server{
		cfg:       d.Config,
		log:       d.Log,
		mux:       http.NewServeMux(),
		checks:    d.Checks,
		streaming: map[string]bool{},
		heartbeat: heartbeatInterval,
		specJSON:  specJSON,
		specYAML:  sync.OnceValues(func() ([]byte, error) { return yaml.JSONToYAML(specJSON) }),
		draining:  make(chan struct{}),
		flags:     d.Flags,
		admin:     d.Admin,
		llm:       d.LLM,
		prompts:   d.Prompts,
		conv:      d.Conversations,
		jobsAdmin: d.JobsAdmin,
		reports:   d.ErrorReports,
		jobs:      d.Jobs,
		retention: d.Retention,
		notify:    d.Notifications,
		rag:       d.Knowledge,
		payments:  d.ChinaPayments,
		stripe:    d.StripePayments,
		invoices:  d.Invoices,
		exports:   d.Exports,
		erasure:   d.Erasure,
		started:   time.Now(),
		auth: authState{
			Identity:     d.Identity,
			requirements: requirements(d.Spec),
			memberships: &membershipCache{
				accounts: d.Identity.Accounts, ttl: 30 * time.Second, now: time.Now,
				entries: map[uuid.UUID]memberships{},
			},
		},
		metrics: httpMetrics{
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "kiln_http_requests_total", Help: "HTTP requests by method, route template and status.",
			}, []string{"method", "route", "status"}),
			duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "kiln_http_request_duration_seconds",
				Help:    "HTTP request duration by method and route template.",
				Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
			}, []string{"method", "route"}),
			inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_http_requests_in_flight", Help: "HTTP requests being served."}),
			ready:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_ready", Help: "1 when the last readiness checks passed."}),
		},
	}
	if s.trustedProxies, err = config.ParsePrefixes(d.Config.TrustedProxies); err != nil {
		return nil, fmt.Errorf("http.trusted_proxies: %w", err)
	}
	if s.cors, err = newCORS(d.Config.CORS, d.Spec); err != nil {
		return nil, err
	}
	s.security = newSecurityHeaders(d.Config.HSTSMaxAge)
	if d.LimitAbuse {
		s.limits = &rateLimiter{limiter: redis_rate.NewLimiter(d.Redis), ks: d.Keyspace}
	}
	var plans planRates
	if d.LLM.Billing != nil {
		plans = d.LLM.Billing
	}
	s.api = newAPILimiter(d.APILimits, d.Redis, d.Keyspace, plans)
	s.idem, s.idemRoutes = d.Idempotency, idempotentRoutes(d.Spec)
	if d.Knowledge != nil {
		// A document upload may be as large as rag.max_document_bytes, plus its multipart
		// framing and other parts.
		s.bodyLimits = map[string]int64{"POST /v1/knowledge-bases/{id}/documents": max(d.Config.MaxBodyBytes, d.Knowledge.MaxDocumentBytes()+64<<10)}
	}
	if err := registerAll(d.Registry, s.metrics.requests, s.metrics.duration, s.metrics.inFlight, s.metrics.ready); err != nil {
		return nil, err
	}

	strict := api.NewStrictHandlerWithOptions(s, []api.StrictMiddlewareFunc{s.withClient}, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			s.respondError(w, r, &errs.Error{Code: errs.MalformedJSON, Message: "The request body could not be decoded."})
		},
		ResponseErrorHandlerFunc: s.respondError,
	})
	api.HandlerWithOptions(strict, api.StdHTTPServerOptions{
		BaseRouter: s.mux,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			s.respondError(w, r, &errs.Error{Code: errs.Invalid, Message: err.Error()})
		},
	})
	s.frameSchemas = map[string]*openapi3.Schema{}
	for frame, schema := range map[string]string{
		"chat": "ChatRequest", "conversation.message": "WSConversationMessage", "conversation.tool_results": "WSConversationToolResults",
	} {
		s.frameSchemas[frame] = d.Spec.Components.Schemas[schema].Value
	}
	s.HandleStream("POST /v1/chat/completions", http.HandlerFunc(s.createChatCompletion))
	s.HandleStream("GET /v1/chat/ws", http.HandlerFunc(s.chatWebSocket))
	s.HandleStream("POST /v1/conversations/{id}/messages", http.HandlerFunc(s.createConversationMessage))
	s.HandleStream("POST /v1/conversations/{id}/tool-results", http.HandlerFunc(s.submitToolResults))
	s.HandleStream("GET /v1/conversations/{id}/messages/{message_id}/events", http.HandlerFunc(s.streamMessageEvents))
	s.HandleStream("GET /v1/jobs/{id}/events", http.HandlerFunc(s.streamJobEvents))
	s.HandleStream("GET /v1/notifications/stream", http.HandlerFunc(s.streamNotifications))
	s.HandleStream("GET /v1/orgs/{id}/usage/export", http.HandlerFunc(s.exportOrgUsage))
	s.HandleStream("GET /v1/admin/usage/export", http.HandlerFunc(s.adminExportUsage))
	s.HandleStream("POST /openai/v1/chat/completions", http.HandlerFunc(s.openaiCreateChatCompletion))
	s.HandleStream("POST /openai/v1/responses", http.HandlerFunc(s.openaiCreateResponse))
	s.mux.HandleFunc("GET /openai/v1/responses/{response_id}", s.openaiGetResponse)
	s.mux.HandleFunc("DELETE /openai/v1/responses/{response_id}", s.openaiDeleteResponse)
	s.mux.HandleFunc("POST /openai/v1/embeddings", s.openaiCreateEmbeddings)
	s.mux.HandleFunc("GET /openai/v1/models", s.openaiListModels)
	s.mux.HandleFunc("POST /v1/webhooks/wechatpay", s.wechatpayNotify)
	s.mux.HandleFunc("POST /v1/webhooks/alipay", s.alipayNotify)
	if metrics := s.metricsEndpoint(d.Registry, d.Metrics); d.Metrics.Listen == "" {
		s.mux.Handle("GET /metrics", metrics)
	} else {
		s.metricsOnly = metrics
	}
	s.mux.HandleFunc("POST /v1/webhooks/stripe", s.stripeWebhook)
	s.mux.HandleFunc("GET /openapi.json", s.serveSpec("application/json", func() ([]byte, error) { return s.specJSON, nil }))
	s.mux.HandleFunc("GET /openapi.yaml", s.serveSpec("application/yaml", s.specYAML))
	assets, _ := fs.Sub(docsFS, "docs/swagger-ui")
	s.mux.Handle("GET /docs", serveEmbedded(docsFS, "docs/index.html", "text/html; charset=utf-8"))
	s.mux.HandleFunc("GET /docs/assets/{file}", func(w http.ResponseWriter, r *http.Request) {
		if _, err := fs.Stat(assets, r.PathValue("file")); err != nil {
			s.respondError(w, r, errs.E(errs.NotFound, "No asset named %q.", r.PathValue("file")))
			return
		}
		http.ServeFileFS(w, r, assets, r.PathValue("file")) //nolint:gosec // an embed.FS: fs.ValidPath refuses "..", and the spec allows [A-Za-z0-9._-] only
	})

	// Outermost first. Preflights are answered before routing (the mux would refuse
	// OPTIONS with a 405), and routing questions (404/405) before validation, so the
	// validator only ever sees routed requests.
	tracer := func(next http.Handler) http.Handler { return next }
	if d.Tracing != nil {
		tracer = s.traceRequests(d.Tracing)
	}
	s.handler = chain(s.mux,
		withRequestID,
		s.withSecurityHeaders,
		tracer, // before observe: the access log line carries the trace id
		s.observe,
		s.recoverPanics,
		s.withCORS,
		s.rejectUnrouted,
		s.limitBody,
		s.withDeadline,
		s.authenticate,
		s.limitAPI,
		s.limitAbuse, // after authentication: some limits are per signed-in account
		s.validateRequests(d.Spec),
		s.idempotent,
	)
	return s, nil
}

// chain wraps h in middlewares, the first outermost.
func chain(h http.Handler, middlewares ...func(http.Handler) http.Handler) http.Handler {
	for i := len(middlewares) - 1; i >= 0; i-- {
		h = middlewares[i](h)
	}
	return h
}

func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metric: %w", err)
		}
	}
	return nil
}

// ServeHTTP serves a request through the whole middleware stack.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// HandleStream mounts a streaming handler (SSE, WebSocket) beside the strict handler; it
// goes through the same middleware but is exempt from the request deadline. The route
// must be in the spec.
func (s *Server) HandleStream(pattern string, h http.Handler) {
	s.streaming[pattern] = true
	s.mux.Handle(pattern, h)
}

// Draining is closed when the server starts shutting down; streams end with a final
// event when it closes.
func (s *Server) Draining() <-chan struct{} { return s.draining }

// StartDraining closes Draining; http.Server.RegisterOnShutdown calls it.
func (s *Server) StartDraining() { s.drainOnce.Do(func() { close(s.draining) }) }

// HTTPServer returns the http.Server for addr with the configured timeouts and limits.
// No WriteTimeout: streams outlive any fixed write deadline; handlers are bounded by
// the request deadline instead.
func (s *Server) HTTPServer(addr string) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(s.StartDraining)
	return srv
}

// GetHealth answers liveness: the process serves HTTP.
func (s *Server) GetHealth(context.Context, api.GetHealthRequestObject) (api.GetHealthResponseObject, error) {
	return api.GetHealth200JSONResponse{Status: api.HealthStatusOk}, nil
}

// GetReady runs every readiness check; 503 names each failed one.
func (s *Server) GetReady(ctx context.Context, _ api.GetReadyRequestObject) (api.GetReadyResponseObject, error) {
	checks, ok := s.runChecks(ctx)
	if ok {
		return api.GetReady200JSONResponse{Status: api.Ready, Checks: checks}, nil
	}
	var failed []string
	for _, c := range checks {
		if c.Status == api.CheckStatusFailed {
			failed = append(failed, c.Name)
		}
	}
	p := newProblem(ctx, "/ready", errs.E(errs.NotReady, "Failed checks: %v.", failed))
	return api.GetReady503ApplicationProblemPlusJSONResponse{
		Type: p.Type, Title: p.Title, Status: p.Status, Detail: p.Detail, Instance: p.Instance,
		Code: p.Code, RequestId: p.RequestId, Checks: checks,
	}, nil
}

// runChecks runs the readiness checks and records the outcome in kiln_ready.
func (s *Server) runChecks(ctx context.Context) ([]api.Check, bool) {
	results := health.RunAll(ctx, s.checks, 2*time.Second)
	checks := make([]api.Check, len(results))
	ok := true
	for i, r := range results {
		checks[i] = api.Check{Name: r.Name, Status: api.CheckStatusOk}
		if r.Err != nil {
			ok = false
			detail := r.Err.Error()
			checks[i] = api.Check{Name: r.Name, Status: api.CheckStatusFailed, Detail: &detail}
			s.log.WarnContext(ctx, "readiness check failed", "check", r.Name, "error", r.Err)
		}
	}
	if ok {
		s.metrics.ready.Set(1)
	} else {
		s.metrics.ready.Set(0)
	}
	return checks, ok
}

// WatchReadiness refreshes kiln_ready every interval until ctx is done, so the gauge is
// current even when nothing polls /ready.
func (s *Server) WatchReadiness(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.runChecks(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) serveSpec(contentType string, spec func() ([]byte, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := spec()
		if err != nil {
			s.respondError(w, r, fmt.Errorf("encode spec: %w", err))
			return
		}
		w.Header().Set("Content-Type", contentType)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	}
}

func serveEmbedded(fsys fs.FS, name, contentType string) http.Handler {
	body, err := fs.ReadFile(fsys, name)
	if err != nil {
		panic(fmt.Sprintf("embedded %s missing: %v", name, err)) // a build error, caught by every test
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

// writeJSON sends v as a JSON response with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
