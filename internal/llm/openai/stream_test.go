package openai_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/openai"
)

func text(s string) llm.Event { return llm.Event{Type: llm.EventText, Text: s} }

func delta(i int, id, name, args string) llm.Event {
	return llm.Event{Type: llm.EventToolCallDelta, Index: i, ToolCall: llm.ToolCall{ID: id, Name: name, Arguments: args}}
}

func call(i int, id, name, args string) llm.Event {
	return llm.Event{Type: llm.EventToolCall, Index: i, ToolCall: llm.ToolCall{ID: id, Name: name, Arguments: args}}
}

func usage(prompt, completion, cached int) llm.Event {
	return llm.Event{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: prompt, CompletionTokens: completion, CachedTokens: cached}}
}

func finish(r llm.FinishReason) llm.Event { return llm.Event{Type: llm.EventFinish, FinishReason: r} }

func TestChatStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      string
		body     string
		want     []llm.Event
		wantKind llm.ErrorKind // set: Next ends with an error of this kind after want
	}{
		{
			name: "TextWithUsageInFinalChunk",
			typ:  "openai",
			body: sse(
				`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`,
				`{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}`,
				`[DONE]`),
			want: []llm.Event{text("Hello"), text(" there"), usage(9, 2, 4), finish(llm.FinishStop)},
		},
		{
			name: "ParallelToolCallsSplitArguments",
			typ:  "openai",
			body: sse(
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"lo"}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"cation\":\"Paris\"}"}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":""}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"tz\":"}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\"CET\"}"}}]},"finish_reason":null}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
				`{"id":"c","object":"chat.completion.chunk","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":80,"completion_tokens":40,"total_tokens":120}}`,
				`[DONE]`),
			want: []llm.Event{
				delta(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", ""),
				delta(0, "", "", `{"lo`),
				delta(0, "", "", `cation":"Paris"}`),
				delta(1, "call_2", "get_time", ""),
				delta(1, "", "", `{"tz":`),
				delta(1, "", "", `"CET"}`),
				call(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", `{"location":"Paris"}`),
				call(1, "call_2", "get_time", `{"tz":"CET"}`),
				usage(80, 40, 0),
				finish(llm.FinishToolCalls),
			},
		},
		{
			name: "AzureFilterResultsIgnoredContentFilterFinish",
			typ:  "azure_openai",
			body: sse(
				`{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}`,
				`{"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1748977994,"id":"chatcmpl-BeRMQ69PcNQmy9a0f0C0VlLsdOy9H","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0"}`,
				`{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hello"},"finish_reason":null,"index":0,"logprobs":null}],"created":1748977994,"id":"chatcmpl-BeRMQ69PcNQmy9a0f0C0VlLsdOy9H","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0"}`,
				`{"choices":[{"content_filter_results":{"violence":{"filtered":true,"severity":"high"}},"delta":{},"finish_reason":"content_filter","index":0,"logprobs":null}],"created":1748977994,"id":"chatcmpl-BeRMQ69PcNQmy9a0f0C0VlLsdOy9H","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk"}`,
				`{"choices":[],"created":1748977994,"id":"chatcmpl-BeRMQ69PcNQmy9a0f0C0VlLsdOy9H","model":"gpt-4o-2024-05-13","object":"chat.completion.chunk","usage":{"completion_tokens":1,"prompt_tokens":12,"total_tokens":13}}`,
				`[DONE]`),
			want: []llm.Event{text("Hello"), usage(12, 1, 0), finish(llm.FinishContentFilter)},
		},
		{
			name: "CompatibleUsageOnEveryChunkAndFinishWithContent",
			typ:  "openai_compatible",
			body: sse(
				`{"id":"chatcmpl-q","object":"chat.completion.chunk","model":"qwen-plus","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}`,
				`{"id":"chatcmpl-q","object":"chat.completion.chunk","model":"qwen-plus","choices":[{"index":0,"delta":{"content":" you"},"finish_reason":null}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`,
				`{"id":"chatcmpl-q","object":"chat.completion.chunk","model":"qwen-plus","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"length"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}`,
				`[DONE]`),
			want: []llm.Event{text("Hi"), text(" you"), text("!"), usage(10, 3, 0), finish(llm.FinishLength)},
		},
		{
			name: "DeepSeekReasoningIgnoredCacheHits",
			typ:  "openai_compatible",
			body: sse(
				`{"id":"d","object":"chat.completion.chunk","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"d","object":"chat.completion.chunk","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Thinking"},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"d","object":"chat.completion.chunk","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"42","reasoning_content":null},"logprobs":null,"finish_reason":null}]}`,
				`{"id":"d","object":"chat.completion.chunk","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50,"prompt_cache_hit_tokens":16,"prompt_cache_miss_tokens":4}}`,
				`[DONE]`),
			want: []llm.Event{text("42"), usage(20, 30, 16), finish(llm.FinishStop)},
		},
		{
			name: "ToolCallsWithoutIndexWholeArguments",
			typ:  "openai_compatible",
			body: ": keep-alive comment\n\n" + sse(
				`{"id":"l","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{"tool_calls":[{"id":"a1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":null}]}`,
				`{"id":"l","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{"tool_calls":[{"id":"b2","type":"function","function":{"name":"g","arguments":"{\"y\":"}}]},"finish_reason":null}]}`,
				`{"id":"l","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"2}"}}]},"finish_reason":null}]}`,
				`{"id":"l","object":"chat.completion.chunk","model":"llama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
				`[DONE]`),
			want: []llm.Event{
				delta(0, "a1", "f", `{"x":1}`),
				delta(1, "b2", "g", `{"y":`),
				delta(1, "", "", `2}`),
				call(0, "a1", "f", `{"x":1}`),
				call(1, "b2", "g", `{"y":2}`),
				finish(llm.FinishToolCalls),
			},
		},
		{
			name: "RepeatedIDAndNameSentOnce",
			typ:  "openai_compatible",
			body: sse(
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":":1}"}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f"}}]},"finish_reason":"tool_calls"}]}`,
				`[DONE]`),
			want: []llm.Event{delta(0, "c1", "f", `{"a"`), delta(0, "", "", ":1}"), call(0, "c1", "f", `{"a":1}`), finish(llm.FinishToolCalls)},
		},
		{
			name:     "ErrCutMidEvent",
			typ:      "openai",
			body:     sse(`{"choices":[{"index":0,"delta":{"content":"Hel"}}]}`) + `data: {"choices":[{"index":0,"delta":{"content":"lo"`,
			want:     []llm.Event{text("Hel")},
			wantKind: llm.KindConnection,
		},
		{
			name:     "ErrEndsWithoutDone",
			typ:      "openai",
			body:     sse(`{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}`),
			want:     []llm.Event{text("Hi")},
			wantKind: llm.KindConnection,
		},
		{
			name:     "ErrUndecodableChunk",
			typ:      "openai",
			body:     sse(`{"choices":[{"index":0,"delta":{"content":"Hi"}}]}`, `{"choices":[{"index":"zero"}]}`, "[DONE]"),
			want:     []llm.Event{text("Hi")},
			wantKind: llm.KindProtocol,
		},
		{
			name: "ErrServerErrorMidStream",
			typ:  "openai",
			body: sse(
				`{"id":"chatcmpl-BwoiPTGRbKkY5rncfaM0s9KtWrq5N","object":"chat.completion.chunk","created":1753357673,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"content":"The"},"logprobs":null,"finish_reason":null}],"usage":null}`,
				`{"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error"}}`),
			want:     []llm.Event{text("The")},
			wantKind: llm.KindOverloaded,
		},
		{
			name: "ErrOpenRouterMidStream",
			typ:  "openai_compatible",
			body: sse(
				`{"id":"gen-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}`,
				`{"id":"gen-1","object":"chat.completion.chunk","model":"m","error":{"code":429,"message":"Rate limit exceeded"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}`,
				"[DONE]"),
			want:     []llm.Event{text("A")},
			wantKind: llm.KindRateLimited,
		},
		{
			name:     "ErrNoChoices",
			typ:      "azure_openai",
			body:     sse(`{"choices":[],"prompt_filter_results":[]}`, "[DONE]"),
			wantKind: llm.KindProtocol,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := setup(t, llm.ProviderConfig{Type: tt.typ, APIKey: "k"}, sseReply(tt.body))
			s, err := p.ChatStream(context.Background(), textRequest())
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			got, err := readAll(t, s)
			if tt.wantKind != "" {
				e := asLLMError(t, err, tt.wantKind)
				if e.Provider != "test-"+tt.typ {
					t.Errorf("provider = %q", e.Provider)
				}
				if _, again := s.Next(); !errors.Is(again, err) {
					t.Errorf("Next after the error = %v, want the same error", again)
				}
			} else if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("events:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestChatStreamCollect checks that llm.Collect rebuilds the reply from the events.
func TestChatStreamCollect(t *testing.T) {
	t.Parallel()
	p, _ := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "k"}, sseReply(sse(
		`{"choices":[{"index":0,"delta":{"content":"Let me check."}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":""}}]}}]}`,
		`{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`,
		"[DONE]")))
	s, err := p.ChatStream(context.Background(), textRequest())
	if err != nil {
		t.Fatal(err)
	}
	got, err := llm.Collect(s)
	if err != nil {
		t.Fatal(err)
	}
	want := &llm.Response{
		Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Let me check."}},
			ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: "{}"}}},
		FinishReason: llm.FinishToolCalls, Usage: llm.Usage{PromptTokens: 3, CompletionTokens: 4},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("collected:\n got %+v\nwant %+v", got, want)
	}
}

func TestChatStreamCancel(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	p, _ := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "k"}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, sse(`{"choices":[{"index":0,"delta":{"content":"first"}}]}`))
		w.(http.Flusher).Flush()
		select { // hang like a slow model
		case <-r.Context().Done():
		case <-release:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := p.ChatStream(ctx, textRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev, err := s.Next(); err != nil || ev.Text != "first" {
		t.Fatalf("first event = %+v, %v", ev, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Next()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Next after cancel = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Next did not return after ctx was cancelled")
	}
}

func TestChatStreamClose(t *testing.T) {
	t.Parallel()
	p, _ := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "k"}, sseReply(sse(`{"choices":[{"index":0,"delta":{"content":"a"}}]}`, "[DONE]")))
	s, err := p.ChatStream(context.Background(), textRequest())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if _, err := s.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("Next after Close = %v, want an error", err)
	}
}

// BenchmarkChatStream measures the adapter's cost per streamed chunk, without a network.
func BenchmarkChatStream(b *testing.B) {
	const chunk = `{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}`
	chunks := make([]string, 0, 102)
	for range 100 {
		chunks = append(chunks, chunk)
	}
	chunks = append(chunks, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`, "[DONE]")
	p, err := openai.New(llm.ProviderConfig{Type: "openai", APIKey: "k"}, &http.Client{Transport: bodyTransport{[]byte(sse(chunks...))}})
	if err != nil {
		b.Fatal(err)
	}
	req := textRequest()
	b.ReportAllocs()
	for b.Loop() {
		s, err := p.ChatStream(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := readAll(b, s); err != nil {
			b.Fatal(err)
		}
	}
}
