package dev_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
)

func newProvider(t *testing.T) *dev.Provider {
	t.Helper()
	return dev.New(llm.ProviderConfig{Name: "dev", Type: "dev"})
}

func user(text string) llm.Message { return llm.TextMessage(llm.RoleUser, text) }

func intp(n int) *int { return &n }

var (
	weatherTool = llm.Tool{Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}
	addTool     = llm.Tool{Name: "add", Parameters: json.RawMessage(`{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"integer"},"note":{"type":"string"}},"required":["a","b"]}`)}
	timeTool    = llm.Tool{Name: "current_time", Parameters: json.RawMessage(`{"type":"object","properties":{"timezone":{"type":"string"}}}`)}
)

// toolTurn is a conversation whose last message answers the assistant's call of name.
func toolTurn(name, result string, byName bool) []llm.Message {
	res := llm.Message{Role: llm.RoleTool, ToolCallID: "call_1", Content: []llm.Part{{Type: llm.PartText, Text: result}}}
	if byName {
		res.ToolCallID, res.Name = "", name
	}
	return []llm.Message{
		user("please use " + name),
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_1", Name: name, Arguments: "{}"}}},
		res,
	}
}

func TestChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		req        llm.Request
		wantText   string
		wantCall   *llm.ToolCall // ID not compared
		wantFinish llm.FinishReason
	}{
		{"OKEchoesLastUserMessage", llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleSystem, "be brief"), user("hello there")}}, "[dev] You said: hello there", nil, llm.FinishStop},
		{"OKEchoesOnlyTheLastUserMessage", llm.Request{Messages: []llm.Message{user("first"), llm.TextMessage(llm.RoleAssistant, "ok"), user("second")}}, "[dev] You said: second", nil, llm.FinishStop},
		{"OKGreetsWithoutUserMessage", llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleSystem, "be brief")}}, "[dev] Hello from Kiln's offline dev model.", nil, llm.FinishStop},
		{"OKNoCallWhenNoToolNamed", llm.Request{Messages: []llm.Message{user("hello")}, Tools: []llm.Tool{weatherTool}}, "[dev] You said: hello", nil, llm.FinishStop},
		{"ToolCallStringFromTextAfterName", llm.Request{Messages: []llm.Message{user("get_weather Paris")}, Tools: []llm.Tool{weatherTool}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}, llm.FinishToolCalls},
		{"ToolCallNameCaseInsensitive", llm.Request{Messages: []llm.Message{user("Try GET_WEATHER: Lyon, France")}, Tools: []llm.Tool{weatherTool}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"Lyon, France"}`}, llm.FinishToolCalls},
		{"ToolCallStringAfterLetterShorterInLowerCase", llm.Request{Messages: []llm.Message{user("İİİ get_weather İzmir")}, Tools: []llm.Tool{weatherTool}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"İzmir"}`}, llm.FinishToolCalls},
		{"ToolCallNumbersFromFirstNumber", llm.Request{Messages: []llm.Message{user("add 2.5 and 7")}, Tools: []llm.Tool{addTool}}, "", &llm.ToolCall{Name: "add", Arguments: `{"a":2.5,"b":2}`}, llm.FinishToolCalls},
		{"ToolCallOptionalPropertiesWhenNoneRequired", llm.Request{Messages: []llm.Message{user("current_time Europe/Berlin")}, Tools: []llm.Tool{timeTool}}, "", &llm.ToolCall{Name: "current_time", Arguments: `{"timezone":"Europe/Berlin"}`}, llm.FinishToolCalls},
		{"ToolCallFirstNamedTool", llm.Request{Messages: []llm.Message{user("add 1 2, or get_weather")}, Tools: []llm.Tool{weatherTool, addTool}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"add 1 2, or get_weather"}`}, llm.FinishToolCalls},
		{"ToolChoiceNoneAnswers", llm.Request{Messages: []llm.Message{user("get_weather Paris")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}}, "[dev] You said: get_weather Paris", nil, llm.FinishStop},
		{"ToolChoiceAutoCallsNamedTool", llm.Request{Messages: []llm.Message{user("get_weather Paris")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceAuto}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}, llm.FinishToolCalls},
		{"ToolChoiceRequiredCallsFirstTool", llm.Request{Messages: []llm.Message{user("Rome")}, Tools: []llm.Tool{weatherTool, addTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired}}, "", &llm.ToolCall{Name: "get_weather", Arguments: `{"city":"Rome"}`}, llm.FinishToolCalls},
		{"ToolChoiceToolCallsThatTool", llm.Request{Messages: []llm.Message{user("get_weather 3 4")}, Tools: []llm.Tool{weatherTool, addTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "add"}}, "", &llm.ToolCall{Name: "add", Arguments: `{"a":3,"b":3}`}, llm.FinishToolCalls},
		{"ToolResultAnsweredByCallID", llm.Request{Messages: toolTurn("get_weather", "sunny, 21 °C", false), Tools: []llm.Tool{weatherTool}}, "[dev] The tool get_weather returned: sunny, 21 °C", nil, llm.FinishStop},
		{"ToolResultAnsweredByName", llm.Request{Messages: toolTurn("get_weather", "rain", true), Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired}}, "[dev] The tool get_weather returned: rain", nil, llm.FinishStop},
		{"ToolResultsAnsweredInOrder", llm.Request{Messages: []llm.Message{
			user("get_weather and add"),
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "get_weather"}, {ID: "c2", Name: "add"}}},
			{Role: llm.RoleTool, ToolCallID: "c1", Content: []llm.Part{{Type: llm.PartText, Text: "sunny"}}},
			{Role: llm.RoleTool, ToolCallID: "c2", Content: []llm.Part{{Type: llm.PartText, Text: "3"}}},
		}}, "[dev] The tool get_weather returned: sunny The tool add returned: 3", nil, llm.FinishStop},
		{"MaxTokensTruncatesWithFinishLength", llm.Request{Messages: []llm.Message{user("one two three")}, MaxTokens: intp(3)}, "[dev] You", nil, llm.FinishLength},
		{"MaxTokensAboveReplyKeepsIt", llm.Request{Messages: []llm.Message{user("one two three")}, MaxTokens: intp(100)}, "[dev] You said: one two three", nil, llm.FinishStop},
		{"MaxTokensWithTextResponseFormatTruncates", llm.Request{Messages: []llm.Message{user("one two three")}, MaxTokens: intp(3), ResponseFormat: &llm.ResponseFormat{Type: "text"}}, "[dev] You", nil, llm.FinishLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var res *llm.Response
			var err error
			noPanic(t, func() { res, err = newProvider(t).Chat(t.Context(), &tt.req) })
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			if res.Message.Role != llm.RoleAssistant || res.Model != dev.Model || !strings.HasPrefix(res.ID, "dev-") {
				t.Errorf("role %q, model %q, id %q; want assistant, %s, dev-…", res.Message.Role, res.Model, res.ID, dev.Model)
			}
			if got := res.Message.Text(); got != tt.wantText {
				t.Errorf("text = %q, want %q", got, tt.wantText)
			}
			if res.FinishReason != tt.wantFinish {
				t.Errorf("finish = %s, want %s", res.FinishReason, tt.wantFinish)
			}
			if tt.wantCall == nil {
				if len(res.Message.ToolCalls) != 0 {
					t.Errorf("tool calls = %+v, want none", res.Message.ToolCalls)
				}
				return
			}
			if len(res.Message.ToolCalls) != 1 {
				t.Fatalf("tool calls = %+v, want one", res.Message.ToolCalls)
			}
			got := res.Message.ToolCalls[0]
			if got.Name != tt.wantCall.Name || !strings.HasPrefix(got.ID, "call_") {
				t.Errorf("call = %+v, want %s with an id call_…", got, tt.wantCall.Name)
			}
			if !jsonEqual(t, got.Arguments, tt.wantCall.Arguments) {
				t.Errorf("arguments = %s, want %s", got.Arguments, tt.wantCall.Arguments)
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("not JSON: %s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("not JSON: %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestChatResponseFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		format llm.ResponseFormat
		want   map[string]any
	}{
		{"JSONObjectHasReply", llm.ResponseFormat{Type: "json_object"}, map[string]any{"reply": "[dev] I am Bob, 42"}},
		{"JSONSchemaFillsRequiredOnly", llm.ResponseFormat{Type: "json_schema", Name: "person", Schema: json.RawMessage(`{
			"type": "object",
			"properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array"}, "ok": {"type": "boolean"}, "extra": {"type": "string"}, "kind": {"enum": ["a", "b"]}},
			"required": ["name", "age", "tags", "ok", "kind"]
		}`)}, map[string]any{"name": "[dev] I am Bob, 42", "age": 42.0, "tags": []any{}, "ok": true, "kind": "a"}},
		{"JSONSchemaNested", llm.ResponseFormat{Type: "json_schema", Schema: json.RawMessage(`{
			"type": "object",
			"properties": {"person": {"type": "object", "properties": {"age": {"type": ["number", "null"]}}, "required": ["age"]}},
			"required": ["person"]
		}`)}, map[string]any{"person": map[string]any{"age": 42.0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := &llm.Request{Messages: []llm.Message{user("I am Bob, 42")}, ResponseFormat: &tt.format, MaxTokens: intp(2)}
			res, err := newProvider(t).Chat(t.Context(), req)
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(res.Message.Text()), &got); err != nil {
				t.Fatalf("reply %q is not a JSON object: %v", res.Message.Text(), err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("reply = %v, want %v", got, tt.want)
			}
			if res.FinishReason != llm.FinishStop {
				t.Fatalf("finish = %s, want stop: JSON is never cut short", res.FinishReason)
			}
		})
	}
}

func TestChatUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		req            llm.Request
		wantPrompt     int
		wantCompletion int
	}{
		// "hello there": 11 bytes → 3 tokens, plus 4 per message; the reply
		// "[dev] You said: hello there" is 27 bytes → 7 tokens.
		{"OKText", llm.Request{Messages: []llm.Message{user("hello there")}}, 4 + 3, 7},
		{"OKCountsEveryMessage", llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleSystem, "abcd"), user("hello there")}}, 4 + 1 + 4 + 3, 7},
		{"OKToolCallCountsNameAndArguments", llm.Request{Messages: []llm.Message{user("get_weather Oslo")}, Tools: []llm.Tool{weatherTool}}, 4 + dev.CountTokens("get_weather Oslo"), dev.CountTokens(`get_weather{"city":"Oslo"}`)},
		{"OKToolCallsInPromptCount", llm.Request{Messages: toolTurn("get_weather", "sunny", false)}, 4 + dev.CountTokens("please use get_weather") + 4 + dev.CountTokens("get_weather{}") + 4 + dev.CountTokens("sunny"), dev.CountTokens("[dev] The tool get_weather returned: sunny")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := newProvider(t).Chat(t.Context(), &tt.req)
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			if want := (llm.Usage{PromptTokens: tt.wantPrompt, CompletionTokens: tt.wantCompletion}); res.Usage != want {
				t.Fatalf("usage = %+v, want %+v", res.Usage, want)
			}
		})
	}
}

// TestChatLengthWithinMaxTokens checks that a reply cut for length never reports more
// completion tokens than the request allowed, as real providers guarantee.
func TestChatLengthWithinMaxTokens(t *testing.T) {
	t.Parallel()
	for _, text := range []string{"one two three four", "supercalifragilisticexpialidocious is long", "a b c d e f g"} {
		for n := 1; n <= 6; n++ {
			res, err := newProvider(t).Chat(t.Context(), &llm.Request{Messages: []llm.Message{user(text)}, MaxTokens: intp(n)})
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			if res.FinishReason == llm.FinishLength && res.Usage.CompletionTokens > n {
				t.Errorf("max tokens %d, %q: cut to %q but %d completion tokens reported", n, text, res.Message.Text(), res.Usage.CompletionTokens)
				break
			}
		}
	}
}

func TestChatDeterministic(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	req := &llm.Request{Messages: []llm.Message{user("get_weather Paris")}, Tools: []llm.Tool{weatherTool}}
	a, errA := p.Chat(t.Context(), req)
	b, errB := p.Chat(t.Context(), req)
	if errA != nil || errB != nil {
		t.Fatalf("Chat: %v, %v", errA, errB)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two replies to one request differ:\n%+v\n%+v", a, b)
	}
	other, err := p.Chat(t.Context(), &llm.Request{Messages: []llm.Message{user("get_weather Rome")}, Tools: []llm.Tool{weatherTool}})
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	if other.ID == a.ID || other.Message.ToolCalls[0].ID == a.Message.ToolCalls[0].ID {
		t.Fatalf("different conversations share ids %s, %s", a.ID, a.Message.ToolCalls[0].ID)
	}
}

// streamRequests are requests whose streamed and blocking replies must agree.
var streamRequests = map[string]llm.Request{
	"Text":             {Messages: []llm.Message{user("hello there, how are you?")}},
	"Greeting":         {},
	"Spaces":           {Messages: []llm.Message{user("  two  spaces\tand a tab\nand a line  ")}},
	"Unicode":          {Messages: []llm.Message{user("grüße aus Köln — 東京 🙂")}},
	"Truncated":        {Messages: []llm.Message{user("one two three four five")}, MaxTokens: intp(3)},
	"TruncatedToZero":  {Messages: []llm.Message{user("one two")}, MaxTokens: intp(0)},
	"ToolCall":         {Messages: []llm.Message{user("get_weather São Paulo")}, Tools: []llm.Tool{weatherTool}},
	"ToolCallNumbers":  {Messages: []llm.Message{user("add 1.5 2")}, Tools: []llm.Tool{addTool}},
	"ToolResult":       {Messages: toolTurn("get_weather", "sunny", false), Tools: []llm.Tool{weatherTool}},
	"JSON":             {Messages: []llm.Message{user("make it json")}, ResponseFormat: &llm.ResponseFormat{Type: "json_object"}},
	"ToolChoiceNone":   {Messages: []llm.Message{user("get_weather Paris")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceNone}},
	"ToolChoiceForced": {Messages: []llm.Message{user("hi")}, Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceRequired}},
}

func TestChatStreamCollectsToChat(t *testing.T) {
	t.Parallel()
	for name, req := range streamRequests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			checkStreamMatchesChat(t, &req)
		})
	}
}

// FuzzChatStream checks, across inputs, that the stream collects to the blocking reply.
func FuzzChatStream(f *testing.F) {
	f.Add("hello there", 100, false)
	f.Add("  a  b  ", 1, false)
	f.Add("get_weather Köln 🙂", 0, true)
	f.Add("", 2, true)
	f.Add("ȺȺȺȺget_weather", 0, true) // Ⱥ (2 bytes) lowercases to ⱥ (3 bytes)
	f.Add("\xffBBBBBBBBBBBBBBBBBBAADD", 0, true)
	f.Fuzz(func(t *testing.T, text string, maxTokens int, tools bool) {
		req := &llm.Request{Messages: []llm.Message{user(text)}, MaxTokens: &maxTokens}
		if tools {
			req.Tools = []llm.Tool{weatherTool, addTool}
		}
		checkStreamMatchesChat(t, req)
	})
}

// checkStreamMatchesChat checks that req's stream is text pieces, then a tool call's
// pieces and the whole call, then usage and finish, and that it collects to req's reply.
func checkStreamMatchesChat(t *testing.T, req *llm.Request) {
	t.Helper()
	p := newProvider(t)
	var want *llm.Response
	var err error
	noPanic(t, func() { want, err = p.Chat(t.Context(), req) })
	if err != nil {
		t.Fatalf("Chat: %v", err)
	}
	s, err := p.ChatStream(t.Context(), req)
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	var events []llm.Event
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		events = append(events, ev)
	}
	if _, err := s.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after the end: %v, want io.EOF", err)
	}
	order := map[llm.EventType]int{llm.EventText: 0, llm.EventToolCallDelta: 1, llm.EventToolCall: 2, llm.EventUsage: 3, llm.EventFinish: 4}
	var text, args strings.Builder
	for i, ev := range events {
		if i > 0 && order[ev.Type] < order[events[i-1].Type] {
			t.Fatalf("event %d (%d) after %d: want text, tool call pieces, call, usage, finish", i, ev.Type, events[i-1].Type)
		}
		switch ev.Type {
		case llm.EventText:
			if ev.Text == "" {
				t.Error("empty text piece")
			}
			text.WriteString(ev.Text)
		case llm.EventToolCallDelta:
			args.WriteString(ev.ToolCall.Arguments)
		}
	}
	if n := len(events); n < 2 || events[n-2].Type != llm.EventUsage || events[n-1].Type != llm.EventFinish {
		t.Fatalf("stream does not end in usage then finish: %+v", events)
	}
	if text.String() != want.Message.Text() {
		t.Fatalf("streamed text %q, want %q", text.String(), want.Message.Text())
	}
	if len(want.Message.ToolCalls) > 0 && args.String() != want.Message.ToolCalls[0].Arguments {
		t.Fatalf("streamed arguments %q, want %q", args.String(), want.Message.ToolCalls[0].Arguments)
	}

	s, err = p.ChatStream(t.Context(), req)
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	got, err := llm.Collect(s)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want.ID, want.Model = "", ""
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Collect(ChatStream) = %+v\nChat = %+v", got, want)
	}
}

// noPanic runs f, failing the test rather than crashing the test binary if f panics.
func noPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		if v := recover(); v != nil {
			t.Fatalf("panic: %v", v)
		}
	}()
	f()
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	embed := func(t *testing.T, dims *int, input ...string) *llm.EmbedResponse {
		t.Helper()
		res, err := p.Embed(t.Context(), &llm.EmbedRequest{Input: input, Dimensions: dims})
		if err != nil {
			t.Fatalf("Embed: %v", err)
		}
		if len(res.Vectors) != len(input) || res.Model != dev.Model {
			t.Fatalf("%d vectors of model %q for %d inputs", len(res.Vectors), res.Model, len(input))
		}
		return res
	}

	t.Run("OKNormalisedWithDefaultDimensions", func(t *testing.T) {
		t.Parallel()
		for _, v := range embed(t, nil, "hello world", "a", "Köln 2025").Vectors {
			if len(v) != dev.Dimensions {
				t.Fatalf("%d dimensions, want %d", len(v), dev.Dimensions)
			}
			if n := norm(v); math.Abs(n-1) > 1e-5 {
				t.Fatalf("norm %v, want 1", n)
			}
		}
	})
	t.Run("OKHonoursDimensions", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			dims *int
			want int
		}{{intp(8), 8}, {intp(1536), 1536}, {intp(0), dev.Dimensions}} {
			v := embed(t, tc.dims, "hello world").Vectors[0]
			if len(v) != tc.want || math.Abs(norm(v)-1) > 1e-5 {
				t.Fatalf("dimensions %d: got %d with norm %v, want %d normalised", *tc.dims, len(v), norm(v), tc.want)
			}
		}
	})
	t.Run("OKDeterministic", func(t *testing.T) {
		t.Parallel()
		a, b := embed(t, nil, "the same text"), embed(t, nil, "the same text")
		if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a.Vectors[0], dev.Embedding("the same text", dev.Dimensions)) {
			t.Fatal("one text embedded twice gave different vectors")
		}
	})
	t.Run("OKSimilarTextsCloser", func(t *testing.T) {
		t.Parallel()
		pairs := []struct{ base, similar, unrelated string }{
			{"the cat sat on the mat", "a cat sat on the mat", "quarterly revenue grew strongly in europe"},
			{"How do I reset my password?", "how can I reset the password", "Shipping to Canada takes five days"},
			{"Kiln routes model aliases to providers", "Kiln routes aliases to model providers", "bananas are yellow"},
		}
		for _, pr := range pairs {
			v := embed(t, nil, pr.base, pr.similar, pr.unrelated).Vectors
			if sim, unrel := cosine(v[0], v[1]), cosine(v[0], v[2]); sim <= unrel {
				t.Errorf("%q: cosine %v to %q, %v to %q; want the similar text closer", pr.base, sim, pr.similar, unrel, pr.unrelated)
			}
		}
	})
	t.Run("OKNoNaNWithoutWords", func(t *testing.T) {
		t.Parallel()
		for _, v := range embed(t, nil, "", "?!…").Vectors {
			for _, x := range v {
				if math.IsNaN(float64(x)) {
					t.Fatal("NaN in the embedding of a text without words")
				}
			}
		}
	})
	t.Run("OKUsage", func(t *testing.T) {
		t.Parallel()
		res := embed(t, nil, "hello there", "abcd")
		if want := dev.CountTokens("hello there") + dev.CountTokens("abcd"); res.Usage.PromptTokens != want || res.Usage.CompletionTokens != 0 {
			t.Fatalf("usage = %+v, want %d prompt tokens", res.Usage, want)
		}
	})
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func cosine(a, b []float32) float64 {
	var dot float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
	}
	return dot / (norm(a) * norm(b))
}

func TestCountTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		want int
	}{
		{"Empty", "", 0},
		{"OneToken", "abcd", 1},
		{"FourBytesEach", "abcdefghi", 3},
		{"AtLeastOnePerWord", "a b c d e", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := dev.CountTokens(tt.text); got != tt.want {
				t.Fatalf("CountTokens(%q) = %d, want %d", tt.text, got, tt.want)
			}
		})
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	models, err := newProvider(t).Models(t.Context())
	if err != nil {
		t.Fatalf("Models: %v", err)
	}
	if len(models) != 1 || models[0].ID != "dev-echo" {
		t.Fatalf("Models = %+v, want dev-echo", models)
	}
}

func TestCancelledContext(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	req := &llm.Request{Messages: []llm.Message{user("hello there")}}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		call func() error
	}{
		{"ErrChat", func() error { _, err := p.Chat(cancelled, req); return err }},
		{"ErrChatStream", func() error { _, err := p.ChatStream(cancelled, req); return err }},
		{"ErrEmbed", func() error {
			_, err := p.Embed(cancelled, &llm.EmbedRequest{Input: []string{"x"}})
			return err
		}},
		{"ErrNextAfterCancel", func() error {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			s, err := p.ChatStream(ctx, req)
			if err != nil {
				return err
			}
			defer s.Close()
			if _, err := s.Next(); err != nil {
				return errors.New("first event failed before the cancel")
			}
			cancel()
			_, err = s.Next()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.call(); !errors.Is(err, context.Canceled) {
				t.Fatalf("error = %v, want context.Canceled", err)
			}
		})
	}
}

// TestEmbedChinese: Chinese has no spaces, so the embedding hashes character bigrams; two
// texts sharing words are closer than unrelated ones (the offline RAG evaluation relies on it).
func TestEmbedChinese(t *testing.T) {
	t.Parallel()
	base := dev.Embedding("如何重置我的密码", dev.Dimensions)
	similar := dev.Embedding("忘记密码后怎样重置", dev.Dimensions)
	unrelated := dev.Embedding("发票会在每月初寄出", dev.Dimensions)
	if sim, unrel := cosine(base, similar), cosine(base, unrelated); sim <= unrel || sim < 0.1 {
		t.Fatalf("cosine %v to a paraphrase, %v to an unrelated text; want the paraphrase closer (≥ 0.1)", sim, unrel)
	}
	mixed := dev.Embedding("Kiln的API密钥", dev.Dimensions)
	if cosine(mixed, dev.Embedding("kiln API", dev.Dimensions)) <= 0 || cosine(mixed, dev.Embedding("密钥", dev.Dimensions)) <= 0 {
		t.Fatal("mixed Latin and Chinese text shares no features with its parts")
	}
}
