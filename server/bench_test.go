package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/platform/logging"
)

// BenchmarkMiddleware compares the whole middleware stack (request id, access log,
// metrics, recovery, routing, body limit, deadline, spec validation) with the bare
// handler on the same 1 KB JSON request, in one run. The difference is what Kiln adds.
//
//	go test ./server -run '^$' -bench Middleware -benchmem -count 6 | tee /tmp/mw.txt
func BenchmarkMiddleware(b *testing.B) {
	body := `{"name":"bench","count":3,"tags":["a","b"],"text":"` + strings.Repeat("x", 1024-64) + `"}`
	if len(body) < 1000 || len(body) > 1100 {
		b.Fatalf("body is %d bytes, want about 1 KB", len(body))
	}
	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
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
	// The access line is still encoded; only its destination is discarded.
	bd.srv.log = logging.New(io.Discard, "info")
	b.Run("bare", func(b *testing.B) { run(b, bd.echo) })
	b.Run("stack", func(b *testing.B) { run(b, bd.srv) })
}
