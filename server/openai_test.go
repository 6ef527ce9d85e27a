package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
)

// What an OpenAI SDK decodes; declared here, apart from the server's own types, so the
// tests hold the server to OpenAI's wire format rather than to itself.
type (
	sdkToolCall struct {
		Index    *int   `json:"index"`
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	}
	sdkMessage struct {
		Role      string        `json:"role"`
		Content   *string       `json:"content"`
		ToolCalls []sdkToolCall `json:"tool_calls"`
	}
	sdkUsage struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		TotalTokens         int `json:"total_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	}
	sdkCompletion struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index        int        `json:"index"`
			Message      sdkMessage `json:"message"`
			FinishReason string     `json:"finish_reason"`
		} `json:"choices"`
		Usage *sdkUsage `json:"usage"`
	}
	sdkChunk struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index        int        `json:"index"`
			Delta        sdkMessage `json:"delta"`
			FinishReason *string    `json:"finish_reason"`
		} `json:"choices"`
		Usage *sdkUsage `json:"usage"`
	}
	sdkEmbeddings struct {
		Object string `json:"object"`
		Model  string `json:"model"`
		Data   []struct {
			Object    string          `json:"object"`
			Index     int             `json:"index"`
			Embedding json.RawMessage `json:"embedding"`
		} `json:"data"`
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
)

func openAIRequest(method, path, credential, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	return req
}

// doOpenAI serves req through the whole middleware and checks the response against the
// spec, errors in OpenAI's body (b.do checks that of every response under /openai).
func (b *bundle) doOpenAI(t testing.TB, req *http.Request) *http.Response {
	t.Helper()
	return b.do(t, req)
}

// openAIOK serves req, requires a 200 and decodes its body into out.
func (b *bundle) openAIOK(t testing.TB, req *http.Request, out any) *http.Response {
	t.Helper()
	res := b.doOpenAI(t, req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, readAll(res))
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
	return res
}

// openAIErrorIs requires res to be OpenAI's error body {"error": {message, type, param,
// code}} with status, type, code and param (nil: null).
func openAIErrorIs(t testing.TB, res *http.Response, status int, typ string, code errs.Code, param *string) string {
	t.Helper()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != status || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %s, want %d", res.StatusCode, res.Header.Get("Content-Type"), body, status)
	}
	var e struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("not OpenAI's error body: %s", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e.Error[k]; !ok {
			t.Errorf("error.%s missing from %s", k, body)
		}
	}
	var got struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}
	raw, _ := json.Marshal(e.Error)
	_ = json.Unmarshal(raw, &got)
	if got.Message == "" || got.Type != typ || got.Code != string(code) {
		t.Errorf("error %+v, want type %s code %s", got, typ, code)
	}
	if deref(got.Param) != deref(param) || (got.Param == nil) != (param == nil) {
		t.Errorf("param %v, want %v (%s)", deref(got.Param), deref(param), got.Message)
	}
	return got.Message
}

// openAIStream posts body to the live server and returns the stream's events, requiring
// that every line is a data line (no event: or id: lines) and that it ends with [DONE].
func openAIStream(t *testing.T, ts *httptest.Server, key, body string) (*http.Response, []sdkChunk) {
	t.Helper()
	res, stream := postStream(t.Context(), t, ts, "/openai/v1/chat/completions", key, body)
	events := drain(t, stream)
	if len(events) == 0 || events[len(events)-1].data != "[DONE]" {
		t.Fatalf("the stream does not end with data: [DONE]: %+v", events)
	}
	chunks := make([]sdkChunk, len(events)-1)
	for i, ev := range events {
		if ev.event != "" || ev.id != "" {
			t.Errorf("event %d has event %q id %q: OpenAI streams are data lines only", i, ev.event, ev.id)
		}
		if i == len(events)-1 {
			break
		}
		matchSchema(t, "OpenAIChatCompletionChunk", []byte(ev.data))
		if err := json.Unmarshal([]byte(ev.data), &chunks[i]); err != nil {
			t.Fatal(err)
		}
		c := chunks[i]
		if !strings.HasPrefix(c.ID, "chatcmpl-") || c.ID != chunks[0].ID || c.Object != "chat.completion.chunk" || c.Model != "default" || c.Created == 0 {
			t.Errorf("chunk %d: %s", i, ev.data)
		}
	}
	return res, chunks
}

const getWeatherTool = `{"type":"function","function":{"name":"get_weather","description":"The weather in a city",
	"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}`

func TestOpenAI(t *testing.T) {
	t.Parallel()
	b := setup(t, withGateway(t, devProviders(nil), map[string][]llm.Target{"default": {devTarget}, "fast": {devTarget}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"}).Key
	jobsKey := b.createKey(t, alice.AccessToken, []string{"jobs"}).Key
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	chat := func(body string) *http.Request {
		return openAIRequest("POST", "/openai/v1/chat/completions", key, body)
	}

	t.Run("OKCompletion", func(t *testing.T) {
		t.Parallel()
		var got sdkCompletion
		res := b.openAIOK(t, chat(`{"model":"default","messages":[{"role":"user","content":"hi"}]}`), &got)
		want := "[dev] You said: hi"
		if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Model != "default" || time.Since(time.Unix(got.Created, 0)) > time.Minute {
			t.Errorf("completion %+v", got)
		}
		if len(got.Choices) != 1 || got.Choices[0].Index != 0 || got.Choices[0].Message.Role != "assistant" ||
			deref(got.Choices[0].Message.Content) != want || got.Choices[0].FinishReason != "stop" || got.Choices[0].Message.ToolCalls != nil {
			t.Errorf("choices %+v", got.Choices)
		}
		prompt, completion := 4+dev.CountTokens("hi"), dev.CountTokens(want)
		if u := got.Usage; u == nil || u.PromptTokens != prompt || u.CompletionTokens != completion || u.TotalTokens != prompt+completion ||
			u.PromptTokensDetails == nil || u.PromptTokensDetails.CachedTokens != 0 {
			t.Errorf("usage %+v", got.Usage)
		}
		if res.Header.Get("Kiln-Provider") != "dev" || res.Header.Get("Kiln-Provider-Model") != dev.Model {
			t.Errorf("headers %v", res.Header)
		}
	})

	for _, tt := range []struct{ name, body, reply string }{
		{"OKDeveloperRole", `{"model":"default","messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"hi"}]}`, "[dev] You said: hi"},
		{"OKContentParts", `{"model":"default","messages":[{"role":"user","content":[{"type":"text","text":"what is in this image?"},
			{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}}]}]}`, "[dev] You said: what is in this image?"},
		{"OKStopString", `{"model":"default","messages":[{"role":"user","content":"hi"}],"stop":"END"}`, "[dev] You said: hi"},
		{"OKUnknownFieldsIgnored", `{"model":"default","messages":[{"role":"user","content":"hi"}],"logit_bias":{},"n":1,"frequency_penalty":0}`, "[dev] You said: hi"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got sdkCompletion
			b.openAIOK(t, chat(tt.body), &got)
			if len(got.Choices) != 1 || deref(got.Choices[0].Message.Content) != tt.reply {
				t.Errorf("choices %+v, want %q", got.Choices, tt.reply)
			}
		})
	}

	t.Run("OKToolsRoundTrip", func(t *testing.T) {
		t.Parallel()
		question := `{"role":"user","content":"what does get_weather say for Paris?"}`
		var first sdkCompletion
		b.openAIOK(t, chat(`{"model":"default","tools":[`+getWeatherTool+`],"messages":[`+question+`]}`), &first)
		if len(first.Choices) != 1 || first.Choices[0].FinishReason != "tool_calls" || first.Choices[0].Message.Content != nil || len(first.Choices[0].Message.ToolCalls) != 1 {
			t.Fatalf("choices %+v", first.Choices)
		}
		call := first.Choices[0].Message.ToolCalls[0]
		var args map[string]any
		if call.ID == "" || call.Type != "function" || call.Function.Name != "get_weather" || json.Unmarshal([]byte(call.Function.Arguments), &args) != nil || args["city"] == nil {
			t.Fatalf("tool call %+v", call)
		}
		assistant, _ := json.Marshal(first.Choices[0].Message)
		var second sdkCompletion
		b.openAIOK(t, chat(`{"model":"default","tools":[`+getWeatherTool+`],"messages":[`+question+`,`+string(assistant)+`,
			{"role":"tool","tool_call_id":`+jsonString(call.ID)+`,"content":"sunny, 21°C"}]}`), &second)
		if len(second.Choices) != 1 || deref(second.Choices[0].Message.Content) != "[dev] The tool get_weather returned: sunny, 21°C" || second.Choices[0].FinishReason != "stop" {
			t.Errorf("choices %+v", second.Choices)
		}
	})

	for _, tt := range []struct {
		name         string
		includeUsage bool
	}{{"OKStream", false}, {"OKStreamWithUsage", true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := `{"model":"default","stream":true,"messages":[{"role":"user","content":"hello there"}]}`
			if tt.includeUsage {
				body = `{"model":"default","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}`
			}
			res, chunks := openAIStream(t, ts, key, body)
			if res.Header.Get("Kiln-Provider") != "dev" {
				t.Errorf("Kiln-Provider %q", res.Header.Get("Kiln-Provider"))
			}
			if len(chunks) < 3 {
				t.Fatalf("%d chunks", len(chunks))
			}
			if c := chunks[0]; len(c.Choices) != 1 || c.Choices[0].Delta.Role != "assistant" || deref(c.Choices[0].Delta.Content) != "" || c.Choices[0].FinishReason != nil {
				t.Errorf("first chunk %+v, want the role", c)
			}
			if tt.includeUsage {
				last := chunks[len(chunks)-1]
				prompt, completion := 4+dev.CountTokens("hello there"), dev.CountTokens("[dev] You said: hello there")
				if last.Choices == nil || len(last.Choices) != 0 || last.Usage == nil || last.Usage.PromptTokens != prompt ||
					last.Usage.CompletionTokens != completion || last.Usage.TotalTokens != prompt+completion || last.Usage.PromptTokensDetails == nil {
					t.Errorf("usage chunk %+v, want empty choices and the usage", last)
				}
				chunks = chunks[:len(chunks)-1]
			}
			finish := chunks[len(chunks)-1]
			if len(finish.Choices) != 1 || deref(finish.Choices[0].FinishReason) != "stop" || finish.Choices[0].Delta.Content != nil {
				t.Errorf("finish chunk %+v", finish)
			}
			var text strings.Builder
			for i, c := range chunks[1 : len(chunks)-1] {
				if len(c.Choices) != 1 || c.Choices[0].FinishReason != nil || c.Choices[0].Delta.Content == nil || c.Usage != nil {
					t.Errorf("content chunk %d: %+v", i+1, c)
					continue
				}
				text.WriteString(*c.Choices[0].Delta.Content)
			}
			if text.String() != "[dev] You said: hello there" {
				t.Errorf("text %q", text.String())
			}
			for _, c := range chunks {
				if c.Usage != nil {
					t.Errorf("usage in a chunk %+v", c)
				}
			}
		})
	}

	t.Run("OKStreamToolCall", func(t *testing.T) {
		t.Parallel()
		_, chunks := openAIStream(t, ts, key, `{"model":"default","stream":true,"tools":[`+getWeatherTool+`],"messages":[{"role":"user","content":"get_weather Paris"}]}`)
		var id, name, args string
		for _, c := range chunks[1 : len(chunks)-1] {
			if len(c.Choices) != 1 || len(c.Choices[0].Delta.ToolCalls) != 1 || deref(c.Choices[0].Delta.ToolCalls[0].Index) != 0 {
				t.Fatalf("chunk %+v, want a tool call delta at index 0", c)
			}
			tc := c.Choices[0].Delta.ToolCalls[0]
			if tc.ID != "" {
				id, name = tc.ID, tc.Function.Name
				if tc.Type != "function" {
					t.Errorf("first tool call delta %+v", tc)
				}
			}
			args += tc.Function.Arguments
		}
		var parsed map[string]any
		if id == "" || name != "get_weather" || json.Unmarshal([]byte(args), &parsed) != nil || parsed["city"] != "Paris" {
			t.Errorf("tool call id %q name %q arguments %q", id, name, args)
		}
		if f := chunks[len(chunks)-1]; deref(f.Choices[0].FinishReason) != "tool_calls" {
			t.Errorf("finish chunk %+v", f)
		}
	})

	param := func(s string) *string { return &s }
	errTests := []struct {
		name           string
		req            *http.Request
		status         int
		typ            string
		code           errs.Code
		param          *string
		messageMention string
	}{
		{"ErrNoKey", openAIRequest("POST", "/openai/v1/chat/completions", "", `{"model":"default","messages":[{"role":"user","content":"hi"}]}`),
			401, "authentication_error", errs.Unauthenticated, nil, ""},
		{"ErrUserTokenInsteadOfKey", openAIRequest("POST", "/openai/v1/chat/completions", alice.AccessToken, `{"model":"default","messages":[{"role":"user","content":"hi"}]}`),
			401, "authentication_error", errs.Unauthenticated, nil, ""},
		{"ErrKeyWithoutChatScope", openAIRequest("POST", "/openai/v1/chat/completions", jobsKey, `{"model":"default","messages":[{"role":"user","content":"hi"}]}`),
			403, "permission_error", errs.PermissionDenied, nil, `"chat"`},
		{"ErrUnknownModel", chat(`{"model":"nope","messages":[{"role":"user","content":"hi"}]}`), 404, "not_found_error", errs.NotFound, nil, `"nope"`},
		{"ErrTemperatureTooHigh", chat(`{"model":"default","temperature":3,"messages":[{"role":"user","content":"hi"}]}`),
			400, "invalid_request_error", errs.Invalid, param("temperature"), ""},
		{"ErrEmptyMessages", chat(`{"model":"default","messages":[]}`), 400, "invalid_request_error", errs.Invalid, param("messages"), ""},
		{"ErrUnknownRole", chat(`{"model":"default","messages":[{"role":"robot","content":"hi"}]}`), 400, "invalid_request_error", errs.Invalid, param("messages.0.role"), ""},
		{"ErrMissingModel", chat(`{"messages":[{"role":"user","content":"hi"}]}`), 400, "invalid_request_error", errs.Invalid, param("model"), ""},
		{"ErrTooManyStops", chat(`{"model":"default","stop":["a","b","c","d","e"],"messages":[{"role":"user","content":"hi"}]}`),
			400, "invalid_request_error", errs.Invalid, param("stop"), ""},
		{"ErrImageURLNotHTTP", chat(`{"model":"default","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://example.com/a.png"}}]}]}`),
			400, "invalid_request_error", errs.Invalid, param("messages.0.content.0.image_url.url"), ""},
		{"ErrMalformedJSON", chat(`{"model":`), 400, "invalid_request_error", errs.MalformedJSON, nil, ""},
		{"ErrEmbeddingsNoKey", openAIRequest("POST", "/openai/v1/embeddings", "", `{"model":"default","input":"hi"}`), 401, "authentication_error", errs.Unauthenticated, nil, ""},
		{"ErrEmbeddingsUnknownModel", openAIRequest("POST", "/openai/v1/embeddings", key, `{"model":"nope","input":"hi"}`), 404, "not_found_error", errs.NotFound, nil, `"nope"`},
		{"ErrEmbeddingsTokenArrays", openAIRequest("POST", "/openai/v1/embeddings", key, `{"model":"default","input":[[1,2]]}`),
			400, "invalid_request_error", errs.Invalid, param("input"), ""},
		{"ErrModelsNoKey", openAIRequest("GET", "/openai/v1/models", "", ""), 401, "authentication_error", errs.Unauthenticated, nil, ""},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := b.doOpenAI(t, tt.req)
			msg := openAIErrorIs(t, res, tt.status, tt.typ, tt.code, tt.param)
			if !strings.Contains(msg, tt.messageMention) {
				t.Errorf("message %q does not mention %s", msg, tt.messageMention)
			}
			if tt.status == 401 && res.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}

	t.Run("OKModels", func(t *testing.T) {
		t.Parallel()
		var got struct {
			Object string `json:"object"`
			Data   []struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				Created int64  `json:"created"`
				OwnedBy string `json:"owned_by"`
			} `json:"data"`
		}
		b.openAIOK(t, openAIRequest("GET", "/openai/v1/models", key, ""), &got)
		var ids []string
		for _, m := range got.Data {
			ids = append(ids, m.ID)
			if m.Object != "model" || m.OwnedBy != "kiln" || m.Created == 0 {
				t.Errorf("model %+v", m)
			}
		}
		if got.Object != "list" || !slices.Equal(ids, []string{"default", "fast"}) {
			t.Errorf("models %+v", got)
		}
	})

	testOpenAIEmbeddings(t, b, key)
}

func testOpenAIEmbeddings(t *testing.T, b *bundle, key string) {
	embed := func(t *testing.T, body string) sdkEmbeddings {
		t.Helper()
		var got sdkEmbeddings
		res := b.openAIOK(t, openAIRequest("POST", "/openai/v1/embeddings", key, body), &got)
		if got.Object != "list" || got.Model != "default" || res.Header.Get("Kiln-Provider") != "dev" {
			t.Errorf("embeddings %+v, headers %v", got, res.Header)
		}
		return got
	}
	floats := func(t *testing.T, raw json.RawMessage) []float32 {
		t.Helper()
		var v []float64
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("embedding %s: %v", raw, err)
		}
		out := make([]float32, len(v))
		for i, f := range v {
			out[i] = float32(f)
		}
		return out
	}

	t.Run("OKFloatAndBase64Agree", func(t *testing.T) {
		t.Parallel()
		text := "the quick brown fox"
		asFloats := embed(t, `{"model":"default","input":`+jsonString(text)+`}`)
		asBase64 := embed(t, `{"model":"default","input":`+jsonString(text)+`,"encoding_format":"base64"}`)
		if len(asFloats.Data) != 1 || len(asBase64.Data) != 1 {
			t.Fatalf("data %d and %d items", len(asFloats.Data), len(asBase64.Data))
		}
		want := floats(t, asFloats.Data[0].Embedding)
		if !slices.Equal(want, dev.Embedding(text, dev.Dimensions)) {
			t.Errorf("float embedding is not the dev model's")
		}
		var encoded string
		if err := json.Unmarshal(asBase64.Data[0].Embedding, &encoded); err != nil {
			t.Fatalf("base64 embedding %s: %v", asBase64.Data[0].Embedding, err)
		}
		raw, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil || len(raw) != 4*len(want) {
			t.Fatalf("base64 embedding: %d bytes, %v", len(raw), err)
		}
		got := make([]float32, len(raw)/4)
		for i := range got {
			got[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		if !slices.Equal(got, want) {
			t.Errorf("base64 vector differs from the float one")
		}
	})

	t.Run("OKStringInput", func(t *testing.T) {
		t.Parallel()
		got := embed(t, `{"model":"default","input":"hello world"}`)
		if len(got.Data) != 1 || got.Data[0].Index != 0 || got.Data[0].Object != "embedding" ||
			got.Usage.PromptTokens != dev.CountTokens("hello world") || got.Usage.TotalTokens != got.Usage.PromptTokens {
			t.Errorf("embeddings %+v", got)
		}
	})

	t.Run("OKArrayInputInOrder", func(t *testing.T) {
		t.Parallel()
		inputs := []string{"alpha beta", "gamma", "delta epsilon zeta"}
		raw, _ := json.Marshal(inputs)
		got := embed(t, `{"model":"default","input":`+string(raw)+`,"dimensions":8}`)
		if len(got.Data) != len(inputs) {
			t.Fatalf("%d items for %d inputs", len(got.Data), len(inputs))
		}
		tokens := 0
		for i, in := range inputs {
			tokens += dev.CountTokens(in)
			if got.Data[i].Index != i || !slices.Equal(floats(t, got.Data[i].Embedding), dev.Embedding(in, 8)) {
				t.Errorf("item %d (index %d) is not the embedding of %q", i, got.Data[i].Index, in)
			}
		}
		if got.Usage.PromptTokens != tokens {
			t.Errorf("usage %+v, want %d prompt tokens", got.Usage, tokens)
		}
	})
}
