package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/health"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	res := b.do(t, httptest.NewRequest("GET", "/health", nil))
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	var h api.Health
	if err := json.NewDecoder(res.Body).Decode(&h); err != nil || h.Status != api.HealthStatusOk {
		t.Fatalf("body %+v, %v", h, err)
	}
}

func TestHead(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, httptest.NewRequest("HEAD", "/health", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("HEAD /health: %d %v", rec.Code, rec.Header())
	}
}

// TestLimits runs a real listener: oversized headers are refused by net/http itself.
func TestLimits(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *config.HTTP) { c.MaxHeaderBytes = 4096 }))
	httpSrv := b.srv.HTTPServer("127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = httpSrv.Serve(ln) }()
	t.Cleanup(func() { _ = httpSrv.Close() })
	if httpSrv.ReadHeaderTimeout <= 0 || httpSrv.IdleTimeout <= 0 || httpSrv.ReadTimeout <= 0 {
		t.Errorf("timeouts not set: %+v", httpSrv)
	}
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/health", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 8192))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KB of headers: %d, want 431", res.StatusCode)
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	rdb, _ := storetest.Redis(t)
	migrator, err := store.NewMigrator(st.Pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = migrator.Close() })

	// An unmigrated database and a Redis nobody listens on.
	empty := storetest.Pool(t, storetest.NewDatabase(t, ""))
	emptyMigrator, err := store.NewMigrator(empty)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emptyMigrator.Close() })
	deadRedis := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = deadRedis.Close() })
	evicting := health.Check{Name: "redis_eviction_policy", Run: health.EvictionPolicy(policyClient{rdb, "allkeys-lru"}).Run}

	tests := []struct {
		name       string
		checks     []health.Check
		wantStatus int
		wantFailed []string
	}{
		{"OK", []health.Check{health.Postgres(st.Pool), health.Redis(rdb), health.EvictionPolicy(rdb), health.Migrations(migrator.Versions)}, 200, nil},
		{"ErrRedisDown", []health.Check{health.Postgres(st.Pool), health.Redis(deadRedis)}, 503, []string{"redis"}},
		{"ErrMigrationsPending", []health.Check{health.Postgres(empty), health.Migrations(emptyMigrator.Versions)}, 503, []string{"migrations"}},
		{"ErrEvictionPolicy", []health.Check{health.Redis(rdb), evicting}, 503, []string{"redis_eviction_policy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withChecks(tt.checks...))
			res := b.do(t, httptest.NewRequest("GET", "/ready", nil))
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.wantStatus)
			}
			var body struct {
				Code   string      `json:"code"`
				Checks []api.Check `json:"checks"`
			}
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			var failed []string
			for _, c := range body.Checks {
				if c.Status == api.CheckStatusFailed {
					failed = append(failed, c.Name)
					if c.Detail == nil || *c.Detail == "" {
						t.Errorf("check %s failed without detail", c.Name)
					}
				}
			}
			if !slices.Equal(failed, tt.wantFailed) {
				t.Errorf("failed checks %v, want %v", failed, tt.wantFailed)
			}
			wantGauge := 1.0
			if tt.wantFailed != nil {
				wantGauge = 0
				if body.Code != string(errs.NotReady) {
					t.Errorf("code %q", body.Code)
				}
			}
			if got := testutil.ToFloat64(b.srv.metrics.ready); got != wantGauge {
				t.Errorf("kiln_ready %v, want %v", got, wantGauge)
			}
		})
	}
}

// policyClient reports a chosen maxmemory-policy, as a misconfigured Redis would.
type policyClient struct {
	redis.UniversalClient
	policy string
}

func (c policyClient) ConfigGet(ctx context.Context, _ string) *redis.MapStringStringCmd {
	cmd := redis.NewMapStringStringCmd(ctx)
	cmd.SetVal(map[string]string{"maxmemory-policy": c.policy})
	return cmd
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestProblems(t *testing.T) {
	t.Parallel()
	big := `{"name":"x","text":"` + strings.Repeat("a", 2048) + `"}`
	tests := []struct {
		name       string
		req        func() *http.Request
		wantStatus int
		wantCode   errs.Code
		wantFields []api.FieldError
	}{
		{"ErrUnknownRoute", func() *http.Request { return httptest.NewRequest("GET", "/nope", nil) }, 404, errs.NotFound, nil},
		{"ErrWrongMethod", func() *http.Request { return httptest.NewRequest("DELETE", "/health", nil) }, 405, errs.MethodNotAllowed, nil},
		{"ErrMalformedJSON", func() *http.Request { return jsonRequest("POST", "/test/echo", `{"name": "x",`) }, 400, errs.MalformedJSON, nil},
		{"ErrTrailingData", func() *http.Request { return jsonRequest("POST", "/test/echo", `{"name": "x"} {"name": "y"}`) }, 400, errs.MalformedJSON, nil},
		{"ErrNotAnObject", func() *http.Request { return jsonRequest("POST", "/test/echo", `[1, 2]`) }, 400, errs.Invalid, nil},
		{"ErrWrongContentType", func() *http.Request {
			req := httptest.NewRequest("POST", "/test/echo", strings.NewReader(`name=x`))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return req
		}, 415, errs.UnsupportedMediaType, nil},
		{"ErrBodyTooLarge", func() *http.Request { return jsonRequest("POST", "/test/echo", big) }, 413, errs.RequestTooLarge, nil},
		{"ErrBodyTooLargeChunked", func() *http.Request {
			req := jsonRequest("POST", "/test/echo", big)
			req.ContentLength = -1 // no Content-Length: the limit trips while reading
			return req
		}, 413, errs.RequestTooLarge, nil},
		{"ErrMissingBody", func() *http.Request { return jsonRequest("POST", "/test/echo", ``) }, 400, errs.Invalid,
			[]api.FieldError{{Pointer: "", Message: "a request body is required"}}},
		{"ErrSchema", func() *http.Request {
			return jsonRequest("POST", "/test/echo", `{"name":"a name that is far too long","count":0,"tags":["ok","toolong"]}`)
		}, 400, errs.Invalid, []api.FieldError{
			{Pointer: "/name", Message: "maximum string length is 16"},
			{Pointer: "/count", Message: "number must be at least 1"},
			{Pointer: "/tags/1", Message: "maximum string length is 4"},
		}},
		{"ErrUnknownField", func() *http.Request { return jsonRequest("POST", "/test/echo", `{"name":"x","extra":1}`) }, 400, errs.Invalid, nil},
		{"ErrQueryParam", func() *http.Request { return httptest.NewRequest("GET", "/test/items/1?limit=1000", nil) }, 400, errs.Invalid,
			[]api.FieldError{{Pointer: "/query/limit", Message: "number must be at most 100"}}},
		{"ErrPanic", func() *http.Request { return httptest.NewRequest("GET", "/test/panic", nil) }, 500, errs.Internal, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withConfig(func(c *config.HTTP) { c.MaxBodyBytes = 1024 }))
			res := b.do(t, tt.req())
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.wantStatus, body)
			}
			p := mustProblem(t, res.Header, body)
			if string(p.Code) != string(tt.wantCode) {
				t.Errorf("code %q, want %q", p.Code, tt.wantCode)
			}
			if p.Status != tt.wantStatus || p.Title == "" || p.Type != "urn:kiln:problem:"+string(tt.wantCode) {
				t.Errorf("problem %+v", p)
			}
			if tt.wantFields != nil {
				if p.Errors == nil {
					t.Fatalf("no errors[] in %s", body)
				}
				for _, want := range tt.wantFields {
					if !slices.ContainsFunc(*p.Errors, func(got api.FieldError) bool {
						return got.Pointer == want.Pointer && strings.Contains(got.Message, want.Message)
					}) {
						t.Errorf("missing field error %+v in %+v", want, *p.Errors)
					}
				}
			}
			if tt.wantCode == errs.MethodNotAllowed && res.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if strings.Contains(string(body), "hunter2") || strings.Contains(string(body), "goroutine") {
				t.Errorf("internals leaked to the client: %s", body)
			}
			if tt.wantCode == errs.Internal && !strings.Contains(b.logs.String(), "hunter2") {
				t.Error("the panic was not logged")
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *config.HTTP) { c.RequestTimeout = 50 * time.Millisecond }))
	start := time.Now()
	res := b.do(t, httptest.NewRequest("GET", "/test/slow", nil))
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", res.StatusCode)
	}
	if p := decodeProblem(t, res); string(p.Code) != string(errs.Timeout) {
		t.Errorf("code %q", p.Code)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %s; the deadline is 50ms", elapsed)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sent   string
		echoed bool
	}{
		{"OKEchoed", "req-123.abc:XYZ_9", true},
		{"OKGeneratedWhenMissing", "", false},
		{"OKGeneratedWhenTooLong", strings.Repeat("a", 129), false},
		{"OKGeneratedWhenUnsafe", "abc\"; drop", false},
	}
	uuidV7 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			req := jsonRequest("POST", "/test/echo", `{"name":"logme","text":"hello"}`)
			if tt.sent != "" {
				req.Header.Set("X-Request-Id", tt.sent)
			}
			res := b.do(t, req)
			got := res.Header.Get("X-Request-Id")
			if tt.echoed && got != tt.sent {
				t.Fatalf("X-Request-Id %q, want %q", got, tt.sent)
			}
			if !tt.echoed && !uuidV7.MatchString(got) {
				t.Fatalf("X-Request-Id %q is not a generated UUIDv7", got)
			}
			lines := logLines(t, b.logs.String())
			if len(lines) < 2 {
				t.Fatalf("want the handler's line and the access line, got %d lines", len(lines))
			}
			for _, l := range lines {
				if l["request_id"] != got {
					t.Errorf("log line without the request id: %v", l)
				}
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const secret = "sk-proj-abcdefghijklmnopqrstuvwx0123456789"
	req := jsonRequest("POST", "/test/echo?x=1", `{"name":"logme","text":"my key is `+secret+` please"}`)
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("User-Agent", "kiln-test/1")
	res := b.do(t, req)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	logs := b.logs.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, "abcdefghijklmnop") {
		t.Fatalf("a secret reached the logs:\n%s", logs)
	}
	var access []map[string]any
	for _, l := range logLines(t, logs) {
		if l["msg"] == "request" {
			access = append(access, l)
		}
	}
	if len(access) != 1 {
		t.Fatalf("want one access line, got %d", len(access))
	}
	a := access[0]
	for k, want := range map[string]any{"method": "POST", "route": "POST /test/echo", "path": "/test/echo", "status": 200.0, "user_agent": "kiln-test/1"} {
		if a[k] != want {
			t.Errorf("access log %s = %v, want %v", k, a[k], want)
		}
	}
	if _, ok := a["duration"]; !ok {
		t.Error("access log without duration")
	}
}

func logLines(t testing.TB, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func TestMetricsCardinality(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 1000 {
		b.do(t, httptest.NewRequest("GET", fmt.Sprintf("/test/items/%d", i), nil))
		b.do(t, httptest.NewRequest("GET", fmt.Sprintf("/nope/%d", i), nil))
	}
	if n := testutil.CollectAndCount(b.srv.metrics.requests); n != 2 {
		t.Errorf("kiln_http_requests_total has %d series after 2,000 distinct paths, want 2", n)
	}
	if got := testutil.ToFloat64(b.srv.metrics.requests.WithLabelValues("GET", "GET /test/items/{id}", "200")); got != 1000 {
		t.Errorf("route-template counter %v, want 1000", got)
	}
	if got := testutil.ToFloat64(b.srv.metrics.requests.WithLabelValues("GET", "unmatched", "404")); got != 1000 {
		t.Errorf("unmatched counter %v, want 1000", got)
	}
	if n := testutil.CollectAndCount(b.srv.metrics.duration); n != 2 {
		t.Errorf("duration histogram has %d series, want 2", n)
	}
	res := b.do(t, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(res.Body)
	for _, name := range []string{"kiln_http_requests_total", "kiln_http_request_duration_seconds_bucket", "kiln_http_requests_in_flight", "kiln_ready"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if strings.Contains(string(body), "/test/items/1\"") {
		t.Error("a raw path is a label value")
	}
}

func TestDocs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		path, wantType, wantBody string
	}{
		{"/openapi.json", "application/json", `"openapi":"3.0.3"`},
		{"/openapi.yaml", "application/yaml", "openapi: 3.0.3"},
		{"/docs", "text/html; charset=utf-8", "/docs/assets/swagger-ui-bundle.js"},
		{"/docs/assets/swagger-ui-bundle.js", "text/javascript; charset=utf-8", "SwaggerUIBundle"},
		{"/docs/assets/swagger-ui.css", "text/css; charset=utf-8", ".swagger-ui"},
		{"/docs/assets/init.js", "text/javascript; charset=utf-8", `url: "/openapi.json"`},
	}
	for _, tt := range tests {
		res := b.do(t, httptest.NewRequest("GET", tt.path, nil))
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != tt.wantType || !strings.Contains(string(body), tt.wantBody) {
			t.Errorf("GET %s: %d %q, body has %q: %v", tt.path, res.StatusCode, res.Header.Get("Content-Type"), tt.wantBody, strings.Contains(string(body), tt.wantBody))
		}
		if strings.Contains(string(body), "cdn") || strings.Contains(string(body), "unpkg") {
			t.Errorf("GET %s refers to a CDN", tt.path)
		}
	}
	res := b.do(t, httptest.NewRequest("GET", "/docs/assets/missing.js", nil))
	if res.StatusCode != 404 {
		t.Errorf("missing asset: %d", res.StatusCode)
	}
}

// TestGracefulShutdown: a request in flight when shutdown starts completes; new
// connections are refused; Draining closes so streams can end with a final event.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	httpSrv := b.srv.HTTPServer("127.0.0.1:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = httpSrv.Serve(ln) }()
	url := "http://" + ln.Addr().String()

	inFlight := make(chan *http.Response, 1)
	go func() {
		res, err := http.Get(url + "/test/slow")
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		inFlight <- res
	}()
	waitFor(t, "the slow request to be in flight", func() bool { return testutil.ToFloat64(b.srv.metrics.inFlight) == 1 })

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- httpSrv.Shutdown(context.Background()) }()
	select {
	case <-b.srv.Draining():
	case <-time.After(2 * time.Second):
		t.Fatal("Draining did not close on shutdown")
	}
	waitFor(t, "the listener to close", func() bool {
		_, err := net.DialTimeout("tcp", ln.Addr().String(), 100*time.Millisecond)
		return err != nil
	})
	close(b.slowGate)
	res := <-inFlight
	if res == nil || res.StatusCode != 200 {
		t.Fatalf("in-flight request did not complete: %+v", res)
	}
	if err := <-shutdownDone; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestErrorCatalog keeps the Go catalog, the spec's ErrorCode enum and docs/errors.md in step.
func TestErrorCatalog(t *testing.T) {
	t.Parallel()
	spec := testSpec(t)
	var specCodes []string
	for _, v := range spec.Components.Schemas["ErrorCode"].Value.Enum {
		specCodes = append(specCodes, v.(string))
	}
	var goCodes []string
	for c, pt := range catalog {
		goCodes = append(goCodes, string(c))
		if pt.Status < 400 || pt.Title == "" {
			t.Errorf("catalog %s: %+v", c, pt)
		}
	}
	slices.Sort(specCodes)
	slices.Sort(goCodes)
	if !slices.Equal(specCodes, goCodes) {
		t.Errorf("spec ErrorCode %v\ncatalog        %v", specCodes, goCodes)
	}
	doc, err := os.ReadFile("../docs/errors.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range goCodes {
		row := regexp.MustCompile("(?m)^\\| `" + c + "` \\| " + fmt.Sprint(catalog[errs.Code(c)].Status) + " \\|")
		if !row.Match(doc) {
			t.Errorf("docs/errors.md has no row for %s with status %d", c, catalog[errs.Code(c)].Status)
		}
	}
}

func TestRespondErrorHidesInternals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/x", nil)
	b.srv.respondError(rec, req, fmt.Errorf("query users: %w", errors.New("pq: password authentication failed for hunter2")))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "hunter2") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if !strings.Contains(b.logs.String(), "internal error") {
		t.Error("internal error not logged")
	}
}
