package gemini_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
)

// drain reads a stream to its end and returns its events and the error that ended it
// (nil for io.EOF). It also checks that Next keeps answering the same after the end.
func drain(t *testing.T, s llm.Stream) ([]llm.Event, error) {
	t.Helper()
	defer s.Close()
	var evs []llm.Event
	for range 10000 {
		ev, err := s.Next()
		if err != nil {
			if _, again := s.Next(); !errors.Is(again, err) {
				t.Errorf("Next after the end = %v, want %v again", again, err)
			}
			if errors.Is(err, io.EOF) {
				return evs, nil
			}
			return evs, err
		}
		evs = append(evs, ev)
	}
	t.Fatal("stream did not end")
	return nil, nil
}

func text(s string) llm.Event { return llm.Event{Type: llm.EventText, Text: s} }
func finish(r llm.FinishReason) llm.Event {
	return llm.Event{Type: llm.EventFinish, FinishReason: r}
}
func usage(p, c, cached int) llm.Event {
	return llm.Event{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: p, CompletionTokens: c, CachedTokens: cached}}
}

func TestChatStream(t *testing.T) {
	t.Parallel()
	weather := llm.ToolCall{ID: "call_0__thought__CiQBsig==", Name: "get_weather", Arguments: `{"city":"Paris"}`}
	clock := llm.ToolCall{ID: "fc_2", Name: "get_time", Arguments: `{"tz":"Europe/Paris"}`}
	tests := []struct {
		name    string
		body    string
		want    []llm.Event
		wantErr llm.ErrorKind
	}{
		{"Text", sse(
			`{"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash","responseId": "mC5xaM"}`,
			`{"candidates": [{"content": {"parts": [{"text": " capital of France"}],"role": "model"},"index": 0,"safetyRatings": []}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash","responseId": "mC5xaM"}`,
			`{"candidates": [{"content": {"parts": [{"text": " is Paris."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 7,"totalTokenCount": 40,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}],"thoughtsTokenCount": 24},"modelVersion": "gemini-2.5-flash","responseId": "mC5xaM","futureField": true}`,
		), []llm.Event{text("The"), text(" capital of France"), text(" is Paris."), usage(9, 31, 0), finish(llm.FinishStop)}, ""},
		{"ParallelToolCalls", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Thinking it over", "thought": true}, {"text": "Checking."}],"role": "model"}}]}`,
			`{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city":"Paris"}},"thoughtSignature": "CiQBsig=="}],"role": "model"}}]}`,
			`{"candidates": [{"content": {"parts": [{"functionCall": {"id": "fc_2","name": "get_time","args": {"tz":"Europe/Paris"}}}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 50,"candidatesTokenCount": 30,"cachedContentTokenCount": 32,"totalTokenCount": 80}}`,
		), []llm.Event{
			text("Checking."),
			{Type: llm.EventToolCallDelta, Index: 0, ToolCall: weather}, {Type: llm.EventToolCall, Index: 0, ToolCall: weather},
			{Type: llm.EventToolCallDelta, Index: 1, ToolCall: clock}, {Type: llm.EventToolCall, Index: 1, ToolCall: clock},
			usage(50, 30, 32), finish(llm.FinishToolCalls),
		}, ""},
		{"UsageOnlyLastChunk", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Hi"}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 3,"candidatesTokenCount": 1,"totalTokenCount": 4}}`,
		), []llm.Event{text("Hi"), usage(3, 1, 0), finish(llm.FinishStop)}, ""},
		{"MaxTokens", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Once upon"}],"role": "model"},"finishReason": "MAX_TOKENS"}]}`,
		), []llm.Event{text("Once upon"), finish(llm.FinishLength)}, ""},
		{"SafetyMidReply", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Step one"}],"role": "model"}}]}`,
			`{"candidates": [{"finishReason": "SAFETY","index": 0,"safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT","probability": "HIGH","blocked": true}]}]}`,
		), []llm.Event{text("Step one"), finish(llm.FinishContentFilter)}, ""},
		{"BlockedPrompt", sse(
			`{"promptFeedback": {"blockReason": "SAFETY","safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT","probability": "HIGH"}]},"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.5-flash"}`,
		), []llm.Event{usage(8, 0, 0), finish(llm.FinishContentFilter)}, ""},
		{"NoCandidates", sse(
			`{"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8}}`,
		), []llm.Event{usage(8, 0, 0), finish(llm.FinishContentFilter)}, ""},
		{"CleanEndWithoutFinishReason", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}]}`,
			`{"candidates": [{"content": {"parts": [{"text": "lo"}],"role": "model"}}]}`,
		), []llm.Event{text("Hel"), text("lo"), finish(llm.FinishStop)}, ""},
		{"ErrCutMidEvent", sse(`{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}]}`) + `data: {"candidates": [{"content": {"par`,
			[]llm.Event{text("Hel")}, llm.KindConnection},
		{"ErrEmptyBody", "", nil, llm.KindConnection},
		{"ErrUndecodableChunk", sse(`{"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}`, `{"candidates": [`),
			[]llm.Event{text("Hel")}, llm.KindProtocol},
		{"ErrOverloadedMidStream", sse(
			`{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}]}`,
			`{"error": {"code": 503,"message": "The model is overloaded. Please try again later.","status": "UNAVAILABLE"}}`,
		), []llm.Event{text("Hel")}, llm.KindOverloaded},
		{"ErrRateLimitedMidStream", sse(
			`{"error": {"message": "Resource has been exhausted (e.g. check quota).","status": "RESOURCE_EXHAUSTED"}}`,
		), nil, llm.KindRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newProvider(t, replySSE(tt.body))
			s, err := p.ChatStream(context.Background(), textRequest("gemini-2.5-flash"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := drain(t, s)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("stream error: %v", err)
			}
			if tt.wantErr != "" {
				var e *llm.Error
				if !errors.As(err, &e) || e.Kind != tt.wantErr || e.Provider != "gem" {
					t.Fatalf("stream error = %v, want a %s *llm.Error", err, tt.wantErr)
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestChatStreamCollect(t *testing.T) {
	t.Parallel()
	p, _ := newProvider(t, replySSE(sse(
		`{"candidates": [{"content": {"parts": [{"text": "Let me look."}],"role": "model"}}]}`,
		`{"candidates": [{"content": {"parts": [{"functionCall": {"name": "a","args": {"x":1}}},{"functionCall": {"name": "b"}}],"role": "model"},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 5,"candidatesTokenCount": 6,"totalTokenCount": 11}}`,
	)))
	s, err := p.ChatStream(context.Background(), textRequest("gemini-2.5-flash"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := llm.Collect(s)
	if err != nil {
		t.Fatal(err)
	}
	want := &llm.Response{
		Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Let me look."}}, ToolCalls: []llm.ToolCall{
			{ID: "call_0", Name: "a", Arguments: `{"x":1}`}, {ID: "call_1", Name: "b", Arguments: `{}`},
		}},
		FinishReason: llm.FinishToolCalls,
		Usage:        llm.Usage{PromptTokens: 5, CompletionTokens: 6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Collect = %+v, want %+v", got, want)
	}
}

func TestChatStreamCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	p, _ := newProvider(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, sse(`{"candidates": [{"content": {"parts": [{"text": "Hel"}],"role": "model"}}]}`))
		w.(http.Flusher).Flush()
		select { // hold the stream open, as a slow model would
		case <-r.Context().Done():
		case <-release:
		}
	})
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc, s llm.Stream)
	}{
		{"ContextCanceled", func(cancel context.CancelFunc, _ llm.Stream) { cancel() }},
		{"Closed", func(_ context.CancelFunc, s llm.Stream) { _ = s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := p.ChatStream(ctx, textRequest("gemini-2.5-flash"))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if ev, err := s.Next(); err != nil || ev.Text != "Hel" {
				t.Fatalf("first event = %+v, %v", ev, err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := s.Next()
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			tt.stop(cancel, s)
			select {
			case err := <-done:
				if err == nil || errors.Is(err, io.EOF) {
					t.Fatalf("Next after stop = %v, want an error", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Next did not return after the stream was stopped")
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close = %v", err)
			}
		})
	}
}
