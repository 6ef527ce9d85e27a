package anthropic_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/anthropic"
)

const testKey = "sk-ant-test-key"

// Payloads below are the documented ones (Anthropic's Messages, Streaming, Errors and Models
// API pages), trimmed or extended only where a case needs it.

const textReply = `{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-5",
  "content": [{"type": "text", "text": "Hi! My name is Claude."}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {"input_tokens": 2095, "output_tokens": 503}
}`

const toolReply = `{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "model": "claude-opus-4-6",
  "stop_reason": "tool_use",
  "role": "assistant",
  "content": [
    {"type": "text", "text": "I'll check the current weather in San Francisco for you."},
    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA", "unit": "celsius"}},
    {"type": "tool_use", "id": "toolu_02B", "name": "get_time", "input": {}}
  ],
  "usage": {"input_tokens": 472, "output_tokens": 89}
}`

func intp(v int) *int              { return &v }
func floatp(v float64) *float64    { return &v }
func int64p(v int64) *int64        { return &v }
func user(text string) llm.Message { return llm.TextMessage(llm.RoleUser, text) }

// newProvider serves h and returns a provider pointed at it; edit adjusts the config.
func newProvider(t *testing.T, h http.HandlerFunc, edit ...func(*llm.ProviderConfig)) *anthropic.Provider {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := llm.ProviderConfig{Name: "claude", Type: "anthropic", BaseURL: srv.URL, APIKey: testKey}
	for _, e := range edit {
		e(&cfg)
	}
	p, err := anthropic.New(cfg, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// replying serves body as a 200 JSON reply.
func replying(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}
}

// captured is a request as the fake upstream saw it.
type captured struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// recorder serves reply and keeps the last request.
type recorder struct {
	mu   sync.Mutex
	last captured
}

func (rec *recorder) handler(reply string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.last = captured{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body}
		rec.mu.Unlock()
		if strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, textStream)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, reply)
	}
}

func (rec *recorder) request() captured {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.last
}

func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		gb, _ := json.MarshalIndent(g, "", "  ")
		wb, _ := json.MarshalIndent(w, "", "  ")
		t.Errorf("request body:\n%s\nwant:\n%s", gb, wb)
	}
}

func asLLMError(t *testing.T, err error) *llm.Error {
	t.Helper()
	var le *llm.Error
	if !errors.As(err, &le) {
		t.Fatalf("err = %v (%T), want *llm.Error", err, err)
	}
	return le
}

func TestNew(t *testing.T) {
	t.Parallel()
	ok := llm.ProviderConfig{Name: "claude", Type: "anthropic", APIKey: testKey}
	tests := []struct {
		name  string
		edit  func(*llm.ProviderConfig)
		field string // "" when New must succeed
	}{
		{"OK", func(*llm.ProviderConfig) {}, ""},
		{"OKNoType", func(c *llm.ProviderConfig) { c.Type = "" }, ""},
		{"OKBaseURL", func(c *llm.ProviderConfig) { c.BaseURL = "http://127.0.0.1:8080/" }, ""},
		{"ErrName", func(c *llm.ProviderConfig) { c.Name = "" }, "Name"},
		{"ErrType", func(c *llm.ProviderConfig) { c.Type = "openai" }, "Type"},
		{"ErrAPIKey", func(c *llm.ProviderConfig) { c.APIKey = "" }, "APIKey"},
		{"ErrBaseURLRelative", func(c *llm.ProviderConfig) { c.BaseURL = "api.anthropic.com" }, "BaseURL"},
		{"ErrBaseURLScheme", func(c *llm.ProviderConfig) { c.BaseURL = "ftp://api.anthropic.com" }, "BaseURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := ok
			tt.edit(&cfg)
			p, err := anthropic.New(cfg, nil)
			if tt.field == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("err = %v, want one naming %s", err, tt.field)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("err %q leaks the key", err)
			}
		})
	}
}

var weatherTool = llm.Tool{
	Name:        "get_weather",
	Description: "Get the current weather in a given location",
	Parameters:  json.RawMessage(`{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}`),
}

const weatherToolJSON = `{"name":"get_weather","description":"Get the current weather in a given location","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}`

const answerSchema = `{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`

func TestChatRequestBody(t *testing.T) {
	t.Parallel()
	conversation := []llm.Message{
		llm.TextMessage(llm.RoleSystem, "You are terse."),
		llm.TextMessage(llm.RoleSystem, "Answer in French."),
		{Role: llm.RoleUser, Content: []llm.Part{
			{Type: llm.PartText, Text: "What is in these images?"},
			{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/cat.png"}},
			{Type: llm.PartImage, Image: &llm.Image{Data: []byte("\x89PNG"), MediaType: "image/png"}},
			{Type: llm.PartImage, Image: &llm.Image{URL: "data:image/jpeg;base64,/9j/4AAQ"}},
		}},
		{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Let me check."}}, ToolCalls: []llm.ToolCall{
			{ID: "toolu_1", Name: "get_weather", Arguments: `{"location":"Paris"}`},
			{ID: "toolu_2", Name: "get_time"},
		}},
		{Role: llm.RoleTool, ToolCallID: "toolu_1", Content: []llm.Part{{Type: llm.PartText, Text: "18C"}}},
		{Role: llm.RoleTool, ToolCallID: "toolu_2", Content: []llm.Part{{Type: llm.PartText, Text: "noon"}}},
		user("Thanks. And tomorrow?"),
	}
	tests := []struct {
		name string
		req  llm.Request
		want string
	}{
		{
			name: "Conversation",
			req:  llm.Request{Model: "claude-sonnet-4-5", Messages: conversation},
			want: `{"model":"claude-sonnet-4-5","max_tokens":4096,"system":"You are terse.\n\nAnswer in French.","messages":[
				{"role":"user","content":[
					{"type":"text","text":"What is in these images?"},
					{"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
					{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw=="}},
					{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}}]},
				{"role":"assistant","content":[
					{"type":"text","text":"Let me check."},
					{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"location":"Paris"}},
					{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}]},
				{"role":"user","content":[
					{"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},
					{"type":"tool_result","tool_use_id":"toolu_2","content":"noon"},
					{"type":"text","text":"Thanks. And tomorrow?"}]}]}`,
		},
		{
			name: "MergesAdjacentUserTurns",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("a"), user("b"), llm.TextMessage(llm.RoleAssistant, "")}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`,
		},
		{
			name: "ToolResultWithImage",
			req: llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleTool, ToolCallID: "toolu_9", Content: []llm.Part{
				{Type: llm.PartText, Text: "chart:"},
				{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/chart.png"}},
			}}}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_9","content":[
				{"type":"text","text":"chart:"},{"type":"image","source":{"type":"url","url":"https://example.com/chart.png"}}]}]}]}`,
		},
		{
			name: "Sampling",
			req: llm.Request{
				Model: "m", Messages: []llm.Message{user("hi")},
				Temperature: floatp(0.2), TopP: floatp(0.9), MaxTokens: intp(512), Stop: []string{"END"}, Seed: int64p(42), User: "user-7",
			},
			want: `{"model":"m","max_tokens":512,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"temperature":0.2,"top_p":0.9,"stop_sequences":["END"],"metadata":{"user_id":"user-7"}}`,
		},
		{
			name: "ToolsAuto",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool, {Name: "get_time"}}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceAuto}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `,{"name":"get_time","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"}}`,
		},
		{
			name: "ToolChoiceNone",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `],"tool_choice":{"type":"none"}}`,
		},
		{
			name: "ToolChoiceRequired",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `],"tool_choice":{"type":"any"}}`,
		},
		{
			name: "ToolChoiceTool",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "get_weather"}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `],"tool_choice":{"type":"tool","name":"get_weather"}}`,
		},
		{
			name: "StrictSchemaNative",
			req: llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: &llm.ResponseFormat{
				Type: "json_schema", Name: "answer", Schema: json.RawMessage(answerSchema), Strict: true,
			}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"output_config":{"format":{"type":"json_schema","schema":` + answerSchema + `}}}`,
		},
		{
			name: "SchemaForcedTool",
			req: llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: &llm.ResponseFormat{
				Type: "json_schema", Name: "answer", Schema: json.RawMessage(answerSchema),
			}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[{"name":"answer","description":"Give your final answer as this tool's input.","input_schema":` + answerSchema + `}],
				"tool_choice":{"type":"tool","name":"answer"}}`,
		},
		{
			name: "JSONObjectForcedTool",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: &llm.ResponseFormat{Type: "json_object"}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[{"name":"json_output","description":"Give your final answer as this tool's input.","input_schema":{"type":"object"}}],
				"tool_choice":{"type":"tool","name":"json_output"}}`,
		},
		{
			name: "JSONObjectWithToolsAny",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ResponseFormat: &llm.ResponseFormat{Type: "json_object"}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `,{"name":"json_output","description":"Give your final answer as this tool's input.","input_schema":{"type":"object"}}],
				"tool_choice":{"type":"any"}}`,
		},
		{
			name: "JSONObjectWithToolsNone",
			req: llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone},
				ResponseFormat: &llm.ResponseFormat{Type: "json_object"}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
				"tools":[` + weatherToolJSON + `,{"name":"json_output","description":"Give your final answer as this tool's input.","input_schema":{"type":"object"}}],
				"tool_choice":{"type":"tool","name":"json_output"}}`,
		},
		{
			name: "TextFormatIgnored",
			req:  llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: &llm.ResponseFormat{Type: "text"}},
			want: `{"model":"m","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec recorder
			p := newProvider(t, rec.handler(textReply))
			if _, err := p.Chat(t.Context(), &tt.req); err != nil {
				t.Fatal(err)
			}
			assertJSON(t, rec.request().body, tt.want)
		})
	}
}

func TestRequestWire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		edit       func(*llm.ProviderConfig)
		stream     bool
		wantPath   string
		wantHeader map[string]string
	}{
		{
			name:     "OKDefaults",
			edit:     func(*llm.ProviderConfig) {},
			wantPath: "/v1/messages",
			wantHeader: map[string]string{
				"X-Api-Key": testKey, "Anthropic-Version": "2023-06-01", "Content-Type": "application/json", "Authorization": "",
			},
		},
		{
			name: "OKConfiguredHeadersAndVersion",
			edit: func(c *llm.ProviderConfig) {
				c.APIVersion = "2024-01-01"
				c.BaseURL += "/proxy/"
				c.Headers = map[string]string{"anthropic-beta": "context-1m-2025-08-07", "x-api-key": "not-this-one"}
			},
			wantPath:   "/proxy/v1/messages",
			wantHeader: map[string]string{"X-Api-Key": testKey, "Anthropic-Version": "2024-01-01", "Anthropic-Beta": "context-1m-2025-08-07"},
		},
		{
			name:       "OKStream",
			edit:       func(*llm.ProviderConfig) {},
			stream:     true,
			wantPath:   "/v1/messages",
			wantHeader: map[string]string{"X-Api-Key": testKey, "Anthropic-Version": "2023-06-01"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec recorder
			p := newProvider(t, rec.handler(textReply), tt.edit)
			req := &llm.Request{Model: "claude-sonnet-4-5", Messages: []llm.Message{user("Hello")}}
			if tt.stream {
				s, err := p.ChatStream(t.Context(), req)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := llm.Collect(s); err != nil {
					t.Fatal(err)
				}
			} else if _, err := p.Chat(t.Context(), req); err != nil {
				t.Fatal(err)
			}
			got := rec.request()
			if got.method != http.MethodPost || got.path != tt.wantPath || got.query != "" {
				t.Errorf("request = %s %s?%s, want POST %s", got.method, got.path, got.query, tt.wantPath)
			}
			for k, v := range tt.wantHeader {
				if g := got.header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			want := `{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}]}`
			if tt.stream {
				want = `{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}],"stream":true}`
			}
			assertJSON(t, got.body, want)
		})
	}
}

func TestChatInvalidRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  llm.Request
	}{
		{"ErrUnknownRole", llm.Request{Messages: []llm.Message{llm.TextMessage("developer", "x")}}},
		{"ErrToolArguments", llm.Request{Messages: []llm.Message{{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "t", Name: "f", Arguments: "{oops"}}}}}},
		{"ErrImageMediaType", llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartImage, Image: &llm.Image{Data: []byte{1}}}}}}}},
		{"ErrImageDataURL", llm.Request{Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartImage, Image: &llm.Image{URL: "data:image/png,abc"}}}}}}},
		{"ErrResponseFormat", llm.Request{Messages: []llm.Message{user("x")}, ResponseFormat: &llm.ResponseFormat{Type: "xml"}}},
		{"ErrSchemaMissing", llm.Request{Messages: []llm.Message{user("x")}, ResponseFormat: &llm.ResponseFormat{Type: "json_schema", Strict: true}}},
		{"ErrToolChoiceUnnamed", llm.Request{Messages: []llm.Message{user("x")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, func(http.ResponseWriter, *http.Request) { t.Error("the request reached the upstream") })
			_, err := p.Chat(t.Context(), &tt.req)
			if le := asLLMError(t, err); le.Kind != llm.KindInvalid || le.Provider != "claude" {
				t.Fatalf("err = %+v, want KindInvalid from claude", le)
			}
			_, err = p.ChatStream(t.Context(), &tt.req)
			if le := asLLMError(t, err); le.Kind != llm.KindInvalid {
				t.Fatalf("stream err = %+v, want KindInvalid", le)
			}
		})
	}
}

func TestChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		format *llm.ResponseFormat
		reply  string
		want   llm.Response
	}{
		{
			name:  "OKText",
			reply: textReply,
			want: llm.Response{
				ID: "msg_013Zva2CMHLNnXjNJJKqJ2EF", Model: "claude-sonnet-4-5",
				Message:      llm.TextMessage(llm.RoleAssistant, "Hi! My name is Claude."),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 2095, CompletionTokens: 503},
			},
		},
		{
			name:  "OKToolCalls",
			reply: toolReply,
			want: llm.Response{
				ID: "msg_01Aq9w938a90dw8q", Model: "claude-opus-4-6",
				Message: llm.Message{
					Role:    llm.RoleAssistant,
					Content: []llm.Part{{Type: llm.PartText, Text: "I'll check the current weather in San Francisco for you."}},
					ToolCalls: []llm.ToolCall{
						{ID: "toolu_01A09q90qw90lq917835lq9", Name: "get_weather", Arguments: `{"location": "San Francisco, CA", "unit": "celsius"}`},
						{ID: "toolu_02B", Name: "get_time", Arguments: `{}`},
					},
				},
				FinishReason: llm.FinishToolCalls, Usage: llm.Usage{PromptTokens: 472, CompletionTokens: 89},
			},
		},
		{
			name:   "OKStructuredOutputTool",
			format: &llm.ResponseFormat{Type: "json_schema", Name: "answer", Schema: json.RawMessage(answerSchema)},
			reply: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","stop_reason":"tool_use",
				"content":[{"type":"tool_use","id":"toolu_x","name":"answer","input":{"city":"Paris"}}],
				"usage":{"input_tokens":10,"output_tokens":5}}`,
			want: llm.Response{
				ID: "msg_1", Model: "claude-haiku-4-5", Message: llm.TextMessage(llm.RoleAssistant, `{"city":"Paris"}`),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 10, CompletionTokens: 5},
			},
		},
		{
			name:   "OKStructuredOutputNative",
			format: &llm.ResponseFormat{Type: "json_schema", Name: "answer", Schema: json.RawMessage(answerSchema), Strict: true},
			reply: `{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_reason":"end_turn",
				"content":[{"type":"text","text":"{\"city\":\"Paris\"}"}],"usage":{"input_tokens":10,"output_tokens":5}}`,
			want: llm.Response{
				ID: "msg_2", Model: "claude-sonnet-4-5", Message: llm.TextMessage(llm.RoleAssistant, `{"city":"Paris"}`),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 10, CompletionTokens: 5},
			},
		},
		{
			name: "OKCacheUsage",
			reply: `{"id":"msg_3","type":"message","role":"assistant","model":"m","stop_reason":"stop_sequence","stop_sequence":"END",
				"content":[{"type":"text","text":"ok"}],
				"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":300,"output_tokens":50}}`,
			want: llm.Response{
				ID: "msg_3", Model: "m", Message: llm.TextMessage(llm.RoleAssistant, "ok"),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 420, CompletionTokens: 50, CachedTokens: 300},
			},
		},
		{
			name:  "OKMaxTokens",
			reply: `{"id":"msg_4","type":"message","role":"assistant","model":"m","stop_reason":"max_tokens","content":[{"type":"text","text":"cut"}],"usage":{"input_tokens":1,"output_tokens":2}}`,
			want: llm.Response{
				ID: "msg_4", Model: "m", Message: llm.TextMessage(llm.RoleAssistant, "cut"),
				FinishReason: llm.FinishLength, Usage: llm.Usage{PromptTokens: 1, CompletionTokens: 2},
			},
		},
		{
			name:  "OKRefusal",
			reply: `{"id":"msg_5","type":"message","role":"assistant","model":"m","stop_reason":"refusal","content":[],"usage":{"input_tokens":1,"output_tokens":0}}`,
			want: llm.Response{
				ID: "msg_5", Model: "m", Message: llm.Message{Role: llm.RoleAssistant},
				FinishReason: llm.FinishContentFilter, Usage: llm.Usage{PromptTokens: 1},
			},
		},
		{
			name:  "OKEmptyContent",
			reply: `{"id":"msg_6","type":"message","role":"assistant","model":"m","stop_reason":"end_turn","content":[],"usage":{"input_tokens":3,"output_tokens":1}}`,
			want: llm.Response{
				ID: "msg_6", Model: "m", Message: llm.Message{Role: llm.RoleAssistant},
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 3, CompletionTokens: 1},
			},
		},
		{
			name: "OKUnknownFieldsAndBlocksIgnored",
			reply: `{"id":"msg_7","type":"message","role":"assistant","model":"m","container":null,"future_field":{"x":1},
				"content":[
					{"type":"thinking","thinking":"Let me think","signature":"abc"},
					{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"x"}},
					{"type":"web_search_tool_result","tool_use_id":"srvtoolu_1","content":[]},
					{"type":"text","text":"Found it.","citations":null}],
				"stop_reason":"pause_turn","usage":{"input_tokens":5,"output_tokens":6,"service_tier":"standard","server_tool_use":{"web_search_requests":1}}}`,
			want: llm.Response{
				ID: "msg_7", Model: "m", Message: llm.TextMessage(llm.RoleAssistant, "Found it."),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 5, CompletionTokens: 6},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, replying(tt.reply))
			got, err := p.Chat(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: tt.format})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Chat =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
	t.Run("ErrUndecodable", func(t *testing.T) {
		t.Parallel()
		p := newProvider(t, replying(`{"id":"msg_8","content":[{"type":`))
		_, err := p.Chat(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
		if le := asLLMError(t, err); le.Kind != llm.KindProtocol {
			t.Fatalf("err = %+v, want KindProtocol", le)
		}
	})
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		typ        string
		retryAfter string
		wantKind   llm.ErrorKind
		wantRetry  time.Duration
	}{
		{"ErrInvalidRequest", 400, "invalid_request_error", "", llm.KindInvalid, 0},
		{"ErrAuthentication", 401, "authentication_error", "", llm.KindAuth, 0},
		{"ErrPermission", 403, "permission_error", "", llm.KindAuth, 0},
		{"ErrNotFound", 404, "not_found_error", "", llm.KindInvalid, 0},
		{"ErrTooLarge", 413, "request_too_large", "", llm.KindInvalid, 0},
		{"ErrRateLimited", 429, "rate_limit_error", "30", llm.KindRateLimited, 30 * time.Second},
		{"ErrAPI", 500, "api_error", "", llm.KindOverloaded, 0},
		{"ErrUnavailable", 503, "api_error", "", llm.KindOverloaded, 0},
		{"ErrOverloaded", 529, "overloaded_error", "", llm.KindOverloaded, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			message := "upstream says " + tt.typ
			p := newProvider(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, `{"type":"error","error":{"type":"`+tt.typ+`","message":"`+message+`"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}`)
			})
			req := &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}}
			_, chatErr := p.Chat(t.Context(), req)
			_, streamErr := p.ChatStream(t.Context(), req)
			_, modelsErr := p.Models(t.Context())
			for _, err := range []error{chatErr, streamErr, modelsErr} {
				le := asLLMError(t, err)
				if le.Provider != "claude" || le.Kind != tt.wantKind || le.Status != tt.status || le.Type != tt.typ || le.Message != message || le.RetryAfter != tt.wantRetry {
					t.Errorf("err = %+v, want kind %s status %d type %s retry %v", le, tt.wantKind, tt.status, tt.typ, tt.wantRetry)
				}
			}
		})
	}
	t.Run("ErrConnectionRefused", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		p, err := anthropic.New(llm.ProviderConfig{Name: "claude", APIKey: testKey, BaseURL: srv.URL}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Chat(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
		if le := asLLMError(t, err); le.Kind != llm.KindConnection || strings.Contains(le.Error(), testKey) {
			t.Fatalf("err = %v, want KindConnection without the key", le)
		}
	})
}

func TestModels(t *testing.T) {
	t.Parallel()
	t.Run("OKPaginated", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var queries []string
		p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || r.URL.Path != "/v1/models" || r.Header.Get("X-Api-Key") != testKey || r.Header.Get("Anthropic-Version") != "2023-06-01" {
				t.Errorf("request %s %s with key %q", r.Method, r.URL.Path, r.Header.Get("X-Api-Key"))
			}
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			if r.URL.Query().Get("after_id") == "" {
				_, _ = io.WriteString(w, `{"data":[
					{"created_at":"2025-09-29T00:00:00Z","display_name":"Claude Sonnet 4.5","id":"claude-sonnet-4-5-20250929","type":"model","lifecycle":"active"},
					{"created_at":"2025-02-19T00:00:00Z","display_name":"Claude Sonnet 3.7","id":"claude-3-7-sonnet-20250219","type":"model"}],
					"first_id":"claude-sonnet-4-5-20250929","has_more":true,"last_id":"claude-3-7-sonnet-20250219"}`)
				return
			}
			_, _ = io.WriteString(w, `{"data":[
				{"created_at":"2024-03-07T00:00:00Z","display_name":"Claude Haiku 3","id":"claude-3-haiku-20240307","type":"model","lifecycle":"deprecated"},
				{"created_at":"2024-02-29T00:00:00Z","display_name":"Claude Opus 3","id":"claude-3-opus-20240229","type":"model","lifecycle":"retired"}],
				"first_id":"claude-3-haiku-20240307","has_more":false,"last_id":"claude-3-opus-20240229"}`)
		})
		got, err := p.Models(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		want := []llm.Model{
			{ID: "claude-sonnet-4-5-20250929", OwnedBy: "anthropic"},
			{ID: "claude-3-7-sonnet-20250219", OwnedBy: "anthropic"},
			{ID: "claude-3-haiku-20240307", OwnedBy: "anthropic"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Models = %+v, want %+v", got, want)
		}
		wantQueries := []string{"limit=1000", "after_id=claude-3-7-sonnet-20250219&limit=1000"}
		if !reflect.DeepEqual(queries, wantQueries) {
			t.Errorf("queries = %q, want %q", queries, wantQueries)
		}
	})
	t.Run("ErrUndecodable", func(t *testing.T) {
		t.Parallel()
		p := newProvider(t, replying(`{"data":`))
		_, err := p.Models(t.Context())
		if le := asLLMError(t, err); le.Kind != llm.KindProtocol {
			t.Fatalf("err = %+v, want KindProtocol", le)
		}
	})
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	p := newProvider(t, func(http.ResponseWriter, *http.Request) { t.Error("the request reached the upstream") })
	_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "m", Input: []string{"a", "b"}})
	if le := asLLMError(t, err); le.Kind != llm.KindUnsupported || le.Provider != "claude" {
		t.Fatalf("err = %+v, want KindUnsupported", le)
	}
}
