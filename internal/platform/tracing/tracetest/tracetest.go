// Package tracetest is an in-process OTLP collector for tests: it receives the spans Kiln
// exports over OTLP/HTTP (protobuf, as a real collector does) and lets a test read them back
// as a tree.
package tracetest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/tracing"
)

// Span is one received span, its ids in hex.
type Span struct {
	TraceID, SpanID, ParentID string
	Name                      string
	Kind                      string // SPAN_KIND_SERVER, SPAN_KIND_CLIENT, …
	Attrs                     map[string]any
	Links                     []string // the trace ids linked to
	StatusCode                string   // STATUS_CODE_UNSET, STATUS_CODE_OK, STATUS_CODE_ERROR
	Resource                  map[string]any
}

// Receiver is an OTLP/HTTP trace endpoint (POST /v1/traces).
type Receiver struct {
	URL string

	mu    sync.Mutex
	spans []Span
}

// NewReceiver starts a receiver that stops when the test ends.
func NewReceiver(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces with application/x-protobuf", http.StatusBadRequest)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var export collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range export.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Kind: s.GetKind().String(),
					Attrs: attrs(s.GetAttributes()), StatusCode: s.GetStatus().GetCode().String(), Resource: res,
				}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, hex.EncodeToString(l.GetTraceId()))
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// attrs flattens OTLP attributes: strings, int64s, float64s, bools and lists of them.
func attrs(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, value(e))
		}
		return out
	}
	return nil
}

// Provider returns a tracer provider built as kiln builds it (tracing.New), exporting to
// r over OTLP/HTTP, every trace sampled; it is shut down when the test ends.
func (r *Receiver) Provider(t testing.TB) *tracing.Provider {
	t.Helper()
	cfg := config.Default().OTel
	cfg.Endpoint = r.URL
	tp, err := tracing.New(context.Background(), cfg, tracing.Build{Version: "test", Environment: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// Spans flushes tp and returns every span received so far.
func (r *Receiver) Spans(t testing.TB, tp *tracing.Provider) []Span {
	t.Helper()
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatalf("flush spans: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// Named returns the spans named name.
func Named(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// ChildrenOf returns the spans whose parent is parent.
func ChildrenOf(spans []Span, parent Span) []Span {
	var out []Span
	for _, s := range spans {
		if s.ParentID == parent.SpanID && s.TraceID == parent.TraceID {
			out = append(out, s)
		}
	}
	return out
}

// DescendantsOf returns the spans below parent in its trace, at any depth.
func DescendantsOf(spans []Span, parent Span) []Span {
	var out []Span
	for _, c := range ChildrenOf(spans, parent) {
		out = append(out, c)
		out = append(out, DescendantsOf(spans, c)...)
	}
	return out
}
