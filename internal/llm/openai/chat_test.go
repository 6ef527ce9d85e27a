package openai_test

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/openai"
)

func textRequest() *llm.Request {
	return &llm.Request{Model: "gpt-4.1", Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Hi")}}
}

func TestChat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      string
		reply    string
		want     *llm.Response
		wantKind llm.ErrorKind // set: an error of this kind is expected
	}{
		{
			name: "Text",
			typ:  "openai",
			reply: `{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion","created":1741569952,"model":"gpt-4.1-2025-04-14",
			  "choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I assist you today?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
			  "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
			    "prompt_tokens_details":{"cached_tokens":8,"audio_tokens":0},
			    "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
			  "service_tier":"default","system_fingerprint":"fp_ee1d74bde0"}`,
			want: &llm.Response{ID: "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", Model: "gpt-4.1-2025-04-14",
				Message:      llm.TextMessage(llm.RoleAssistant, "Hello! How can I assist you today?"),
				FinishReason: llm.FinishStop, Usage: llm.Usage{PromptTokens: 19, CompletionTokens: 10, CachedTokens: 8}},
		},
		{
			name: "ToolCalls",
			typ:  "openai",
			reply: `{"id":"chatcmpl-BcQ8ko2nz9B7CRvV0uVbcowidHpQU","object":"chat.completion","created":1748496646,"model":"gpt-4o-2024-08-06",
			  "choices":[{"index":0,"logprobs":null,"finish_reason":"tool_calls","message":{"content":null,"refusal":null,"role":"assistant","annotations":[],"audio":null,"function_call":null,
			    "tool_calls":[
			      {"id":"call_qOfTGgDrItLORNfC6VwUbyLL","type":"function","function":{"arguments":"{\"location\":\"Shanghai\"}","name":"get_weather"}},
			      {"id":"call_2","type":"function","function":{"arguments":"","name":"get_time"}}]}}],
			  "usage":{"completion_tokens":14,"prompt_tokens":91,"total_tokens":105}}`,
			want: &llm.Response{ID: "chatcmpl-BcQ8ko2nz9B7CRvV0uVbcowidHpQU", Model: "gpt-4o-2024-08-06",
				Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
					{ID: "call_qOfTGgDrItLORNfC6VwUbyLL", Name: "get_weather", Arguments: `{"location":"Shanghai"}`},
					{ID: "call_2", Name: "get_time", Arguments: "{}"},
				}},
				FinishReason: llm.FinishToolCalls, Usage: llm.Usage{PromptTokens: 91, CompletionTokens: 14}},
		},
		{
			name: "ToolCallsWithStopAndObjectArguments",
			typ:  "openai_compatible",
			reply: `{"id":"x","model":"qwen","choices":[{"index":0,"message":{"role":"assistant","content":"",
			  "tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":{"a":1}}}]},"finish_reason":"stop"}]}`,
			want: &llm.Response{ID: "x", Model: "qwen", FinishReason: llm.FinishToolCalls,
				Message: llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "1", Name: "f", Arguments: `{"a":1}`}}}},
		},
		{
			name: "AzureContentFilterAndFilterResults",
			typ:  "azure_openai",
			reply: `{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"gpt-4o-2024-05-13",
			  "prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],
			  "choices":[{"index":0,"finish_reason":"content_filter","message":{"role":"assistant","content":"Partial"},
			    "content_filter_results":{"violence":{"filtered":true,"severity":"high"}}}],
			  "usage":{"completion_tokens":3,"prompt_tokens":33,"total_tokens":36}}`,
			want: &llm.Response{ID: "chatcmpl-9", Model: "gpt-4o-2024-05-13", Message: llm.TextMessage(llm.RoleAssistant, "Partial"),
				FinishReason: llm.FinishContentFilter, Usage: llm.Usage{PromptTokens: 33, CompletionTokens: 3}},
		},
		{
			name: "DeepSeekCacheHitsAndReasoning",
			typ:  "openai_compatible",
			reply: `{"id":"ds","object":"chat.completion","model":"deepseek-reasoner","choices":[{"index":0,
			  "message":{"role":"assistant","content":"42","reasoning_content":"Let me think."},"finish_reason":"length"}],
			  "usage":{"prompt_tokens":100,"completion_tokens":5,"total_tokens":105,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}}`,
			want: &llm.Response{ID: "ds", Model: "deepseek-reasoner", Message: llm.TextMessage(llm.RoleAssistant, "42"),
				FinishReason: llm.FinishLength, Usage: llm.Usage{PromptTokens: 100, CompletionTokens: 5, CachedTokens: 64}},
		},
		{
			name: "RefusalBecomesText",
			typ:  "openai",
			reply: `{"id":"r","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,
			  "refusal":"I'm sorry, I cannot assist with that request."},"finish_reason":"stop"}]}`,
			want: &llm.Response{ID: "r", Model: "gpt-4o", Message: llm.TextMessage(llm.RoleAssistant, "I'm sorry, I cannot assist with that request."), FinishReason: llm.FinishStop},
		},
		{
			name:     "ErrEmptyChoices",
			typ:      "openai",
			reply:    `{"id":"e","object":"chat.completion","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}`,
			wantKind: llm.KindProtocol,
		},
		{
			name:     "ErrUndecodable",
			typ:      "openai",
			reply:    `{"id":"e","choices":[{"index":0,`,
			wantKind: llm.KindProtocol,
		},
		{
			name:     "ErrInOKBody",
			typ:      "openai_compatible",
			reply:    `{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"X"}}}`,
			wantKind: llm.KindOverloaded,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := setup(t, llm.ProviderConfig{Type: tt.typ, APIKey: "k"}, jsonReply(http.StatusOK, tt.reply))
			got, err := p.Chat(context.Background(), textRequest())
			if tt.wantKind != "" {
				e := asLLMError(t, err, tt.wantKind)
				if e.Provider != "test-"+tt.typ {
					t.Errorf("provider = %q", e.Provider)
				}
				return
			}
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("response:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestErrorStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		headers     []string
		body        string
		wantKind    llm.ErrorKind
		wantType    string
		wantMessage string
		wantRetry   time.Duration
	}{
		{
			name: "InvalidRequest400", status: 400,
			body:     `{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}`,
			wantKind: llm.KindInvalid, wantType: "invalid_request_error",
			wantMessage: "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
		},
		{
			name: "Auth401", status: 401,
			body:     `{"error":{"message":"Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
			wantKind: llm.KindAuth, wantType: "invalid_request_error",
			wantMessage: "Incorrect API key provided: sk-abc***xyz. You can find your API key at https://platform.openai.com/account/api-keys.",
		},
		{
			name: "AzureForbidden403", status: 403,
			body:     `{"error":{"code":"PermissionDenied","message":"Principal does not have access to API/Operation."}}`,
			wantKind: llm.KindAuth, wantType: "PermissionDenied", wantMessage: "Principal does not have access to API/Operation.",
		},
		{
			name: "AzureDeploymentNotFound404", status: 404,
			body:     `{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}`,
			wantKind: llm.KindInvalid, wantType: "DeploymentNotFound", wantMessage: "The API deployment for this resource does not exist.",
		},
		{
			name: "RateLimited429RetryAfterMs", status: 429, headers: []string{"retry-after-ms", "1500", "Retry-After", "2"},
			body:     `{"error":{"message":"Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM): Limit 30000, Used 30000, Requested 500. Please try again in 1.5s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`,
			wantKind: llm.KindRateLimited, wantType: "tokens", wantRetry: 1500 * time.Millisecond,
			wantMessage: "Rate limit reached for gpt-4.1 in organization org-x on tokens per min (TPM): Limit 30000, Used 30000, Requested 500. Please try again in 1.5s.",
		},
		{
			name: "AzureRateLimited429RetryAfter", status: 429, headers: []string{"Retry-After", "7"},
			body:     `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded call rate limit."}}`,
			wantKind: llm.KindRateLimited, wantType: "429", wantRetry: 7 * time.Second,
			wantMessage: "Requests to the ChatCompletions_Create Operation have exceeded call rate limit.",
		},
		{
			name: "ServerError500", status: 500,
			body:     `{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`,
			wantKind: llm.KindOverloaded, wantType: "server_error", wantMessage: "The server had an error while processing your request. Sorry about that!",
		},
		{
			name: "Overloaded503VLLMTopLevelError", status: 503,
			body:     `{"object":"error","message":"The model is overloaded.","type":"ServiceUnavailableError","param":null,"code":503}`,
			wantKind: llm.KindOverloaded, wantType: "ServiceUnavailableError", wantMessage: "The model is overloaded.",
		},
		{
			name: "Overloaded529PlainText", status: 529, body: "overloaded",
			wantKind: llm.KindOverloaded, wantMessage: "overloaded",
		},
		{
			name: "StringError400", status: 400, body: `{"error":"model 'x' not found"}`,
			wantKind: llm.KindInvalid, wantMessage: "model 'x' not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, _ := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "sk-secret-key"}, jsonReply(tt.status, tt.body, tt.headers...))
			check := func(err error) {
				t.Helper()
				e := asLLMError(t, err, tt.wantKind)
				if e.Status != tt.status || e.Type != tt.wantType || e.Message != tt.wantMessage || e.RetryAfter != tt.wantRetry || e.Provider != "test-openai" {
					t.Errorf("error = %+v\nwant status %d type %q message %q retry %v", e, tt.status, tt.wantType, tt.wantMessage, tt.wantRetry)
				}
			}
			_, err := p.Chat(context.Background(), textRequest())
			check(err)
			_, err = p.ChatStream(context.Background(), textRequest())
			check(err)
			_, err = p.Embed(context.Background(), &llm.EmbedRequest{Model: "text-embedding-3-small", Input: []string{"a"}})
			check(err)
			_, err = p.Models(context.Background())
			check(err)
		})
	}
}

func TestChatTransportErrors(t *testing.T) {
	t.Parallel()
	t.Run("ErrConnectionRefused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		p, err := openai.New(llm.ProviderConfig{Type: "openai_compatible", BaseURL: "http://" + addr}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Chat(context.Background(), textRequest())
		requireKind(t, err, llm.KindConnection)
	})
	t.Run("ErrTimeout", func(t *testing.T) {
		t.Parallel()
		p, _ := setup(t, llm.ProviderConfig{Type: "openai", APIKey: "k"}, func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := p.Chat(ctx, textRequest())
		requireKind(t, err, llm.KindTimeout)
	})
}
