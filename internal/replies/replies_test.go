package replies_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/openai"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

const wait = 10 * time.Second

// bundle is one database and Redis key space, shared by the replicas a test starts.
type bundle struct {
	st     *store.Store
	ks     redisclient.Keyspace
	convs  *conversations.Service
	owner  conversations.Owner
	runner *chat.Runner
	usage  *usage.Recorder
	gate   chan struct{} // the "gated" model answers its second chunk when this closes
	titled chan uuid.UUID
	window int // every alias's context window
}

// setup starts the shared parts: the "default" alias is the offline dev model; "gated"
// is an OpenAI-compatible upstream (an httptest server speaking the wire format) that
// streams "Hel", then waits for b.gate before "lo".
func setup(t *testing.T) *bundle {
	t.Helper()
	st := storetest.New(t)
	_, ks := storetest.Redis(t)
	b := &bundle{st: st, ks: ks, convs: conversations.New(st, time.Now), gate: make(chan struct{}), titled: make(chan uuid.UUID, 8), window: 32768}
	b.convs.TitleJob = func(_ context.Context, _ *db.Queries, _, conversation uuid.UUID) error {
		b.titled <- conversation
		return nil
	}
	org := uuid.Must(uuid.NewV7())
	if _, err := st.CreateOrg(t.Context(), db.CreateOrgParams{ID: org, Name: "replies", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b.owner = conversations.Owner{Org: org}

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		send := func(data string) {
			_, _ = io.WriteString(w, "data: "+data+"\n\n")
			w.(http.Flusher).Flush()
		}
		send(chunk(`{"role":"assistant","content":"Hel"}`, "null"))
		select {
		case <-b.gate:
		case <-r.Context().Done():
			return
		case <-time.After(wait): // a failed test must not hang its cleanup
			return
		}
		send(chunk(`{"content":"lo"}`, "null"))
		send(chunk(`{}`, `"stop"`))
		send("[DONE]")
	}))
	t.Cleanup(up.Close)
	gated, err := openai.New(llm.ProviderConfig{Name: "up", Type: "openai_compatible", BaseURL: up.URL}, up.Client())
	if err != nil {
		t.Fatal(err)
	}
	// "nul" streams a reply with U+0000 in its text, which PostgreSQL cannot store.
	nulUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, data := range []string{chunk(`{"role":"assistant","content":"a\u0000b"}`, "null"), chunk(`{}`, `"stop"`), "[DONE]"} {
			_, _ = io.WriteString(w, "data: "+data+"\n\n")
		}
	}))
	t.Cleanup(nulUp.Close)
	nul, err := openai.New(llm.ProviderConfig{Name: "nul", Type: "openai_compatible", BaseURL: nulUp.URL}, nulUp.Client())
	if err != nil {
		t.Fatal(err)
	}
	gw, err := llm.NewGateway(llm.GatewayConfig{
		Providers: map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev", Type: "dev"}), "up": gated, "nul": nul},
		Aliases: map[string][]llm.Target{
			"default": {{Provider: "dev", Model: dev.Model}},
			"gated":   {{Provider: "up", Model: "m"}},
			"nul":     {{Provider: "nul", Model: "m"}},
		},
		Timeout: wait,
	})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := tools.NewRegistry(tools.Builtins()...)
	if err != nil {
		t.Fatal(err)
	}
	b.runner = &chat.Runner{Gateway: gw, Tools: reg, MaxSteps: 3, ToolTimeout: time.Second, MaxTokens: 1000, Now: time.Now}
	if b.usage, err = usage.NewRecorder(st, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.usage.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return b
}

func chunk(delta, finish string) string {
	return `{"id":"c","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{"index":0,"delta":` +
		delta + `,"finish_reason":` + finish + `}]}`
}

// replica is one replica's reply service: a Redis client and stream bus of its own over
// the shared key space.
func (b *bundle) replica(t *testing.T) *replies.Service {
	t.Helper()
	return b.replicaWithLease(t, 0)
}

// replicaWithLease is a replica whose replies' leases last lease (0: the default).
func (b *bundle) replicaWithLease(t *testing.T, lease time.Duration) *replies.Service {
	t.Helper()
	rdb, err := redisclient.Open(t.Context(), storetest.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	bus := streams.New(rdb, b.ks, streams.Config{TTL: time.Hour})
	t.Cleanup(func() { bus.Close(); _ = rdb.Close() })
	return replies.New(replies.Deps{
		Conversations: b.convs, Prompts: prompts.New(b.st, time.Now), Runner: b.runner, Usage: b.usage, Streams: bus,
		Events: events{}, Log: slog.New(slog.DiscardHandler), StreamTimeout: wait,
		ContextWindow: func(string) int { return b.window }, LeaseTTL: lease,
	})
}

// events shapes the replies' events for these tests.
type events struct{}

func (events) Started(r conversations.Reply) any { return map[string]any{"message_id": r.Message.ID} }

func (events) Event(ev chat.Event) (string, any) {
	if ev.Kind == chat.EventDelta {
		return "message.delta", map[string]any{"text": ev.Text}
	}
	return "other", map[string]any{}
}

func (events) Done(reply conversations.Message, out conversations.Outcome, _ *chat.Result) any {
	return map[string]any{"id": reply.ID, "finish_reason": out.FinishReason}
}

func (events) Text(ev streams.Event) (string, bool) {
	var d struct{ Text string }
	if ev.Type == "message.delta" && json.Unmarshal(ev.Data, &d) == nil {
		return d.Text, false
	}
	return "", false
}

func (events) Failed(requestID, instance string, e *errs.Error) any {
	return map[string]any{"code": e.Code, "detail": e.Message, "request_id": requestID, "instance": instance}
}

// conversation starts a conversation with model alias.
func (b *bundle) conversation(t *testing.T, model string) uuid.UUID {
	t.Helper()
	c, err := b.convs.Create(t.Context(), b.owner, "", model, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// ask is a request for a reply to text in conversation.
func ask(conversation uuid.UUID, text string) replies.Request {
	m := llm.TextMessage(llm.RoleUser, text)
	return replies.Request{Conversation: conversation, Input: conversations.Input{User: &m}}
}

func (b *bundle) caller() replies.Caller {
	return replies.Caller{Owner: b.owner, RequestID: "req-1", Instance: "/v1/conversations/x/messages"}
}

// follow collects a reply's events, from the first, until its last.
func (b *bundle) follow(t *testing.T, s *replies.Service, reply conversations.Message) []streams.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	var out []streams.Event
	if err := s.Follow(ctx, b.owner.Org, reply, 0, func(ev streams.Event) error { out = append(out, ev); return nil }); err != nil {
		t.Fatalf("follow: %v", err)
	}
	return out
}

// firstDelta waits for a reply's first message.delta: the model is generating.
func (b *bundle) firstDelta(t *testing.T, s *replies.Service, reply conversations.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	seen := errors.New("seen")
	err := s.Follow(ctx, b.owner.Org, reply, 0, func(ev streams.Event) error {
		if ev.Type == "message.delta" {
			return seen
		}
		return nil
	})
	if !errors.Is(err, seen) {
		t.Fatalf("no delta: %v", err)
	}
}

// generating starts a reply of the gated model on s in a new conversation and waits for
// its first delta: the model is generating, held by the gate.
func (b *bundle) generating(t *testing.T, s *replies.Service) (uuid.UUID, *replies.Started) {
	t.Helper()
	conv := b.conversation(t, "gated")
	started, err := s.Start(t.Context(), b.caller(), ask(conv, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	b.firstDelta(t, s, started.Message)
	return conv, started
}

func data(t *testing.T, ev streams.Event) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(ev.Data, &out); err != nil {
		t.Fatalf("event %s: %v", ev.Type, err)
	}
	return out
}

func types(evs []streams.Event) string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return strings.Join(out, " ")
}

func TestStartEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.replica(t)
	conv := b.conversation(t, "")
	started, err := s.Start(t.Context(), b.caller(), ask(conv, "hello there"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	added, err := started.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 || added[0].Role != llm.RoleUser || added[1].ID != started.Message.ID ||
		added[1].Status != conversations.Completed || added[1].Content == "" || added[1].Model != "default" {
		t.Fatalf("added %+v", added)
	}
	evs := b.follow(t, s, started.Message)
	if evs[0].Type != replies.EventStarted || evs[len(evs)-1].Type != replies.EventDone || !evs[len(evs)-1].Final {
		t.Fatalf("events %s", types(evs))
	}
	var text strings.Builder
	for _, ev := range evs {
		if ev.Type == "message.delta" {
			text.WriteString(data(t, ev)["text"].(string))
		}
	}
	if text.String() != added[1].Content {
		t.Errorf("streamed %q, stored %q", text.String(), added[1].Content)
	}
	select { // the first exchange of an untitled conversation asks for a title
	case id := <-b.titled:
		if id != conv {
			t.Errorf("titled %s, want %s", id, conv)
		}
	case <-time.After(wait):
		t.Error("no title asked for")
	}

	t.Run("ErrConflict", func(t *testing.T) { // one reply at a time per conversation
		conv := b.conversation(t, "gated")
		first, err := s.Start(t.Context(), b.caller(), ask(conv, "one"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Start(t.Context(), b.caller(), ask(conv, "two"))
		if errs.CodeOf(err) != errs.Conflict {
			t.Errorf("second reply: %v, want conflict", err)
		}
		if _, err := s.Cancel(t.Context(), b.owner, conv, first.Message.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		req := ask(b.conversation(t, ""), "hi")
		req.Call.Alias = "nope"
		_, err := s.Start(t.Context(), b.caller(), req)
		if errs.CodeOf(err) != errs.NotFound {
			t.Errorf("unknown model: %v, want not_found", err)
		}
		other := replies.Caller{Owner: conversations.Owner{Org: uuid.Must(uuid.NewV7())}}
		if _, err := s.Start(t.Context(), other, ask(conv, "hi")); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("another org's conversation: %v, want not_found", err)
		}
	})
}

func TestStartBeyondContextWindow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.window = 1000 + 50 // the runner's max tokens, and 50 for the history
	s := b.replica(t)
	conv := b.conversation(t, "")
	_, err := s.Start(t.Context(), b.caller(), ask(conv, strings.Repeat("y", 400)))
	if e, ok := errors.AsType[*errs.Error](err); !ok || e.Code != errs.Invalid {
		t.Fatalf("error %v, want invalid_request", err)
	}
	msgs, _, err := b.convs.Messages(t.Context(), b.owner, conv, 10, "")
	if err != nil || len(msgs) != 2 || msgs[1].Status != conversations.Failed || msgs[1].ErrorCode != errs.Invalid {
		t.Fatalf("stored %+v, %v; want the reply failed", msgs, err)
	}
	evs := b.follow(t, s, msgs[1]) // its stream is ended, with the request's values
	last := data(t, evs[len(evs)-1])
	if len(evs) != 1 || evs[0].Type != replies.EventError || last["code"] != string(errs.Invalid) ||
		last["request_id"] != "req-1" || last["instance"] != b.caller().Instance {
		t.Errorf("events %s %v", types(evs), last)
	}
}

func TestCancelFromAnotherReplica(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, other := b.replica(t), b.replica(t)
	conv, started := b.generating(t, a)
	m, err := other.Cancel(t.Context(), b.owner, conv, started.Message.ID)
	if err != nil || m.Status != conversations.InProgress {
		t.Fatalf("cancel: %+v, %v", m, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	added, err := started.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reply := added[len(added)-1]
	if reply.Status != conversations.Cancelled || reply.Content != "Hel" || reply.FinishReason != llm.FinishCancelled {
		t.Errorf("reply %s %q %s, want cancelled with the text so far", reply.Status, reply.Content, reply.FinishReason)
	}
	evs := b.follow(t, other, started.Message)
	if last := evs[len(evs)-1]; last.Type != replies.EventDone || data(t, last)["finish_reason"] != "cancelled" {
		t.Errorf("events %s", types(evs))
	}
	// Cancelling a reply that has ended leaves it as it is.
	if m, err := other.Cancel(t.Context(), b.owner, conv, started.Message.ID); err != nil || m.Status != conversations.Cancelled {
		t.Errorf("cancel again: %+v, %v", m, err)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()

	t.Run("WaitsForRunningReplies", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.replica(t)
		conv, started := b.generating(t, s)
		stopped := make(chan struct{})
		go func() { s.Shutdown(context.Background()); close(stopped) }()
		var refused error
		for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, refused = s.Start(t.Context(), b.caller(), ask(b.conversation(t, "gated"), "more")); refused != nil {
				break
			}
		}
		if errs.CodeOf(refused) != errs.NotReady {
			t.Fatalf("a reply started while shutting down: %v", refused)
		}
		select {
		case <-stopped:
			t.Fatal("Shutdown returned with a reply running")
		case <-time.After(100 * time.Millisecond):
		}
		close(b.gate)
		select {
		case <-stopped:
		case <-time.After(wait):
			t.Fatal("Shutdown did not return once the reply ended")
		}
		m, err := b.convs.Message(t.Context(), b.owner, conv, started.Message.ID)
		if err != nil || m.Status != conversations.Completed || m.Content != "Hello" {
			t.Errorf("reply %+v, %v; want completed", m, err)
		}
	})

	t.Run("StopsRepliesPastItsDeadline", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.replica(t)
		conv, started := b.generating(t, s)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		s.Shutdown(ctx)
		// Stored before Shutdown returned.
		m, err := b.convs.Message(t.Context(), b.owner, conv, started.Message.ID)
		if err != nil || m.Status != conversations.Failed || m.ErrorCode != errs.NotReady || m.Content != "Hel" {
			t.Errorf("reply %+v, %v; want failed (not_ready) with the text so far", m, err)
		}
		evs := b.follow(t, s, started.Message)
		if last := evs[len(evs)-1]; last.Type != replies.EventError || data(t, last)["code"] != string(errs.NotReady) {
			t.Errorf("events %s", types(evs))
		}
		if _, err := started.Wait(t.Context()); errs.CodeOf(err) != errs.NotReady {
			t.Errorf("waiter got %v, want not_ready", err)
		}
	})
}

func TestReattachAfterTheStarterWentAway(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first, retry := b.replica(t), b.replica(t)
	_, started := b.generating(t, first)
	// The first request's client goes away: its wait ends, the reply goes on.
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := started.Wait(gone); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait: %v", err)
	}
	// Its retry lands on another replica.
	a, err := retry.Reattach(t.Context(), b.owner, started.Ref())
	if err != nil || a.ID != started.Message.ID || a.Status != conversations.InProgress {
		t.Fatalf("reattach: %+v, %v", a, err)
	}
	if err := retry.Kept(t.Context(), a.Message); err != nil {
		t.Errorf("kept: %v", err)
	}
	var wg sync.WaitGroup
	var turn []conversations.Message
	var resultErr error
	wg.Go(func() { turn, resultErr = retry.Result(t.Context(), b.owner, a) })
	close(b.gate)
	wg.Wait()
	if resultErr != nil || len(turn) != 2 || turn[0].Role != llm.RoleUser || turn[1].Content != "Hello" || turn[1].Status != conversations.Completed {
		t.Fatalf("result %+v, %v", turn, resultErr)
	}

	t.Run("ErrFailedReply", func(t *testing.T) { // a retry of a failed reply gets its error
		b := setup(t)
		b.window = 1000 + 50
		s := b.replica(t)
		conv := b.conversation(t, "")
		if _, err := s.Start(t.Context(), b.caller(), ask(conv, strings.Repeat("y", 400))); err == nil {
			t.Fatal("no error")
		}
		msgs, _, err := b.convs.Messages(t.Context(), b.owner, conv, 10, "")
		if err != nil || len(msgs) != 2 {
			t.Fatal(msgs, err)
		}
		a, err := s.Reattach(t.Context(), b.owner, conv.String()+"/"+msgs[1].ID.String()+"/"+msgs[0].ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Result(t.Context(), b.owner, a); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("result error %v, want the reply's invalid_request", err)
		}
	})

	t.Run("ErrMalformedRef", func(t *testing.T) {
		if _, err := retry.Reattach(t.Context(), b.owner, "not/a-ref"); err == nil || errs.CodeOf(err) != errs.Internal {
			t.Errorf("error %v, want an internal error", err)
		}
	})
}

func TestFailStale(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.replica(t)
	conv := b.conversation(t, "")
	// A reply whose replica died: stored in progress, its stream started, never ended.
	m := llm.TextMessage(llm.RoleUser, "hi")
	reply, err := b.convs.Start(t.Context(), b.owner, conv, conversations.Input{User: &m}, "default", nil, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.FailStale(t.Context(), time.Hour); err != nil || n != 0 {
		t.Fatalf("fresh: %d, %v; want none", n, err)
	}
	if n, err := s.FailStale(t.Context(), 0); err != nil || n != 1 {
		t.Fatalf("stale: %d, %v; want one", n, err)
	}
	evs := b.follow(t, s, reply.Message)
	last := data(t, evs[len(evs)-1])
	if len(evs) != 1 || evs[0].Type != replies.EventError || last["code"] != string(errs.Internal) || last["request_id"] != "" || last["instance"] != "" {
		t.Errorf("events %s %v", types(evs), last)
	}
}
