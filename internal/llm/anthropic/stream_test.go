package anthropic_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/anthropic"
)

func sse(name, data string) string { return "event: " + name + "\ndata: " + data + "\n\n" }

// textStream is the documented basic streaming response.
var textStream = sse("message_start", `{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}`) +
	sse("content_block_start", `{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}`) +
	sse("ping", `{"type": "ping"}`) +
	sse("content_block_delta", `{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}`) +
	sse("content_block_delta", `{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}`) +
	sse("content_block_stop", `{"type": "content_block_stop", "index": 0}`) +
	sse("message_delta", `{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}`) +
	sse("message_stop", `{"type": "message_stop"}`)

// parallelToolStream has text and then two calls whose arguments arrive in pieces, in the
// documented tool-use streaming shape.
var parallelToolStream = sse("message_start", `{"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}`) +
	sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}`) +
	sse("content_block_stop", `{"type":"content_block_stop","index":0}`) +
	sse("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San Francisc"}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o, CA\"}"}}`) +
	sse("content_block_stop", `{"type":"content_block_stop","index":1}`) +
	sse("content_block_start", `{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_02","name":"get_time","input":{}}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"tz\": "}}`) +
	sse("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"PST\"}"}}`) +
	sse("content_block_stop", `{"type":"content_block_stop","index":2}`) +
	sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}`) +
	sse("message_stop", `{"type":"message_stop"}`)

// streaming serves body as an event stream.
func streaming(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, body)
	}
}

// drain reads s to its end, returning the events and the error that ended it.
func drain(t *testing.T, s llm.Stream) ([]llm.Event, error) {
	t.Helper()
	defer s.Close()
	var evs []llm.Event
	for range 10000 {
		ev, err := s.Next()
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
	t.Fatal("the stream did not end")
	return nil, nil
}

func text(s string) llm.Event { return llm.Event{Type: llm.EventText, Text: s} }
func delta(i int, c llm.ToolCall) llm.Event {
	return llm.Event{Type: llm.EventToolCallDelta, Index: i, ToolCall: c}
}
func call(i int, c llm.ToolCall) llm.Event {
	return llm.Event{Type: llm.EventToolCall, Index: i, ToolCall: c}
}
func usage(p, c, cached int) llm.Event {
	return llm.Event{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: p, CompletionTokens: c, CachedTokens: cached}}
}
func finish(r llm.FinishReason) llm.Event { return llm.Event{Type: llm.EventFinish, FinishReason: r} }

func TestChatStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		format *llm.ResponseFormat
		body   string
		want   []llm.Event
	}{
		{
			name: "OKText",
			body: textStream,
			want: []llm.Event{text("Hello"), text("!"), usage(25, 15, 0), finish(llm.FinishStop)},
		},
		{
			name: "OKParallelToolCalls",
			body: parallelToolStream,
			want: []llm.Event{
				text("Okay"),
				delta(0, llm.ToolCall{ID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", Name: "get_weather"}),
				delta(0, llm.ToolCall{Arguments: `{"location":`}),
				delta(0, llm.ToolCall{Arguments: ` "San Francisc`}),
				delta(0, llm.ToolCall{Arguments: `o, CA"}`}),
				call(0, llm.ToolCall{ID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", Name: "get_weather", Arguments: `{"location": "San Francisco, CA"}`}),
				delta(1, llm.ToolCall{ID: "toolu_02", Name: "get_time"}),
				delta(1, llm.ToolCall{Arguments: `{"tz": `}),
				delta(1, llm.ToolCall{Arguments: `"PST"}`}),
				call(1, llm.ToolCall{ID: "toolu_02", Name: "get_time", Arguments: `{"tz": "PST"}`}),
				usage(472, 89, 0),
				finish(llm.FinishToolCalls),
			},
		},
		{
			name: "OKCacheUsageInFinalDelta",
			body: sse("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":0,"output_tokens":1}}}`) +
				sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}`) +
				sse("content_block_stop", `{"type":"content_block_stop","index":0}`) +
				sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"input_tokens":100,"cache_creation_input_tokens":20,"cache_read_input_tokens":300,"output_tokens":50}}`) +
				sse("message_stop", `{"type":"message_stop"}`),
			want: []llm.Event{text("ok"), usage(420, 50, 300), finish(llm.FinishLength)},
		},
		{
			name:   "OKStructuredOutputTool",
			format: &llm.ResponseFormat{Type: "json_object"},
			body: sse("message_start", `{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":10,"output_tokens":1}}}`) +
				sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_j","name":"json_output","input":{}}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}`) +
				sse("content_block_stop", `{"type":"content_block_stop","index":0}`) +
				sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}`) +
				sse("message_stop", `{"type":"message_stop"}`),
			want: []llm.Event{text(`{"city": `), text(`"Paris"}`), usage(10, 12, 0), finish(llm.FinishStop)},
		},
		{
			name: "OKThinkingServerToolsAndUnknownEventsIgnored",
			body: sse("message_start", `{"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":7,"output_tokens":1},"brand_new":true}}`) +
				sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm"}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}}`) +
				sse("content_block_stop", `{"type":"content_block_stop","index":0}`) +
				sse("content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"query\":\"x\"}"}}`) +
				sse("content_block_stop", `{"type":"content_block_stop","index":1}`) +
				sse("future_event", `{"type":"future_event","whatever":[1,2]}`) +
				": comment\n\n" +
				sse("content_block_start", `{"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}`) +
				sse("content_block_delta", `{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"Done."}}`) +
				sse("content_block_stop", `{"type":"content_block_stop","index":2}`) +
				sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30}}`) +
				sse("message_stop", `{"type":"message_stop"}`),
			want: []llm.Event{text("Done."), usage(7, 30, 0), finish(llm.FinishStop)},
		},
		{
			name: "OKToolBlockNeverStopped",
			body: sse("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":1,"output_tokens":1}}}`) +
				sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_n","name":"noop","input":{}}}`) +
				sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}}`) +
				sse("message_stop", `{"type":"message_stop"}`),
			want: []llm.Event{
				delta(0, llm.ToolCall{ID: "toolu_n", Name: "noop"}),
				call(0, llm.ToolCall{ID: "toolu_n", Name: "noop", Arguments: "{}"}),
				usage(1, 3, 0), finish(llm.FinishToolCalls),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, streaming(tt.body))
			s, err := p.ChatStream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: tt.format})
			if err != nil {
				t.Fatal(err)
			}
			got, err := drain(t, s)
			if err != io.EOF { //nolint:errorlint // the end is io.EOF itself, never a wrapped error
				t.Fatalf("stream ended with %v after %+v", err, got)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestChatStreamCollect(t *testing.T) {
	t.Parallel()
	p := newProvider(t, streaming(parallelToolStream))
	s, err := p.ChatStream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := llm.Collect(s)
	if err != nil {
		t.Fatal(err)
	}
	want := &llm.Response{
		Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Okay"}}, ToolCalls: []llm.ToolCall{
			{ID: "toolu_01T1x1fJ34qAmk2tNTrN7Up6", Name: "get_weather", Arguments: `{"location": "San Francisco, CA"}`},
			{ID: "toolu_02", Name: "get_time", Arguments: `{"tz": "PST"}`},
		}},
		FinishReason: llm.FinishToolCalls,
		Usage:        llm.Usage{PromptTokens: 472, CompletionTokens: 89},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Collect = %+v, want %+v", got, want)
	}
}

func TestChatStreamErrors(t *testing.T) {
	t.Parallel()
	head := sse("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","usage":{"input_tokens":25,"output_tokens":1}}}`) +
		sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) +
		sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}`)
	tests := []struct {
		name     string
		body     string
		wantKind llm.ErrorKind
		wantType string
		wantMsg  string
	}{
		{"ErrOverloadedEvent", head + sse("error", `{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`), llm.KindOverloaded, "overloaded_error", "Overloaded"},
		{"ErrRateLimitEvent", head + sse("error", `{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}`), llm.KindRateLimited, "rate_limit_error", "Slow down"},
		{"ErrAPIEvent", head + sse("error", `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`), llm.KindOverloaded, "api_error", "Internal server error"},
		{"ErrCutMidEvent", head + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"del", llm.KindConnection, "", ""},
		{"ErrCutBeforeMessageStop", head + sse("content_block_stop", `{"type":"content_block_stop","index":0}`), llm.KindConnection, "", ""},
		{"ErrEmptyBody", "", llm.KindConnection, "", ""},
		{"ErrUndecodable", head + sse("content_block_delta", `{"type":"content_block_delta","index":0,"delta":`), llm.KindProtocol, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t, streaming(tt.body))
			s, err := p.ChatStream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
			if err != nil {
				t.Fatal(err)
			}
			evs, err := drain(t, s)
			le := asLLMError(t, err)
			if le.Kind != tt.wantKind || le.Type != tt.wantType || le.Provider != "claude" || (tt.wantMsg != "" && le.Message != tt.wantMsg) {
				t.Fatalf("err = %+v, want kind %s type %q message %q", le, tt.wantKind, tt.wantType, tt.wantMsg)
			}
			for _, ev := range evs {
				if ev.Type == llm.EventFinish {
					t.Fatalf("a failed stream emitted %+v", ev)
				}
			}
			if _, again := s.Next(); !errors.Is(again, err) {
				t.Errorf("Next after the end = %v, want %v again", again, err)
			}
		})
	}
}

func TestChatStreamCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	p := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, textStream[:strings.Index(textStream, "event: ping")])
		w.(http.Flusher).Flush()
		select { // hold the stream open, as a model still thinking would
		case <-r.Context().Done():
		case <-release:
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	s, err := p.ChatStream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Next = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Next took %v to notice the cancellation", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after the context was cancelled")
	}
}

func TestChatStreamClose(t *testing.T) {
	t.Parallel()
	p := newProvider(t, streaming(textStream))
	s, err := p.ChatStream(t.Context(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close = %v", err)
		}
	}
}

// bodyTransport answers every request with a 200 and body, so fuzzing needs no server.
type bodyTransport []byte

func (b bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     http.Header{"Content-Type": {"text/event-stream"}},
		Body:       io.NopCloser(bytes.NewReader(b)),
		Request:    r,
	}, nil
}

func FuzzAnthropicStream(f *testing.F) {
	f.Add([]byte(textStream))
	f.Add([]byte(parallelToolStream))
	f.Add([]byte(sse("error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)))
	f.Add([]byte(sse("content_block_start", `{"type":"content_block_start","index":-3,"content_block":{"type":"tool_use","id":"a","name":"json_output"}}`) + sse("message_stop", `{}`)))
	f.Add([]byte("data: {\"type\":\"message_stop\"}\r\r"))
	f.Add([]byte("event: x\ndata: [1]\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := anthropic.New(llm.ProviderConfig{Name: "claude", APIKey: testKey}, &http.Client{Transport: bodyTransport(body)})
		if err != nil {
			t.Fatal(err)
		}
		s, err := p.ChatStream(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}, ResponseFormat: &llm.ResponseFormat{Type: "json_object"}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		finished := false
		for range len(body) + 16 {
			ev, err := s.Next()
			if err != nil {
				var le *llm.Error
				switch {
				case errors.As(err, &le):
					if errors.Is(err, io.EOF) {
						t.Fatalf("Next = %v, which errors.Is takes for io.EOF", err)
					}
				case err != io.EOF: //nolint:errorlint // the end is io.EOF itself, never a wrapped error
					t.Fatalf("Next = %v (%T), want io.EOF or *llm.Error", err, err)
				case !finished:
					t.Fatal("io.EOF without a finish event")
				}
				return
			}
			if ev.Type == llm.EventFinish {
				finished = true
			}
			if ev.Index < 0 {
				t.Fatalf("event %+v has a negative index", ev)
			}
		}
		t.Fatal("the stream did not end")
	})
}

// BenchmarkChatStream measures the adapter's cost per streamed reply (no network).
func BenchmarkChatStream(b *testing.B) {
	p, err := anthropic.New(llm.ProviderConfig{Name: "claude", APIKey: testKey}, &http.Client{Transport: bodyTransport(parallelToolStream)})
	if err != nil {
		b.Fatal(err)
	}
	req := &llm.Request{Model: "m", Messages: []llm.Message{user("hi")}}
	b.ReportAllocs()
	for b.Loop() {
		s, err := p.ChatStream(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := s.Next(); err != nil {
				break
			}
		}
		s.Close()
	}
}
