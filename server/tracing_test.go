package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/tracing"
	"github.com/kilnhq/kiln/internal/platform/tracing/tracetest"
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
