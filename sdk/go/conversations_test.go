package kiln_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// TestE2EConversations drives a conversation through the SDK against the real server's
// offline dev provider: a blocking message, a streamed one whose connection is dropped
// after 3 events and resumed with ResumeReply, a client tool answered with
// StreamToolResults, the history, the Markdown export, feedback and cancel.
func TestE2EConversations(t *testing.T) {
	baseURL := startKiln(t)
	client := chatClient(t, baseURL)
	ctx := t.Context()

	title := "SDK Go conversation"
	created, err := kiln.CheckResponse(client.CreateConversationWithResponse(ctx, nil, kiln.CreateConversationRequest{Title: &title}))
	if err != nil {
		t.Fatal(err)
	}
	conv := created.JSON201
	if created.StatusCode() != http.StatusCreated || conv == nil || conv.Title == nil || *conv.Title != title {
		t.Fatalf("create conversation = %d %s, want 201 with the title", created.StatusCode(), created.Body)
	}

	t.Run("BlockingMessage", func(t *testing.T) {
		text := "hello from the Go SDK"
		resp, err := kiln.CheckResponse(client.CreateConversationMessageWithResponse(ctx, conv.Id, nil, kiln.ConversationMessageRequest{Content: &text}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil || len(resp.JSON200.Messages) != 2 {
			t.Fatalf("send = %d %s, want the two messages added", resp.StatusCode(), resp.Body)
		}
		user, reply := resp.JSON200.Messages[0], resp.JSON200.Messages[1]
		if user.Role != kiln.ChatRoleUser || user.Content == nil || *user.Content != text || user.ConversationId != conv.Id {
			t.Errorf("first message = %+v, want the user's %q", user, text)
		}
		if reply.Role != kiln.ChatRoleAssistant || reply.Status != kiln.MessageCompleted || reply.Content == nil ||
			*reply.Content != "[dev] You said: "+text {
			t.Errorf("reply = %+v, want the completed dev answer", reply)
		}
		if h := resp.Headers200; h == nil || h.KilnMessageId == nil || *h.KilnMessageId != reply.Id {
			t.Errorf("%s header = %+v, want the reply's id %s", kiln.MessageIDHeader, h, reply.Id)
		}
	})

	const streamed = "one two three four five six seven eight nine ten"
	var replyID kiln.MessageID
	t.Run("StreamDropAndResume", func(t *testing.T) {
		stream, err := client.StreamConversationMessage(ctx, conv.Id, nil, kiln.ConversationMessageRequest{Content: new(streamed)})
		if err != nil {
			t.Fatal(err)
		}
		replyID = stream.MessageID()
		if replyID == (kiln.MessageID{}) {
			t.Fatal("MessageID() is zero: the Kiln-Message-Id header was not read")
		}
		var before []kiln.ReplyEvent
		for len(before) < 3 && stream.Next() {
			before = append(before, stream.Event())
		}
		if len(before) != 3 {
			t.Fatalf("read %d events before the drop (%v), want 3", len(before), stream.Err())
		}
		if s := before[0].Started; before[0].Type != kiln.ChatEventTypeReplyStarted || s == nil ||
			s.MessageId != replyID || s.ConversationId != conv.Id || len(s.InputMessageIds) != 1 {
			t.Errorf("first event = %s %s, want reply.started naming the reply %s", before[0].Type, before[0].Data, replyID)
		}
		last := stream.LastEventID()
		if last != before[2].ID {
			t.Errorf("LastEventID() = %d, want the third event's id %d", last, before[2].ID)
		}
		_ = stream.Close() // the connection drops; the reply goes on
		if stream.Next() {
			t.Fatal("Next() = true after Close")
		}

		resumed, err := client.ResumeReply(ctx, conv.Id, replyID, last, nil)
		if err != nil {
			t.Fatal(err)
		}
		after := readAll(t, resumed)
		if got := resumed.LastEventID(); len(after) == 0 || got != after[len(after)-1].ID {
			t.Errorf("LastEventID() after the resumed stream = %d, want its last event's id", got)
		}

		full, err := client.ResumeReply(ctx, conv.Id, replyID, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		all := readAll(t, full)
		seen := append(slices.Clone(before), after...)
		t.Logf("%d events before the drop, %d after resuming from id %d, %d in the full replay", len(before), len(after), last, len(all))
		if len(seen) != len(all) {
			t.Errorf("%d events before the drop + %d after = %d, want the %d of the full replay", len(before), len(after), len(seen), len(all))
		}
		for i := range min(len(seen), len(all)) {
			if seen[i].ID != all[i].ID || seen[i].Type != all[i].Type || !bytes.Equal(seen[i].Data, all[i].Data) {
				t.Errorf("event %d: seen %d %s %s, replayed %d %s %s", i, seen[i].ID, seen[i].Type, seen[i].Data, all[i].ID, all[i].Type, all[i].Data)
			}
		}
		for i, ev := range all {
			if ev.ID != i+1 {
				t.Errorf("replayed event %d has id %d, want %d", i, ev.ID, i+1)
			}
		}

		var result kiln.ChatStreamResult
		for _, ev := range all {
			result.Add(ev.ChatEvent)
		}
		if result.Text != "[dev] You said: "+streamed {
			t.Errorf("text = %q", result.Text)
		}
		if d := result.Done; d == nil || d.Id != replyID.String() || d.FinishReason != kiln.Stop || all[len(all)-1].Type != kiln.ChatEventTypeDone {
			t.Errorf("done = %+v, want the last event, finish stop, id %s", d, replyID)
		}
	})
	if replyID == (kiln.MessageID{}) {
		t.FailNow()
	}

	t.Run("ListMessages", func(t *testing.T) {
		resp, err := kiln.CheckResponse(client.ListConversationMessagesWithResponse(ctx, conv.Id, nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("list = %d %s", resp.StatusCode(), resp.Body)
		}
		var roles []kiln.ChatRole
		for _, m := range resp.JSON200.Data {
			roles = append(roles, m.Role)
		}
		want := []kiln.ChatRole{kiln.ChatRoleUser, kiln.ChatRoleAssistant, kiln.ChatRoleUser, kiln.ChatRoleAssistant}
		if !slices.Equal(roles, want) {
			t.Fatalf("roles = %v, want %v", roles, want)
		}
		reply := resp.JSON200.Data[3]
		if reply.Id != replyID || reply.Status != kiln.MessageCompleted || reply.Content == nil || *reply.Content != "[dev] You said: "+streamed {
			t.Errorf("last message = %+v, want the completed streamed reply %s", reply, replyID)
		}
	})

	t.Run("ExportMarkdown", func(t *testing.T) {
		format := kiln.Markdown
		resp, err := kiln.CheckResponse(client.ExportConversationWithResponse(ctx, conv.Id, &kiln.ExportConversationParams{Format: &format}))
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.HTTPResponse.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/markdown") {
			t.Errorf("Content-Type = %q, want text/markdown", ct)
		}
		if md := string(resp.Body); !strings.Contains(md, streamed) || !strings.Contains(md, "hello from the Go SDK") {
			t.Errorf("export does not hold the user's messages:\n%s", md)
		}
	})

	t.Run("FeedbackUp", func(t *testing.T) {
		comment := "resumed fine"
		resp, err := kiln.CheckResponse(client.SetMessageFeedbackWithResponse(ctx, replyID, nil, kiln.MessageFeedbackRequest{Rating: kiln.Up, Comment: &comment}))
		if err != nil {
			t.Fatal(err)
		}
		if f := resp.JSON200; f == nil || f.Rating != kiln.Up || f.MessageId != replyID || f.Comment == nil || *f.Comment != comment {
			t.Errorf("feedback = %d %s, want rating up on %s", resp.StatusCode(), resp.Body, replyID)
		}
	})

	t.Run("CancelFinishedReply", func(t *testing.T) {
		resp, err := kiln.CheckResponse(client.CancelMessageWithResponse(ctx, conv.Id, replyID, nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != http.StatusAccepted || resp.JSON202 == nil || resp.JSON202.Id != replyID ||
			resp.JSON202.Status != kiln.MessageCompleted {
			t.Errorf("cancel = %d %s, want 202 with status completed", resp.StatusCode(), resp.Body)
		}
	})

	t.Run("ClientToolThenStreamToolResults", func(t *testing.T) {
		tools := []kiln.ToolDefinition{{Name: "get_weather", Parameters: map[string]any{
			"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"},
		}}}
		options := &kiln.ReplyOptions{Tools: &tools}
		stream, err := client.StreamConversationMessage(ctx, conv.Id, nil, kiln.ConversationMessageRequest{
			Content: new("Please call get_weather: Paris"), Options: options,
		})
		if err != nil {
			t.Fatal(err)
		}
		result, err := stream.Collect()
		if err != nil {
			t.Fatal(err)
		}
		if len(result.ToolCalls) != 1 || result.ToolCalls[0].Name != "get_weather" || result.Done == nil || result.Done.FinishReason != kiln.ToolCalls {
			t.Fatalf("tool calls %+v, done %+v: want one get_weather call, finish tool_calls", result.ToolCalls, result.Done)
		}
		answer, err := client.StreamToolResults(ctx, conv.Id, nil, kiln.ToolResultsRequest{
			Results: []kiln.ToolResult{{ToolCallId: result.ToolCalls[0].Id, Content: "sunny, 21 °C"}}, Options: options,
		})
		if err != nil {
			t.Fatal(err)
		}
		first := answer.MessageID()
		final, err := answer.Collect()
		if err != nil {
			t.Fatal(err)
		}
		if final.Text != "[dev] The tool get_weather returned: sunny, 21 °C" || final.Done.Id != first.String() || first == stream.MessageID() {
			t.Errorf("answer %q (done %+v, message %s): want the tool's result in a new reply", final.Text, final.Done, first)
		}
	})

	t.Run("ResumeUnknownReply", func(t *testing.T) {
		stream, err := client.ResumeReply(ctx, conv.Id, conv.Id, 0, nil) // the conversation's id names no message
		var problem *kiln.ProblemError
		if stream != nil || !errors.As(err, &problem) || problem.Code != kiln.NotFound {
			t.Fatalf("ResumeReply = %v, %v, want a not_found problem", stream, err)
		}
	})
}

// readAll reads a reply stream to its end, which must be its done event.
func readAll(t *testing.T, stream *kiln.ReplyStream) []kiln.ReplyEvent {
	t.Helper()
	defer stream.Close()
	var events []kiln.ReplyEvent
	for stream.Next() {
		events = append(events, stream.Event())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream ended with %v after %d events", err, len(events))
	}
	return events
}

// TestReplyStreamDecoding reads canned reply streams: the message id from the header or
// reply.started, what ResumeReply sends, and LastEventID when a stream is cut inside an
// event.
func TestReplyStreamDecoding(t *testing.T) {
	const (
		convID  = "0193a3c0-0000-7000-8000-000000000001"
		replyID = "0193a3c0-0000-7000-8000-000000000002"
	)
	started := "id: 1\nevent: reply.started\ndata: {\"conversation_id\":\"" + convID + "\",\"message_id\":\"" + replyID +
		"\",\"input_message_ids\":[\"0193a3c0-0000-7000-8000-000000000003\"]}\n\n"
	delta := "id: 2\nevent: message.delta\ndata: {\"text\":\"[dev] \"}\n\n"
	var conv, reply kiln.MessageID
	if err := conv.UnmarshalText([]byte(convID)); err != nil {
		t.Fatal(err)
	}
	if err := reply.UnmarshalText([]byte(replyID)); err != nil {
		t.Fatal(err)
	}

	// serve answers every request with body as an event stream, with header set, and
	// hands the request to check.
	serve := func(t *testing.T, header http.Header, body string, check func(*http.Request)) *kiln.Client {
		t.Helper()
		client, err := kiln.NewClient("http://kiln.invalid", kiln.WithHTTPClient(doerFunc(func(req *http.Request) (*http.Response, error) {
			if req.Header.Get("Accept") != "text/event-stream" {
				t.Errorf("Accept = %q, want text/event-stream", req.Header.Get("Accept"))
			}
			check(req)
			h := header.Clone()
			h.Set("Content-Type", "text/event-stream")
			return &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(iotest.OneByteReader(strings.NewReader(body))), Request: req}, nil
		})))
		if err != nil {
			t.Fatal(err)
		}
		return client
	}

	t.Run("MessageIDFromHeader", func(t *testing.T) {
		client := serve(t, http.Header{kiln.MessageIDHeader: {replyID}}, started, func(req *http.Request) {
			if !strings.Contains(req.URL.Path, "/v1/conversations/"+convID+"/messages") || req.Method != http.MethodPost {
				t.Errorf("request %s %s", req.Method, req.URL)
			}
			body, _ := io.ReadAll(req.Body)
			if !bytes.Contains(body, []byte(`"stream":true`)) {
				t.Errorf("body %s, want stream true", body)
			}
		})
		stream, err := client.StreamConversationMessage(t.Context(), conv, nil, kiln.ConversationMessageRequest{Content: new("hi")})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if stream.MessageID() != reply || stream.LastEventID() != 0 {
			t.Errorf("MessageID() = %s, LastEventID() = %d before the first event, want %s, 0", stream.MessageID(), stream.LastEventID(), reply)
		}
	})

	t.Run("BadMessageIDHeader", func(t *testing.T) {
		client := serve(t, http.Header{kiln.MessageIDHeader: {"not-a-uuid"}}, started, func(*http.Request) {})
		stream, err := client.StreamConversationMessage(t.Context(), conv, nil, kiln.ConversationMessageRequest{Content: new("hi")})
		if stream != nil || err == nil || !strings.Contains(err.Error(), kiln.MessageIDHeader) {
			t.Errorf("StreamConversationMessage = %v, %v, want an error naming the header", stream, err)
		}
	})

	t.Run("MessageIDFromReplyStarted", func(t *testing.T) {
		client := serve(t, http.Header{}, started+delta, func(*http.Request) {})
		stream, err := client.StreamConversationMessage(t.Context(), conv, nil, kiln.ConversationMessageRequest{Content: new("hi")})
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if !stream.Next() || stream.Event().Started == nil || stream.MessageID() != reply {
			t.Fatalf("first event %+v, MessageID() = %s: want reply.started naming %s", stream.Event(), stream.MessageID(), reply)
		}
	})

	t.Run("CutInsideAnEvent", func(t *testing.T) {
		cut := started + delta + "id: 3\nevent: message.delta\ndata: {\"te"
		client := serve(t, http.Header{}, cut, func(req *http.Request) {
			if got := req.Header.Get("Last-Event-ID"); got != "" || req.URL.Query().Has("after") {
				t.Errorf("Last-Event-ID %q, query %q: want neither from 0", got, req.URL.RawQuery)
			}
		})
		stream, err := client.ResumeReply(t.Context(), conv, reply, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int
		for stream.Next() {
			ids = append(ids, stream.Event().ID)
		}
		if !errors.Is(stream.Err(), io.ErrUnexpectedEOF) || !slices.Equal(ids, []int{1, 2}) {
			t.Errorf("ids %v, Err() = %v: want 1, 2 then io.ErrUnexpectedEOF", ids, stream.Err())
		}
		if stream.LastEventID() != 2 {
			t.Errorf("LastEventID() = %d, want 2: event 3 never arrived whole", stream.LastEventID())
		}
	})

	t.Run("ResumeSendsLastEventID", func(t *testing.T) {
		org := conv // any id
		after := int64(9)
		client := serve(t, http.Header{}, "", func(req *http.Request) {
			if req.URL.Path != "/v1/conversations/"+convID+"/messages/"+replyID+"/events" || req.Method != http.MethodGet {
				t.Errorf("request %s %s", req.Method, req.URL)
			}
			if got := req.Header.Get("Last-Event-ID"); got != "2" || req.URL.Query().Has("after") {
				t.Errorf("Last-Event-ID %q, query %q: want 2 and no after", got, req.URL.RawQuery)
			}
			if got := req.Header.Get("Kiln-Org"); got != convID {
				t.Errorf("Kiln-Org = %q, want the params' %s", got, convID)
			}
		})
		params := &kiln.StreamMessageEventsParams{KilnOrg: &org, After: &after}
		stream, err := client.ResumeReply(t.Context(), conv, reply, 2, params)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		if stream.MessageID() != reply || stream.LastEventID() != 2 || *params.After != 9 {
			t.Errorf("MessageID() = %s, LastEventID() = %d, params.After = %d: want %s, 2 and the params untouched",
				stream.MessageID(), stream.LastEventID(), *params.After, reply)
		}
		if stream.Next() || !errors.Is(stream.Err(), io.ErrUnexpectedEOF) || stream.LastEventID() != 2 {
			t.Errorf("an empty stream: Next, Err() = %v, LastEventID() = %d, want io.ErrUnexpectedEOF and 2", stream.Err(), stream.LastEventID())
		}
		if _, err := client.ResumeReply(t.Context(), conv, reply, -1, nil); err == nil {
			t.Error("ResumeReply from -1: no error")
		}
	})
}
