package openai_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/openai"
)

// okReply is a minimal documented chat.completion.
const okReply = `{"id":"chatcmpl-1","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14",
 "choices":[{"index":0,"message":{"role":"assistant","content":"ok","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
 "usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`

var pngBytes = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")

// fullRequest uses every feature of llm.Request.
func fullRequest() *llm.Request {
	return &llm.Request{
		Model: "gpt-4.1",
		Messages: []llm.Message{
			llm.TextMessage(llm.RoleSystem, "You are terse."),
			{Role: llm.RoleUser, Content: []llm.Part{
				{Type: llm.PartText, Text: "What is in these images, and what is the weather in Paris?"},
				{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/cat.jpg", Detail: "low"}},
				{Type: llm.PartImage, Image: &llm.Image{MediaType: "image/png", Data: pngBytes}},
			}},
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_abc123", Name: "get_weather", Arguments: `{"location":"Paris"}`}}},
			{Role: llm.RoleTool, ToolCallID: "call_abc123", Content: []llm.Part{{Type: llm.PartText, Text: `{"temp_c":18}`}}},
			llm.TextMessage(llm.RoleAssistant, "A cat; 18°C."),
			llm.TextMessage(llm.RoleUser, "Thanks"),
		},
		Tools: []llm.Tool{{
			Name:        "get_weather",
			Description: "Get the current weather",
			Parameters:  json.RawMessage(`{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false}`),
		}},
		ToolChoice:     &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "get_weather"},
		ResponseFormat: &llm.ResponseFormat{Type: "json_schema", Name: "answer", Schema: json.RawMessage(`{"type":"object","properties":{"a":{"type":"string"}}}`), Strict: true},
		Temperature:    ptr(0.2),
		TopP:           ptr(0.9),
		MaxTokens:      ptr(256),
		Stop:           []string{"\n\n", "END"},
		Seed:           ptr(int64(42)),
		User:           "user-1234",
	}
}

// fullBody is fullRequest on the wire, with %s for the max tokens field and %m for the
// model member.
const fullBody = `{
  %m
  "messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [
      {"type": "text", "text": "What is in these images, and what is the weather in Paris?"},
      {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_abc123", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
    ]},
    {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temp_c\":18}"},
    {"role": "assistant", "content": "A cat; 18°C."},
    {"role": "user", "content": "Thanks"}
  ],
  "tools": [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather",
    "parameters": {"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false}
  }}],
  "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
  "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type":"object","properties":{"a":{"type":"string"}}}, "strict": true}},
  "temperature": 0.2,
  "top_p": 0.9,
  "%s": 256,
  "stop": ["\n\n", "END"],
  "seed": 42,
  "user": "user-1234"
}`

func wantBody(maxField string, model bool) string {
	m := ""
	if model {
		m = `"model": "gpt-4.1",`
	}
	return strings.NewReplacer("%s", maxField, "%m", m).Replace(fullBody)
}

func TestChatRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cfg        llm.ProviderConfig
		req        *llm.Request
		stream     bool
		wantPath   string
		wantQuery  string
		wantHeader map[string]string // "" means absent
		wantBody   string
	}{
		{
			name:       "OpenAIFullRequest",
			cfg:        llm.ProviderConfig{Type: "openai", BaseURL: "/v1", APIKey: "sk-test"},
			req:        fullRequest(),
			wantPath:   "/v1/chat/completions",
			wantHeader: map[string]string{"Authorization": "Bearer sk-test", "Content-Type": "application/json", "Api-Key": ""},
			wantBody:   wantBody("max_completion_tokens", true),
		},
		{
			name:       "CompatibleMaxTokensNoKeyCustomHeaders",
			cfg:        llm.ProviderConfig{Type: "openai_compatible", BaseURL: "/api/v1/", Headers: map[string]string{"http-referer": "https://kiln.example", "X-Title": "Kiln"}},
			req:        fullRequest(),
			wantPath:   "/api/v1/chat/completions",
			wantHeader: map[string]string{"Authorization": "", "Http-Referer": "https://kiln.example", "X-Title": "Kiln"},
			wantBody:   wantBody("max_tokens", true),
		},
		{
			name:       "CompatibleWithKey",
			cfg:        llm.ProviderConfig{Type: "openai_compatible", APIKey: "sk-ds"},
			req:        &llm.Request{Model: "deepseek-chat", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")}},
			wantPath:   "/chat/completions",
			wantHeader: map[string]string{"Authorization": "Bearer sk-ds"},
			wantBody:   `{"model":"deepseek-chat","messages":[{"role":"user","content":"Hi"}]}`,
		},
		{
			name:       "AzureAPIKeyDefaultVersion",
			cfg:        llm.ProviderConfig{Type: "azure_openai", APIKey: "azure-key"},
			req:        func() *llm.Request { r := fullRequest(); r.Model = "gpt-4o prod"; return r }(),
			wantPath:   "/openai/deployments/gpt-4o prod/chat/completions",
			wantQuery:  "api-version=2024-10-21",
			wantHeader: map[string]string{"Api-Key": "azure-key", "Authorization": ""},
			wantBody:   wantBody("max_tokens", false),
		},
		{
			name:       "AzureBearerNewerVersionTrailingOpenAI",
			cfg:        llm.ProviderConfig{Type: "azure_openai", BaseURL: "/openai/", BearerToken: "entra-token", APIKey: "unused", APIVersion: "2025-04-01-preview"},
			req:        &llm.Request{Model: "o3-mini", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")}, MaxTokens: ptr(100)},
			wantPath:   "/openai/deployments/o3-mini/chat/completions",
			wantQuery:  "api-version=2025-04-01-preview",
			wantHeader: map[string]string{"Authorization": "Bearer entra-token", "Api-Key": ""},
			wantBody:   `{"messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":100}`,
		},
		{
			name: "StreamAsksForUsage",
			cfg:  llm.ProviderConfig{Type: "openai", APIKey: "sk-test"},
			req: &llm.Request{Model: "gpt-4.1", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")},
				ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired}, ResponseFormat: &llm.ResponseFormat{Type: "json_object"}},
			stream:   true,
			wantPath: "/chat/completions",
			wantBody: `{"model":"gpt-4.1","messages":[{"role":"user","content":"Hi"}],"tool_choice":"required",
				"response_format":{"type":"json_object"},"stream":true,"stream_options":{"include_usage":true}}`,
		},
		{
			name: "ToolChoiceNoneAndUnnamedSchema",
			cfg:  llm.ProviderConfig{Type: "openai", APIKey: "sk-test"},
			req: &llm.Request{Model: "gpt-4.1", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")},
				ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}, ResponseFormat: &llm.ResponseFormat{Type: "json_schema", Schema: json.RawMessage(`{"type":"object"}`)}},
			wantPath: "/chat/completions",
			wantBody: `{"model":"gpt-4.1","messages":[{"role":"user","content":"Hi"}],"tool_choice":"none",
				"response_format":{"type":"json_schema","json_schema":{"name":"response","schema":{"type":"object"},"strict":false}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reply := jsonReply(http.StatusOK, okReply)
			if tt.stream {
				reply = sseReply(sse(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}`, "[DONE]"))
			}
			p, up := setup(t, tt.cfg, reply)
			var err error
			if tt.stream {
				var s llm.Stream
				if s, err = p.ChatStream(context.Background(), tt.req); err == nil {
					_, err = llm.Collect(s)
				}
			} else {
				_, err = p.Chat(context.Background(), tt.req)
			}
			if err != nil {
				t.Fatalf("chat: %v", err)
			}
			got := up.last(t)
			if got.Method != http.MethodPost || got.Path != tt.wantPath || got.Query != tt.wantQuery {
				t.Errorf("request = %s %s?%s, want POST %s?%s", got.Method, got.Path, got.Query, tt.wantPath, tt.wantQuery)
			}
			for k, v := range tt.wantHeader {
				if g := got.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			assertJSON(t, got.Body, tt.wantBody)
		})
	}
}

func TestChatRequestInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  *llm.Request
	}{
		{"ErrNoModel", &llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")}}},
		{"ErrImageWithoutSource", &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartText, Text: "a"}, {Type: llm.PartImage, Image: &llm.Image{}}}}}}},
		{"ErrToolChoiceWithoutName", &llm.Request{Model: "m", ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "k"}, jsonReply(http.StatusOK, okReply))
			_, err := p.Chat(context.Background(), tt.req)
			requireKind(t, err, llm.KindInvalid)
			_, err = p.ChatStream(context.Background(), tt.req)
			requireKind(t, err, llm.KindInvalid)
			up.mu.Lock()
			defer up.mu.Unlock()
			if len(up.reqs) != 0 {
				t.Error("an invalid request reached the upstream")
			}
		})
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     llm.ProviderConfig
		wantErr string // "" for success
	}{
		{"OKOpenAIDefaultBase", llm.ProviderConfig{Name: "oai", Type: "openai", APIKey: "k"}, ""},
		{"OKCompatibleWithoutKey", llm.ProviderConfig{Type: "openai_compatible", BaseURL: "http://localhost:8000/v1"}, ""},
		{"OKAzureBearer", llm.ProviderConfig{Type: "azure_openai", BaseURL: "https://r.openai.azure.com", BearerToken: "t"}, ""},
		{"ErrOpenAIWithoutKey", llm.ProviderConfig{Type: "openai"}, "api_key"},
		{"ErrCompatibleWithoutBaseURL", llm.ProviderConfig{Type: "openai_compatible"}, "base_url"},
		{"ErrAzureWithoutBaseURL", llm.ProviderConfig{Type: "azure_openai", APIKey: "k"}, "base_url"},
		{"ErrAzureWithoutCredentials", llm.ProviderConfig{Type: "azure_openai", BaseURL: "https://r.openai.azure.com"}, "api_key or bearer_token"},
		{"ErrRelativeBaseURL", llm.ProviderConfig{Type: "openai_compatible", BaseURL: "localhost:8000"}, "base_url"},
		{"ErrUnknownType", llm.ProviderConfig{Type: "anthropic", APIKey: "k"}, "type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := openai.New(tt.cfg, nil)
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
				t.Fatal("the error shows the API key")
			}
		})
	}
}
