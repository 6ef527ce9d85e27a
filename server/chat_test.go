package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/openai"
)

// fakeUpstream is an OpenAI-compatible provider outside the machine: an httptest server
// speaking the Chat Completions wire format, counting the requests it receives.
type fakeUpstream struct {
	srv      *httptest.Server
	requests atomic.Int32
}

// newUpstream starts a fake upstream answering with h, closed at cleanup.
func newUpstream(t *testing.T, h http.HandlerFunc) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		h(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// provider is Kiln's real OpenAI adapter pointed at the fake, named name.
func (u *fakeUpstream) provider(t *testing.T, name string) llm.Provider {
	t.Helper()
	p, err := openai.New(llm.ProviderConfig{Name: name, Type: "openai_compatible", BaseURL: u.srv.URL}, u.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// upstreamUsage is what every fake reply reports, as OpenAI does.
const upstreamUsage = `{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":2}}`

// upstreamChunk is one chat.completion.chunk with delta and finish_reason (JSON).
func upstreamChunk(delta, finish string) string {
	return `{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1700000000,"model":"up-model","choices":[{"index":0,"delta":` +
		delta + `,"logprobs":null,"finish_reason":` + finish + `}]}`
}

// startEvents commits a 200 event stream and returns a writer of flushed data events.
func startEvents(w http.ResponseWriter) func(data string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	return func(data string) {
		_, _ = io.WriteString(w, "data: "+data+"\n\n")
		w.(http.Flusher).Flush()
	}
}

// replyWith answers text, blocking or streamed as the request asks: a role chunk, a
// chunk per word, the finish chunk, the usage chunk, then [DONE].
func replyWith(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `{"id":"chatcmpl-up","object":"chat.completion","created":1700000000,"model":"up-model",`+
				`"choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":%s}`, jsonString(text), upstreamUsage)
			return
		}
		send := startEvents(w)
		send(upstreamChunk(`{"role":"assistant","content":""}`, "null"))
		for _, word := range strings.SplitAfter(text, " ") {
			send(upstreamChunk(`{"content":`+jsonString(word)+`}`, "null"))
		}
		send(upstreamChunk(`{}`, `"stop"`))
		send(`{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1700000000,"model":"up-model","choices":[],"usage":` + upstreamUsage + `}`)
		send("[DONE]")
	}
}

// failWith answers status with OpenAI's error body and headers (name, value pairs).
func failWith(status int, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"upstream says %d","type":"server_error","param":null,"code":null}}`, status)
	}
}

// cutAfter streams one chunk of text and ends the body without [DONE]: the upstream died.
func cutAfter(text string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		send := startEvents(w)
		send(upstreamChunk(`{"role":"assistant","content":`+jsonString(text)+`}`, "null"))
	}
}

// hangAfter streams one chunk of text, then waits for its request to be cancelled and
// reports it on gone (if not nil, without blocking).
func hangAfter(text string, gone chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		send := startEvents(w)
		send(upstreamChunk(`{"role":"assistant","content":`+jsonString(text)+`}`, "null"))
		select {
		case <-r.Context().Done():
			if gone != nil {
				select {
				case gone <- struct{}{}:
				default:
				}
			}
		case <-time.After(10 * time.Second): // a failed test must not hang the cleanup
		}
	}
}

// devProviders is the dev provider, plus others, for withGateway.
func devProviders(others map[string]llm.Provider) map[string]llm.Provider {
	out := map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})}
	for name, p := range others {
		out[name] = p
	}
	return out
}

var devTarget = llm.Target{Provider: "dev", Model: dev.Model}

// postStream posts body to path on the live server ts, requires a 200 event stream and
// returns the response with its events as they arrive.
func postStream(ctx context.Context, t *testing.T, ts *httptest.Server, path, credential, body string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if credential != "" {
		req.Header.Set("Authorization", "Bearer "+credential)
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q: %s", res.StatusCode, res.Header.Get("Content-Type"), readAll(res))
	}
	return res, readEvents(t, res)
}

// drain reads events until the stream ends, skipping heartbeats.
func drain(t *testing.T, events <-chan sseEvent) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return out
			}
			if !ev.comment {
				out = append(out, ev)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the stream did not end within 5s; so far %+v", out)
		}
	}
}

// kinds lists the event types of events, consecutive repeats collapsed.
func kinds(events []sseEvent) []string {
	var out []string
	for _, ev := range events {
		if len(out) == 0 || out[len(out)-1] != ev.event {
			out = append(out, ev.event)
		}
	}
	return out
}

var apiSpec = sync.OnceValues(api.GetSpec)

// specSchema returns the spec's component schema name.
func specSchema(t testing.TB, name string) *openapi3.Schema {
	t.Helper()
	spec, err := apiSpec()
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := spec.Components.Schemas[name]
	if !ok || ref.Value == nil {
		t.Fatalf("no schema %s in the spec", name)
	}
	return ref.Value
}

// matchSchema fails unless the JSON document data matches the spec's schema name.
func matchSchema(t testing.TB, name string, data []byte) {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: not JSON: %v: %s", name, err, data)
	}
	if err := specSchema(t, name).VisitJSON(v); err != nil {
		t.Fatalf("%s does not match the spec: %v\n%s", name, err, data)
	}
}

// eventSchemas names the spec schema of each stream event's data.
var eventSchemas = map[string]string{
	"message.delta": "ChatDeltaEvent", "tool_call.delta": "ToolCallDeltaEvent", "tool_call": "ToolCallEvent",
	"tool_result": "ToolResultEvent", "usage": "ChatUsage", "done": "ChatDoneEvent", "error": "Problem",
	"reply.started": "ReplyStartedEvent", // conversation replies only
	"citations":     "CitationsEvent",    // replies grounded in knowledge bases only
}

// checkEvents fails unless the ids count 1, 2, … and each event's data matches its schema.
func checkEvents(t *testing.T, events []sseEvent) {
	t.Helper()
	for i, ev := range events {
		if ev.id != strconv.Itoa(i+1) {
			t.Errorf("event %d (%s) has id %q, want %d", i, ev.event, ev.id, i+1)
		}
		schema, ok := eventSchemas[ev.event]
		if !ok {
			t.Fatalf("event %d: unknown type %q", i, ev.event)
		}
		matchSchema(t, schema, []byte(ev.data))
	}
}

// decodeEvent decodes the data of the one event of type name.
func decodeEvent[T any](t *testing.T, events []sseEvent, name string) T {
	t.Helper()
	var out T
	i := slices.IndexFunc(events, func(ev sseEvent) bool { return ev.event == name })
	if i < 0 {
		t.Fatalf("no %s event in %v", name, kinds(events))
	}
	if err := json.Unmarshal([]byte(events[i].data), &out); err != nil {
		t.Fatalf("%s event: %v", name, err)
	}
	return out
}

// deltaText concatenates the message.delta events.
func deltaText(t *testing.T, events []sseEvent) string {
	t.Helper()
	var b strings.Builder
	for _, ev := range events {
		if ev.event == "message.delta" {
			var d api.ChatDeltaEvent
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Fatal(err)
			}
			b.WriteString(d.Text)
		}
	}
	return b.String()
}

// hasField reports whether p names pointer with a message containing msg.
func hasField(p api.Problem, pointer, msg string) bool {
	return p.Errors != nil && slices.ContainsFunc(*p.Errors, func(f api.FieldError) bool {
		return f.Pointer == pointer && strings.Contains(f.Message, msg)
	})
}

// chatJSON is a chat request with one user message and the other members given
// (`"stream":true`, …).
func chatJSON(text string, members ...string) string {
	return `{` + strings.Join(append(members, `"messages":[{"role":"user","content":`+jsonString(text)+`}]`), ",") + `}`
}

// problemIs requires res to be a problem with status and code, and returns it.
func problemIs(t testing.TB, res *http.Response, status int, code errs.Code) api.Problem {
	t.Helper()
	p := decodeProblem(t, res)
	if res.StatusCode != status || p.Status != status || p.Code != api.ErrorCode(code) {
		t.Fatalf("%d %s (%s), want %d %s", res.StatusCode, p.Code, deref(p.Detail), status, code)
	}
	return p
}

// attemptTargets lists the targets of attempts and whether each failed.
func attemptTargets(attempts []api.ChatAttempt) []string {
	out := make([]string, len(attempts))
	for i, a := range attempts {
		out[i] = a.Target
		if a.Error != nil {
			out[i] += " (failed)"
		}
	}
	return out
}

// chatFixture is one server shared by the chat tests: the dev model behind "default",
// and an alias per upstream behaviour, each with upstreams of its own.
type chatFixture struct {
	b         *bundle
	ts        *httptest.Server // b.srv on a real connection, for streams
	alice     api.TokenPair
	key       api.APIKeyWithSecret // scope chat
	up        map[string]*fakeUpstream
	slowGone  chan struct{} // the slow upstream's request was cancelled
	aliasList []string
}

const secondReply = "Hello from the second target"

func newChatFixture(t *testing.T) *chatFixture {
	t.Helper()
	f := &chatFixture{slowGone: make(chan struct{}, 1)}
	f.up = map[string]*fakeUpstream{
		"rejecting": newUpstream(t, failWith(400)),
		"cutting":   newUpstream(t, cutAfter("Hel")),
		"first503":  newUpstream(t, failWith(503)), "second503": newUpstream(t, replyWith(secondReply)),
		"first429": newUpstream(t, failWith(429, "Retry-After", "0")), "second429": newUpstream(t, replyWith(secondReply)),
		"firstcut": newUpstream(t, cutAfter("Hel")), "secondcut": newUpstream(t, replyWith(secondReply)),
		"slow": newUpstream(t, hangAfter("Hel", f.slowGone)),
	}
	providers := devProviders(map[string]llm.Provider{"other": dev.New(llm.ProviderConfig{Name: "other"})})
	for name, u := range f.up {
		providers[name] = u.provider(t, name)
	}
	aliases := map[string][]llm.Target{
		"default":   {devTarget},
		"smart":     {{Provider: "other", Model: "big"}, devTarget},
		"rejecting": {{Provider: "rejecting", Model: "m"}},
		"cutting":   {{Provider: "cutting", Model: "m"}},
		"slow":      {{Provider: "slow", Model: "m"}},
	}
	for _, c := range []string{"503", "429", "cut"} {
		aliases["failover-"+c] = []llm.Target{{Provider: "first" + c, Model: "m1"}, {Provider: "second" + c, Model: "m2"}}
	}
	for a := range aliases {
		f.aliasList = append(f.aliasList, a)
	}
	slices.Sort(f.aliasList)
	f.b = setup(t, withGateway(t, providers, aliases))
	f.alice = f.b.signUp(t, "alice@example.com")
	f.key = f.b.createKey(t, f.alice.AccessToken, []string{"chat"})
	f.ts = httptest.NewServer(f.b.srv)
	t.Cleanup(f.ts.Close)
	return f
}

// stream posts a streamed chat request and returns the response and all its events,
// their ids and data checked against the spec.
func (f *chatFixture) stream(t *testing.T, body string) (*http.Response, []sseEvent) {
	t.Helper()
	res, stream := postStream(t.Context(), t, f.ts, "/v1/chat/completions", f.key.Key, body)
	events := drain(t, stream)
	checkEvents(t, events)
	return res, events
}

func TestChat(t *testing.T) {
	t.Parallel()
	f := newChatFixture(t)
	t.Run("Completions", func(t *testing.T) { t.Parallel(); testChatCompletions(t, f) })
	t.Run("Models", func(t *testing.T) { t.Parallel(); testChatModels(t, f) })
	t.Run("Stream", func(t *testing.T) { t.Parallel(); testChatStream(t, f) })
	t.Run("StreamErrors", func(t *testing.T) { t.Parallel(); testChatStreamErrors(t, f) })
	t.Run("Failover", func(t *testing.T) { t.Parallel(); testChatFailover(t, f) })
	t.Run("DisconnectCancelsUpstream", func(t *testing.T) { t.Parallel(); testChatDisconnect(t, f) })
}

func testChatCompletions(t *testing.T, f *chatFixture) {
	b := f.b
	jobsKey := b.createKey(t, f.alice.AccessToken, []string{"jobs"})
	for _, tt := range []struct{ name, credential string }{
		{"OKUserToken", f.alice.AccessToken},
		{"OKAPIKey", f.key.Key},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got api.ChatCompletion
			res := b.call(t, "POST", "/v1/chat/completions", tt.credential, json.RawMessage(chatJSON("hello")), &got)
			if res.StatusCode != 200 {
				t.Fatalf("%d %s", res.StatusCode, readAll(res))
			}
			want := "[dev] You said: hello"
			if got.Message.Role != api.ChatRoleAssistant || deref(got.Message.Content) != want || got.FinishReason != api.Stop {
				t.Errorf("message %+v finish %s", got.Message, got.FinishReason)
			}
			if got.Model != "default" || got.Provider != "dev" || got.ProviderModel != dev.Model || got.Steps != nil {
				t.Errorf("completion %+v", got)
			}
			if p, m := res.Header.Get("Kiln-Provider"), res.Header.Get("Kiln-Provider-Model"); p != "dev" || m != dev.Model {
				t.Errorf("Kiln-Provider %q, Kiln-Provider-Model %q", p, m)
			}
			if a := attemptTargets(got.Attempts); !slices.Equal(a, []string{"dev/dev-echo"}) {
				t.Errorf("attempts %v", a)
			}
			prompt, completion := 4+dev.CountTokens("hello"), dev.CountTokens(want)
			if wantUsage := (api.ChatUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}); got.Usage != wantUsage {
				t.Errorf("usage %+v, want %+v", got.Usage, wantUsage)
			}
		})
	}

	t.Run("OKServerToolLoop", func(t *testing.T) {
		t.Parallel()
		var got api.ChatCompletion
		res := b.call(t, "POST", "/v1/chat/completions", f.key.Key, json.RawMessage(chatJSON("use calculator 2+3*4", `"server_tools":["calculator"]`)), &got)
		if res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, readAll(res))
		}
		if deref(got.Message.Content) != "[dev] The tool calculator returned: 14" || got.FinishReason != api.Stop {
			t.Errorf("message %q, finish %s", deref(got.Message.Content), got.FinishReason)
		}
		if got.Steps == nil || len(*got.Steps) != 2 {
			t.Fatalf("steps %+v", got.Steps)
		}
		call, result := (*got.Steps)[0], (*got.Steps)[1]
		if call.Role != api.ChatRoleAssistant || call.ToolCalls == nil || len(*call.ToolCalls) != 1 ||
			(*call.ToolCalls)[0].Name != "calculator" || (*call.ToolCalls)[0].Arguments != `{"expression":"2+3*4"}` {
			t.Fatalf("tool call step %+v", call)
		}
		if result.Role != api.ChatRoleTool || deref(result.Content) != "14" || deref(result.ToolCallId) != (*call.ToolCalls)[0].Id {
			t.Errorf("tool result step %+v", result)
		}
	})

	msg := `{"role":"user","content":"hi"}`
	tests := []struct {
		name, credential, body string
		status                 int
		code                   errs.Code
		pointer, message       string // a field error expected, when either is set
	}{
		{"ErrKeyWithoutChatScope", jobsKey.Key, chatJSON("hi"), 403, errs.PermissionDenied, "", ""},
		{"ErrNoCredentials", "", chatJSON("hi"), 401, errs.Unauthenticated, "", ""},
		{"ErrEmptyMessages", f.key.Key, `{"messages":[]}`, 400, errs.Invalid, "/messages", ""},
		{"ErrTemperatureTooHigh", f.key.Key, chatJSON("hi", `"temperature":3`), 400, errs.Invalid, "/temperature", ""},
		{"ErrUnknownField", f.key.Key, chatJSON("hi", `"temprature":1`), 400, errs.Invalid, "", `"temprature"`},
		{"ErrUnknownMessageField", f.key.Key, `{"messages":[{"role":"user","content":"hi","mood":"sunny"}]}`, 400, errs.Invalid, "/messages/0", `"mood"`},
		{"ErrToolMessageWithoutToolCallID", f.key.Key, `{"messages":[` + msg + `,{"role":"tool","content":"42"}]}`, 400, errs.Invalid, "/messages/1/tool_call_id", ""},
		{"ErrImagePartWithoutURLOrData", f.key.Key, `{"messages":[{"role":"user","parts":[{"type":"image"}]}]}`, 400, errs.Invalid, "/messages/0/parts/0", ""},
		{"ErrImageDataWithoutMediaType", f.key.Key, `{"messages":[{"role":"user","parts":[{"type":"image","image_data":"iVBORw0KGgo="}]}]}`, 400, errs.Invalid, "/messages/0/parts/0/media_type", ""},
		{"ErrToolChoiceToolWithoutName", f.key.Key, chatJSON("hi", `"tool_choice":{"mode":"tool"}`), 400, errs.Invalid, "/tool_choice/name", ""},
		{"ErrToolChoiceNamesNoTool", f.key.Key, chatJSON("hi", `"tool_choice":{"mode":"tool","name":"calculator"}`), 400, errs.Invalid, "/tool_choice/name", ""},
		{"ErrUnknownModel", f.key.Key, chatJSON("hi", `"model":"nope"`), 404, errs.NotFound, "", ""},
		{"ErrUnknownServerTool", f.key.Key, chatJSON("hi", `"server_tools":["shell"]`), 400, errs.Invalid, "/server_tools/0", `"shell"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := b.call(t, "POST", "/v1/chat/completions", tt.credential, json.RawMessage(tt.body), nil)
			p := problemIs(t, res, tt.status, tt.code)
			if (tt.pointer != "" || tt.message != "") && !hasField(p, tt.pointer, tt.message) {
				t.Errorf("no field error at %q mentioning %q in %+v", tt.pointer, tt.message, deref(p.Errors))
			}
		})
	}
}

func testChatModels(t *testing.T, f *chatFixture) {
	for _, tt := range []struct{ name, credential string }{{"OKUserToken", f.alice.AccessToken}, {"OKAPIKey", f.key.Key}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got api.ModelList
			if res := f.b.call(t, "GET", "/v1/models", tt.credential, nil, &got); res.StatusCode != 200 {
				t.Fatalf("%d %s", res.StatusCode, readAll(res))
			}
			ids := make([]string, len(got.Data))
			for i, m := range got.Data {
				ids[i] = m.Id
			}
			if !slices.Equal(ids, f.aliasList) {
				t.Fatalf("aliases %v, want %v", ids, f.aliasList)
			}
			byID := func(id string) []api.ModelTarget { return got.Data[slices.Index(ids, id)].Targets }
			if want := []api.ModelTarget{{Provider: "dev", Model: dev.Model}}; !slices.Equal(byID("default"), want) {
				t.Errorf("default %+v", byID("default"))
			}
			if want := []api.ModelTarget{{Provider: "other", Model: "big"}, {Provider: "dev", Model: dev.Model}}; !slices.Equal(byID("smart"), want) {
				t.Errorf("smart %+v, want its targets in failover order", byID("smart"))
			}
		})
	}
	t.Run("ErrNoCredentials", func(t *testing.T) {
		t.Parallel()
		problemIs(t, f.b.call(t, "GET", "/v1/models", "", nil, nil), 401, errs.Unauthenticated)
	})
}

func testChatStream(t *testing.T, f *chatFixture) {
	t.Run("OKPlainReply", func(t *testing.T) {
		t.Parallel()
		res, events := f.stream(t, chatJSON("hello there", `"stream":true`))
		if k := kinds(events); !slices.Equal(k, []string{"message.delta", "usage", "done"}) {
			t.Fatalf("events %v", k)
		}
		want := "[dev] You said: hello there"
		if words := strings.Count(want, " ") + 1; len(events) != words+2 {
			t.Errorf("%d events, want a delta per word (%d), usage and done", len(events), words)
		}
		if got := deltaText(t, events); got != want {
			t.Errorf("text %q, want %q", got, want)
		}
		prompt, completion := 4+dev.CountTokens("hello there"), dev.CountTokens(want)
		if usage := decodeEvent[api.ChatUsage](t, events, "usage"); usage != (api.ChatUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}) {
			t.Errorf("usage %+v", usage)
		}
		done := decodeEvent[api.ChatDoneEvent](t, events, "done")
		if done.FinishReason != api.Stop || done.Provider != "dev" || done.ProviderModel != dev.Model || done.Model != "default" ||
			!slices.Equal(attemptTargets(done.Attempts), []string{"dev/dev-echo"}) {
			t.Errorf("done %+v", done)
		}
		if res.Header.Get("Kiln-Provider") != "dev" || res.Header.Get("Kiln-Provider-Model") != dev.Model || res.Header.Get("Cache-Control") != "no-cache" {
			t.Errorf("headers %v", res.Header)
		}
	})

	t.Run("OKServerToolLoop", func(t *testing.T) {
		t.Parallel()
		_, events := f.stream(t, chatJSON("use calculator 2+3*4", `"stream":true`, `"server_tools":["calculator"]`))
		if k := kinds(events); !slices.Equal(k, []string{"tool_call.delta", "tool_call", "tool_result", "message.delta", "usage", "done"}) {
			t.Fatalf("events %v", k)
		}
		call := decodeEvent[api.ToolCallEvent](t, events, "tool_call")
		if call.Executor != api.ToolExecutorServer || call.Name != "calculator" || call.Arguments != `{"expression":"2+3*4"}` {
			t.Errorf("tool_call %+v", call)
		}
		result := decodeEvent[api.ToolResultEvent](t, events, "tool_result")
		if result.ToolCallId != call.Id || result.Name != "calculator" || result.Content != "14" || result.IsError {
			t.Errorf("tool_result %+v", result)
		}
		if text := deltaText(t, events); !strings.Contains(text, "14") {
			t.Errorf("text %q does not mention the result", text)
		}
		if done := decodeEvent[api.ChatDoneEvent](t, events, "done"); done.FinishReason != api.Stop {
			t.Errorf("done %+v", done)
		}
	})

	t.Run("OKClientToolEndsTheReply", func(t *testing.T) {
		t.Parallel()
		_, events := f.stream(t, chatJSON("call get_weather for Paris", `"stream":true`,
			`"tools":[{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}]`))
		if k := kinds(events); !slices.Equal(k, []string{"tool_call.delta", "tool_call", "usage", "done"}) {
			t.Fatalf("events %v", k)
		}
		call := decodeEvent[api.ToolCallEvent](t, events, "tool_call")
		var args map[string]any
		if call.Executor != api.ToolExecutorClient || call.Name != "get_weather" || json.Unmarshal([]byte(call.Arguments), &args) != nil || args["city"] == nil {
			t.Errorf("tool_call %+v", call)
		}
		if done := decodeEvent[api.ChatDoneEvent](t, events, "done"); done.FinishReason != api.ToolCalls {
			t.Errorf("done %+v", done)
		}
	})
}

func testChatStreamErrors(t *testing.T, f *chatFixture) {
	// An error before the first event is an ordinary response, checked against the spec.
	t.Run("ErrUnknownModelIsAProblem", func(t *testing.T) {
		t.Parallel()
		res := f.b.call(t, "POST", "/v1/chat/completions", f.key.Key, json.RawMessage(chatJSON("hi", `"stream":true`, `"model":"nope"`)), nil)
		wantProblem(t, res, 404, errs.NotFound, `"nope"`)
	})

	t.Run("ErrUpstreamRejectedIsAProblemNotRetried", func(t *testing.T) {
		t.Parallel()
		res := f.b.call(t, "POST", "/v1/chat/completions", f.key.Key, json.RawMessage(chatJSON("hi", `"stream":true`, `"model":"rejecting"`)), nil)
		wantProblem(t, res, 400, errs.UpstreamRejected, "upstream says 400")
		if n := f.up["rejecting"].requests.Load(); n != 1 {
			t.Errorf("the upstream got %d requests, want 1: an invalid request is not retried", n)
		}
	})

	t.Run("ErrUpstreamDiesAfterTheFirstChunk", func(t *testing.T) {
		t.Parallel()
		res, events := f.stream(t, chatJSON("hi", `"stream":true`, `"model":"cutting"`))
		if k := kinds(events); !slices.Equal(k, []string{"message.delta", "error"}) {
			t.Fatalf("events %v", k)
		}
		if text := deltaText(t, events); text != "Hel" {
			t.Errorf("text %q", text)
		}
		p := decodeEvent[api.Problem](t, events, "error")
		if p.Code != api.ErrorCode(errs.UpstreamError) || p.Status != 502 || p.RequestId != res.Header.Get("X-Request-Id") || p.Detail == nil {
			t.Errorf("problem %+v", p)
		}
	})
}

func testChatFailover(t *testing.T, f *chatFixture) {
	for _, tt := range []struct{ name, status string }{
		{"OKAfter503", "503"},
		{"OKAfter429WithRetryAfter0", "429"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			alias, first, second := "failover-"+tt.status, f.up["first"+tt.status], f.up["second"+tt.status]
			wantAttempts := func(attempts []api.ChatAttempt, firstTries int32) {
				t.Helper()
				want := append(slices.Repeat([]string{"first" + tt.status + "/m1 (failed)"}, int(firstTries)), "second"+tt.status+"/m2")
				if got := attemptTargets(attempts); firstTries < 1 || !slices.Equal(got, want) {
					t.Errorf("attempts %v, want %v", got, want)
				}
			}

			var got api.ChatCompletion
			res := f.b.call(t, "POST", "/v1/chat/completions", f.key.Key, json.RawMessage(chatJSON("hi", `"model":"`+alias+`"`)), &got)
			if res.StatusCode != 200 {
				t.Fatalf("%d %s", res.StatusCode, readAll(res))
			}
			if res.Header.Get("Kiln-Provider") != "second"+tt.status || res.Header.Get("Kiln-Provider-Model") != "m2" || deref(got.Message.Content) != secondReply {
				t.Errorf("Kiln-Provider %q, reply %+v", res.Header.Get("Kiln-Provider"), got)
			}
			firstTries := first.requests.Load()
			wantAttempts(got.Attempts, firstTries)
			if got.Usage != (api.ChatUsage{PromptTokens: 10, CompletionTokens: 5, CachedTokens: 2, TotalTokens: 15}) {
				t.Errorf("usage %+v", got.Usage)
			}

			res, events := f.stream(t, chatJSON("hi", `"stream":true`, `"model":"`+alias+`"`))
			if res.Header.Get("Kiln-Provider") != "second"+tt.status || deltaText(t, events) != secondReply {
				t.Errorf("Kiln-Provider %q, text %q", res.Header.Get("Kiln-Provider"), deltaText(t, events))
			}
			wantAttempts(decodeEvent[api.ChatDoneEvent](t, events, "done").Attempts, first.requests.Load()-firstTries)
			if n := second.requests.Load(); n != 2 {
				t.Errorf("the second target got %d requests, want 2", n)
			}
		})
	}

	t.Run("ErrNeverAfterTheFirstByte", func(t *testing.T) {
		t.Parallel()
		res, events := f.stream(t, chatJSON("hi", `"stream":true`, `"model":"failover-cut"`))
		if k := kinds(events); !slices.Equal(k, []string{"message.delta", "error"}) {
			t.Fatalf("events %v", k)
		}
		if p := decodeEvent[api.Problem](t, events, "error"); p.Code != api.ErrorCode(errs.UpstreamError) {
			t.Errorf("problem %+v", p)
		}
		if res.Header.Get("Kiln-Provider") != "firstcut" {
			t.Errorf("Kiln-Provider %q", res.Header.Get("Kiln-Provider"))
		}
		if n := f.up["secondcut"].requests.Load(); n != 0 {
			t.Errorf("the second target got %d requests after the first had streamed", n)
		}
	})
}

func testChatDisconnect(t *testing.T, f *chatFixture) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, stream := postStream(ctx, t, f.ts, "/v1/chat/completions", f.key.Key, chatJSON("hi", `"stream":true`, `"model":"slow"`))
	if ev := next(t, stream); ev.event != "message.delta" {
		t.Fatalf("first event %+v", ev)
	}
	cancel()
	select {
	case <-f.slowGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled within 5s of the client leaving")
	}
}

// A reply cut by the server's own stream timeout (llm.stream_timeout) still ends with an
// error, on every transport, and is accounted as an error, not as a client cancellation.
func TestChatStreamTimeout(t *testing.T) {
	t.Parallel()
	slow := newUpstream(t, hangAfter("Hel", nil))
	b := setup(t, withGateway(t, map[string]llm.Provider{"slow": slow.provider(t, "slow")}, map[string][]llm.Target{"default": {{Provider: "slow", Model: "m"}}}),
		func(d *Deps) { d.LLM.StreamTimeout = 300 * time.Millisecond })
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"}).Key
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	timeoutCodes := []api.ErrorCode{api.ErrorCode(errs.Timeout), api.ErrorCode(errs.UpstreamTimeout)}

	t.Run("Calls", func(t *testing.T) {
		t.Run("ErrStreamEndsWithAnErrorEvent", func(t *testing.T) {
			t.Parallel()
			_, stream := postStream(t.Context(), t, ts, "/v1/chat/completions", key, chatJSON("hi", `"stream":true`))
			events := drain(t, stream)
			checkEvents(t, events)
			if k := kinds(events); !slices.Equal(k, []string{"message.delta", "error"}) {
				t.Fatalf("events %v: a stream must end with done or error", k)
			}
			if p := decodeEvent[api.Problem](t, events, "error"); !slices.Contains(timeoutCodes, p.Code) {
				t.Errorf("problem %+v", p)
			}
		})
		t.Run("ErrWebSocketReplyEndsWithAnError", func(t *testing.T) {
			t.Parallel()
			ws := dialChat(t, ts, key)
			ws.send(`{"type":"chat","data":` + chatJSON("hi") + `}`)
			frames := ws.untilEnd()
			var p api.Problem
			if k := frameTypes(frames); !slices.Equal(k, []string{"message.delta", "error"}) || json.Unmarshal(frames[len(frames)-1].Data, &p) != nil || !slices.Contains(timeoutCodes, p.Code) {
				t.Errorf("frames %v, last %s", k, frames[len(frames)-1].Data)
			}
		})
		t.Run("ErrBlockingTimesOut", func(t *testing.T) {
			t.Parallel()
			p := decodeProblem(t, b.call(t, "POST", "/v1/chat/completions", key, json.RawMessage(chatJSON("hi")), nil))
			if !slices.Contains(timeoutCodes, p.Code) {
				t.Errorf("problem %+v", p)
			}
		})
	})

	t.Run("ErrAccountedAsErrors", func(t *testing.T) {
		var got api.UsageReport
		waitFor(t, "3 calls in the usage report", func() bool {
			b.call(t, "GET", "/v1/usage", key, nil, &got)
			return got.Total.Requests == 3
		})
		if got.Total.Errors != 3 {
			t.Errorf("total %+v: a reply the server timed out is an error, not a cancellation", got.Total)
		}
	})
}
