package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kilnhq/kiln/internal/platform/config"
)

// wantSecurityHeaders fails the test unless h carries every security header, with the
// CSP csp and Strict-Transport-Security hsts ("": none).
func wantSecurityHeaders(t *testing.T, what string, h http.Header, csp, hsts string) {
	t.Helper()
	for name, want := range map[string]string{
		"X-Content-Type-Options":       "nosniff",
		"Referrer-Policy":              "no-referrer",
		"Cross-Origin-Resource-Policy": "same-origin",
		"Content-Security-Policy":      csp,
		"Strict-Transport-Security":    hsts,
	} {
		if got := h.Values(name); (want == "" && len(got) > 0) || (want != "" && (len(got) != 1 || got[0] != want)) {
			t.Errorf("%s: %s = %q, want %q", what, name, got, want)
		}
	}
}

// TestSecurityHeaders: every kind of answer carries the security headers, /docs with its
// own CSP, and Strict-Transport-Security only when http.hsts_max_age is set.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		hsts time.Duration
		want string
	}{
		{"OKWithoutHSTS", 0, ""},
		{"OKWithHSTS", 365 * 24 * time.Hour, "max-age=31536000; includeSubDomains"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withConfig(func(c *config.HTTP) { c.HSTSMaxAge = tt.hsts }))
			for _, req := range []struct {
				method, path string
				status       int
				csp          string
			}{
				{"GET", "/health", 200, apiCSP},
				{"GET", "/v1/me", 401, apiCSP},
				{"GET", "/v1/nowhere", 404, apiCSP},
				{"DELETE", "/health", 405, apiCSP},
				{"GET", "/openai/v1/models", 401, apiCSP},
				{"GET", "/openapi.yaml", 200, apiCSP},
				{"GET", "/metrics", 200, apiCSP},
				{"GET", "/docs", 200, docsCSP},
				{"GET", "/docs/assets/init.js", 200, docsCSP},
			} {
				res := b.do(t, httptest.NewRequest(req.method, req.path, nil))
				if res.StatusCode != req.status {
					t.Errorf("%s %s: %d, want %d", req.method, req.path, res.StatusCode, req.status)
				}
				wantSecurityHeaders(t, req.method+" "+req.path, res.Header, req.csp, tt.want)
			}

			// A request net/http refuses before any handler runs.
			ts := httptest.NewUnstartedServer(b.srv)
			ts.Config = b.srv.HTTPServer("")
			ts.Listener = b.srv.Listener(ts.Listener)
			ts.Start()
			t.Cleanup(ts.Close)
			c, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nX-Note: a\x01b\r\nHost: kiln\r\nConnection: close\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("refusal: %d %s", res.StatusCode, body)
			}
			mustProblem(t, res.Header, body)
			wantSecurityHeaders(t, "a refusal", res.Header, apiCSP, tt.want)
		})
	}
}

// TestBrowserDocs opens /docs in headless Chromium under its CSP: Swagger UI loads the
// whole spec, and its "Try it out" runs GET /health to a 200, with nothing in the console
// and no CSP violation.
func TestBrowserDocs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	srv := httptest.NewServer(b.srv)
	t.Cleanup(srv.Close)
	browser := startBrowser(t)
	tb := openTab(t, browser)

	// Recorded from the first script on, before Swagger UI's own.
	const recordViolations = `window.cspViolations = [];
document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));`
	if _, err := chromedp.Call(tb.ctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: recordViolations}); err != nil {
		t.Fatalf("install the violation recorder: %v", err)
	}

	operations := 0
	for _, item := range b.spec.Paths.Map() {
		operations += len(item.Operations())
	}
	// Swagger UI renders operations lazily, so the count comes from its state, not the DOM.
	loaded := fmt.Sprintf(`window.ui && window.ui.specSelectors.operations().size === %d`, operations)
	id := b.spec.Paths.Find("/health").Get.OperationID // as served (oapi-codegen's embedded spec renames it)
	op := "#operations-operations-" + id + " "         // deep-linked below, so it is open
	err := chromedp.Do(tb.ctx,
		chromedp.Navigate(srv.URL+"/docs#/operations/"+id),
		chromedp.Poll[chromedp.Void](loaded, chromedp.WithPollingInterval(50*time.Millisecond)),
		chromedp.Click(chromedp.CSS(op+`.try-out__btn`)),
		chromedp.Click(chromedp.CSS(op+`.execute`)),
	)
	var status string
	if err == nil {
		status, err = chromedp.Run(tb.ctx, chromedp.Text(chromedp.CSS(op+`.live-responses-table tbody .response-col_status`)))
	}
	if err != nil {
		size, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[int](`window.ui ? window.ui.specSelectors.operations().size : -1`))
		t.Fatalf("Swagger UI (%d of %d operations loaded): %v; console: %q", size, operations, err, tb.console())
	}
	if strings.TrimSpace(status) != "200" {
		t.Errorf("Try it out on GET /health: status %q, want 200", status)
	}

	violations, err := chromedp.Run(tb.ctx, chromedp.Evaluate[[]string](`window.cspViolations`))
	if err != nil {
		t.Fatal(err)
	}
	if len(violations) > 0 {
		t.Errorf("CSP violations: %q", violations)
	}
	if errs := tb.console(); len(errs) > 0 {
		t.Errorf("console errors and warnings: %q", errs)
	}
}
