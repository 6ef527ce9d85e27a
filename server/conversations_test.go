package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/streams"
)

// convFixture is one server for the conversation tests: the dev model behind "default",
// and upstreams that hang ("slow") or wait for a gate ("gated") to test a reply that
// outlives its connection.
type convFixture struct {
	b        *bundle
	ts       *httptest.Server
	alice    string // a user token
	bob      string // another user of another org
	key      string // an API key of alice's org, scope chat
	gate     chan struct{}
	titled   chan uuid.UUID
	upstream *fakeUpstream // "gated"
}

func newConvFixture(t *testing.T) *convFixture {
	t.Helper()
	f := &convFixture{gate: make(chan struct{}), titled: make(chan uuid.UUID, 16)}
	slow := newUpstream(t, hangAfter("Hel", nil))
	f.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		send := startEvents(w)
		send(upstreamChunk(`{"role":"assistant","content":"Hel"}`, "null"))
		select {
		case <-f.gate:
		case <-r.Context().Done():
			return
		}
		send(upstreamChunk(`{"content":"lo after the gate"}`, "null"))
		send(upstreamChunk(`{}`, `"stop"`))
		send(`{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1700000000,"model":"up-model","choices":[],"usage":` + upstreamUsage + `}`)
		send("[DONE]")
	})
	rejecting := newUpstream(t, failWith(400))
	providers := devProviders(map[string]llm.Provider{
		"slow": slow.provider(t, "slow"), "gated": f.upstream.provider(t, "gated"), "rejecting": rejecting.provider(t, "rejecting"),
	})
	aliases := map[string][]llm.Target{
		"default":   {devTarget},
		"slow":      {{Provider: "slow", Model: "m"}},
		"gated":     {{Provider: "gated", Model: "m"}},
		"rejecting": {{Provider: "rejecting", Model: "m"}},
	}
	f.b = setup(t, withGateway(t, providers, aliases))
	f.b.srv.conv.Service.TitleJob = func(_ context.Context, _ *db.Queries, _, conversation uuid.UUID) error {
		f.titled <- conversation
		return nil
	}
	f.alice = f.b.signUp(t, "alice@example.com").AccessToken
	f.bob = f.b.signUp(t, "bob@example.com").AccessToken
	f.key = f.b.createKey(t, f.alice, []string{"chat"}).Key
	f.ts = httptest.NewServer(f.b.srv)
	t.Cleanup(f.ts.Close)
	return f
}

func (f *convFixture) create(t *testing.T, credential string, body map[string]any) api.Conversation {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	var c api.Conversation
	wantStatus(t, f.b.call(t, "POST", "/v1/conversations", credential, body, &c), 201)
	return c
}

func (f *convFixture) send(t *testing.T, credential string, conv uuid.UUID, body map[string]any) api.ConversationReply {
	t.Helper()
	var out api.ConversationReply
	wantStatus(t, f.b.call(t, "POST", "/v1/conversations/"+conv.String()+"/messages", credential, body, &out), 200)
	return out
}

func (f *convFixture) messages(t *testing.T, credential string, conv uuid.UUID) []api.ConversationMessage {
	t.Helper()
	var out api.ConversationMessageList
	wantStatus(t, f.b.call(t, "GET", "/v1/conversations/"+conv.String()+"/messages?limit=100", credential, nil, &out), 200)
	return out.Data
}

// events attaches to a reply's events over the live server, with header pairs.
func (f *convFixture) events(t *testing.T, credential string, conv uuid.UUID, msg string, header ...string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	return openEvents(t, f.ts, credential, "/v1/conversations/"+conv.String()+"/messages/"+msg+"/events", header...)
}

func roles(msgs []api.ConversationMessage) string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.Role) + ":" + string(m.Status)
	}
	return strings.Join(out, " ")
}

// waitMessage polls a message until cond holds.
func (f *convFixture) waitMessage(t *testing.T, credential string, conv uuid.UUID, id string, cond func(api.ConversationMessage) bool) api.ConversationMessage {
	t.Helper()
	var got api.ConversationMessage
	waitFor(t, "message "+id, func() bool {
		for _, m := range f.messages(t, credential, conv) {
			if m.Id.String() == id {
				got = m
				return cond(m)
			}
		}
		return false
	})
	return got
}

func TestConversations(t *testing.T) {
	t.Parallel()
	f := newConvFixture(t)

	t.Run("CRUD", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"metadata": map[string]string{"app": "web"}})
		if c.Title != nil || c.Metadata["app"] != "web" || c.Model != nil {
			t.Fatalf("created %+v", c)
		}
		var got api.Conversation
		wantStatus(t, f.b.call(t, "PATCH", "/v1/conversations/"+c.Id.String(), f.alice, map[string]any{"title": "Kiln 100% _done_"}, &got), 200)
		if deref(got.Title) != "Kiln 100% _done_" || got.Metadata["app"] != "web" {
			t.Fatalf("updated %+v", got)
		}
		other := f.create(t, f.alice, map[string]any{"title": "Kiln 100 percent"})
		var list api.ConversationList
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations?q=100%25", f.alice, nil, &list), 200)
		if len(list.Data) != 1 || list.Data[0].Id != c.Id {
			t.Errorf("search 100%%: %+v", list.Data)
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations?limit=1", f.alice, nil, &list), 200)
		if len(list.Data) != 1 || list.Data[0].Id != other.Id || list.NextCursor == nil {
			t.Fatalf("first page %+v", list)
		}
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations?limit=1&cursor="+*list.NextCursor, f.alice, nil, &list), 200)
		if len(list.Data) != 1 || list.Data[0].Id != c.Id {
			t.Errorf("second page %+v", list)
		}
		// Another user, even of the same org, sees nothing; the org's API key sees both.
		problemIs(t, f.b.call(t, "GET", "/v1/conversations/"+c.Id.String(), f.bob, nil, nil), 404, errs.NotFound)
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations", f.key, nil, &list), 200)
		if len(list.Data) < 2 {
			t.Errorf("the key sees %d conversations", len(list.Data))
		}
		p := problemIs(t, f.b.call(t, "POST", "/v1/conversations", f.alice, map[string]any{"model": "nope"}, nil), 400, errs.Invalid)
		if !hasField(p, "/model", "alias") {
			t.Errorf("problem %+v", p)
		}
		wantStatus(t, f.b.call(t, "DELETE", "/v1/conversations/"+other.Id.String(), f.alice, nil, nil), 204)
		problemIs(t, f.b.call(t, "GET", "/v1/conversations/"+other.Id.String(), f.alice, nil, nil), 404, errs.NotFound)
		problemIs(t, f.b.call(t, "DELETE", "/v1/conversations/"+other.Id.String(), f.alice, nil, nil), 404, errs.NotFound)
	})

	t.Run("Reply", func(t *testing.T) {
		c := f.create(t, f.key, nil)
		out := f.send(t, f.key, c.Id, map[string]any{"content": "Hello Kiln"})
		if roles(out.Messages) != "user:completed assistant:completed" || deref(out.Messages[1].Content) != "[dev] You said: Hello Kiln" ||
			out.Messages[1].Usage == nil || deref(out.Messages[1].Provider) != "dev" || deref(out.Messages[1].Model) != "default" {
			t.Fatalf("reply %+v", out.Messages)
		}
		select {
		case id := <-f.titled:
			if id != c.Id {
				t.Errorf("titled %s, want %s", id, c.Id)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no title asked after the first exchange")
		}
		f.send(t, f.key, c.Id, map[string]any{"content": "Second"})
		select {
		case id := <-f.titled:
			t.Errorf("titled %s again after the second exchange", id)
		default:
		}
		msgs := f.messages(t, f.key, c.Id)
		if roles(msgs) != "user:completed assistant:completed user:completed assistant:completed" {
			t.Fatalf("messages %s", roles(msgs))
		}
		var page api.ConversationMessageList
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations/"+c.Id.String()+"/messages?limit=3", f.key, nil, &page), 200)
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations/"+c.Id.String()+"/messages?limit=3&cursor="+deref(page.NextCursor), f.key, nil, &page), 200)
		if len(page.Data) != 1 || page.Data[0].Id != msgs[3].Id || page.NextCursor != nil {
			t.Errorf("second page %+v", page)
		}
		// Options are validated before anything is stored.
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.key,
			map[string]any{"content": "x", "options": map[string]any{"model": "nope"}}, nil), 404, errs.NotFound)
		p := problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.key,
			map[string]any{"content": "x", "options": map[string]any{"tool_choice": map[string]any{"mode": "tool"}}}, nil), 400, errs.Invalid)
		if !hasField(p, "/options/tool_choice/name", "required") {
			t.Errorf("problem %+v", p)
		}
		if n := len(f.messages(t, f.key, c.Id)); n != 4 {
			t.Errorf("%d messages after refused requests, want 4", n)
		}
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+uuid.NewString()+"/messages", f.key, map[string]any{"content": "x"}, nil), 404, errs.NotFound)
	})

	t.Run("ServerTools", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		out := f.send(t, f.alice, c.Id, map[string]any{"content": "use calculator for 6*7", "options": map[string]any{"server_tools": []string{"calculator"}}})
		if roles(out.Messages) != "user:completed assistant:completed tool:completed assistant:completed" {
			t.Fatalf("messages %s", roles(out.Messages))
		}
		if calls := out.Messages[1].ToolCalls; calls == nil || (*calls)[0].Name != "calculator" || deref(out.Messages[2].ToolCallId) != (*calls)[0].Id ||
			!strings.Contains(deref(out.Messages[3].Content), "calculator returned") {
			t.Errorf("steps %+v %+v", out.Messages[1], out.Messages[2])
		}
		if got := f.messages(t, f.alice, c.Id); roles(got) != roles(out.Messages) || got[2].Id != out.Messages[2].Id {
			t.Errorf("stored %s", roles(got))
		}
	})

	t.Run("ClientTools", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		tools := []map[string]any{{"name": "get_weather", "parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}}}}
		out := f.send(t, f.alice, c.Id, map[string]any{"content": "call get_weather for Paris", "options": map[string]any{"tools": tools}})
		reply := out.Messages[1]
		if reply.FinishReason == nil || *reply.FinishReason != api.ToolCalls || reply.ToolCalls == nil {
			t.Fatalf("reply %+v", reply)
		}
		callID := (*reply.ToolCalls)[0].Id
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.alice, map[string]any{"content": "hi"}, nil), 409, errs.Conflict)
		p := problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/tool-results", f.alice,
			map[string]any{"results": []map[string]any{{"tool_call_id": "nope", "content": "x"}}}, nil), 400, errs.Invalid)
		if !hasField(p, "/results/0/tool_call_id", "no waiting") || !hasField(p, "/results", callID) {
			t.Errorf("problem %+v", p)
		}
		var next api.ConversationReply
		wantStatus(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/tool-results", f.alice, map[string]any{
			"results": []map[string]any{{"tool_call_id": callID, "content": `{"temp_c":21}`, "is_error": false}},
			"options": map[string]any{"tools": tools},
		}, &next), 200)
		if roles(next.Messages) != "tool:completed assistant:completed" || deref(next.Messages[0].Name) != "get_weather" ||
			!strings.Contains(deref(next.Messages[1].Content), "temp_c") {
			t.Fatalf("after the results %+v", next.Messages)
		}
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/tool-results", f.alice,
			map[string]any{"results": []map[string]any{{"tool_call_id": callID, "content": "again"}}}, nil), 409, errs.Conflict)
	})

	t.Run("Failed", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "rejecting"})
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.alice, map[string]any{"content": "hi"}, nil), 400, errs.UpstreamRejected)
		msgs := f.messages(t, f.alice, c.Id)
		if roles(msgs) != "user:completed assistant:failed" || msgs[1].Error == nil || msgs[1].Error.Code != api.UpstreamRejected {
			t.Fatalf("messages %s %+v", roles(msgs), msgs[1].Error)
		}
		// The failed reply is not sent back to the model: the next message goes through.
		_, stream := postStream(t.Context(), t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice, `{"content":"again","stream":true}`)
		events := drain(t, stream)
		if last := events[len(events)-1]; last.event != "error" || !strings.Contains(last.data, "upstream_rejected") {
			t.Errorf("last event %+v", last)
		}
	})

	t.Run("Feedback", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		out := f.send(t, f.alice, c.Id, map[string]any{"content": "rate me"})
		reply := out.Messages[1].Id.String()
		var fb api.MessageFeedback
		wantStatus(t, f.b.call(t, "POST", "/v1/messages/"+reply+"/feedback", f.alice, map[string]any{"rating": "down", "comment": "meh"}, &fb), 200)
		if fb.Rating != api.Down || deref(fb.Comment) != "meh" {
			t.Errorf("feedback %+v", fb)
		}
		fb = api.MessageFeedback{}
		wantStatus(t, f.b.call(t, "POST", "/v1/messages/"+reply+"/feedback", f.alice, map[string]any{"rating": "up"}, &fb), 200)
		if fb.Rating != api.Up || fb.Comment != nil || fb.MessageId.String() != reply {
			t.Errorf("feedback %+v", fb)
		}
		problemIs(t, f.b.call(t, "POST", "/v1/messages/"+out.Messages[0].Id.String()+"/feedback", f.alice, map[string]any{"rating": "up"}, nil), 409, errs.Conflict)
		problemIs(t, f.b.call(t, "POST", "/v1/messages/"+reply+"/feedback", f.bob, map[string]any{"rating": "up"}, nil), 404, errs.NotFound)
		problemIs(t, f.b.call(t, "POST", "/v1/messages/"+reply+"/feedback", f.alice, map[string]any{"rating": "meh"}, nil), 400, errs.Invalid)
	})

	t.Run("Export", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"title": "Export me"})
		f.send(t, f.alice, c.Id, map[string]any{"content": "Show ```code``` please"})
		var ex api.ConversationExport
		wantStatus(t, f.b.call(t, "GET", "/v1/conversations/"+c.Id.String()+"/export", f.alice, nil, &ex), 200)
		if ex.Conversation.Id != c.Id || len(ex.Messages) != 2 {
			t.Fatalf("export %+v", ex)
		}
		res := f.b.call(t, "GET", "/v1/conversations/"+c.Id.String()+"/export?format=markdown", f.alice, nil, nil)
		wantStatus(t, res, 200)
		md := readAll(res)
		if res.Header.Get("Content-Type") != "text/markdown" || !strings.HasPrefix(md, "# Export me\n") ||
			!strings.Contains(md, "## User") || !strings.Contains(md, "## Assistant (default: dev/dev-echo)") || !strings.Contains(md, "Show ```code``` please") {
			t.Errorf("markdown %s:\n%s", res.Header.Get("Content-Type"), md)
		}
		problemIs(t, f.b.call(t, "GET", "/v1/conversations/"+c.Id.String()+"/export", f.bob, nil, nil), 404, errs.NotFound)
	})

	t.Run("OrgSettings", func(t *testing.T) {
		var me api.Me
		wantStatus(t, f.b.call(t, "GET", "/v1/me", f.alice, nil, &me), 200)
		org := me.PersonalOrgId.String()
		var s api.OrgSettings
		wantStatus(t, f.b.call(t, "GET", "/v1/orgs/"+org+"/settings", f.alice, nil, &s), 200)
		if s.ConversationRetentionDays != nil {
			t.Errorf("default retention %v", *s.ConversationRetentionDays)
		}
		wantStatus(t, f.b.call(t, "PATCH", "/v1/orgs/"+org+"/settings", f.alice, map[string]any{"conversation_retention_days": 30}, &s), 200)
		if deref(s.ConversationRetentionDays) != 30 {
			t.Errorf("retention %v", s.ConversationRetentionDays)
		}
		problemIs(t, f.b.call(t, "PATCH", "/v1/orgs/"+org+"/settings", f.key, map[string]any{"conversation_retention_days": 1}, nil), 403, errs.PermissionDenied)
		problemIs(t, f.b.call(t, "GET", "/v1/orgs/"+org+"/settings", f.bob, nil, nil), 404, errs.NotFound)
		wantStatus(t, f.b.call(t, "PATCH", "/v1/orgs/"+org+"/settings", f.alice, map[string]any{"conversation_retention_days": nil}, &s), 200)
		if s.ConversationRetentionDays != nil {
			t.Errorf("cleared retention %v", *s.ConversationRetentionDays)
		}
	})
}

func TestConversationStreams(t *testing.T) {
	t.Parallel()
	f := newConvFixture(t)

	t.Run("StreamAndResume", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		res, stream := postStream(t.Context(), t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice,
			`{"content":"one two three four five six seven eight","stream":true}`)
		full := drain(t, stream)
		msgID := res.Header.Get("Kiln-Message-Id")
		if len(full) < 10 || full[0].event != "reply.started" || full[len(full)-1].event != "done" {
			t.Fatalf("events %v", kinds(full))
		}
		for i, ev := range full {
			if ev.id != strconv.Itoa(i+1) {
				t.Fatalf("event %d has id %q", i, ev.id)
			}
		}
		started := decodeEvent[api.ReplyStartedEvent](t, full, "reply.started")
		if started.MessageId.String() != msgID || started.ConversationId != c.Id || len(started.InputMessageIds) != 1 {
			t.Errorf("reply.started %+v, header %s", started, msgID)
		}
		if done := decodeEvent[api.ChatDoneEvent](t, full, "done"); done.Id != msgID || done.FinishReason != api.Stop {
			t.Errorf("done %+v", done)
		}
		stored := f.waitMessage(t, f.alice, c.Id, msgID, func(m api.ConversationMessage) bool { return m.Status == api.MessageCompleted })
		if deref(stored.Content) != deltaText(t, full) {
			t.Errorf("stored %q, streamed %q", deref(stored.Content), deltaText(t, full))
		}
		for _, tc := range []struct {
			name   string
			header []string
			from   int
		}{
			{"LastEventID", []string{"Last-Event-ID", "4"}, 4},
			{"All", nil, 0},
			{"AfterTheEnd", []string{"Last-Event-ID", strconv.Itoa(len(full))}, len(full)},
		} {
			_, events := f.events(t, f.alice, c.Id, msgID, tc.header...)
			got := drain(t, events)
			if fmt.Sprint(got) != fmt.Sprint(full[tc.from:]) {
				t.Errorf("%s: got %v\nwant %v", tc.name, got, full[tc.from:])
			}
		}
		// ?after= for clients that cannot set headers.
		req := httptest.NewRequest("GET", "/v1/conversations/"+c.Id.String()+"/messages/"+msgID+"/events?after="+strconv.Itoa(len(full)-1), nil)
		req.Header.Set("Authorization", "Bearer "+f.alice)
		res = f.b.do(t, req)
		if body := readAll(res); !strings.HasPrefix(body, "id: "+strconv.Itoa(len(full))+"\nevent: done\n") {
			t.Errorf("after=: %q", body)
		}
		res, _ = f.events(t, f.bob, c.Id, msgID)
		problemIs(t, res, 404, errs.NotFound)
		res, _ = f.events(t, f.alice, c.Id, started.InputMessageIds[0].String())
		problemIs(t, res, 404, errs.NotFound)
		res, _ = f.events(t, f.alice, c.Id, msgID, "Last-Event-ID", "x")
		problemIs(t, res, 400, errs.Invalid)
		// Past the stream's TTL the events are gone: 410.
		expire(t, f, msgID)
		res, _ = f.events(t, f.alice, c.Id, msgID)
		problemIs(t, res, 410, errs.StreamExpired)
	})

	t.Run("OutlivesTheConnection", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "gated"})
		ctx, cancel := context.WithCancel(t.Context())
		res, stream := postStream(ctx, t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice, `{"content":"hi","stream":true}`)
		msgID := res.Header.Get("Kiln-Message-Id")
		var seen []sseEvent
		for ev := range stream {
			seen = append(seen, ev)
			if ev.event == "message.delta" {
				break
			}
		}
		cancel() // the client goes away mid-reply
		// Another client attaches while the reply still waits for the gate, then it ends.
		_, live := f.events(t, f.alice, c.Id, msgID, "Last-Event-ID", seen[len(seen)-1].id)
		select {
		case f.gate <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatalf("the upstream no longer waits: the reply ended with its connection: %s", roles(f.messages(t, f.alice, c.Id)))
		}
		rest := drain(t, live)
		if text := deltaText(t, append(seen, rest...)); text != "Hello after the gate" {
			t.Errorf("text %q over both connections", text)
		}
		m := f.waitMessage(t, f.alice, c.Id, msgID, func(m api.ConversationMessage) bool { return m.Status != api.MessageInProgress })
		if m.Status != api.MessageCompleted || deref(m.Content) != "Hello after the gate" {
			t.Errorf("stored %s %q", m.Status, deref(m.Content))
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "slow"})
		res, stream := postStream(t.Context(), t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice, `{"content":"hi","stream":true}`)
		msgID := res.Header.Get("Kiln-Message-Id")
		for ev := range stream {
			if ev.event == "message.delta" {
				break
			}
		}
		problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.alice, map[string]any{"content": "meanwhile"}, nil), 409, errs.Conflict)
		var now api.ConversationMessage
		wantStatus(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages/"+msgID+"/cancel", f.alice, nil, &now), 202)
		rest := drain(t, stream)
		if done := decodeEvent[api.ChatDoneEvent](t, rest, "done"); done.FinishReason != api.Cancelled {
			t.Errorf("done %+v", done)
		}
		m := f.waitMessage(t, f.alice, c.Id, msgID, func(m api.ConversationMessage) bool { return m.Status != api.MessageInProgress })
		if m.Status != api.MessageCancelled || deref(m.Content) != "Hel" {
			t.Errorf("stored %s %q", m.Status, deref(m.Content))
		}
		// Finished: cancelling again changes nothing.
		wantStatus(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages/"+msgID+"/cancel", f.alice, nil, &now), 202)
		if now.Status != api.MessageCancelled {
			t.Errorf("status %s", now.Status)
		}
	})

	t.Run("DeleteCancels", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "slow"})
		res, stream := postStream(t.Context(), t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice, `{"content":"hi","stream":true}`)
		for ev := range stream {
			if ev.event == "message.delta" {
				break
			}
		}
		wantStatus(t, f.b.call(t, "DELETE", "/v1/conversations/"+c.Id.String(), f.alice, nil, nil), 204)
		if done := decodeEvent[api.ChatDoneEvent](t, drain(t, stream), "done"); done.FinishReason != api.Cancelled || done.Id != res.Header.Get("Kiln-Message-Id") {
			t.Errorf("done %+v", done)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		ws := dialChat(t, f.ts, f.alice)
		ws.send(`{"type":"conversation.message","data":{"conversation_id":"` + c.Id.String() + `","content":"over the socket"}}`)
		frames := ws.untilEnd()
		if types := frameTypes(frames); types[0] != "reply.started" || types[len(types)-1] != "done" {
			t.Fatalf("frames %v", types)
		}
		if text := frameText(t, frames); text != "[dev] You said: over the socket" {
			t.Errorf("text %q", text)
		}
		ws.send(`{"type":"conversation.message","data":{"conversation_id":"` + c.Id.String() + `"}}`)
		p := ws.readProblem(errs.Invalid)
		if !hasField(p, "/data/content", "content") {
			t.Errorf("problem %+v", p)
		}
		ws.send(`{"type":"conversation.message","data":{"conversation_id":"` + uuid.NewString() + `","content":"x"}}`)
		ws.readProblem(errs.NotFound)
		if got := f.messages(t, f.alice, c.Id); roles(got) != "user:completed assistant:completed" {
			t.Errorf("stored %s", roles(got))
		}
		// A client tool round trip over the socket.
		tools := `"options":{"tools":[{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}`
		ws.send(`{"type":"conversation.message","data":{"conversation_id":"` + c.Id.String() + `","content":"call get_weather for Oslo",` + tools + `}}`)
		frames = ws.untilEnd()
		if d := doneOf(t, frames); d.FinishReason != api.ToolCalls {
			t.Fatalf("done %+v", d)
		}
		var call api.ToolCallEvent
		for _, fr := range frames {
			if fr.Type == "tool_call" {
				if err := json.Unmarshal(fr.Data, &call); err != nil {
					t.Fatal(err)
				}
			}
		}
		ws.send(`{"type":"conversation.tool_results","data":{"conversation_id":"` + c.Id.String() + `","results":[]}}`)
		if p := ws.readProblem(errs.Invalid); !hasField(p, "/data/results", "") {
			t.Errorf("problem %+v", p)
		}
		ws.send(`{"type":"conversation.tool_results","data":{"conversation_id":"` + c.Id.String() + `","results":[{"tool_call_id":"` + call.Id + `","content":"{\"temp_c\":3}"}],` + tools + `}}`)
		if text := frameText(t, ws.untilEnd()); !strings.Contains(text, "temp_c") {
			t.Errorf("after the results: %q", text)
		}
		if got := f.messages(t, f.alice, c.Id); roles(got) != "user:completed assistant:completed user:completed assistant:completed tool:completed assistant:completed" {
			t.Errorf("stored %s", roles(got))
		}
	})

	t.Run("IdempotentRetryReattaches", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "gated"})
		path := "/v1/conversations/" + c.Id.String() + "/messages"
		before := f.upstream.requests.Load()
		post := func(ctx context.Context, body string) (*http.Response, <-chan sseEvent) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.ts.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+f.alice)
			req.Header.Set("Idempotency-Key", "retry-1")
			res, err := f.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = res.Body.Close() })
			if res.Header.Get("Content-Type") != "text/event-stream" {
				return res, nil
			}
			return res, readEvents(t, res)
		}
		ctx, drop := context.WithCancel(t.Context())
		first, stream := post(ctx, `{"content":"once","stream":true}`)
		for ev := range stream {
			if ev.event == "message.delta" {
				break
			}
		}
		drop() // the connection breaks mid-reply; the client retries with the same key
		again, replayed := post(t.Context(), `{"content":"once","stream":true}`)
		if again.Header.Get("Idempotent-Replayed") != "true" || again.Header.Get("Kiln-Message-Id") != first.Header.Get("Kiln-Message-Id") || replayed == nil {
			t.Fatalf("retry: %d %v", again.StatusCode, again.Header)
		}
		// A blocking retry of another request with the key is refused; the same one waits.
		other, _ := post(t.Context(), `{"content":"other"}`)
		problemIs(t, other, 422, errs.IdempotencyKeyReused)
		f.gate <- struct{}{}
		events := drain(t, replayed)
		if events[0].id != "1" || events[0].event != "reply.started" || deltaText(t, events) != "Hello after the gate" {
			t.Errorf("replayed %v %q", kinds(events), deltaText(t, events))
		}
		if n := f.upstream.requests.Load() - before; n != 1 {
			t.Errorf("%d generations, want 1", n)
		}
		if got := f.messages(t, f.alice, c.Id); roles(got) != "user:completed assistant:completed" {
			t.Errorf("stored %s", roles(got))
		}
	})

	t.Run("IdempotentBlockingRetryWaits", func(t *testing.T) {
		c := f.create(t, f.alice, map[string]any{"model": "gated"})
		path := "/v1/conversations/" + c.Id.String() + "/messages"
		var wg sync.WaitGroup
		bodies := make([]string, 2)
		for i := range bodies {
			wg.Go(func() {
				res := f.b.call(t, "POST", path, f.alice, map[string]any{"content": "wait"}, nil, "Idempotency-Key", "block-1")
				bodies[i] = fmt.Sprintf("%d %q %s", res.StatusCode, res.Header.Get("Idempotent-Replayed"), readAll(res))
			})
			if i == 0 { // the retry comes while the first runs
				waitFor(t, "the first request's reply", func() bool { return len(f.messages(t, f.alice, c.Id)) == 2 })
			}
		}
		f.gate <- struct{}{}
		wg.Wait()
		if !strings.HasPrefix(bodies[0], `200 "" {`) || bodies[1] != strings.Replace(bodies[0], `""`, `"true"`, 1) {
			t.Errorf("first %s\nretry %s", bodies[0], bodies[1])
		}
		if got := f.messages(t, f.alice, c.Id); roles(got) != "user:completed assistant:completed" {
			t.Errorf("stored %s", roles(got))
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		c := f.create(t, f.alice, nil)
		path := "/v1/conversations/" + c.Id.String() + "/messages"
		first := f.b.call(t, "POST", path, f.alice, map[string]any{"content": "once"}, nil, "Idempotency-Key", "k1")
		wantStatus(t, first, 200)
		again := f.b.call(t, "POST", path, f.alice, map[string]any{"content": "once"}, nil, "Idempotency-Key", "k1")
		wantStatus(t, again, 200)
		if again.Header.Get("Idempotent-Replayed") != "true" || readAll(again) != readAll(first) {
			t.Error("not replayed")
		}
		if n := len(f.messages(t, f.alice, c.Id)); n != 2 {
			t.Errorf("%d messages, want 2", n)
		}
	})
}

// expire deletes a reply's stored events, as their TTL would.
func expire(t *testing.T, f *convFixture, msgID string) {
	t.Helper()
	n, err := f.b.rdb.Exists(t.Context(), f.b.ks.Key("stream", 1, msgID)).Result()
	if err != nil || n != 1 {
		t.Fatalf("stream exists %d, %v", n, err)
	}
	if err := f.b.rdb.Del(t.Context(), f.b.ks.Key("stream", 1, msgID)).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConversationContextWindow(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var sent [][]map[string]any // the messages of each upstream request
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Messages []map[string]any `json:"messages"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &body)
		mu.Lock()
		sent = append(sent, body.Messages)
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(raw))
		replyWith("Hello")(w, r)
	})
	// 60 tokens for the history: the window less the reply's max tokens (the runner's 1024).
	b := setupReplies(t, func(d *replies.Deps) { d.ContextWindow = func(string) int { return 1024 + 60 } },
		withGateway(t, map[string]llm.Provider{"up": up.provider(t, "up")}, map[string][]llm.Target{"default": {{Provider: "up", Model: "m"}}}))
	alice := b.signUp(t, "alice@example.com").AccessToken
	var c api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", alice, map[string]any{}, &c), 201)
	path := "/v1/conversations/" + c.Id.String() + "/messages"
	line := strings.Repeat("x", 60) // 15 tokens + 4 per message; a turn with the reply "Hello" is 25
	for i := range 4 {
		wantStatus(t, b.call(t, "POST", path, alice, map[string]any{"content": fmt.Sprint(i, line)}, nil), 200)
	}
	mu.Lock()
	last := sent[len(sent)-1]
	mu.Unlock()
	// Two whole turns fit: the previous user message and reply, and the new message.
	if len(last) != 3 || last[0]["role"] != "user" || !strings.HasPrefix(fmt.Sprint(last[0]["content"]), "2") || !strings.HasPrefix(fmt.Sprint(last[2]["content"]), "3") {
		t.Fatalf("sent %v", last)
	}
	// The stored history is whole.
	var list api.ConversationMessageList
	wantStatus(t, b.call(t, "GET", path+"?limit=100", alice, nil, &list), 200)
	if len(list.Data) != 8 {
		t.Errorf("%d stored messages, want 8", len(list.Data))
	}
	// A message that alone exceeds the window is refused, and its reply stored as failed.
	problemIs(t, b.call(t, "POST", path, alice, map[string]any{"content": strings.Repeat("y", 400)}, nil), 400, errs.Invalid)
	wantStatus(t, b.call(t, "GET", path+"?limit=100", alice, nil, &list), 200)
	if n := len(list.Data); n != 10 || list.Data[9].Status != api.MessageFailed || list.Data[9].Error == nil || list.Data[9].Error.Code != api.InvalidRequest {
		t.Errorf("after the refused message: %s", roles(list.Data))
	}
	// The conversation goes on.
	wantStatus(t, b.call(t, "POST", path, alice, map[string]any{"content": "short"}, nil), 200)
}

func TestConversationFeedbackInExperiment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), nil), 201)
	wantStatus(t, b.call(t, "POST", "/v1/prompts/support/versions", owner, promptBody("")["version"], nil), 201)
	var label api.PromptLabel
	wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner,
		map[string]any{"split": []map[string]any{{"version": 1, "weight": 1}, {"version": 2, "weight": 1}}}, &label), 200)
	ratings := map[int]map[string]int64{1: {}, 2: {}}
	for i := range 6 {
		var c api.Conversation
		wantStatus(t, b.call(t, "POST", "/v1/conversations", owner, map[string]any{}, &c), 201)
		var out api.ConversationReply
		wantStatus(t, b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", owner, map[string]any{
			"content": "hello", "options": map[string]any{"prompt": map[string]any{"name": "support", "variables": map[string]any{"topic": "kilns"}}},
		}, &out), 200)
		reply := out.Messages[len(out.Messages)-1]
		if reply.Prompt == nil || reply.Prompt.Name != "support" || reply.Prompt.ExperimentId == nil || *reply.Prompt.ExperimentId != *label.ExperimentId {
			t.Fatalf("reply prompt %+v", reply.Prompt)
		}
		rating := []string{"up", "down"}[i%2]
		ratings[reply.Prompt.Version][rating]++
		wantStatus(t, b.call(t, "POST", "/v1/messages/"+reply.Id.String()+"/feedback", owner, map[string]any{"rating": rating}, nil), 200)
	}
	var report api.PromptExperimentReport
	wantStatus(t, b.call(t, "GET", "/v1/prompts/support/experiments/"+label.ExperimentId.String(), owner, nil, &report), 200)
	for _, v := range report.Versions {
		if v.FeedbackUp != ratings[v.Version]["up"] || v.FeedbackDown != ratings[v.Version]["down"] {
			t.Errorf("version %d: up %d down %d, want %v", v.Version, v.FeedbackUp, v.FeedbackDown, ratings[v.Version])
		}
	}
}

func TestConversationShutdown(t *testing.T) {
	t.Parallel()
	f := newConvFixture(t)
	c := f.create(t, f.alice, map[string]any{"model": "slow"})
	res, stream := postStream(t.Context(), t, f.ts, "/v1/conversations/"+c.Id.String()+"/messages", f.alice, `{"content":"hi","stream":true}`)
	msgID := res.Header.Get("Kiln-Message-Id")
	for ev := range stream {
		if ev.event == "message.delta" {
			break
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	f.b.srv.conv.Replies.Shutdown(ctx) // the shutdown deadline passes with the reply still running
	events := drain(t, stream)
	if last := events[len(events)-1]; last.event != "error" || !strings.Contains(last.data, `"not_ready"`) {
		t.Errorf("last event %+v", last)
	}
	m := f.waitMessage(t, f.alice, c.Id, msgID, func(m api.ConversationMessage) bool { return m.Status != api.MessageInProgress })
	if m.Status != api.MessageFailed || m.Error == nil || m.Error.Code != api.NotReady || deref(m.Content) != "Hel" {
		t.Errorf("stored %s %+v %q", m.Status, m.Error, deref(m.Content))
	}
	problemIs(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/messages", f.alice, map[string]any{"content": "more"}, nil), 503, errs.NotReady)
}

// TestReplyEventsTextReadsBackDeltas: the text a reply published is read back from its
// events (an orphaned reply is stored with it).
func TestReplyEventsTextReadsBackDeltas(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		ev    chat.Event
		text  string
		reset bool
	}{
		{chat.Event{Kind: chat.EventDelta, Text: "Hé\x00"}, "Hé\x00", false},
		{chat.Event{Kind: chat.EventToolResult}, "", true},
		{chat.Event{Kind: chat.EventUsage}, "", false},
	} {
		name, d := ReplyEvents{}.Event(tt.ev)
		raw, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if text, reset := (ReplyEvents{}).Text(streams.Event{Type: name, Data: raw}); text != tt.text || reset != tt.reset {
			t.Errorf("%s: %q, %v; want %q, %v", name, text, reset, tt.text, tt.reset)
		}
	}
}
