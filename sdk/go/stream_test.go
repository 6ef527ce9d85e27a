package kiln_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// TestE2EChatStream streams replies of the offline dev provider (the server runs with no
// provider configured) through StreamChatCompletion.
func TestE2EChatStream(t *testing.T) {
	baseURL := startKiln(t)
	client := chatClient(t, baseURL)
	user := func(text string) []kiln.ChatMessage {
		return []kiln.ChatMessage{{Role: kiln.ChatRoleUser, Content: &text}}
	}

	t.Run("PlainReply", func(t *testing.T) {
		stream, err := client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{Messages: user("hello from the Go SDK")})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if got := stream.Header().Get("Kiln-Provider"); got != "dev" {
			t.Errorf("Kiln-Provider = %q, want dev", got)
		}
		var result kiln.ChatStreamResult
		var types []kiln.ChatEventType
		lastID := 0
		for stream.Next() {
			ev := stream.Event()
			if ev.ID != lastID+1 {
				t.Errorf("event %s has id %d after %d, want %d", ev.Type, ev.ID, lastID, lastID+1)
			}
			lastID = ev.ID
			types = append(types, ev.Type)
			result.Add(ev)
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("Err() = %v after %v", err, types)
		}
		if result.Text != "[dev] You said: hello from the Go SDK" {
			t.Errorf("text = %q", result.Text)
		}
		if n := len(types); n < 3 || types[0] != kiln.ChatEventTypeMessageDelta ||
			types[n-2] != kiln.ChatEventTypeUsage || types[n-1] != kiln.ChatEventTypeDone {
			t.Errorf("event types = %v, want message.delta…, usage, done", types)
		}
		if u := result.Usage; u == nil || u.PromptTokens <= 0 || u.CompletionTokens <= 0 ||
			u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("usage = %+v", u)
		}
		if d := result.Done; d == nil || d.FinishReason != kiln.Stop || d.Provider != "dev" ||
			d.Model != "default" || d.Id == "" || len(d.Attempts) == 0 {
			t.Errorf("done = %+v, want finish stop from dev", d)
		}
		if stream.Next() {
			t.Error("Next() = true after done")
		}
	})

	t.Run("ServerToolLoop", func(t *testing.T) {
		stream, err := client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{
			Messages: user("use calculator 2+3*4"), ServerTools: &[]string{"calculator"},
		})
		if err != nil {
			t.Fatal(err)
		}
		result, err := stream.Collect()
		if err != nil {
			t.Fatal(err)
		}
		if len(result.ToolCalls) != 1 || result.ToolCalls[0].Name != "calculator" ||
			result.ToolCalls[0].Executor != kiln.ToolExecutorServer {
			t.Fatalf("tool calls = %+v, want one server calculator call", result.ToolCalls)
		}
		call := result.ToolCalls[0]
		if len(result.ToolResults) != 1 || result.ToolResults[0].ToolCallId != call.Id ||
			result.ToolResults[0].Content != "14" || result.ToolResults[0].IsError {
			t.Fatalf("tool results = %+v, want 14 for %s", result.ToolResults, call.Id)
		}
		if result.Done == nil || result.Done.FinishReason != kiln.Stop || !strings.Contains(result.Text, "14") {
			t.Errorf("text %q, done %+v: want the answer with 14, finish stop", result.Text, result.Done)
		}
		if result.Message().ToolCalls != nil {
			t.Errorf("Message() has tool calls %+v, want none (the server ran them)", result.Message().ToolCalls)
		}
	})

	t.Run("ClientTool", func(t *testing.T) {
		tools := []kiln.ToolDefinition{{Name: "get_weather", Parameters: map[string]any{
			"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"},
		}}}
		messages := user("Please call get_weather: Paris")
		stream, err := client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{Messages: messages, Tools: &tools})
		if err != nil {
			t.Fatal(err)
		}
		var result kiln.ChatStreamResult
		deltas := 0
		for stream.Next() {
			if stream.Event().ToolCallDelta != nil {
				deltas++
			}
			result.Add(stream.Event())
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if deltas == 0 || len(result.ToolCalls) != 1 || result.ToolCalls[0].Executor != kiln.ToolExecutorClient ||
			result.ToolCalls[0].Name != "get_weather" || result.ToolCalls[0].Arguments != `{"city":"Paris"}` {
			t.Fatalf("%d deltas, tool calls %+v: want a client get_weather call for Paris", deltas, result.ToolCalls)
		}
		if result.Done == nil || result.Done.FinishReason != kiln.ToolCalls {
			t.Fatalf("done = %+v, want finish_reason tool_calls", result.Done)
		}

		// Answer the call; the model answers with its result.
		reply := result.Message()
		if reply.ToolCalls == nil || len(*reply.ToolCalls) != 1 {
			t.Fatalf("Message() = %+v, want the tool call", reply)
		}
		call := (*reply.ToolCalls)[0]
		sunny := "sunny, 21 °C"
		messages = append(messages, reply, kiln.ChatMessage{Role: kiln.ChatRoleTool, ToolCallId: &call.Id, Name: &call.Name, Content: &sunny})
		stream, err = client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{Messages: messages, Tools: &tools})
		if err != nil {
			t.Fatal(err)
		}
		answer, err := stream.Collect()
		if err != nil {
			t.Fatal(err)
		}
		if answer.Text != "[dev] The tool get_weather returned: sunny, 21 °C" || answer.Done.FinishReason != kiln.Stop {
			t.Errorf("answer %q (done %+v)", answer.Text, answer.Done)
		}
	})

	t.Run("UnknownModel", func(t *testing.T) {
		stream, err := client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{Model: new("no-such-model"), Messages: user("hi")})
		if stream != nil {
			stream.Close()
			t.Fatal("got a stream for an unknown model")
		}
		var problem *kiln.ProblemError
		if !errors.As(err, &problem) || problem.Code != kiln.NotFound || problem.Status != http.StatusNotFound || problem.RequestId == "" {
			t.Fatalf("error = %v (%T), want a not_found problem (404) with a request id", err, err)
		}
	})

	t.Run("CancelMidStream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		stream, err := client.StreamChatCompletion(ctx, nil, kiln.ChatRequest{Messages: user("one two three four five six seven")})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Next() || stream.Event().Delta == nil {
			t.Fatalf("first event = %+v (%v), want a message.delta", stream.Event(), stream.Err())
		}
		cancel()
		if stream.Next() {
			t.Fatalf("Next() = true after the context was cancelled: %+v", stream.Event())
		}
		if !errors.Is(stream.Err(), context.Canceled) {
			t.Errorf("Err() = %v, want context.Canceled", stream.Err())
		}
	})
}

// chatClient signs a new user up and returns a client that sends a new API key with the
// chat scope.
func chatClient(t *testing.T, baseURL string) *kiln.ClientWithResponses {
	t.Helper()
	anonymous, err := kiln.NewClientWithResponses(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	email := fmt.Sprintf("sdk-go-stream-%d-%s@example.com", time.Now().UnixNano(), strings.ToLower(rand.Text()[:8]))
	signup, err := kiln.CheckResponse(anonymous.SignUpWithResponse(t.Context(),
		kiln.SignUpRequest{Email: email, Password: "correct horse battery staple 9", Name: "SDK Go stream"}))
	if err != nil {
		t.Fatal(err)
	}
	key := createKey(t, anonymous, kiln.WithBearer(signup.JSON201.AccessToken), kiln.ScopeChat)
	client, err := kiln.NewClientWithResponses(baseURL, kiln.WithRequestEditorFn(kiln.WithBearer(key.Key)))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// doerFunc is an HttpRequestDoer.
type doerFunc func(*http.Request) (*http.Response, error)

func (f doerFunc) Do(req *http.Request) (*http.Response, error) { return f(req) }

// fakeStream returns a client whose every request is answered with status, contentType
// and body, read one byte at a time so that every line and event arrives split.
func fakeStream(t *testing.T, status int, contentType, body string) *kiln.Client {
	t.Helper()
	client, err := kiln.NewClient("http://kiln.invalid", kiln.WithHTTPClient(doerFunc(func(req *http.Request) (*http.Response, error) {
		if req.Header.Get("Accept") != "text/event-stream" {
			t.Errorf("Accept = %q, want text/event-stream", req.Header.Get("Accept"))
		}
		h := http.Header{"Content-Type": {contentType}, kiln.RequestIDHeader: {"req-7"}}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(iotest.OneByteReader(strings.NewReader(body))), Request: req}, nil
	})))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

const sseFull = "\uFEFF: heartbeat\n\n" +
	"id: 1\nevent: message.delta\ndata: {\"text\":\"[dev] \"}\n\n" +
	": heartbeat\n\n" +
	"id: 2\nevent: message.delta\ndata: {\"text\":\"hi\"}\n\n" +
	"id: 3\nevent: tool_call.delta\ndata: {\"index\":0,\"id\":\"c1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}\n\n" +
	"id: 4\nevent: tool_call.delta\ndata: {\"index\":0,\"arguments\":\"1}\"}\n\n" +
	"id: 5\nevent: tool_call\ndata: {\"index\":0,\"id\":\"c1\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\",\"executor\":\"client\"}\n\n" +
	"id: 6\nevent: something.new\ndata: {\"x\":1}\n\n" +
	"id: 7\nevent: usage\ndata: {\"prompt_tokens\":3,\"completion_tokens\":4,\"cached_tokens\":0,\"total_tokens\":7,\"cost_usd\":0}\n\n" +
	"id: 8\nevent: done\ndata: {\"id\":\"r1\",\"model\":\"default\",\"provider\":\"dev\",\"provider_model\":\"dev-echo\",\"finish_reason\":\"tool_calls\",\"attempts\":[{\"target\":\"dev/dev-echo\"}]}\n\n"

// TestChatStreamDecoding reads canned streams: every line ending the format allows,
// chunks split at every byte, heartbeats, and each way a stream ends.
func TestChatStreamDecoding(t *testing.T) {
	crlf := strings.ReplaceAll(sseFull, "\n", "\r\n")
	for name, body := range map[string]string{"LF": sseFull, "CRLF": crlf, "CR": strings.ReplaceAll(sseFull, "\n", "\r")} {
		t.Run("Full"+name, func(t *testing.T) {
			stream, err := fakeStream(t, 200, "text/event-stream; charset=utf-8", body).
				StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []int
			var types []kiln.ChatEventType
			var result kiln.ChatStreamResult
			for stream.Next() {
				ev := stream.Event()
				ids, types = append(ids, ev.ID), append(types, ev.Type)
				result.Add(ev)
				if ev.Type == "something.new" && string(ev.Data) != `{"x":1}` {
					t.Errorf("unknown event data = %s", ev.Data)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, []int{1, 2, 3, 4, 5, 6, 7, 8}) {
				t.Errorf("ids = %v (types %v)", ids, types)
			}
			if result.Text != "[dev] hi" || len(result.ToolCalls) != 1 || result.ToolCalls[0].Arguments != `{"a":1}` ||
				result.Usage == nil || result.Usage.TotalTokens != 7 || result.Done == nil || result.Done.FinishReason != kiln.ToolCalls {
				t.Errorf("result = %+v", result)
			}
			msg := result.Message()
			if msg.Role != kiln.ChatRoleAssistant || *msg.Content != "[dev] hi" || len(*msg.ToolCalls) != 1 || (*msg.ToolCalls)[0].Id != "c1" {
				t.Errorf("Message() = %+v", msg)
			}
		})
	}

	endsWith := func(t *testing.T, body string) error {
		t.Helper()
		stream, err := fakeStream(t, 200, "text/event-stream", body).StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		result, err := stream.Collect()
		if result.Text != "a" {
			t.Errorf("text before the end = %q, want a", result.Text)
		}
		return err
	}
	first := "id: 1\nevent: message.delta\ndata: {\"text\":\"a\"}\n\n"

	t.Run("Citations", func(t *testing.T) {
		body := "id: 1\nevent: citations\ndata: {\"citations\":[{\"n\":1,\"knowledge_base_id\":\"0190a0c0-0000-7000-8000-000000000001\"," +
			"\"document_id\":\"0190a0c0-0000-7000-8000-000000000002\",\"chunk_id\":\"0190a0c0-0000-7000-8000-000000000003\",\"title\":\"Reset\",\"snippet\":\"one <mark>hour</mark>\"}]}\n\n" +
			first + "id: 2\nevent: done\ndata: {\"id\":\"r1\",\"model\":\"default\",\"provider\":\"dev\",\"provider_model\":\"dev-echo\",\"finish_reason\":\"stop\",\"attempts\":[]}\n\n"
		body = strings.Replace(body, "id: 1\nevent: message.delta", "id: 2\nevent: message.delta", 1)
		body = strings.Replace(body, "id: 2\nevent: done", "id: 3\nevent: done", 1)
		stream, err := fakeStream(t, 200, "text/event-stream", body).StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		result, err := stream.Collect()
		if err != nil || len(result.Citations) != 1 || result.Citations[0].N != 1 || result.Citations[0].Title != "Reset" || result.Text != "a" {
			t.Errorf("result = %+v, %v", result, err)
		}
	})
	t.Run("ErrorEvent", func(t *testing.T) {
		err := endsWith(t, first+"id: 2\r\nevent: error\r\ndata: {\"type\":\"urn:kiln:problem:upstream_error\",\"title\":\"Upstream error\",\"status\":502,\"code\":\"upstream_error\",\"detail\":\"boom\",\"request_id\":\"req-9\"}\r\n\r\n")
		var problem *kiln.ProblemError
		if !errors.As(err, &problem) || problem.Code != kiln.UpstreamError || problem.Status != 502 || problem.RequestId != "req-9" {
			t.Errorf("error = %v (%T), want the upstream_error problem", err, err)
		}
	})
	t.Run("Shutdown", func(t *testing.T) {
		err := endsWith(t, first+"id: 2\nevent: shutdown\ndata: {\"reason\":\"bye\"}\n\n")
		if !errors.Is(err, kiln.ErrStreamShutdown) || !strings.Contains(err.Error(), "bye") {
			t.Errorf("error = %v, want ErrStreamShutdown", err)
		}
	})
	t.Run("CutBeforeDone", func(t *testing.T) {
		if err := endsWith(t, first+"id: 2\nevent: message.delta\ndata: {\"te"); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
		}
		if err := endsWith(t, first); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("error = %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		huge := first + "id: 2\nevent: message.delta\ndata: {\"text\":\"" + strings.Repeat("x", kiln.MaxChatEventBytes) + "\"}\n\n"
		if err := endsWith(t, huge); !errors.Is(err, kiln.ErrChatEventTooLarge) {
			t.Errorf("error = %v, want ErrChatEventTooLarge", err)
		}
		manyLines := first + "id: 2\nevent: message.delta\n" + strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 9) + "\n"
		if err := endsWith(t, manyLines); !errors.Is(err, kiln.ErrChatEventTooLarge) {
			t.Errorf("error = %v, want ErrChatEventTooLarge", err)
		}
	})
	t.Run("BadData", func(t *testing.T) {
		if err := endsWith(t, first+"id: 2\nevent: usage\ndata: [1]\n\n"); err == nil || !strings.Contains(err.Error(), "usage event 2") {
			t.Errorf("error = %v, want a decoding error", err)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		const problemBody = `{"type":"urn:kiln:problem:permission_denied","title":"Forbidden","status":403,"code":"permission_denied","request_id":"req-7"}`
		stream, err := fakeStream(t, 403, "application/problem+json", problemBody).StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{})
		var problem *kiln.ProblemError
		if stream != nil || !errors.As(err, &problem) || problem.Code != kiln.PermissionDenied || problem.Status != 403 {
			t.Errorf("StreamChatCompletion = %v, %v, want the permission_denied problem", stream, err)
		}
	})
	t.Run("NotAStream", func(t *testing.T) {
		stream, err := fakeStream(t, 200, "application/json", `{}`).StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{})
		if stream != nil || err == nil || !strings.Contains(err.Error(), "text/event-stream") {
			t.Errorf("StreamChatCompletion = %v, %v, want an error naming text/event-stream", stream, err)
		}
	})
}
