package gemini_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/gemini"
)

const testKey = "test-key-AIza-not-real"

// captured is one request the fake upstream received.
type captured struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
}

// upstream is a fake Gemini API answering every request with handle and recording it.
type upstream struct {
	mu   sync.Mutex
	reqs []captured
}

func (u *upstream) last(t *testing.T) captured {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) all() []captured {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]captured(nil), u.reqs...)
}

func newProvider(t *testing.T, handle http.HandlerFunc) (*gemini.Provider, *upstream) {
	t.Helper()
	up := &upstream{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		up.mu.Lock()
		up.reqs = append(up.reqs, captured{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Body: body})
		up.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	p, err := gemini.New(llm.ProviderConfig{
		Name: "gem", Type: "gemini", BaseURL: srv.URL, APIKey: testKey,
		Headers: map[string]string{"X-Kiln-Team": "core"},
	}, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return p, up
}

// replyJSON answers with a fixed JSON body.
func replyJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// replySSE answers with an event stream body as Gemini frames it (events end in \r\n\r\n).
func replySSE(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}
}

// sse joins chunks into an event stream.
func sse(chunks ...string) string {
	var b strings.Builder
	for _, c := range chunks {
		b.WriteString("data: " + c + "\r\n\r\n")
	}
	return b.String()
}

func textRequest(model string) *llm.Request {
	return &llm.Request{Model: model, Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hello")}}
}

func ptr[T any](v T) *T { return &v }

// assertJSON compares two JSON documents by value.
func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("request body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		gi, _ := json.MarshalIndent(g, "", "  ")
		wi, _ := json.MarshalIndent(w, "", "  ")
		t.Fatalf("request body:\n%s\nwant:\n%s", gi, wi)
	}
}

// A documented generateContent reply (gemini-2.5-flash, with thinking tokens), plus
// fields Kiln does not read.
const textReply = `{
  "candidates": [{
    "content": {"parts": [{"text": "I think so"}, {"text": ", yes."}], "role": "model"},
    "finishReason": "STOP",
    "index": 0,
    "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}],
    "citationMetadata": {"citationSources": []},
    "avgLogprobs": -0.12
  }],
  "usageMetadata": {
    "promptTokenCount": 12, "candidatesTokenCount": 87, "totalTokenCount": 255,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
    "thoughtsTokenCount": 156
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "4-4GafrNGoq52roPk_XSuAY",
  "someFutureField": {"nested": [1, 2, 3]}
}`

func TestRequestEncoding(t *testing.T) {
	t.Parallel()
	full := &llm.Request{
		Model: "gemini-2.5-flash",
		Messages: []llm.Message{
			llm.TextMessage(llm.RoleSystem, "You are terse."),
			llm.TextMessage(llm.RoleSystem, "Answer in English."),
			{Role: llm.RoleUser, Content: []llm.Part{
				{Type: llm.PartText, Text: "What is in these images?"},
				{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/img/cat.PNG?size=large"}},
				{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/dog"}},
				{Type: llm.PartImage, Image: &llm.Image{MediaType: "image/png", Data: []byte("\x89PNG\r\n")}},
				{Type: llm.PartImage, Image: &llm.Image{URL: "data:image/webp;base64,UklGRg=="}},
			}},
			{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Let me check."}}, ToolCalls: []llm.ToolCall{
				{ID: "call_0__thought__CiQBsig==", Name: "get_weather", Arguments: `{"city":"Paris"}`},
				{ID: "call_1", Name: "get_time", Arguments: "null"},
			}},
			{Role: llm.RoleTool, ToolCallID: "call_0__thought__CiQBsig==", Content: []llm.Part{{Type: llm.PartText, Text: `{"temp":21}`}}},
			{Role: llm.RoleTool, ToolCallID: "call_1", Name: "get_time", Content: []llm.Part{{Type: llm.PartText, Text: "12:00"}}},
			llm.TextMessage(llm.RoleUser, "And Rome?"),
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_abc", Name: "get_weather", Arguments: `{"city":"Rome"}`}}},
			{Role: llm.RoleTool, ToolCallID: "call_abc", Content: []llm.Part{{Type: llm.PartText, Text: `[18, "sunny"]`}}},
		},
		Tools: []llm.Tool{
			{Name: "get_weather", Description: "Current weather", Parameters: json.RawMessage(`{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false}`)},
			{Name: "get_time"},
			{Name: "noop", Parameters: json.RawMessage("null")},
		},
		ToolChoice:     &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "get_weather"},
		ResponseFormat: &llm.ResponseFormat{Type: "json_schema", Name: "answer", Schema: json.RawMessage(`{"type":"object","properties":{"answer":{"type":"string"}}}`), Strict: true},
		Temperature:    ptr(0.2),
		TopP:           ptr(0.9),
		MaxTokens:      ptr(256),
		Stop:           []string{"END"},
		Seed:           ptr(int64(42)),
		User:           "user-1", // Gemini has no such field
	}
	const fullWant = `{
	  "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
	  "contents": [
	    {"role": "user", "parts": [
	      {"text": "What is in these images?"},
	      {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/img/cat.PNG?size=large"}},
	      {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/dog"}},
	      {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
	      {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}}
	    ]},
	    {"role": "model", "parts": [
	      {"text": "Let me check."},
	      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQBsig=="},
	      {"functionCall": {"name": "get_time", "args": {}}}
	    ]},
	    {"role": "user", "parts": [
	      {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
	      {"functionResponse": {"name": "get_time", "response": {"result": "12:00"}}},
	      {"text": "And Rome?"}
	    ]},
	    {"role": "model", "parts": [
	      {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}, "thoughtSignature": "skip_thought_signature_validator"}
	    ]},
	    {"role": "user", "parts": [
	      {"functionResponse": {"name": "get_weather", "response": {"result": [18, "sunny"]}}}
	    ]}
	  ],
	  "tools": [{"functionDeclarations": [
	    {"name": "get_weather", "description": "Current weather", "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
	    {"name": "get_time"},
	    {"name": "noop"}
	  ]}],
	  "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
	  "generationConfig": {
	    "candidateCount": 1, "temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256,
	    "stopSequences": ["END"], "seed": 42,
	    "responseMimeType": "application/json",
	    "responseJsonSchema": {"type": "object", "properties": {"answer": {"type": "string"}}}
	  }
	}`
	withTools := func(tc *llm.ToolChoice) *llm.Request {
		r := textRequest("gemini-2.5-flash")
		r.Tools = []llm.Tool{{Name: "f", Parameters: json.RawMessage(`{"type":"object"}`)}}
		r.ToolChoice = tc
		return r
	}
	const toolsWant = `"tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}]`
	const hello = `"contents": [{"role": "user", "parts": [{"text": "Hello"}]}], "generationConfig": {"candidateCount": 1}`
	tests := []struct {
		name string
		req  *llm.Request
		want string
	}{
		{"Full", full, fullWant},
		{"Minimal", textRequest("gemini-2.5-flash"), `{` + hello + `}`},
		{"ToolChoiceAuto", withTools(&llm.ToolChoice{Mode: llm.ToolChoiceAuto}), `{` + hello + `,` + toolsWant + `, "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}`},
		{"ToolChoiceNone", withTools(&llm.ToolChoice{Mode: llm.ToolChoiceNone}), `{` + hello + `,` + toolsWant + `, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}`},
		{"ToolChoiceRequired", withTools(&llm.ToolChoice{Mode: llm.ToolChoiceRequired}), `{` + hello + `,` + toolsWant + `, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}`},
		{"ToolsWithoutChoice", withTools(nil), `{` + hello + `,` + toolsWant + `}`},
		{"JSONObject", func() *llm.Request {
			r := textRequest("gemini-2.5-flash")
			r.ResponseFormat = &llm.ResponseFormat{Type: "json_object"}
			return r
		}(), `{"contents": [{"role": "user", "parts": [{"text": "Hello"}]}], "generationConfig": {"candidateCount": 1, "responseMimeType": "application/json"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := newProvider(t, replyJSON(200, textReply))
			if _, err := p.Chat(context.Background(), tt.req); err != nil {
				t.Fatal(err)
			}
			assertJSON(t, up.last(t).Body, tt.want)
		})
	}
}

func TestRequestHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		call      func(p *gemini.Provider) error
		method    string
		path      string
		query     string
		replyWith http.HandlerFunc
	}{
		{"Chat", func(p *gemini.Provider) error {
			_, err := p.Chat(context.Background(), textRequest("gemini-2.5-flash"))
			return err
		}, http.MethodPost, "/v1beta/models/gemini-2.5-flash:generateContent", "", replyJSON(200, textReply)},
		{"ChatModelWithPrefix", func(p *gemini.Provider) error {
			_, err := p.Chat(context.Background(), textRequest("models/gemini-2.5-pro"))
			return err
		}, http.MethodPost, "/v1beta/models/gemini-2.5-pro:generateContent", "", replyJSON(200, textReply)},
		{"ChatStream", func(p *gemini.Provider) error {
			s, err := p.ChatStream(context.Background(), textRequest("gemini-2.5-flash"))
			if err != nil {
				return err
			}
			_, err = llm.Collect(s)
			return err
		}, http.MethodPost, "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse", replySSE(sse(`{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP"}]}`))},
		{"Embed", func(p *gemini.Provider) error {
			_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "gemini-embedding-001", Input: []string{"a"}})
			return err
		}, http.MethodPost, "/v1beta/models/gemini-embedding-001:batchEmbedContents", "", replyJSON(200, `{"embeddings":[{"values":[0.1]}]}`)},
		{"Models", func(p *gemini.Provider) error {
			_, err := p.Models(context.Background())
			return err
		}, http.MethodGet, "/v1beta/models", "pageSize=1000", replyJSON(200, `{"models":[]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := newProvider(t, tt.replyWith)
			if err := tt.call(p); err != nil {
				t.Fatal(err)
			}
			got := up.last(t)
			if got.Method != tt.method || got.Path != tt.path || got.RawQuery != tt.query {
				t.Errorf("request = %s %s?%s, want %s %s?%s", got.Method, got.Path, got.RawQuery, tt.method, tt.path, tt.query)
			}
			if k := got.Header.Get("x-goog-api-key"); k != testKey {
				t.Errorf("x-goog-api-key = %q, want the key", k)
			}
			if h := got.Header.Get("X-Kiln-Team"); h != "core" {
				t.Errorf("configured header = %q, want core", h)
			}
			if got.Header.Get("Authorization") != "" || strings.Contains(got.RawQuery, testKey) {
				t.Error("the key travels only in x-goog-api-key")
			}
			if tt.method == http.MethodPost && got.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", got.Header.Get("Content-Type"))
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
		{"Text", textReply, llm.Response{
			ID: "4-4GafrNGoq52roPk_XSuAY", Model: "gemini-2.5-flash",
			Message:      llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "I think so, yes."}}},
			FinishReason: llm.FinishStop,
			Usage:        llm.Usage{PromptTokens: 12, CompletionTokens: 87 + 156},
		}},
		{"ToolCalls", `{
		  "candidates": [{
		    "content": {"role": "model", "parts": [
		      {"text": "Planning the calls.", "thought": true},
		      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "CiQBsig=="},
		      {"functionCall": {"id": "fc_2", "name": "get_time", "args": {}}},
		      {"functionCall": {"name": "ping"}}
		    ]},
		    "finishReason": "STOP", "index": 0
		  }],
		  "usageMetadata": {"promptTokenCount": 70, "candidatesTokenCount": 20, "cachedContentTokenCount": 64, "toolUsePromptTokenCount": 5, "totalTokenCount": 95},
		  "modelVersion": "gemini-3-pro-preview"
		}`, llm.Response{
			Model: "gemini-3-pro-preview",
			Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
				{ID: "call_0__thought__CiQBsig==", Name: "get_weather", Arguments: `{"city": "Paris"}`},
				{ID: "fc_2", Name: "get_time", Arguments: `{}`},
				{ID: "call_2", Name: "ping", Arguments: `{}`},
			}},
			FinishReason: llm.FinishToolCalls,
			Usage:        llm.Usage{PromptTokens: 75, CompletionTokens: 20, CachedTokens: 64},
		}},
		{"MaxTokens", `{"candidates":[{"content":{"parts":[{"text":"Once upon"}],"role":"model"},"finishReason":"MAX_TOKENS"}]}`, llm.Response{
			Message:      llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Once upon"}}},
			FinishReason: llm.FinishLength,
		}},
		{"SafetyStop", `{"candidates":[{"finishReason":"SAFETY","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]}]}`, llm.Response{
			Message:      llm.Message{Role: llm.RoleAssistant},
			FinishReason: llm.FinishContentFilter,
		}},
		{"BlockedPrompt", `{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash"}`, llm.Response{
			Model:        "gemini-2.5-flash",
			Message:      llm.Message{Role: llm.RoleAssistant},
			FinishReason: llm.FinishContentFilter,
			Usage:        llm.Usage{PromptTokens: 7},
		}},
		{"NoCandidates", `{"candidates":[]}`, llm.Response{
			Message:      llm.Message{Role: llm.RoleAssistant},
			FinishReason: llm.FinishContentFilter,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newProvider(t, replyJSON(200, tt.body))
			got, err := p.Chat(context.Background(), textRequest("gemini-2.5-flash"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("Chat =\n%+v\nwant\n%+v", *got, tt.want)
			}
		})
	}
}

// A tool call Gemini 3 signed comes back to Gemini with its signature, whatever the client
// does with the id in between, as long as it echoes it.
func TestThoughtSignatureRoundTrip(t *testing.T) {
	t.Parallel()
	p, up := newProvider(t, replyJSON(200, `{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"lookup","args":{"q":"x"}},"thoughtSignature":"EjQKMgF+sig/=="}]},"finishReason":"STOP"}]}`))
	first, err := p.Chat(context.Background(), textRequest("gemini-3-pro-preview"))
	if err != nil {
		t.Fatal(err)
	}
	call := first.Message.ToolCalls[0]
	next := textRequest("gemini-3-pro-preview")
	next.Messages = append(next.Messages, first.Message, llm.Message{Role: llm.RoleTool, ToolCallID: call.ID, Content: []llm.Part{{Type: llm.PartText, Text: "found"}}})
	if _, err := p.Chat(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, up.last(t).Body, `{
	  "contents": [
	    {"role": "user", "parts": [{"text": "Hello"}]},
	    {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": "x"}}, "thoughtSignature": "EjQKMgF+sig/=="}]},
	    {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"result": "found"}}}]}
	  ],
	  "generationConfig": {"candidateCount": 1}
	}`)
}

func TestRequestInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  *llm.Request
	}{
		{"NoModel", textRequest("")},
		{"ArgumentsNotObject", &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "1", Name: "f", Arguments: "[1]"}}}}}},
		{"ToolResultForUnknownCall", &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleTool, ToolCallID: "nope", Content: []llm.Part{{Type: llm.PartText, Text: "x"}}}}}},
		{"ImageWithoutSource", &llm.Request{Model: "m", Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartImage, Image: &llm.Image{}}}}}}},
		{"UnknownRole", &llm.Request{Model: "m", Messages: []llm.Message{{Role: "narrator"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := newProvider(t, replyJSON(200, textReply))
			_, err := p.Chat(context.Background(), tt.req)
			var e *llm.Error
			if !errors.As(err, &e) || e.Kind != llm.KindInvalid || e.Provider != "gem" {
				t.Fatalf("err = %v, want an invalid_request *llm.Error", err)
			}
			if n := len(up.all()); n != 0 {
				t.Errorf("%d requests sent upstream, want none", n)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	errBody := func(code int, status, message string) string {
		return fmt.Sprintf(`{"error": {"code": %d, "message": %q, "status": %q}}`, code, message, status)
	}
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       llm.ErrorKind
		typ        string
		message    string
		retryAfter time.Duration
	}{
		{"InvalidArgument400", 400, nil, errBody(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), llm.KindInvalid, "INVALID_ARGUMENT", "Request contains an invalid argument.", 0},
		{"BadKey400", 400, nil, `{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]}}`, llm.KindAuth, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", 0},
		{"Unauthenticated401", 401, nil, errBody(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), llm.KindAuth, "UNAUTHENTICATED", "Request had invalid authentication credentials.", 0},
		{"PermissionDenied403", 403, nil, errBody(403, "PERMISSION_DENIED", "The caller does not have permission"), llm.KindAuth, "PERMISSION_DENIED", "The caller does not have permission", 0},
		{"NotFound404", 404, nil, errBody(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"), llm.KindInvalid, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta", 0},
		{"RetryAfterHeader429", 429, map[string]string{"Retry-After": "7"}, errBody(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."), llm.KindRateLimited, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", 7 * time.Second},
		{"RetryInfo429", 429, nil, `{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests"}]}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41s"}]}}`, llm.KindRateLimited, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", 41 * time.Second},
		{"ArrayBody429", 429, nil, `[{"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}]`, llm.KindRateLimited, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later.", 0},
		{"Internal500", 500, nil, errBody(500, "INTERNAL", "An internal error has occurred."), llm.KindOverloaded, "INTERNAL", "An internal error has occurred.", 0},
		{"Unavailable503", 503, nil, errBody(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), llm.KindOverloaded, "UNAVAILABLE", "The model is overloaded. Please try again later.", 0},
		{"Overloaded529", 529, nil, "overloaded", llm.KindOverloaded, "", "overloaded", 0},
	}
	for _, tt := range tests {
		handle := func(w http.ResponseWriter, _ *http.Request) {
			for k, v := range tt.header {
				w.Header().Set(k, v)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(tt.status)
			_, _ = io.WriteString(w, tt.body)
		}
		calls := map[string]func(p *gemini.Provider) error{
			"Chat": func(p *gemini.Provider) error {
				_, err := p.Chat(context.Background(), textRequest("gemini-2.5-flash"))
				return err
			},
			"ChatStream": func(p *gemini.Provider) error {
				_, err := p.ChatStream(context.Background(), textRequest("gemini-2.5-flash"))
				return err
			},
			"Embed": func(p *gemini.Provider) error {
				_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "gemini-embedding-001", Input: []string{"a"}})
				return err
			},
			"Models": func(p *gemini.Provider) error {
				_, err := p.Models(context.Background())
				return err
			},
		}
		for call, do := range calls {
			t.Run(tt.name+"/"+call, func(t *testing.T) {
				t.Parallel()
				p, _ := newProvider(t, handle)
				err := do(p)
				var e *llm.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %v, want *llm.Error", err)
				}
				if e.Provider != "gem" || e.Kind != tt.kind || e.Status != tt.status || e.Type != tt.typ || e.Message != tt.message || e.RetryAfter != tt.retryAfter {
					t.Errorf("err = %+v, want kind %s status %d type %q message %q retry after %s", *e, tt.kind, tt.status, tt.typ, tt.message, tt.retryAfter)
				}
				if strings.Contains(e.Error(), testKey) {
					t.Error("the error text holds the API key")
				}
			})
		}
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	p, err := gemini.New(llm.ProviderConfig{Name: "gem", BaseURL: base, APIKey: testKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Chat(context.Background(), textRequest("gemini-2.5-flash"))
	var e *llm.Error
	if !errors.As(err, &e) || e.Kind != llm.KindConnection {
		t.Fatalf("err = %v, want a connection *llm.Error", err)
	}
}

func TestChatUndecodable(t *testing.T) {
	t.Parallel()
	p, _ := newProvider(t, replyJSON(200, `{"candidates": [`))
	_, err := p.Chat(context.Background(), textRequest("gemini-2.5-flash"))
	var e *llm.Error
	if !errors.As(err, &e) || e.Kind != llm.KindProtocol {
		t.Fatalf("err = %v, want a protocol *llm.Error", err)
	}
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	// Each vector is [request number in its batch, batch size] so order can be checked.
	embedder := func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Requests []json.RawMessage `json:"requests"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &req)
		var b bytes.Buffer
		b.WriteString(`{"embeddings": [`)
		for i := range req.Requests {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"values": [%d, %d]}`, i, len(req.Requests))
		}
		b.WriteString(`]}`)
		_, _ = w.Write(b.Bytes())
	}
	t.Run("OK", func(t *testing.T) {
		t.Parallel()
		p, up := newProvider(t, embedder)
		got, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "gemini-embedding-001", Input: []string{"first", "second"}, Dimensions: ptr(768), User: "u"})
		if err != nil {
			t.Fatal(err)
		}
		assertJSON(t, up.last(t).Body, `{"requests": [
		  {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "first"}]}, "outputDimensionality": 768},
		  {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]}, "outputDimensionality": 768}
		]}`)
		want := &llm.EmbedResponse{Model: "gemini-embedding-001", Vectors: [][]float32{{0, 2}, {1, 2}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Embed = %+v, want %+v", got, want)
		}
	})
	t.Run("BatchesOf100InOrder", func(t *testing.T) {
		t.Parallel()
		p, up := newProvider(t, embedder)
		input := make([]string, 250)
		for i := range input {
			input[i] = fmt.Sprint(i)
		}
		got, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "text-embedding-004", Input: input})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(up.all()); n != 3 {
			t.Fatalf("%d calls upstream, want 3", n)
		}
		if len(got.Vectors) != 250 {
			t.Fatalf("%d vectors, want 250", len(got.Vectors))
		}
		for i, v := range got.Vectors {
			batch := []float32{100, 100, 50}[i/100]
			if v[0] != float32(i%100) || v[1] != batch {
				t.Fatalf("vector %d = %v, want [%d %v]", i, v, i%100, batch)
			}
		}
	})
	t.Run("ErrCountMismatch", func(t *testing.T) {
		t.Parallel()
		p, _ := newProvider(t, replyJSON(200, `{"embeddings": [{"values": [1]}]}`))
		_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "gemini-embedding-001", Input: []string{"a", "b"}})
		var e *llm.Error
		if !errors.As(err, &e) || e.Kind != llm.KindProtocol {
			t.Fatalf("err = %v, want a protocol *llm.Error", err)
		}
	})
	t.Run("ErrNoInput", func(t *testing.T) {
		t.Parallel()
		p, _ := newProvider(t, embedder)
		_, err := p.Embed(context.Background(), &llm.EmbedRequest{Model: "gemini-embedding-001"})
		var e *llm.Error
		if !errors.As(err, &e) || e.Kind != llm.KindInvalid {
			t.Fatalf("err = %v, want an invalid_request *llm.Error", err)
		}
	})
}

func TestModels(t *testing.T) {
	t.Parallel()
	p, up := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("pageToken") {
		case "":
			_, _ = io.WriteString(w, `{"models": [
			  {"name": "models/gemini-2.5-flash", "version": "001", "displayName": "Gemini 2.5 Flash", "inputTokenLimit": 1048576, "supportedGenerationMethods": ["generateContent", "countTokens"]},
			  {"name": "models/gemini-embedding-001", "supportedGenerationMethods": ["embedContent"]}
			], "nextPageToken": "Ch1tb2RlbHMv+/="}`)
		case "Ch1tb2RlbHMv+/=":
			_, _ = io.WriteString(w, `{"models": [{"name": "models/gemini-2.5-pro"}]}`)
		default:
			http.Error(w, "bad token", http.StatusBadRequest)
		}
	})
	got, err := p.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []llm.Model{{ID: "gemini-2.5-flash", OwnedBy: "google"}, {ID: "gemini-embedding-001", OwnedBy: "google"}, {ID: "gemini-2.5-pro", OwnedBy: "google"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Models = %+v, want %+v", got, want)
	}
	if n := len(up.all()); n != 2 {
		t.Errorf("%d pages fetched, want 2", n)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     llm.ProviderConfig
		wantErr string
	}{
		{"OK", llm.ProviderConfig{Name: "g", Type: "gemini", APIKey: "k"}, ""},
		{"OKProxyWithoutKey", llm.ProviderConfig{Name: "g", BaseURL: "https://proxy.internal/gemini/v1beta/"}, ""},
		{"ErrNoName", llm.ProviderConfig{APIKey: "k"}, "Name"},
		{"ErrNoKey", llm.ProviderConfig{Name: "g"}, "APIKey"},
		{"ErrBadURL", llm.ProviderConfig{Name: "g", APIKey: "k", BaseURL: "ftp://x"}, "BaseURL"},
		{"ErrKeyInURL", llm.ProviderConfig{Name: "g", BaseURL: "https://generativelanguage.googleapis.com/?key=AIzaSecret"}, "BaseURL"},
		{"ErrOtherType", llm.ProviderConfig{Name: "g", Type: "openai", APIKey: "k"}, "Type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := gemini.New(tt.cfg, nil)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("New: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New err = %v, want one naming %s", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "AIzaSecret") {
				t.Error("the error holds the API key")
			}
		})
	}
	t.Run("BaseURLWithVersion", func(t *testing.T) {
		t.Parallel()
		var path string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			path = r.URL.Path
			_, _ = io.WriteString(w, textReply)
		}))
		t.Cleanup(srv.Close)
		p, err := gemini.New(llm.ProviderConfig{Name: "g", APIKey: "k", BaseURL: srv.URL + "/proxy/v1beta/"}, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Chat(context.Background(), textRequest("gemini-2.5-flash")); err != nil {
			t.Fatal(err)
		}
		if path != "/proxy/v1beta/models/gemini-2.5-flash:generateContent" {
			t.Errorf("path = %s", path)
		}
	})
}
