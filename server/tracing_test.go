package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/tracing"
	"github.com/kilnhq/kiln/internal/platform/tracing/tracetest"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// withTracing turns tracing on with tp.
func withTracing(tp trace.TracerProvider) option { return func(d *Deps) { d.Tracing = tp } }

// clientTraceparent is a caller's trace context: trace 4bf9…4736, span 00f0…02b7, sampled.
const (
	clientTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientSpanID      = "00f067aa0ba902b7"
	clientTraceparent = "00-" + clientTraceID + "-" + clientSpanID + "-01"
)

// serverSpan returns the one server span named name.
func serverSpan(t *testing.T, spans []tracetest.Span, name string) tracetest.Span {
	t.Helper()
	got := tracetest.Named(spans, name)
	if len(got) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("want one span %q, got %d among %q", name, len(got), names)
	}
	if got[0].Kind != "SPAN_KIND_SERVER" {
		t.Errorf("span %q kind = %s, want SPAN_KIND_SERVER", name, got[0].Kind)
	}
	return got[0]
}

func TestTracingHTTP(t *testing.T) {
	t.Parallel()

	t.Run("SpanNamedByRouteTemplate", func(t *testing.T) {
		t.Parallel()
		rcv := tracetest.NewReceiver(t)
		tp := rcv.Provider(t)
		b := setup(t, withTracing(tp))
		req := httptest.NewRequest(http.MethodGet, "/test/items/42", nil)
		req.Header.Set(requestIDHeader, "req-trace-1")
		b.do(t, req)
		b.do(t, httptest.NewRequest(http.MethodGet, "/health", nil)) // probes are not traced

		spans := rcv.Spans(t, tp)
		span := serverSpan(t, spans, "GET /test/items/{id}")
		if span.Attrs["http.route"] != "GET /test/items/{id}" || span.Attrs["kiln.request_id"] != "req-trace-1" {
			t.Errorf("span attributes = %v, want http.route and kiln.request_id", span.Attrs)
		}
		if span.Attrs["http.response.status_code"] != int64(200) {
			t.Errorf("http.response.status_code = %v, want 200", span.Attrs["http.response.status_code"])
		}
		if span.Resource["service.name"] != "kiln" || span.Resource["service.version"] != "test" {
			t.Errorf("resource = %v, want service.name kiln and service.version test", span.Resource)
		}
		if len(tracetest.Named(spans, "GET /health")) != 0 {
			t.Error("GET /health was traced; probes should not be")
		}
		// The access log line names the trace.
		if !strings.Contains(b.logs.String(), `"trace_id":"`+span.TraceID+`"`) {
			t.Errorf("no log line carries trace_id %s:\n%s", span.TraceID, b.logs.String())
		}
	})

	t.Run("ProblemCarriesTraceID", func(t *testing.T) {
		t.Parallel()
		rcv := tracetest.NewReceiver(t)
		tp := rcv.Provider(t)
		b := setup(t, withTracing(tp))
		res := b.do(t, httptest.NewRequest(http.MethodGet, "/v1/nope", nil))
		p := decodeProblem(t, res)
		span := serverSpan(t, rcv.Spans(t, tp), "unmatched")
		if p.TraceId == nil || *p.TraceId != span.TraceID {
			t.Errorf("problem trace_id = %v, want the request's trace %s", p.TraceId, span.TraceID)
		}
	})

	t.Run("UntrustedTraceparentStartsNewTrace", func(t *testing.T) {
		t.Parallel()
		rcv := tracetest.NewReceiver(t)
		tp := rcv.Provider(t)
		b := setup(t, withTracing(tp)) // no trusted proxies: no caller's context is taken
		req := httptest.NewRequest(http.MethodGet, "/test/items/1", nil)
		req.Header.Set("Traceparent", clientTraceparent)
		b.do(t, req)
		span := serverSpan(t, rcv.Spans(t, tp), "GET /test/items/{id}")
		if span.TraceID == clientTraceID || span.ParentID != "" {
			t.Errorf("span trace %s parent %q: an untrusted caller's traceparent was continued", span.TraceID, span.ParentID)
		}
		if len(span.Links) != 1 || span.Links[0] != clientTraceID {
			t.Errorf("links = %v, want one link to the caller's trace %s", span.Links, clientTraceID)
		}
	})

	t.Run("TrustedProxyTraceparentContinued", func(t *testing.T) {
		t.Parallel()
		rcv := tracetest.NewReceiver(t)
		tp := rcv.Provider(t)
		b := setup(t, withTracing(tp), withConfig(func(c *config.HTTP) { c.TrustedProxies = "192.0.2.0/24" }))
		req := httptest.NewRequest(http.MethodGet, "/test/items/1", nil) // RemoteAddr 192.0.2.1
		req.Header.Set("Traceparent", clientTraceparent)
		b.do(t, req)
		span := serverSpan(t, rcv.Spans(t, tp), "GET /test/items/{id}")
		if span.TraceID != clientTraceID || span.ParentID != clientSpanID {
			t.Errorf("span trace %s parent %s, want the proxy's caller's trace %s parent %s", span.TraceID, span.ParentID, clientTraceID, clientSpanID)
		}
	})

	t.Run("OffAddsNoSpan", func(t *testing.T) {
		t.Parallel()
		tp, err := tracing.New(t.Context(), config.Default().OTel, tracing.Build{})
		if err != nil || tp != nil {
			t.Fatalf("tracing.New without an endpoint = %v, %v; want nil, nil (off)", tp, err)
		}
		b := setup(t, withConfig(func(c *config.HTTP) { c.TrustedProxies = "192.0.2.0/24" }))
		var traced bool
		b.srv.mux.HandleFunc("GET /test/traced", func(w http.ResponseWriter, r *http.Request) {
			traced = trace.SpanContextFromContext(r.Context()).IsValid()
			w.WriteHeader(http.StatusNoContent)
		})
		req := httptest.NewRequest(http.MethodGet, "/test/traced", nil)
		req.Header.Set("Traceparent", clientTraceparent)
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		if traced {
			t.Error("with tracing off the handler's context carries a span")
		}
		req = httptest.NewRequest(http.MethodGet, "/v1/nope", nil)
		req.Header.Set("Traceparent", clientTraceparent)
		var p map[string]any
		if err := json.NewDecoder(b.do(t, req).Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		if _, ok := p["trace_id"]; ok {
			t.Errorf("with tracing off the problem has a trace_id: %v", p)
		}
		if strings.Contains(b.logs.String(), "trace_id") {
			t.Errorf("with tracing off a log line has a trace_id:\n%s", b.logs.String())
		}
	})
}

// setupTraced is setup with tracing on everywhere kiln serve turns it on: HTTP, the
// gateway, PostgreSQL (a pool on the test's database opened with store.WithTracing) and
// Redis (redisclient.Trace).
func setupTraced(t *testing.T, tp trace.TracerProvider, opts ...option) *bundle {
	t.Helper()
	st := storetest.New(t)
	pool, err := store.Open(t.Context(), st.Pool.Config().ConnString(), 8, store.WithTracing(tp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	tracedRedis := func(t testing.TB) (redis.UniversalClient, redisclient.Keyspace) {
		rdb, ks := storetest.Redis(t)
		if err := redisclient.Trace(rdb, tp); err != nil {
			t.Fatal(err)
		}
		return rdb, ks
	}
	return setupOn(t, store.New(pool), tracedRedis, nil, append([]option{withTracing(tp)}, opts...)...)
}

// TestTracingChatSpanTree follows one chat request in the spans exported over OTLP: the
// HTTP server span, under it the model call with the GenAI attributes (and no prompt or
// reply text), and the request's PostgreSQL and Redis spans.
func TestTracingChatSpanTree(t *testing.T) {
	t.Parallel()
	rcv := tracetest.NewReceiver(t)
	tp := rcv.Provider(t)
	b := setupTraced(t, tp)
	user := b.signUp(t, "tracer@example.com")
	const prompt = "tell me about the secret-prompt-marker"
	var got api.ChatCompletion
	res := b.call(t, "POST", "/v1/chat/completions", user.AccessToken, json.RawMessage(chatJSON(prompt)), &got)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d", res.StatusCode)
	}

	spans := rcv.Spans(t, tp)
	root := serverSpan(t, spans, "POST /v1/chat/completions")
	below := tracetest.DescendantsOf(spans, root)
	model := tracetest.Named(below, "chat "+dev.Model)
	if len(model) != 1 {
		t.Fatalf("want one model-call span below the request, got %d among %v", len(model), names(below))
	}
	m := model[0]
	for key, want := range map[string]any{
		"gen_ai.operation.name": "chat", "gen_ai.provider.name": "dev", "gen_ai.request.model": dev.Model,
	} {
		if m.Attrs[key] != want {
			t.Errorf("%s = %v, want %v", key, m.Attrs[key], want)
		}
	}
	if m.Kind != "SPAN_KIND_CLIENT" {
		t.Errorf("model span kind = %s, want client", m.Kind)
	}
	if in, _ := m.Attrs["gen_ai.usage.input_tokens"].(int64); in <= 0 || in != int64(got.Usage.PromptTokens) {
		t.Errorf("gen_ai.usage.input_tokens = %v, want the reply's %d", m.Attrs["gen_ai.usage.input_tokens"], got.Usage.PromptTokens)
	}
	if out, _ := m.Attrs["gen_ai.usage.output_tokens"].(int64); out <= 0 {
		t.Errorf("gen_ai.usage.output_tokens = %v, want > 0", m.Attrs["gen_ai.usage.output_tokens"])
	}
	if fr := fmt.Sprint(m.Attrs["gen_ai.response.finish_reasons"]); fr != "[stop]" {
		t.Errorf("gen_ai.response.finish_reasons = %s, want [stop]", fr)
	}
	if m.Attrs["gen_ai.response.model"] == nil {
		t.Error("no gen_ai.response.model")
	}
	for _, s := range spans {
		for k, v := range s.Attrs {
			if strings.Contains(fmt.Sprint(v), "secret-prompt-marker") {
				t.Errorf("span %q attribute %s holds the prompt text; content is recorded only with otel.record_content", s.Name, k)
			}
		}
	}
	var db, cache int
	for _, s := range below {
		if s.Attrs["db.system.name"] == "postgresql" || s.Attrs["db.system"] == "postgresql" {
			db++
		}
		if s.Attrs["db.system"] == "redis" || s.Attrs["db.system.name"] == "redis" {
			cache++
		}
	}
	if db == 0 || cache == 0 {
		t.Errorf("below the request: %d PostgreSQL and %d Redis spans, want some of each; spans %v", db, cache, names(below))
	}
}

// names lists the spans' names.
func names(spans []tracetest.Span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
