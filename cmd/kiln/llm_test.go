package main_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnhq/kiln/bench/mockllm"
)

func TestLLMPing(t *testing.T) {
	t.Parallel()
	mock := httptest.NewServer(mockllm.New(mockllm.Options{Frames: 3, APIKey: "mock-key"}))
	t.Cleanup(mock.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close() // nothing listens there any more

	cfgFile := filepath.Join(t.TempDir(), "kiln.yaml")
	yaml := `llm:
  providers:
    - {name: dev, type: dev}
    - {name: mock, type: openai_compatible, base_url: "` + mock.URL + `/v1", api_key: "${MOCK_KEY}"}
    - {name: wrong-key, type: openai_compatible, base_url: "` + mock.URL + `/v1", api_key: nope}
    - {name: gone, type: openai_compatible, base_url: "http://` + closed + `/v1"}
  models:
    default:
      targets: [{provider: mock, model: mock-model}, {provider: dev, model: dev-echo}, {provider: wrong-key, model: m}, {provider: gone, model: m}]
`
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv("MOCK_KEY=mock-key")

	t.Run("ErrReportsEachProviderInPlainWords", func(t *testing.T) {
		t.Parallel()
		res := run(t, env, "--config", cfgFile, "llm", "ping")
		if res.code == 0 {
			t.Fatalf("exit 0 with failing providers:\n%s", res.stdout)
		}
		lines := map[string]string{}
		for line := range strings.SplitSeq(res.stdout, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				lines[f[0]] = line
			}
		}
		for name, want := range map[string]string{
			"dev":       "ok: [dev] You said: Reply",
			"mock":      "ok: ",
			"wrong-key": "FAILED: the provider refused the key",
			"gone":      "FAILED: cannot reach the provider",
		} {
			if !strings.Contains(lines[name], want) {
				t.Errorf("%s: %q does not contain %q\n%s", name, lines[name], want, res.stdout)
			}
		}
		if !strings.Contains(res.stderr, "2 of 4 providers failed") {
			t.Errorf("stderr: %s", res.stderr)
		}
		if strings.Contains(res.stdout+res.stderr, "mock-key") {
			t.Error("the output shows an API key")
		}
	})

	t.Run("OKOneProvider", func(t *testing.T) {
		t.Parallel()
		res := mustRun(t, env, "--config", cfgFile, "llm", "ping", "--provider", "mock")
		if !strings.Contains(res.stdout, "mock-model") || strings.Contains(res.stdout, "dev-echo") {
			t.Errorf("stdout:\n%s", res.stdout)
		}
	})
}

// TestServeWritesUsageBeforeExit makes model calls, stops the server at once and finds every
// call in the usage table: the buffered records are written after the last request, not
// lost with the process.
func TestServeWritesUsageBeforeExit(t *testing.T) {
	t.Parallel()
	s := startServeWithEnv(t, []string{"KILN_LLM_USAGE_FLUSH_INTERVAL=1h", "KILN_AUTH_ARGON2_MEMORY_KIB=8192", "KILN_AUTH_LIMIT_ABUSE=false"}, "--no-worker")
	post := func(path, credential string, body any, out any) {
		t.Helper()
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "http://"+s.addr+path, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		if credential != "" {
			req.Header.Set("Authorization", "Bearer "+credential)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode/100 != 2 {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("POST %s: %d %s", path, res.StatusCode, b)
		}
		if out != nil {
			if err := json.NewDecoder(res.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = io.Copy(io.Discard, res.Body) // a stream read to its end: closing early would cancel it
	}
	var pair struct {
		AccessToken string `json:"access_token"`
	}
	post("/v1/auth/signup", "", map[string]string{"email": "usage@example.com", "password": "correct horse battery staple 9", "name": "U"}, &pair)
	const calls = 7
	for i := range calls {
		post("/v1/chat/completions", pair.AccessToken, map[string]any{"stream": i%2 == 1, "messages": []map[string]string{{"role": "user", "content": "hi"}}}, nil)
	}
	s.stop(t)

	pool, err := pgxpool.New(t.Context(), s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage WHERE status = 'ok' AND provider = 'dev'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != calls {
		t.Fatalf("%d usage rows after shutdown, want %d", n, calls)
	}
}
