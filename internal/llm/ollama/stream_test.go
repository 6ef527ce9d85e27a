package ollama_test

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
	"github.com/kilnhq/kiln/internal/llm/ollama"
)

// readEvents reads s to its end and returns its events and final error (nil for io.EOF).
func readEvents(t *testing.T, s llm.Stream) ([]llm.Event, error) {
	t.Helper()
	defer s.Close()
	var evs []llm.Event
	for range 10000 {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return evs, nil
		}
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
	}
	t.Fatal("stream did not end")
	return nil, nil
}

func streamFrom(t *testing.T, handler http.HandlerFunc) llm.Stream {
	t.Helper()
	p, _ := fakeOllama(t, llm.ProviderConfig{}, handler)
	s, err := p.ChatStream(context.Background(), &llm.Request{Model: "m", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}})
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	return s
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want []llm.Event
	}{
		{
			name: "Text",
			body: docStreamText,
			want: []llm.Event{
				{Type: llm.EventText, Text: "The"},
				{Type: llm.EventText, Text: " sky"},
				{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: 26, CompletionTokens: 282}},
				{Type: llm.EventFinish, FinishReason: llm.FinishStop},
			},
		},
		{
			name: "ParallelToolCallsAcrossLines",
			body: docStreamTools,
			want: []llm.Event{
				{Type: llm.EventText, Text: "Checking."},
				{Type: llm.EventToolCallDelta, Index: 0, ToolCall: llm.ToolCall{ID: "call_0", Name: "get_current_weather", Arguments: `{"format":"celsius","location":"Toronto"}`}},
				{Type: llm.EventToolCall, Index: 0, ToolCall: llm.ToolCall{ID: "call_0", Name: "get_current_weather", Arguments: `{"format":"celsius","location":"Toronto"}`}},
				{Type: llm.EventToolCallDelta, Index: 1, ToolCall: llm.ToolCall{ID: "call_abc", Name: "get_time", Arguments: `{"city":"Toronto"}`}},
				{Type: llm.EventToolCall, Index: 1, ToolCall: llm.ToolCall{ID: "call_abc", Name: "get_time", Arguments: `{"city":"Toronto"}`}},
				{Type: llm.EventToolCallDelta, Index: 2, ToolCall: llm.ToolCall{ID: "call_2", Name: "get_current_weather", Arguments: `{}`}},
				{Type: llm.EventToolCall, Index: 2, ToolCall: llm.ToolCall{ID: "call_2", Name: "get_current_weather", Arguments: `{}`}},
				{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: 180, CompletionTokens: 40}},
				{Type: llm.EventFinish, FinishReason: llm.FinishToolCalls},
			},
		},
		{
			name: "LengthCRLFBlankLinesAndNoFinalNewline",
			body: "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"a\"},\"done\":false,\"unknown\":[1]}\r\n\r\n\n" +
				`{"model":"m","message":{"role":"assistant","content":"b"},"done":true,"done_reason":"length","prompt_eval_count":1,"eval_count":2}`,
			want: []llm.Event{
				{Type: llm.EventText, Text: "a"},
				{Type: llm.EventText, Text: "b"},
				{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: 1, CompletionTokens: 2}},
				{Type: llm.EventFinish, FinishReason: llm.FinishLength},
			},
		},
		{
			name: "EmptyReply",
			body: `{"model":"llama3.2","created_at":"2024-09-12T21:17:29.110811Z","message":{"role":"assistant","content":""},"done_reason":"load","done":true}` + "\n",
			want: []llm.Event{
				{Type: llm.EventUsage},
				{Type: llm.EventFinish, FinishReason: llm.FinishStop},
			},
		},
		{
			name: "DataAfterDoneIgnored",
			body: `{"message":{"content":"x"},"done":true,"done_reason":"stop"}` + "\n" + `{"error":"late"}` + "\n",
			want: []llm.Event{
				{Type: llm.EventText, Text: "x"},
				{Type: llm.EventUsage},
				{Type: llm.EventFinish, FinishReason: llm.FinishStop},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readEvents(t, streamFrom(t, ndjson(tt.body)))
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestChatStreamCollect(t *testing.T) {
	t.Parallel()
	got, err := llm.Collect(streamFrom(t, ndjson(docStreamTools)))
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	want := &llm.Response{
		Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Checking."}}, ToolCalls: []llm.ToolCall{
			{ID: "call_0", Name: "get_current_weather", Arguments: `{"format":"celsius","location":"Toronto"}`},
			{ID: "call_abc", Name: "get_time", Arguments: `{"city":"Toronto"}`},
			{ID: "call_2", Name: "get_current_weather", Arguments: `{}`},
		}},
		FinishReason: llm.FinishToolCalls,
		Usage:        llm.Usage{PromptTokens: 180, CompletionTokens: 40},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Collect =\n%+v\nwant\n%+v", got, want)
	}
}

func TestChatStreamErrors(t *testing.T) {
	t.Parallel()
	first := `{"model":"gemma3","created_at":"2025-10-26T17:21:21.196249Z","message":{"role":"assistant","content":" Yes"},"done":false}` + "\n"
	tests := []struct {
		name     string
		body     string
		kind     llm.ErrorKind
		wantText int // text events before the error
	}{
		{"ErrCutMidLine", first + `{"model":"gemma3","message":{"role":"assis`, llm.KindConnection, 1},
		{"ErrEndedWithoutDone", first, llm.KindConnection, 1},
		{"ErrEmptyBody", "", llm.KindConnection, 0},
		{"ErrUndecodableLine", first + "data: {\"not\":\"ndjson\"}\n", llm.KindProtocol, 1},
		{"ErrLineNotAnObject", first + "[1,2]\n", llm.KindProtocol, 1},
		{"ErrLineTooLong", first + `{"message":{"content":"` + strings.Repeat("x", ollama.MaxLineBytes) + `"}}` + "\n", llm.KindProtocol, 1},
		{"ErrMidStreamModelFailure", first + `{"error":"an error was encountered while running the model"}` + "\n", llm.KindOverloaded, 1},
		{"ErrMidStreamRequestProblem", first + `{"error":"model 'llama3.2' not found"}` + "\n", llm.KindInvalid, 1},
		{"ErrMidStreamRateLimit", `{"error":"you have reached your hourly usage limit"}` + "\n", llm.KindRateLimited, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := streamFrom(t, ndjson(tt.body))
			evs, err := readEvents(t, s)
			assertKind(t, err, tt.kind)
			if len(evs) != tt.wantText {
				t.Errorf("got %d events before the error, want %d", len(evs), tt.wantText)
			}
			if _, again := s.Next(); !errors.Is(again, err) {
				t.Errorf("Next after error = %v, want the same error %v", again, err)
			}
		})
	}
}

func TestChatStreamCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	p, _ := fakeOllama(t, llm.ProviderConfig{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		_, _ = io.WriteString(w, `{"model":"m","message":{"role":"assistant","content":"The"},"done":false}`+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := p.ChatStream(ctx, &llm.Request{Model: "m", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "hi")}})
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	defer s.Close()
	if ev, err := s.Next(); err != nil || ev.Text != "The" {
		t.Fatalf("first Next = %+v, %v", ev, err)
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err = s.Next()
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Next after cancel = %v, want an error", err)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Next took %v to notice cancellation", d)
	}
}

func TestChatStreamClose(t *testing.T) {
	t.Parallel()
	s := streamFrom(t, ndjson(docStreamText))
	if _, err := s.Next(); err != nil {
		t.Fatalf("Next: %v", err)
	}
	for range 3 {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	if _, err := readEvents(t, s); err == nil {
		t.Error("Next after Close returned no error")
	}
}

func FuzzOllamaStream(f *testing.F) {
	f.Add([]byte(docStreamText))
	f.Add([]byte(docStreamTools))
	f.Add([]byte(`{"error":"boom"}` + "\n"))
	f.Add([]byte(`{"message":{"content":"a","tool_calls":[{"function":{"name":"f","arguments":"x"}}]},"done":true}`))
	f.Add([]byte("\n\r\n{\"done\":tru"))
	f.Add([]byte(`{"message":{"tool_calls":[{"id":"","function":{"arguments":null}}]},"done":false,"error":{"message":"m"}}` + "\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := ollama.NewStream(context.Background(), "fuzz", io.NopCloser(bytes.NewReader(body)))
		defer s.Close()
		finished := false
		for range len(body) + 8 {
			ev, err := s.Next()
			if errors.Is(err, io.EOF) {
				if !finished {
					t.Fatal("io.EOF without a finish event")
				}
				return
			}
			if err != nil {
				var e *llm.Error
				if !errors.As(err, &e) {
					t.Fatalf("error %v is not an *llm.Error", err)
				}
				return
			}
			if finished {
				t.Fatalf("event %+v after finish", ev)
			}
			if ev.Type == llm.EventFinish {
				finished = true
			}
		}
		t.Fatal("stream did not terminate")
	})
}
