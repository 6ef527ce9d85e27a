package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/auth/token"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/invoicepdf"
	"github.com/kilnhq/kiln/internal/cache"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/erasure"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/exports"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/idempotency"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/orgkeys"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/health"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/responses"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// testOps are operations added to the spec for tests only: a JSON body to validate, a
// path parameter for cardinality, and handlers that panic or overrun their deadline.
const testOps = `{
  "/test/echo": {"post": {"operationId": "testEcho",
    "requestBody": {"required": true, "content": {"application/json": {"schema": {
      "type": "object", "required": ["name"], "additionalProperties": false,
      "properties": {"name": {"type": "string", "maxLength": 16}, "count": {"type": "integer", "minimum": 1},
                     "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}},
                     "text": {"type": "string"}}}}}},
    "responses": {"200": {"description": "echo", "content": {"application/json": {"schema": {"type": "object"}}}},
                  "default": {"$ref": "#/components/responses/Problem"}}}},
  "/test/items/{id}": {"get": {"operationId": "testItem",
    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
                   {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 100}}],
    "responses": {"200": {"description": "item", "content": {"application/json": {"schema": {"type": "object"}}}},
                  "default": {"$ref": "#/components/responses/Problem"}}}},
  "/test/panic": {"get": {"operationId": "testPanic",
    "responses": {"default": {"$ref": "#/components/responses/Problem"}}}},
  "/test/stream": {"get": {"operationId": "testStream",
    "responses": {"200": {"description": "events", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                  "default": {"$ref": "#/components/responses/Problem"}}}},
  "/test/slow": {"get": {"operationId": "testSlow",
    "responses": {"200": {"description": "done", "content": {"application/json": {"schema": {"type": "object"}}}},
                  "default": {"$ref": "#/components/responses/Problem"}}}},
  "/test/feature": {"get": {"operationId": "testFeature", "x-kiln-scope": "chat", "x-kiln-feature": "sso",
    "security": [{"bearerAuth": []}, {"apiKeyAuth": []}],
    "parameters": [{"$ref": "#/components/parameters/KilnOrg"}],
    "responses": {"200": {"description": "gated", "content": {"application/json": {"schema": {"type": "object"}}}},
                  "default": {"$ref": "#/components/responses/Problem"}}}}
}`

func init() {
	// Response validation decodes bodies by media type; these are served as text.
	for _, ct := range []string{"text/html", "text/javascript", "text/css", "image/png", "text/event-stream", "text/markdown", "text/csv", "application/x-ndjson", "application/pdf"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.FileBodyDecoder)
	}
}

// testSpec returns the embedded spec plus testOps, references resolved.
func testSpec(t testing.TB) *openapi3.T {
	t.Helper()
	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	var paths map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(testOps), &paths); err != nil {
		t.Fatal(err)
	}
	maps.Copy(doc["paths"].(map[string]any), paths)
	raw, _ = json.Marshal(doc)
	out, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Validate(context.Background()); err != nil {
		t.Fatalf("test spec: %v", err)
	}
	return out
}

// testPlans are the plans of every server test: free (generous, the default), tiny (50
// tokens a period, blocking), team (feature sso, tokens alerting past 100) and capped
// (blocking count limits and 30 requests a minute).
var testPlans = billing.NewCatalog([]billing.Plan{
	{ID: "capped", Name: "Capped", Limits: map[string]billing.Limit{
		billing.LimitSeats: {Value: 2, Overage: billing.Block}, billing.LimitKnowledgeBases: {Value: 1, Overage: billing.Block},
		billing.LimitDocuments: {Value: 2, Overage: billing.Block}, billing.LimitStorageBytes: {Value: 64, Overage: billing.Block},
		billing.LimitRequestsPerMinute: {Value: 30, Overage: billing.Block},
	}},
	{ID: "free", Name: "Free", Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 10_000_000, Overage: billing.Block}}},
	{ID: "tiny", Name: "Tiny", Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 50, Overage: billing.Block}}},
	{ID: "team", Name: "Team", Prices: []billing.Price{{Interval: "month", Currency: "CNY", Amount: 9900}, {Interval: "month", Currency: "USD", Amount: 1900, StripePrice: "price_team_month_usd"}}, Features: map[string]bool{"sso": true},
		Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 100, Overage: billing.AllowAndBill, UnitPrice: 0.002}}},
}, "free")

// bundle is what a server test works with.
type bundle struct {
	srv      *Server
	rdb      redis.UniversalClient
	ks       redisclient.Keyspace
	pool     *pgxpool.Pool // the test's own database
	mail     *mailbox      // every email the server sent
	logs     *logtest.Buffer
	registry *prometheus.Registry
	router   routers.Router
	spec     *openapi3.T   // the spec the server serves: Kiln's and the test operations
	slowGate chan struct{} // /test/slow waits on it (or on its deadline)
	echo     http.Handler  // the handler of POST /test/echo, without the middleware
	// clock is the exports' clock (links' expiry), which a test moves.
	clock *storetest.Clock
	// eraseClock is the erasure's clock (deletion grace periods): moved by hand.
	eraseClock *storetest.Clock
}

type option func(*Deps)

func withChecks(checks ...health.Check) option { return func(d *Deps) { d.Checks = checks } }

func withConfig(fn func(*config.HTTP)) option { return func(d *Deps) { fn(&d.Config) } }

// withGateway serves the model endpoints from providers and aliases (the default is the
// dev provider behind "default"), with the built-in server tools. withKey, if given, builds
// a provider with an org's own key (bring your own key).
func withGateway(t testing.TB, providers map[string]llm.Provider, aliases map[string][]llm.Target, withKey ...func(provider, apiKey string) (llm.Provider, error)) option {
	return func(d *Deps) {
		cfg := llm.GatewayConfig{
			Providers: providers, Aliases: aliases, Timeout: 5 * time.Second, Retries: 1, MaxRetryAfter: time.Second,
			BreakerFailures: 5, BreakerCooldown: time.Minute, Log: d.Log, Registry: d.Registry, Backoff: time.Millisecond,
			Meter: d.LLM.Billing, DefaultMaxTokens: 1024, Tracing: d.Tracing,
		}
		if len(withKey) > 0 {
			cfg.OrgKeys, cfg.WithKey = d.LLM.OrgKeys, withKey[0]
		}
		g, err := llm.NewGateway(cfg)
		if err != nil {
			t.Fatal(err)
		}
		registry, err := tools.NewRegistry(tools.Builtins()...)
		if err != nil {
			t.Fatal(err)
		}
		d.LLM.Runner = &chat.Runner{Gateway: g, Tools: registry, MaxSteps: 4, ToolTimeout: time.Second, MaxTokens: 1024, Now: time.Now}
		d.LLM.StreamTimeout = time.Minute
	}
}

// setup builds a server on the test spec with test routes mounted.
func setup(t testing.TB, opts ...option) *bundle {
	t.Helper()
	return setupReplies(t, nil, opts...)
}

// setupReplies is setup with the replies' dependencies changed by replyDeps (nil: none).
func setupReplies(t testing.TB, replyDeps func(*replies.Deps), opts ...option) *bundle {
	t.Helper()
	return setupOn(t, storetest.New(t), storetest.Redis, replyDeps, opts...)
}

// setupBehind is setup with every connection to PostgreSQL and Redis made through the
// proxies pg and rd, which the test can cut, and /ready checking both.
func setupBehind(t testing.TB, pg, rd *storetest.Proxy, opts ...option) *bundle {
	t.Helper()
	st := storetest.NewBehind(t, pg)
	checks := func(d *Deps) { d.Checks = []health.Check{health.Postgres(st.Pool), health.Redis(d.Redis)} }
	return setupOn(t, st, func(t testing.TB) (redis.UniversalClient, redisclient.Keyspace) {
		return storetest.RedisBehind(t, rd)
	}, nil, append([]option{checks}, opts...)...)
}

// setupOn builds the test server on st and on Redis clients from newRedis.
func setupOn(t testing.TB, st *store.Store, newRedis func(testing.TB) (redis.UniversalClient, redisclient.Keyspace), replyDeps func(*replies.Deps), opts ...option) *bundle {
	t.Helper()
	logs := &logtest.Buffer{}
	spec := testSpec(t)
	log := logging.New(logs, "debug")
	rdb, ks := newRedis(t)
	mail := &mailbox{st: st}
	idRdb, idKs := newRedis(t)
	identity := newIdentity(t, st, idRdb, idKs, log)
	admins := admin.New(st, time.Now)
	admins.NotifyRevoked(identity.Tokens.RevokeSessions)
	admins.NotifyKeysChanged(identity.Keys.ForgetAll)
	d := Deps{
		Config:     config.Default().HTTP,
		Log:        log,
		Registry:   prometheus.NewRegistry(),
		Spec:       spec,
		Identity:   identity,
		Flags:      flags.New(st, rdb, ks, map[string]bool{}, time.Minute, log, time.Now),
		Admin:      admins,
		Prompts:    prompts.New(st, time.Now),
		Redis:      rdb,
		Keyspace:   ks,
		LimitAbuse: true,
	}
	keyring, err := secrets.ParseKeyring(secrets.DevMasterKeys)
	if err != nil {
		t.Fatal(err)
	}
	// On by default, as in production; withIdempotency replaces it.
	d.Idempotency = idempotency.New(rdb, ks, idempotency.Config{Sealer: keyring})
	d.LLM.OrgKeys = orgkeys.New(st, keyring, func(string) bool { return true }, time.Now)
	d.LLM.Billing = billing.New(st, testPlans, billing.NewQuota(rdb, ks, time.Minute, time.Now), time.Minute, 72*time.Hour, time.Now)
	for _, o := range opts {
		o(&d)
	}
	var planLimits rag.PlanLimits
	if d.LLM.Billing != nil {
		planLimits = d.LLM.Billing
		identity.Members.UsePlanLimits(d.LLM.Billing)
	}
	if d.Invoices.Invoicer == nil && d.LLM.Billing != nil {
		d.Invoices = Invoices{Invoicer: billing.NewInvoicer(st, d.LLM.Billing, billing.Issuer{ID: "default", Prefix: "INV-", Name: "Kiln Test Ltd",
			TaxRateBP: 1000}, time.Now), PDF: invoicepdf.New(nil)}
	}
	if d.LLM.Runner == nil {
		withGateway(t, map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
			map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}})(&d)
	}
	d.Prompts.KnowModels(d.LLM.Runner.Gateway.Has)
	if d.LLM.Runner.Cache == nil {
		d.LLM.Runner.Cache = cache.New(rdb, ks, time.Hour)
	}
	if d.LLM.Usage == nil {
		rec, err := usage.NewRecorder(st, log, d.Registry, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { rec.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		d.LLM.Usage = rec
	}
	if d.Conversations.Service == nil {
		bus := streams.New(rdb, ks, streams.Config{TTL: time.Hour})
		t.Cleanup(bus.Close)
		d.Conversations.Service = conversations.New(st, time.Now)
		rd := replies.Deps{
			Conversations: d.Conversations.Service, Prompts: d.Prompts, Runner: d.LLM.Runner, Usage: d.LLM.Usage, Streams: bus,
			Events: ReplyEvents{}, Log: log, StreamTimeout: d.LLM.StreamTimeout,
			ContextWindow: func(string) int { return 32768 },
		}
		if replyDeps != nil {
			replyDeps(&rd)
		}
		d.Conversations.Replies = replies.New(rd)
		d.Conversations.Responses = responses.New(st, d.Conversations.Service, d.Conversations.Replies, time.Now)
	}
	// One registry, as in cmd/kiln: the kinds the server creates are the kinds b.runJobs runs.
	registry := jobs.NewRegistry()
	if d.Knowledge == nil {
		d.Knowledge = rag.New(rag.DefaultConfig(), rag.Deps{Store: st, Embedder: rag.GatewayEmbedder{Gateway: d.LLM.Runner.Gateway, Usage: d.LLM.Usage},
			Jobs: registry, HasModel: d.LLM.Runner.Gateway.Has, Models: chat.Evaluator{Runner: d.LLM.Runner, Usage: d.LLM.Usage}, PlanLimits: planLimits, Log: log, Now: time.Now})
	}
	if d.LLM.Runner.Knowledge == nil {
		d.LLM.Runner.Knowledge = d.Knowledge
	}
	d.Prompts.KnowKnowledgeBases(d.Knowledge.CheckKnowledgeBases)
	if d.Jobs == nil {
		bus := streams.New(rdb, ks, streams.Config{TTL: time.Hour})
		t.Cleanup(bus.Close)
		d.Jobs = jobs.NewService(jobs.Deps{Registry: registry, Store: st, Redis: rdb, Bus: bus, Log: log, Tracing: d.Tracing},
			jobs.Config{Env: ks.Env, Concurrency: 2, PollInterval: 50 * time.Millisecond})
	}
	if d.Retention == nil {
		d.Retention = retention.New(st, retention.Builtin, time.Now)
	}
	eraseClock := storetest.NewClock()
	if d.Erasure == nil {
		ed := erasure.Deps{Store: st, Jobs: registry, Redis: rdb, Keyspace: ks, Passwords: d.Identity.Accounts, Log: log, Now: eraseClock.Now}
		if d.Idempotency != nil {
			ed.Idempotency = d.Idempotency
		}
		d.Erasure = erasure.New(erasure.Config{Grace: 14 * 24 * time.Hour}, ed)
		d.Erasure.NotifyRevoked(d.Identity.Tokens.RevokeSessions)
		d.Erasure.NotifyKeysChanged(d.Identity.Keys.ForgetAll)
	}
	if d.Notifications == nil {
		d.Notifications = notify.New(notify.Config{LongJob: 30 * time.Second}, notify.Deps{
			Store: st, Jobs: registry, Mailer: mail, Redis: rdb, Keyspace: ks, Log: log, Now: time.Now,
		})
		t.Cleanup(func() { _ = d.Notifications.Close() })
	}
	clock := storetest.NewClock()
	if d.Exports == nil {
		d.Exports = exports.New(exports.Config{LinkTTL: time.Hour, MaxBytes: 64 << 20}, exports.Deps{
			Store: st, Jobs: registry, Keyring: keyring, Notify: d.Notifications, Log: log, Now: clock.Now,
		})
	}
	d.Identity.Accounts.UseEmails(d.Notifications, testLinkBase)
	d.Identity.Members.UseEmails(d.Notifications, testLinkBase)
	d.Identity.Accounts.UseJobs(registry)
	srv, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	router, err := gorillamux.NewRouter(specWithoutServers(spec))
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{srv: srv, rdb: rdb, ks: ks, pool: st.Pool, mail: mail, logs: logs, registry: d.Registry, router: router, spec: spec, slowGate: make(chan struct{}), clock: clock, eraseClock: eraseClock}
	b.echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			srv.respondError(w, r, err)
			return
		}
		if body["name"] == "logme" {
			srv.log.InfoContext(r.Context(), "echo", "text", body["text"])
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	})
	srv.mux.Handle("POST /test/echo", b.echo)
	t.Cleanup(logs.Reset) // keep setup's lines (signing key creation) out of the test's view
	logs.Reset()
	srv.mux.HandleFunc("GET /test/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"id": r.PathValue("id")})
	})
	srv.mux.HandleFunc("GET /test/feature", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	})
	srv.mux.HandleFunc("GET /test/panic", func(http.ResponseWriter, *http.Request) {
		panic("secret internal detail: db password hunter2")
	})
	srv.mux.HandleFunc("GET /test/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-b.slowGate:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"done":true}`)
		case <-r.Context().Done():
			srv.respondError(w, r, r.Context().Err())
		}
	})
	return b
}

// newIdentity builds the identity services on st and a Redis key space of their own,
// with cheap password hashing and their background loops running.
func newIdentity(t testing.TB, st *store.Store, rdb redis.UniversalClient, ks redisclient.Keyspace, log *slog.Logger) Identity {
	t.Helper()
	keyring, err := secrets.ParseKeyring(secrets.DevMasterKeys)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{
		Accounts: account.New(st, account.Config{
			PasswordMinLength: 10, Argon2Memory: 8 * 1024, Argon2Time: 1, Argon2Threads: 1,
			SessionTTL: time.Hour, RefreshReuseGrace: time.Nanosecond, // any reuse is reuse
		}, log, time.Now),
		Tokens:  token.New(st, keyring, rdb, ks, token.Config{Issuer: "kiln", Audience: "kiln-api", AccessTTL: 15 * time.Minute}, log, time.Now),
		Keys:    apikey.New(st, rdb, ks, apikey.Config{Env: "test", CacheTTL: time.Minute, LastUsedFlushInterval: 100 * time.Millisecond}, log, time.Now),
		Audit:   audit.New(st),
		Members: members.New(st, time.Now),
	}
	id.Accounts.NotifyRevoked(id.Tokens.RevokeSessions)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = id.Tokens.Run(ctx); done <- struct{}{} }()
	go func() { _ = id.Keys.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	if err := id.Tokens.EnsureKey(ctx); err != nil {
		t.Fatal(err)
	}
	return id
}

// runJobs runs the server's job runtime until the test ends, as kiln serve's embedded
// worker does.
func (b *bundle) runJobs(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.srv.jobs.Run(ctx); err != nil {
			t.Errorf("job runtime: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// testLinkBase roots the links of the emails the test server queues.
const testLinkBase = "https://app.example.com"

// mailbox is the test server's notify.Mailer, and reads the emails it queued.
type mailbox struct {
	st *store.Store
}

// Send accepts an email; the tests read the queued emails (To), which the jobs runtime
// would hand to Send.
func (m *mailbox) Send(context.Context, notify.Message) error { return nil }

// To returns the emails queued to addr (a delivery with its notify.email job), oldest
// first, rendered as notify.email renders them.
func (m *mailbox) To(addr string) []notify.Message {
	ctx := context.Background()
	rows, err := m.st.Pool.Query(ctx, `SELECT d.template, coalesce(d.locale, 'en'), d.data FROM email_deliveries d
		WHERE d.to_address = $1 AND EXISTS (SELECT 1 FROM jobs j WHERE j.kind = $2 AND j.payload->>'delivery_id' = d.id::text)
		ORDER BY d.created_at, d.id`, addr, notify.KindEmail)
	if err != nil {
		panic(fmt.Sprintf("read queued emails: %v", err))
	}
	defer rows.Close()
	var out []notify.Message
	for rows.Next() {
		var (
			template, locale string
			data             map[string]string
		)
		if err := rows.Scan(&template, &locale, &data); err != nil {
			panic(fmt.Sprintf("read queued emails: %v", err))
		}
		r, err := notify.Render(template, notify.Locale(locale), data)
		if err != nil {
			panic(fmt.Sprintf("render queued email: %v", err))
		}
		out = append(out, notify.Message{To: addr, Subject: r.Subject, Text: r.Text, HTML: r.HTML})
	}
	if err := rows.Err(); err != nil {
		panic(fmt.Sprintf("read queued emails: %v", err))
	}
	return out
}

func specWithoutServers(spec *openapi3.T) *openapi3.T {
	c := *spec
	c.Servers = nil
	return &c
}

// do serves req and checks the response against the spec: status, headers, body schema.
func (b *bundle) do(t testing.TB, req *http.Request) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	res := rec.Result()
	b.validateResponse(t, req, res)
	return res
}

// validateResponse fails the test when res does not match the spec for req's operation.
// Requests no operation matches must still get a Problem.
func (b *bundle) validateResponse(t testing.TB, req *http.Request, res *http.Response) {
	t.Helper()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	if res.Header.Get(requestIDHeader) == "" {
		t.Errorf("%s %s: no X-Request-Id on the response", req.Method, req.URL.Path)
	}
	b.mustExpose(t, req, res.Header)
	mustError := mustProblem
	if isOpenAIRoute(req) {
		mustError = mustOpenAIError
	}
	route, params, err := b.router.FindRoute(req)
	if err != nil {
		if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" && res.StatusCode == http.StatusNoContent {
			return // a CORS preflight, answered before routing
		}
		if res.StatusCode < 400 {
			t.Fatalf("%s %s: unrouted request answered %d", req.Method, req.URL.Path, res.StatusCode)
		}
		mustError(t, res.Header, body)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true},
		},
		Status:  res.StatusCode,
		Header:  res.Header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("%s %s: response does not match the spec: %v\nbody: %s", req.Method, req.URL.Path, err, body)
	}
	if res.StatusCode >= 400 && !ownErrorBody(route.Operation, res) {
		mustError(t, res.Header, body)
	}
}

// ownErrorBody reports whether res is an error body of its own, not a problem, that op
// declares for its status (a payment provider's notification is answered in the
// provider's words); the spec validation above has checked that body.
func ownErrorBody(op *openapi3.Operation, res *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	r := op.Responses.Status(res.StatusCode)
	return mt != "application/problem+json" && r != nil && r.Value != nil && r.Value.Content.Get(mt) != nil
}

// mustProblem checks a problem+json body has a known code and the request id.
func mustProblem(t testing.TB, h http.Header, body []byte) api.Problem {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q, want application/problem+json; body %s", ct, body)
	}
	var p api.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem body: %v: %s", err, body)
	}
	if _, ok := catalogByCode(p.Code); !ok {
		t.Errorf("problem code %q is not in the catalog", p.Code)
	}
	if p.RequestId == "" || p.RequestId != h.Get(requestIDHeader) {
		t.Errorf("problem request_id %q, header %q", p.RequestId, h.Get(requestIDHeader))
	}
	return p
}

// mustOpenAIError checks a body is OpenAI's error {"error": {message, type, param, code}}
// with a code of the catalog, as every error under /openai must be.
func mustOpenAIError(t testing.TB, h http.Header, body []byte) api.Problem {
	t.Helper()
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q, want application/json (OpenAI's error body); body %s", ct, body)
	}
	var e struct {
		Error *struct {
			Message *string `json:"message"`
			Type    *string `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == nil || e.Error.Type == nil || e.Error.Code == nil ||
		!bytes.Contains(body, []byte(`"param":`)) {
		t.Fatalf("not OpenAI's error body {\"error\": {message, type, param, code}}: %s", body)
	}
	code := *e.Error.Code
	if code == openAIInsufficientQuota { // OpenAI's own code of quota_exceeded
		code = string(errs.QuotaExceeded)
	}
	pt, ok := catalogByCode(api.ErrorCode(code))
	if !ok {
		t.Errorf("error code %q is not in the catalog", *e.Error.Code)
	}
	return api.Problem{Status: pt.Status, Code: api.ErrorCode(code), Detail: e.Error.Message}
}

func catalogByCode(code api.ErrorCode) (problemType, bool) {
	for c, pt := range catalog {
		if string(c) == string(code) {
			return pt, true
		}
	}
	return problemType{}, false
}

func decodeProblem(t testing.TB, res *http.Response) api.Problem {
	t.Helper()
	body, _ := io.ReadAll(res.Body)
	return mustProblem(t, res.Header, body)
}

func jsonRequest(method, path, body string) *http.Request {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
