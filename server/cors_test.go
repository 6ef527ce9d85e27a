package server

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
)

// notForScripts are response headers no client script reads, so none needs exposing:
// caching, connection and WebSocket handshake headers, and X-Accel-Buffering, which tells
// a proxy (nginx) not to buffer a stream, and the security headers, which the browser acts
// on.
var notForScripts = []string{"vary", "date", "accept-ranges", "connection", "upgrade", "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions", "x-accel-buffering",
	"x-content-type-options", "referrer-policy", "cross-origin-resource-policy", "content-security-policy", "strict-transport-security"}

// mustExpose keeps Access-Control-Expose-Headers in step with what Kiln sends: every
// header of every response the tests see must be one a page of another origin can read
// (safelisted, or exposed because the spec declares it), or one no script reads.
func (b *bundle) mustExpose(t testing.TB, req *http.Request, h http.Header) {
	t.Helper()
	exposed := strings.Split(strings.ToLower(b.srv.cors.exposed), ", ")
	for name := range h {
		l := strings.ToLower(name)
		if slices.Contains(corsSafelisted, l) || slices.Contains(exposed, l) || slices.Contains(notForScripts, l) || strings.HasPrefix(l, "access-control-") {
			continue
		}
		t.Errorf("%s %s: response header %s is not declared in the spec, so pages of other origins cannot read it "+
			"(Access-Control-Expose-Headers lists the spec's response headers): declare it on the operation's response",
			req.Method, req.URL.Path, name)
	}
}

// withCORS configures http.cors.allowed_origins.
func withCORS(origins string) option {
	return withConfig(func(c *config.HTTP) { c.CORS.AllowedOrigins = origins })
}

func preflight(path, origin, method, headers string) *http.Request {
	req := httptest.NewRequest(http.MethodOptions, path, nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", method)
	if headers != "" {
		req.Header.Set("Access-Control-Request-Headers", headers)
	}
	return req
}

func withOrigin(req *http.Request, origin string) *http.Request {
	req.Header.Set("Origin", origin)
	return req
}

// clientHeaders are the headers the issue names as read by clients; each must be exposed.
var clientHeaders = []string{"X-Request-Id", "Kiln-Message-Id", "Kiln-Cache", "Idempotent-Replayed", "Retry-After", "RateLimit", "RateLimit-Policy", "Location", "Kiln-Provider", "Kiln-Provider-Model", "WWW-Authenticate"}

// TestCORS: pages of allowed origins may call every route and read every answer, errors
// included; others are refused a preflight and cannot read answers; with no origins
// configured there is no CORS. The chat WebSocket, to which browsers apply no CORS, admits
// the same origins.
func TestCORS(t *testing.T) {
	t.Parallel()
	b := setup(t, withCORS("http://localhost:3000, https://*.example.com"))
	off := setup(t)
	const app = "http://localhost:3000"

	t.Run("OKPreflightOfEveryOperation", func(t *testing.T) {
		t.Parallel()
		n := 0
		for path, item := range b.spec.Paths.Map() {
			for method := range item.Operations() {
				p := strings.NewReplacer("{", "", "}", "").Replace(path) // any value routes
				res := b.do(t, preflight(p, app, method, "authorization, content-type, idempotency-key, kiln-org, last-event-id, x-stainless-os"))
				h := res.Header
				if res.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != app || h.Get("Access-Control-Allow-Credentials") != "true" ||
					!strings.Contains(h.Get("Access-Control-Allow-Methods"), method) ||
					h.Get("Access-Control-Allow-Headers") != "authorization, content-type, idempotency-key, kiln-org, last-event-id, x-stainless-os" ||
					h.Get("Access-Control-Max-Age") != "600" || !slices.Contains(h.Values("Vary"), "Origin") {
					t.Fatalf("%s %s: %d %v", method, path, res.StatusCode, h)
				}
				n++
			}
		}
		if n < 50 {
			t.Fatalf("only %d operations", n)
		}
	})

	t.Run("OKPreflightOfAPattern", func(t *testing.T) {
		t.Parallel()
		res := b.do(t, preflight("/openai/v1/chat/completions", "https://chat.eu.example.com", "POST", "authorization"))
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "https://chat.eu.example.com" {
			t.Fatalf("%d %v", res.StatusCode, res.Header)
		}
		if res.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Error("credentials allowed to a pattern's origin")
		}
	})

	t.Run("OKPrivateNetworkPreflight", func(t *testing.T) {
		t.Parallel()
		req := preflight("/v1/auth/login", app, "POST", "content-type")
		req.Header.Set("Access-Control-Request-Private-Network", "true")
		if res := b.do(t, req); res.Header.Get("Access-Control-Allow-Private-Network") != "true" {
			t.Fatalf("%d %v", res.StatusCode, res.Header)
		}
	})

	for _, tt := range []struct{ name, origin string }{
		{"ErrOtherOrigin", "https://evil.test"},
		{"ErrPatternNeedsItsScheme", "http://app.example.com"},
		{"ErrPatternIsNotTheApex", "https://example.com"},
		{"ErrExactNeedsItsPort", "http://localhost:3001"},
		{"ErrNull", "null"},
	} {
		t.Run(tt.name+"PreflightRefused", func(t *testing.T) {
			t.Parallel()
			res := b.do(t, preflight("/v1/auth/login", tt.origin, "POST", "content-type"))
			p := problemIs(t, res, http.StatusForbidden, errs.PermissionDenied)
			if !strings.Contains(deref(p.Detail), "http.cors.allowed_origins") {
				t.Errorf("detail %q does not say how to allow the origin", deref(p.Detail))
			}
			if res.Header.Get("Access-Control-Allow-Origin") != "" || res.Header.Get("Access-Control-Allow-Methods") != "" {
				t.Errorf("CORS headers on a refusal: %v", res.Header)
			}
		})
		t.Run(tt.name+"AnswerUnreadable", func(t *testing.T) {
			t.Parallel()
			res := b.do(t, withOrigin(httptest.NewRequest("GET", "/health", nil), tt.origin))
			if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "" || res.Header.Get("Access-Control-Expose-Headers") != "" {
				t.Fatalf("%d %v", res.StatusCode, res.Header)
			}
			if !slices.Contains(res.Header.Values("Vary"), "Origin") {
				t.Error("no Vary: Origin: a cache could serve this answer to an allowed origin")
			}
		})
	}

	t.Run("ErrOpenAIPreflightRefusedInOpenAIShape", func(t *testing.T) {
		t.Parallel()
		res := b.do(t, preflight("/openai/v1/chat/completions", "https://evil.test", "POST", "authorization"))
		openAIErrorIs(t, res, http.StatusForbidden, "permission_error", errs.PermissionDenied, nil)
	})

	t.Run("OKAnswersAndErrorsReadable", func(t *testing.T) {
		t.Parallel()
		for _, req := range []*http.Request{
			httptest.NewRequest("GET", "/health", nil),
			httptest.NewRequest("GET", "/v1/me", nil),                      // 401
			httptest.NewRequest("GET", "/v1/nothing-here", nil),            // 404
			httptest.NewRequest("GET", "/openai/v1/chat/completions", nil), // 405
		} {
			res := b.do(t, withOrigin(req, app))
			h := res.Header
			if h.Get("Access-Control-Allow-Origin") != app || h.Get("Access-Control-Allow-Credentials") != "true" {
				t.Errorf("%s %s: %d without CORS headers: %v", req.Method, req.URL.Path, res.StatusCode, h)
			}
			exposed := strings.Split(h.Get("Access-Control-Expose-Headers"), ", ")
			for _, name := range clientHeaders {
				if !slices.Contains(exposed, name) {
					t.Errorf("%s is not exposed: %v", name, exposed)
				}
			}
		}
	})

	t.Run("OKNoOriginNoCORS", func(t *testing.T) {
		t.Parallel()
		res := b.do(t, httptest.NewRequest("GET", "/health", nil))
		if res.Header.Get("Access-Control-Allow-Origin") != "" || res.Header.Get("Vary") != "" {
			t.Fatalf("%v", res.Header)
		}
	})

	t.Run("ErrOffByDefault", func(t *testing.T) {
		t.Parallel()
		res := off.do(t, preflight("/v1/auth/login", app, "POST", "content-type"))
		problemIs(t, res, http.StatusMethodNotAllowed, errs.MethodNotAllowed)
		if res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("%v", res.Header)
		}
	})

	t.Run("OKExposedAreTheSpecHeaders", func(t *testing.T) {
		t.Parallel()
		got := strings.Split(b.srv.cors.exposed, ", ")
		if want := exposedHeaders(b.spec); !slices.Equal(got, want) {
			t.Errorf("exposed %v, want %v", got, want)
		}
		for _, name := range clientHeaders {
			if !slices.Contains(got, name) {
				t.Errorf("%s not in %v", name, got)
			}
		}
		for _, name := range got {
			if slices.Contains(corsSafelisted, strings.ToLower(name)) {
				t.Errorf("safelisted %s listed", name)
			}
		}
	})

	testWebSocketOrigin(t, b, off)
}

// testWebSocketOrigin: the chat WebSocket admits the origins CORS admits, pages of its own
// host, and clients that send no Origin (not browsers).
func testWebSocketOrigin(t *testing.T, some, none *bundle) {
	type server struct {
		ts  *httptest.Server
		key string
	}
	start := func(b *bundle, email string) server {
		ts := httptest.NewServer(b.srv)
		t.Cleanup(ts.Close)
		return server{ts, b.createKey(t, b.signUp(t, email).AccessToken, []string{"chat"}).Key}
	}
	withOrigins, without := start(some, "ws-cors@example.com"), start(none, "ws@example.com")
	for _, tt := range []struct {
		name   string
		srv    server
		origin string
		ok     bool
	}{
		{"OKWebSocketNoOrigin", without, "", true},
		{"OKWebSocketSameHost", without, "http://{host}", true},
		{"ErrWebSocketOtherOriginWithoutCORS", without, "http://localhost:3000", false},
		{"OKWebSocketExactOrigin", withOrigins, "http://localhost:3000", true},
		{"OKWebSocketPattern", withOrigins, "https://app.example.com", true},
		{"ErrWebSocketPatternOtherScheme", withOrigins, "http://app.example.com", false},
		{"ErrWebSocketNotListed", withOrigins, "https://evil.test", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{"Authorization": {"Bearer " + tt.srv.key}}
			if tt.origin != "" {
				h.Set("Origin", strings.ReplaceAll(tt.origin, "{host}", strings.TrimPrefix(tt.srv.ts.URL, "http://")))
			}
			c, res, err := websocket.Dial(t.Context(), wsURL(tt.srv.ts), &websocket.DialOptions{HTTPHeader: h})
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				_ = c.CloseNow()
				return
			}
			if err == nil {
				_ = c.CloseNow()
				t.Fatal("connected")
			}
			if res == nil || res.StatusCode != http.StatusForbidden || res.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("err %v, response %+v", err, res)
			}
		})
	}
}
