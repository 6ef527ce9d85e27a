package main_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scrape GETs path on addr with an optional bearer token.
func scrape(t *testing.T, addr, path, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// wantMetrics checks an answer is Prometheus' exposition of Kiln's metrics.
func wantMetrics(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") ||
		!strings.Contains(body, "kiln_build_info") {
		t.Fatalf("GET /metrics = %d %s, want 200 with the metrics:\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// wantProblem checks an answer is a problem+json of status and code.
func wantProblem(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal([]byte(body), &p) != nil || p.Status != status || p.Code != code {
		t.Fatalf("answer = %d %s %s, want a %d %s problem", resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
	if strings.Contains(body, "kiln_") {
		t.Fatalf("a refused scrape shows metrics: %s", body)
	}
}

// TestMetricsOpenByDefault: without metrics.listen or metrics.token, the API's listener
// serves /metrics to anyone.
func TestMetricsOpenByDefault(t *testing.T) {
	t.Parallel()
	s := startServe(t)
	resp, body := scrape(t, s.addr, "/metrics", "")
	wantMetrics(t, resp, body)
	s.stop(t)
}

// TestMetricsToken: with metrics.token (set by its environment variable), /metrics answers
// only a scraper that sends it; a missing, wrong or longer token gets a 401 problem, and
// the token never shows in `kiln config print`.
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	const token = "scrape-Secret-4e1f"
	s := startServeWithEnv(t, []string{"KILN_METRICS_TOKEN=" + token})
	for name, offered := range map[string]string{"Missing": "", "Wrong": "scrape-Secret-4e1e", "Longer": token + "x", "Prefix": token[:5]} {
		resp, body := scrape(t, s.addr, "/metrics", offered)
		if resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s token: no WWW-Authenticate", name)
		}
		wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated")
	}
	resp, body := scrape(t, s.addr, "/metrics", token)
	wantMetrics(t, resp, body)
	s.stop(t)

	printed := mustRun(t, baseEnv("KILN_METRICS_TOKEN="+token), "config", "print")
	if strings.Contains(printed.stdout, token) || !strings.Contains(printed.stdout, "****") {
		t.Errorf("config print shows metrics.token:\n%s", printed.stdout)
	}
}

// TestMetricsListen: with metrics.listen, /metrics is served on that address only (with
// its token), the API's listener answers it with the usual 404 problem, and the metrics
// listener stops with the server.
func TestMetricsListen(t *testing.T) {
	t.Parallel()
	const token = "listen-Secret-77aa"
	s := startServeWithEnv(t, []string{"KILN_METRICS_LISTEN=127.0.0.1:0", "KILN_METRICS_TOKEN=" + token})
	var metricsAddr string
	for line := range strings.SplitSeq(s.output(), "\n") {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) == nil && l["msg"] == "metrics listening" {
			metricsAddr, _ = l["addr"].(string)
		}
	}
	if metricsAddr == "" || metricsAddr == s.addr {
		t.Fatalf("no metrics listener logged (got %q, API on %s):\n%s", metricsAddr, s.addr, s.output())
	}

	resp, body := scrape(t, s.addr, "/metrics", token)
	wantProblem(t, resp, body, http.StatusNotFound, "not_found")
	resp, body = scrape(t, metricsAddr, "/metrics", token)
	wantMetrics(t, resp, body)
	resp, body = scrape(t, metricsAddr, "/metrics", "")
	wantProblem(t, resp, body, http.StatusUnauthorized, "unauthenticated")
	resp, body = scrape(t, metricsAddr, "/v1/me", token) // the API is not served there
	wantProblem(t, resp, body, http.StatusNotFound, "not_found")
	if resp, body := scrape(t, s.addr, "/health", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /health on the API = %d %s", resp.StatusCode, body)
	}

	s.stop(t)
	if c, err := net.DialTimeout("tcp", metricsAddr, time.Second); err == nil {
		_ = c.Close()
		t.Errorf("the metrics listener %s still accepts after the server stopped", metricsAddr)
	}
}
