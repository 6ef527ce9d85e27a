package ollama_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/ollama"
)

// Payloads below are Ollama's documented examples (docs/api.md in ollama/ollama,
// docs.ollama.com/api/errors, ollama.com/blog/streaming-tool), trimmed where noted.
const (
	docChatText = `{
  "model": "llama3.2",
  "created_at": "2023-12-12T14:13:43.416799Z",
  "message": {"role": "assistant", "content": "Hello! How are you today?"},
  "done": true,
  "total_duration": 5191566416,
  "load_duration": 2154458,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 383809000,
  "eval_count": 298,
  "eval_duration": 4799921000
}`
	docChatTools = `{
  "model": "llama3.2",
  "created_at": "2024-07-22T20:33:28.123648Z",
  "message": {
    "role": "assistant",
    "content": "",
    "tool_calls": [
      {"function": {"name": "get_current_weather", "arguments": {"format": "celsius", "location": "Paris, FR"}}}
    ]
  },
  "done_reason": "stop",
  "done": true,
  "total_duration": 885095291,
  "load_duration": 3753500,
  "prompt_eval_count": 122,
  "prompt_eval_duration": 328493000,
  "eval_count": 33,
  "eval_duration": 552222000
}`
	docStreamText = `{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The","images":null},"done":false}
{"model":"llama3.2","created_at":"2023-08-04T08:52:19.405406455-07:00","message":{"role":"assistant","content":" sky"},"done":false}
{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000}
`
	// Tool calls as Ollama ≥ 0.8 streams them: each call whole, in a line of its own or
	// several to a line, and the done line still says "stop".
	docStreamTools = `{"model":"qwen3","created_at":"2025-05-27T22:54:57.641643Z","message":{"role":"assistant","content":"Checking."},"done":false}
{"model":"qwen3","created_at":"2025-05-27T22:54:58.100509Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Toronto"}}}]},"done":false}
{"model":"qwen3","created_at":"2025-05-27T22:54:58.200509Z","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_abc","function":{"index":1,"name":"get_time","arguments":{"city":"Toronto"}}},{"function":{"index":2,"name":"get_current_weather","arguments":{}}}]},"done":false}
{"model":"qwen3","created_at":"2025-05-27T22:54:58.300509Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":180,"eval_count":40}
`
	docTags = `{
  "models": [
    {"name": "codellama:13b", "modified_at": "2023-11-04T14:56:49.277302595-07:00", "size": 7365960935,
     "digest": "9f438cb9cd581fc025612d27f7c1a6669ff83a8bb0ed86c94fcf4c5440555697",
     "details": {"format": "gguf", "family": "llama", "families": null, "parameter_size": "13B", "quantization_level": "Q4_0"}},
    {"name": "llama3:latest", "modified_at": "2023-12-07T09:32:18.757212583-08:00", "size": 3825819519,
     "digest": "fe938a131f40e6f6d40083c9f0f430a515233eb2edaa6d72eb85c50d64f2300e",
     "details": {"format": "gguf", "family": "llama", "families": null, "parameter_size": "7B", "quantization_level": "Q4_0"}},
    {"name": "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:latest"}
  ]
}`
	docEmbed = `{
  "model": "all-minilm",
  "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042469, 0.025257962]],
  "total_duration": 14143917,
  "load_duration": 1019500,
  "prompt_eval_count": 8
}`
)

// captured is one request as the fake Ollama saw it.
type captured struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// fakeOllama serves handler and records the last request.
func fakeOllama(t *testing.T, cfg llm.ProviderConfig, handler http.HandlerFunc) (*ollama.Provider, *atomic.Pointer[captured]) {
	t.Helper()
	var last atomic.Pointer[captured]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		last.Store(&captured{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	if cfg.Name == "" {
		cfg.Name = "local-ollama"
	}
	cfg.Type = "ollama"
	cfg.BaseURL = srv.URL + cfg.BaseURL // cfg.BaseURL holds an optional path prefix
	p, err := ollama.New(cfg, srv.Client())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p, &last
}

func reply(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func ndjson(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, body)
	}
}

func assertJSONEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("request body\n got: %s\nwant: %s", got, want)
	}
}

// assertKind checks err is an *llm.Error of kind from the test provider and returns a
// copy of it for further checks.
func assertKind(t *testing.T, err error, kind llm.ErrorKind) llm.Error {
	t.Helper()
	var e *llm.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *llm.Error", err, err)
	}
	if e.Kind != kind {
		t.Errorf("Kind = %s, want %s (%v)", e.Kind, kind, err)
	}
	if e.Provider != "local-ollama" {
		t.Errorf("Provider = %q, want local-ollama", e.Provider)
	}
	return *e
}

func ptr[T any](v T) *T { return &v }

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     llm.ProviderConfig
		wantErr string
	}{
		{"OK", llm.ProviderConfig{Name: "o", Type: "ollama"}, ""},
		{"OKHostedWithKey", llm.ProviderConfig{Name: "o", BaseURL: "https://ollama.com/", APIKey: "k"}, ""},
		{"ErrNoName", llm.ProviderConfig{Type: "ollama"}, "name is required"},
		{"ErrWrongType", llm.ProviderConfig{Name: "o", Type: "openai"}, "type"},
		{"ErrBaseURLScheme", llm.ProviderConfig{Name: "o", BaseURL: "127.0.0.1:11434"}, "base_url"},
		{"ErrBaseURLQuery", llm.ProviderConfig{Name: "o", BaseURL: "http://h/?x=1"}, "base_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := ollama.New(tt.cfg, nil)
			if tt.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one naming %q", err, tt.wantErr)
			}
			if tt.cfg.APIKey != "" && strings.Contains(err.Error(), tt.cfg.APIKey) {
				t.Error("error leaks the API key")
			}
		})
	}
}

func TestChatRequestJSON(t *testing.T) {
	t.Parallel()
	png := []byte{0x89, 'P', 'N', 'G'}
	tests := []struct {
		name       string
		cfg        llm.ProviderConfig
		req        llm.Request
		want       string
		wantPath   string
		wantHeader map[string]string
	}{
		{
			name: "FullConversation",
			cfg:  llm.ProviderConfig{APIKey: "sk-test", Headers: map[string]string{"X-Team": "kiln", "authorization": "Basic nope"}},
			req: llm.Request{
				Model: "llava",
				Messages: []llm.Message{
					llm.TextMessage(llm.RoleSystem, "Be brief."),
					{Role: llm.RoleUser, Content: []llm.Part{
						{Type: llm.PartText, Text: "What is in "},
						{Type: llm.PartImage, Image: &llm.Image{MediaType: "image/png", Data: png}},
						{Type: llm.PartText, Text: "this picture?"},
					}},
					{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
						{ID: "call_0", Name: "get_current_weather", Arguments: `{"location":"Paris, FR","format":"celsius"}`},
						{ID: "call_1", Name: "get_time", Arguments: ""},
					}},
					{Role: llm.RoleTool, ToolCallID: "call_0", Name: "get_current_weather", Content: []llm.Part{{Type: llm.PartText, Text: "22"}}},
					{Role: llm.RoleTool, ToolCallID: "call_1", Content: []llm.Part{{Type: llm.PartText, Text: "noon"}}},
				},
				Tools: []llm.Tool{
					{Name: "get_current_weather", Description: "Get the current weather for a location", Parameters: json.RawMessage(`{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}`)},
					{Name: "get_time"},
				},
				ToolChoice:     &llm.ToolChoice{Mode: llm.ToolChoiceRequired},
				ResponseFormat: &llm.ResponseFormat{Type: "json_schema", Name: "w", Schema: json.RawMessage(`{"type":"object","properties":{"age":{"type":"integer"}},"required":["age"]}`)},
				Temperature:    ptr(0.0),
				TopP:           ptr(0.9),
				MaxTokens:      ptr(100),
				Stop:           []string{"\n", "user:"},
				Seed:           ptr(int64(42)),
				User:           "user-1",
			},
			want: `{
  "model": "llava",
  "stream": false,
  "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is in this picture?", "images": ["iVBORw=="]},
    {"role": "assistant", "content": "", "tool_calls": [
      {"function": {"name": "get_current_weather", "arguments": {"location": "Paris, FR", "format": "celsius"}}},
      {"function": {"name": "get_time", "arguments": {}}}
    ]},
    {"role": "tool", "content": "22", "tool_name": "get_current_weather"},
    {"role": "tool", "content": "noon", "tool_name": "get_time"}
  ],
  "tools": [
    {"type": "function", "function": {"name": "get_current_weather", "description": "Get the current weather for a location",
      "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
  ],
  "format": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
  "options": {"temperature": 0, "top_p": 0.9, "num_predict": 100, "stop": ["\n", "user:"], "seed": 42}
}`,
			wantPath:   "/api/chat",
			wantHeader: map[string]string{"Authorization": "Bearer sk-test", "X-Team": "kiln", "Content-Type": "application/json"},
		},
		{
			name: "ToolChoiceNoneSendsNoTools",
			req: llm.Request{
				Model:      "llama3.2",
				Messages:   []llm.Message{llm.TextMessage(llm.RoleUser, "hi")},
				Tools:      []llm.Tool{{Name: "f", Parameters: json.RawMessage(`{"type":"object"}`)}},
				ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone},
			},
			want:       `{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":"hi"}]}`,
			wantPath:   "/api/chat",
			wantHeader: map[string]string{"Authorization": ""},
		},
		{
			name: "JSONModeAndDataURLImage",
			cfg:  llm.ProviderConfig{BaseURL: "/ollama/"},
			req: llm.Request{
				Model: "llava",
				Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{
					{Type: llm.PartText, Text: "Describe as JSON"},
					{Type: llm.PartImage, Image: &llm.Image{URL: "data:image/png;base64,iVBORw0KGgo="}},
				}}},
				ResponseFormat: &llm.ResponseFormat{Type: "json_object"},
			},
			want:     `{"model":"llava","stream":false,"format":"json","messages":[{"role":"user","content":"Describe as JSON","images":["iVBORw0KGgo="]}]}`,
			wantPath: "/ollama/api/chat",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, last := fakeOllama(t, tt.cfg, reply(http.StatusOK, docChatText))
			if _, err := p.Chat(context.Background(), &tt.req); err != nil {
				t.Fatalf("Chat: %v", err)
			}
			got := last.Load()
			if got.Method != http.MethodPost || got.Path != tt.wantPath {
				t.Errorf("request = %s %s, want POST %s", got.Method, got.Path, tt.wantPath)
			}
			for k, v := range tt.wantHeader {
				if h := got.Header.Get(k); h != v {
					t.Errorf("header %s = %q, want %q", k, h, v)
				}
			}
			assertJSONEqual(t, got.Body, tt.want)
		})
	}
}

func TestChatStreamRequestSetsStream(t *testing.T) {
	t.Parallel()
	p, last := fakeOllama(t, llm.ProviderConfig{}, ndjson(docStreamText))
	s, err := p.ChatStream(context.Background(), &llm.Request{Model: "llama3.2", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "why is the sky blue?")}})
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	if _, err := llm.Collect(s); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	assertJSONEqual(t, last.Load().Body, `{"model":"llama3.2","stream":true,"messages":[{"role":"user","content":"why is the sky blue?"}]}`)
}

func TestChatInvalidRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     llm.Message
		wantMsg string
	}{
		{"ErrImageURL", llm.Message{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/cat.png"}}}}, "image URLs"},
		{"ErrToolArgumentsNotObject", llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{Name: "f", Arguments: `[1]`}}}, "JSON object"},
		{"ErrUnknownRole", llm.Message{Role: "developer"}, "role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			p, _ := fakeOllama(t, llm.ProviderConfig{}, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				reply(http.StatusOK, docChatText)(w, r)
			})
			req := &llm.Request{Model: "llava", Messages: []llm.Message{tt.msg}}
			_, err := p.Chat(context.Background(), req)
			e := assertKind(t, err, llm.KindInvalid)
			if !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("Message = %q, want it to mention %q", e.Message, tt.wantMsg)
			}
			_, err = p.ChatStream(context.Background(), req)
			assertKind(t, err, llm.KindInvalid)
			if n := calls.Load(); n != 0 {
				t.Errorf("upstream called %d times for an invalid request", n)
			}
		})
	}
}

func TestChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want llm.Response
	}{
		{
			name: "Text",
			body: docChatText,
			want: llm.Response{Model: "llama3.2", Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Hello! How are you today?"}}},
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 26, CompletionTokens: 298}},
		},
		{
			name: "ToolCalls",
			body: docChatTools,
			want: llm.Response{Model: "llama3.2", Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
				{ID: "call_0", Name: "get_current_weather", Arguments: `{"format": "celsius", "location": "Paris, FR"}`},
			}}, FinishReason: llm.FinishToolCalls, Usage: llm.Usage{PromptTokens: 122, CompletionTokens: 33}},
		},
		{
			name: "ToolCallIDsKeptAndStringArguments",
			body: `{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"id":"abc","function":{"name":"f","arguments":{"a":1}}},{"function":{"name":"g","arguments":"{\"b\":2}"}},{"function":{"name":"h"}}]},"done":true,"done_reason":"stop"}`,
			want: llm.Response{Model: "m", Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
				{ID: "abc", Name: "f", Arguments: `{"a":1}`},
				{ID: "call_1", Name: "g", Arguments: `{"b":2}`},
				{ID: "call_2", Name: "h", Arguments: `{}`},
			}}, FinishReason: llm.FinishToolCalls},
		},
		{
			name: "LengthWithUnknownFieldsIgnored",
			body: `{"model":"m","created_at":"2024-12-06T00:46:58.265747Z","message":{"role":"assistant","content":"cut","thinking":"hmm","images":null,"future":{"x":1}},"done":true,"done_reason":"length","logprobs":[],"prompt_eval_count":3,"eval_count":100,"new_metric":7}`,
			want: llm.Response{Model: "m", Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "cut"}}},
				FinishReason: llm.FinishLength, Usage: llm.Usage{PromptTokens: 3, CompletionTokens: 100}},
		},
		{
			name: "EmptyReply",
			body: `{"model":"llama3.2","created_at":"2024-09-12T21:17:29.110811Z","message":{"role":"assistant","content":""},"done_reason":"load","done":true}`,
			want: llm.Response{Model: "llama3.2", Message: llm.Message{Role: llm.RoleAssistant}, FinishReason: llm.FinishStop},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := fakeOllama(t, llm.ProviderConfig{}, reply(http.StatusOK, tt.body))
			got, err := p.Chat(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}})
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Chat =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

func TestChatReplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		kind llm.ErrorKind
	}{
		{"ErrBodyIsErrorObject", `{"error":"an error was encountered while running the model"}`, llm.KindOverloaded},
		{"ErrUndecodable", `<html>proxy</html>`, llm.KindProtocol},
		{"ErrEmptyBody", ``, llm.KindProtocol},
		{"ErrTruncated", `{"model":"m","message":{"role":"assis`, llm.KindConnection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := fakeOllama(t, llm.ProviderConfig{}, reply(http.StatusOK, tt.body))
			_, err := p.Chat(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}})
			assertKind(t, err, tt.kind)
		})
	}
}

func TestErrorStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		body       string
		retryAfter string
		kind       llm.ErrorKind
		wantMsg    string
		wantRetry  time.Duration
	}{
		{"ErrBadRequest", 400, `{"error":"top_logprobs must be between 0 and 20"}`, "", llm.KindInvalid, "top_logprobs must be between 0 and 20", 0},
		{"ErrUnauthorized", 401, `{"error":"unauthorized","signin_url":"https://ollama.com/connect?name=h&key=k"}`, "", llm.KindAuth, "unauthorized", 0},
		{"ErrForbidden", 403, `{"error":"forbidden"}`, "", llm.KindAuth, "forbidden", 0},
		{"ErrModelNotFound", 404, `{"error":"model 'llama3.2' not found"}`, "", llm.KindInvalid, "model 'llama3.2' not found", 0},
		{"ErrRateLimited", 429, `{"error":"too many requests"}`, "7", llm.KindRateLimited, "too many requests", 7 * time.Second},
		{"ErrServer", 500, `{"error":"the model failed to generate a response"}`, "", llm.KindOverloaded, "the model failed to generate a response", 0},
		{"ErrBadGateway", 502, `{"error":"cloud model unreachable"}`, "", llm.KindOverloaded, "cloud model unreachable", 0},
		{"ErrUnavailable", 503, `{"error":"server busy, please try again.  maximum pending requests exceeded"}`, "2", llm.KindOverloaded, "server busy", 2 * time.Second},
		{"ErrOverloaded529", 529, `{"error":{"type":"overloaded_error","message":"Overloaded"}}`, "", llm.KindOverloaded, "Overloaded", 0},
		{"ErrPlainTextBody", 500, "boom\n", "", llm.KindOverloaded, "boom", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := fakeOllama(t, llm.ProviderConfig{APIKey: "sk-secret"}, func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				reply(tt.status, tt.body)(w, r)
			})
			req := &llm.Request{Model: "llama3.2", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}}
			_, chatErr := p.Chat(context.Background(), req)
			_, streamErr := p.ChatStream(context.Background(), req)
			_, embedErr := p.Embed(context.Background(), &llm.EmbedRequest{Model: "all-minilm", Input: []string{"x"}})
			_, modelsErr := p.Models(context.Background())
			for _, err := range []error{chatErr, streamErr, embedErr, modelsErr} {
				e := assertKind(t, err, tt.kind)
				if e.Status != tt.status {
					t.Errorf("Status = %d, want %d", e.Status, tt.status)
				}
				if !strings.Contains(e.Message, tt.wantMsg) {
					t.Errorf("Message = %q, want %q", e.Message, tt.wantMsg)
				}
				if e.RetryAfter != tt.wantRetry {
					t.Errorf("RetryAfter = %v, want %v", e.RetryAfter, tt.wantRetry)
				}
				if strings.Contains(err.Error(), "sk-secret") {
					t.Error("error leaks the API key")
				}
			}
		})
	}
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	t.Run("OrderKept", func(t *testing.T) {
		t.Parallel()
		p, last := fakeOllama(t, llm.ProviderConfig{APIKey: "k"}, reply(http.StatusOK, docEmbed))
		got, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "all-minilm", Input: []string{"Why is the sky blue?", "Why is the grass green?"}, Dimensions: ptr(3), User: "u"})
		if err != nil {
			t.Fatalf("Embed: %v", err)
		}
		req := last.Load()
		if req.Path != "/api/embed" || req.Header.Get("Authorization") != "Bearer k" {
			t.Errorf("request = %s with Authorization %q", req.Path, req.Header.Get("Authorization"))
		}
		assertJSONEqual(t, req.Body, `{"model":"all-minilm","input":["Why is the sky blue?","Why is the grass green?"],"dimensions":3}`)
		want := &llm.EmbedResponse{
			Model:   "all-minilm",
			Vectors: [][]float32{{0.010071029, -0.0017594862, 0.05007221}, {-0.0098027075, 0.06042469, 0.025257962}},
			Usage:   llm.Usage{PromptTokens: 8},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Embed = %+v, want %+v", got, want)
		}
	})
	t.Run("ErrVectorCountMismatch", func(t *testing.T) {
		t.Parallel()
		p, _ := fakeOllama(t, llm.ProviderConfig{}, reply(http.StatusOK, docEmbed))
		_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "all-minilm", Input: []string{"one"}})
		assertKind(t, err, llm.KindProtocol)
	})
	t.Run("ErrNoInput", func(t *testing.T) {
		t.Parallel()
		p, _ := fakeOllama(t, llm.ProviderConfig{}, reply(http.StatusOK, docEmbed))
		_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "all-minilm"})
		assertKind(t, err, llm.KindInvalid)
	})
}

func TestModels(t *testing.T) {
	t.Parallel()
	p, last := fakeOllama(t, llm.ProviderConfig{Headers: map[string]string{"X-Org": "kiln"}}, reply(http.StatusOK, docTags))
	got, err := p.Models(context.Background())
	if err != nil {
		t.Fatalf("Models: %v", err)
	}
	req := last.Load()
	if req.Method != http.MethodGet || req.Path != "/api/tags" || req.Header.Get("X-Org") != "kiln" {
		t.Errorf("request = %s %s X-Org=%q", req.Method, req.Path, req.Header.Get("X-Org"))
	}
	want := []llm.Model{
		{ID: "codellama:13b", OwnedBy: "library"},
		{ID: "llama3:latest", OwnedBy: "library"},
		{ID: "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:latest", OwnedBy: "bartowski"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Models = %+v, want %+v", got, want)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	p, err := ollama.New(llm.ProviderConfig{Name: "local-ollama", BaseURL: url}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Chat(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}})
	assertKind(t, err, llm.KindConnection)
}
