package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/bench/mockllm"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/openai"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// BenchmarkOpenAIChat compares a blocking chat completion sent straight to a mock
// OpenAI-compatible upstream with the same request through Kiln's
// /openai/v1/chat/completions (API-key auth, validation, usage accounting), in one run;
// the difference is what the gateway adds per request.
//
//	go test ./server -run '^$' -bench OpenAIChat -benchmem -count 6
func BenchmarkOpenAIChat(b *testing.B) {
	mock := httptest.NewServer(mockllm.New(mockllm.Options{Frames: 20}))
	b.Cleanup(mock.Close)
	provider, err := openai.New(llm.ProviderConfig{Name: "mock", Type: "openai_compatible", BaseURL: mock.URL + "/v1", APIKey: "bench"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	bd := setup(b, withGateway(b, map[string]llm.Provider{"mock": provider}, map[string][]llm.Target{"default": {{Provider: "mock", Model: "mock-model"}}}))
	bd.srv.log = logging.New(io.Discard, "info")
	key := bd.createKey(b, bd.signUp(b, "bench@example.com").AccessToken, []string{"chat"}).Key
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	for _, stream := range []bool{false, true} {
		name := "blocking"
		body := `{"model":"%s","messages":[{"role":"user","content":"hello"}]}`
		if stream {
			name = "stream"
			body = `{"model":"%s","stream":true,"messages":[{"role":"user","content":"hello"}]}`
		}
		b.Run(name+"/direct", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest("POST", mock.URL+"/v1/chat/completions", strings.NewReader(strings.Replace(body, "%s", "mock-model", 1)))
				req.Header.Set("Authorization", "Bearer bench")
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil || res.StatusCode != 200 {
					b.Fatal(err, res)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
			}
		})
		b.Run(name+"/kiln", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(strings.Replace(body, "%s", "default", 1)))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				bd.srv.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}
