package main_test

import (
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
			"dev":       "ok: [dev] You said: Reply with the word pong",
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
