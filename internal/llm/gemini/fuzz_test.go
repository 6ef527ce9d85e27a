package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/llm"
)

// FuzzGeminiStream feeds arbitrary bytes as a streamGenerateContent body: the stream must
// never panic, must end, and must end with io.EOF or an *llm.Error.
func FuzzGeminiStream(f *testing.F) {
	seeds := []string{
		"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 3}}\r\n\r\n",
		"data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"f\",\"args\": {\"a\": [1]}},\"thoughtSignature\": \"c2ln\"}]}}]}\r\n\r\ndata: {\"candidates\": [{\"finishReason\": \"STOP\"}]}\r\n\r\n",
		"data: {\"promptFeedback\": {\"blockReason\": \"SAFETY\"}}\n\n",
		"data: {\"error\": {\"code\": 429, \"status\": \"RESOURCE_EXHAUSTED\", \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"3s\"}]}}\n\n",
		"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel",
		": keepalive\n\ndata: [1,2]\n\n",
		"data: null\n\ndata: {}\n\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s := newStream(context.Background(), "fuzz", io.NopCloser(bytes.NewReader(body)))
		defer s.Close()
		// Each event needs at least a "data:" line and a blank line, so a stream can't
		// honestly yield more events than the body has bytes.
		for range len(body) + 16 {
			ev, err := s.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				var e *llm.Error
				if !errors.As(err, &e) {
					t.Fatalf("Next error %T %v, want *llm.Error", err, err)
				}
				return
			}
			if ev.Type < llm.EventText || ev.Type > llm.EventFinish {
				t.Fatalf("event of unknown type %d", ev.Type)
			}
		}
		t.Fatalf("stream of %d bytes did not end", len(body))
	})
}

// BenchmarkStreamChunk measures decoding one text chunk into events, the adapter's
// per-token overhead on the streaming path.
func BenchmarkStreamChunk(b *testing.B) {
	chunk := "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" the quick brown fox\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"mC5xaM\"}\r\n\r\n"
	body := strings.Repeat(chunk, b.N) + "data: {\"candidates\": [{\"finishReason\": \"STOP\"}]}\r\n\r\n"
	s := newStream(context.Background(), "bench", io.NopCloser(strings.NewReader(body)))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for {
		if _, err := s.Next(); err != nil {
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			break
		}
	}
}

// BenchmarkEncodeRequest measures mapping and encoding a chat request with history,
// tools and structured output.
func BenchmarkEncodeRequest(b *testing.B) {
	p := &Provider{name: "bench"}
	req := &llm.Request{
		Model: "gemini-2.5-flash",
		Messages: []llm.Message{
			llm.TextMessage(llm.RoleSystem, "You are terse."),
			llm.TextMessage(llm.RoleUser, "What's the weather in Paris?"),
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_0__thought__c2ln", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
			{Role: llm.RoleTool, ToolCallID: "call_0__thought__c2ln", Content: []llm.Part{{Type: llm.PartText, Text: `{"temp":21}`}}},
		},
		Tools: []llm.Tool{{Name: "get_weather", Parameters: json.RawMessage(`{"$schema":"x","type":"object","properties":{"city":{"type":"string"}}}`)}},
	}
	b.ReportAllocs()
	for b.Loop() {
		gr, err := p.toGenerateRequest(req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(gr); err != nil {
			b.Fatal(err)
		}
	}
}
