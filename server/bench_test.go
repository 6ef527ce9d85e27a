package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kilnhq/kiln/internal/platform/logging"
)

// BenchmarkMiddleware compares the whole middleware stack (request id, access log,
// metrics, recovery, routing, body limit, deadline, spec validation) with the bare
// handler on the same 1 KB JSON request, in one run; the difference is what Kiln adds.
// cpu-ns/op is the process's CPU time per request, which other work on a shared machine
// inflates much less than ns/op.
// The "+layer" runs add one layer at a time, to show where the time goes; "stack+tracing"
// is the stack with tracing on (every request sampled, spans batched to an exporter that
// drops them), so stack+tracing − stack is what a span per request costs.
//
//	go test ./server -run '^$' -bench Middleware -benchmem -count 6
func BenchmarkMiddleware(b *testing.B) {
	body := `{"name":"bench","count":3,"tags":["a","b"],"text":"` + strings.Repeat("x", 1024-64) + `"}`
	if len(body) < 1000 || len(body) > 1100 {
		b.Fatalf("body is %d bytes, want about 1 KB", len(body))
	}
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		defer reportCPU(b)()
		for b.Loop() {
			req := httptest.NewRequest("POST", "/test/echo", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	}
	bd := setup(b)
	s := bd.srv
	// The access line is still encoded; only its destination is discarded.
	s.log = logging.New(io.Discard, "info")
	b.Run("bare", func(b *testing.B) { run(b, bd.echo) })
	b.Run("stack", func(b *testing.B) { run(b, s) })
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { _ = tp.Shutdown(b.Context()) })
	b.Run("stack+tracing", func(b *testing.B) { run(b, s.traceRequests(tp)(s)) })

	layers := []struct {
		name string
		mw   func(http.Handler) http.Handler
	}{
		{"+request_id", withRequestID},
		{"+observe", s.observe},
		{"+recover_route", func(h http.Handler) http.Handler { return s.recoverPanics(s.rejectUnrouted(h)) }},
		{"+limits", func(h http.Handler) http.Handler { return s.limitBody(s.withDeadline(h)) }},
		{"+validate", s.validateRequests(testSpec(b))},
	}
	var mws []func(http.Handler) http.Handler
	for _, l := range layers {
		mws = append(mws, l.mw)
		h := chain(s.mux, mws...)
		b.Run(l.name, func(b *testing.B) { run(b, h) })
	}
}

// reportCPU reports the process's CPU time (user + system) per iteration as cpu-ns/op,
// from its call until the returned function's.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBodyValidation compares the JSON body validation of the middleware with
// openapi3filter.ValidateRequest, which it replaced, on the 1 KB body of
// BenchmarkMiddleware and on a short OpenAI chat request.
//
//	go test ./server -run '^$' -bench BodyValidation -benchmem -count 6
func BenchmarkBodyValidation(b *testing.B) {
	fast, filter := kinOperations(b)
	for _, tc := range []struct{ name, route, path, body string }{
		{"echo_1KB", "POST /test/echo", "/test/echo", `{"name":"bench","count":3,"tags":["a","b"],"text":"` + strings.Repeat("x", 1024-64) + `"}`},
		{"openai_chat", "POST /openai/v1/chat/completions", "/openai/v1/chat/completions", `{"model":"default","messages":[{"role":"user","content":"hello"}]}`},
	} {
		for name, op := range map[string]*operation{"validator": fast[tc.route], "openapi3filter": filter[tc.route]} {
			b.Run(tc.name+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				defer reportCPU(b)()
				for b.Loop() {
					req := httptest.NewRequest("POST", tc.path, strings.NewReader(tc.body))
					req.Header.Set("Content-Type", "application/json")
					if err := op.validate(req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
