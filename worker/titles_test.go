package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// titleAlias is the model alias the test titler uses: the offline dev model.
const titleAlias = "titles"

// titleBundle is a Titler over the dev model with a usage recorder writing to st.
type titleBundle struct {
	st     *store.Store
	svc    *conversations.Service
	titler Titler
	org    uuid.UUID
	user   uuid.UUID
	// stopUsage stops the recorder, which writes what it holds first.
	stopUsage func()
}

func newTitleBundle(t *testing.T) *titleBundle {
	t.Helper()
	st := storetest.New(t)
	g, err := llm.NewGateway(llm.GatewayConfig{
		Providers: map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
		Aliases:   map[string][]llm.Target{titleAlias: {{Provider: "dev", Model: dev.Model}}},
		Timeout:   5 * time.Second, Retries: 1, MaxRetryAfter: time.Second, BreakerFailures: 5, BreakerCooldown: time.Minute,
		Backoff: time.Millisecond, Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runner := &chat.Runner{Gateway: g, MaxSteps: 4, ToolTimeout: time.Second, MaxTokens: 1024, Now: time.Now}
	rec, err := usage.NewRecorder(st, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)

	svc := conversations.New(st, time.Now)
	b := &titleBundle{st: st, svc: svc, stopUsage: stop,
		titler: Titler{Conversations: svc, Runner: runner, Usage: rec, Model: titleAlias}}
	b.org = storetest.Org(t, st)
	b.user = storetest.User(t, st, b.org)
	return b
}

func (b *titleBundle) owner() conversations.Owner {
	return conversations.Owner{Org: b.org, User: &b.user}
}

// conversation creates a conversation titled title ("": none) with one exchange.
func (b *titleBundle) conversation(t *testing.T, title, question, answer string) uuid.UUID {
	t.Helper()
	ctx := t.Context()
	c, err := b.svc.Create(ctx, b.owner(), title, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	q := llm.TextMessage(llm.RoleUser, question)
	r, err := b.svc.Start(ctx, b.owner(), c.ID, conversations.Input{User: &q}, "default", nil, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Finish(ctx, b.org, c.ID, r.Message.ID, conversations.Outcome{
		Message: llm.TextMessage(llm.RoleAssistant, answer), Status: conversations.Completed, Provider: "dev", Model: dev.Model,
	}); err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// title reads the stored title, deleted conversations included; "" when none.
func (b *titleBundle) title(t *testing.T, id uuid.UUID) string {
	t.Helper()
	var s *string
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT title FROM conversations WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	if s == nil {
		return ""
	}
	return *s
}

func (b *titleBundle) process(t *testing.T, id uuid.UUID) error {
	t.Helper()
	return b.titler.Title(t.Context(), TitlePayload{Org: b.org, Conversation: id})
}

// titleUsage counts the org's usage rows of the title endpoint.
func (b *titleBundle) titleUsage(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage WHERE org_id = $1 AND endpoint = 'title'", b.org).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTitlerTitlesAConversation(t *testing.T) {
	t.Parallel()
	b := newTitleBundle(t)
	// Longer than the title source: the model reads only its start.
	question := "Plan a weekend trip to Lisbon with museums. " + strings.Repeat("Éé more detail ", 300)
	id := b.conversation(t, "", question, "Here is a plan for Lisbon.")

	if err := b.process(t, id); err != nil {
		t.Fatalf("ProcessTask: %v", err)
	}
	title := b.title(t, id)
	if title == "" || utf8.RuneCountInString(title) > 200 || !utf8.ValidString(title) {
		t.Fatalf("title %q (%d runes), want a non-empty valid title of at most 200 runes", title, utf8.RuneCountInString(title))
	}
	if title != strings.Join(strings.Fields(title), " ") || strings.Trim(title, `"'.`) != title {
		t.Errorf("title %q, want one line without surrounding quotes or dots", title)
	}
	// The dev model echoes what it was given: the exchange.
	if !strings.HasPrefix(title, "[dev]") || !strings.Contains(title, "Lisbon") {
		t.Errorf("title %q, want the dev model's answer about the exchange", title)
	}
	c, err := b.svc.Get(t.Context(), b.owner(), id)
	if err != nil || c.Title != title {
		t.Errorf("Get = %q, %v; want %q", c.Title, err, title)
	}

	var provider, model, status, alias string
	var attempts int
	eventually(t, 5*time.Second, "title usage written", func() bool { return b.titleUsage(t) == 1 })
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT provider, model, status, alias, attempts FROM llm_usage WHERE org_id = $1 AND endpoint = 'title'", b.org).
		Scan(&provider, &model, &status, &alias, &attempts); err != nil {
		t.Fatal(err)
	}
	if provider != "dev" || model != dev.Model || status != usage.StatusOK || alias != titleAlias || attempts != 1 {
		t.Errorf("usage row %s/%s %s alias %s attempts %d, want dev/%s ok alias %s, 1 attempt", provider, model, status, alias, attempts, dev.Model, titleAlias)
	}

	// A second run (a retried task) changes nothing.
	if err := b.process(t, id); err != nil {
		t.Fatalf("second ProcessTask: %v", err)
	}
	if got := b.title(t, id); got != title {
		t.Errorf("title %q after a second run, want %q kept", got, title)
	}
}

func TestTitlerLeavesAlone(t *testing.T) {
	t.Parallel()
	b := newTitleBundle(t)
	ctx := t.Context()

	titled := b.conversation(t, "My own title", "hello", "hi")
	deleted := b.conversation(t, "", "hello", "hi")
	if _, err := b.svc.Delete(ctx, b.owner(), deleted, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	empty, err := b.svc.Create(ctx, b.owner(), "", "", nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		id     uuid.UUID
		stored bool // the conversation's row exists
		want   string
	}{
		{"AlreadyTitled", titled, true, "My own title"},
		{"Deleted", deleted, true, ""},
		{"NoMessages", empty.ID, true, ""},
		{"NoSuchConversation", uuid.Must(uuid.NewV7()), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := b.process(t, tt.id); err != nil {
				t.Fatalf("ProcessTask = %v, want nil", err)
			}
			if !tt.stored {
				return
			}
			if got := b.title(t, tt.id); got != tt.want {
				t.Errorf("title %q, want %q", got, tt.want)
			}
		})
	}
	// None of them called the model: the recorder, stopped, has written nothing.
	b.stopUsage()
	if n := b.titleUsage(t); n != 0 {
		t.Errorf("%d title usage rows, want none", n)
	}
}

func TestTitlerErrors(t *testing.T) {
	t.Parallel()
	b := newTitleBundle(t)

	t.Run("ErrModelFailsIsRetriedAndRecorded", func(t *testing.T) {
		id := b.conversation(t, "", "hello", "hi")
		broken := b.titler
		broken.Model = "no-such-alias"
		err := broken.Title(t.Context(), TitlePayload{Org: b.org, Conversation: id})
		if err == nil || jobs.IsPermanent(err) {
			t.Fatalf("error %v, want a retryable error", err)
		}
		if got := b.title(t, id); got != "" {
			t.Errorf("title %q set after a failed call", got)
		}
		var status, code string
		eventually(t, 5*time.Second, "failed title usage written", func() bool { return b.titleUsage(t) == 1 })
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT status, error_code FROM llm_usage WHERE org_id = $1 AND endpoint = 'title'", b.org).Scan(&status, &code); err != nil {
			t.Fatal(err)
		}
		if status != usage.StatusError || code == "" {
			t.Errorf("usage row status %q code %q, want an error with its code", status, code)
		}
	})
}

func TestConversationPurgers(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := t.Context()
	clock := storetest.NewClock()
	svc := conversations.New(st, clock.Now)

	org := storetest.Org(t, st)
	o := conversations.Owner{Org: org}
	startReply := func() conversations.Reply {
		t.Helper()
		c, err := svc.Create(ctx, o, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		q := llm.TextMessage(llm.RoleUser, "hello")
		r, err := svc.Start(ctx, o, c.ID, conversations.Input{User: &q}, "default", nil, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	stale1, stale2 := startReply(), startReply()
	clock.Advance(20 * time.Minute)
	fresh := startReply()
	clock.Advance(15 * time.Minute) // the first two: 35 minutes; the last: 15

	// The streams live in Redis, on a client of their own that the last step closes.
	_, ks := storetest.Redis(t)
	rdb, err := redisclient.Open(ctx, storetest.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	bus := streams.New(rdb, ks, streams.Config{TTL: time.Hour})
	t.Cleanup(bus.Close)
	rs := replies.New(replies.Deps{Conversations: svc, Streams: bus, Events: problemEvents{}, Log: slog.New(slog.DiscardHandler), Now: clock.Now})
	// The fresh reply's generator is alive: it holds its lease.
	if err := bus.Lease(ctx, fresh.Message.ID.String(), time.Minute); err != nil {
		t.Fatal(err)
	}
	purgers := ConversationPurgers(svc, rs, 30*time.Minute)
	// ended is the last event of each reply's stream: its data when it is an error.
	ended := func(r conversations.Reply) map[string]any {
		t.Helper()
		evs, finished, err := bus.Read(ctx, r.Message.ID.String(), 0, 0)
		if err != nil || !finished {
			return nil
		}
		last := evs[len(evs)-1]
		var problem map[string]any
		if last.Type != "error" || json.Unmarshal(last.Data, &problem) != nil {
			t.Fatalf("last event %s %s, want an error", last.Type, last.Data)
		}
		return problem
	}
	byName := map[string]Purger{}
	for _, p := range purgers {
		byName[p.Name] = p
	}
	for _, name := range []string{"deleted_conversations", "idle_conversations", "stale_replies"} {
		if _, ok := byName[name]; !ok {
			t.Fatalf("no purger %q among %v", name, purgers)
		}
	}

	n, err := byName["stale_replies"].Purge(ctx)
	if err != nil || n != 2 {
		t.Fatalf("stale_replies = %d, %v; want 2", n, err)
	}
	for _, r := range []conversations.Reply{stale1, stale2} {
		if p := ended(r); p["code"] != "internal" || p["detail"] != conversations.ErrStale.Message {
			t.Errorf("reply %s ended with %v, want an internal error", r.Message.ID, p)
		}
	}
	if p := ended(fresh); p != nil {
		t.Errorf("fresh reply's stream ended with %v", p)
	}
	for _, r := range []conversations.Reply{stale1, stale2} {
		m, err := svc.Message(ctx, o, r.Conversation.ID, r.Message.ID)
		if err != nil || m.Status != conversations.Failed || m.ErrorCode != errs.Internal {
			t.Errorf("stale reply %+v, %v; want failed (internal)", m, err)
		}
	}
	if m, err := svc.Message(ctx, o, fresh.Conversation.ID, fresh.Message.ID); err != nil || m.Status != conversations.InProgress {
		t.Errorf("fresh reply %+v, %v; want still in progress", m, err)
	}

	// Nothing stale left: nothing ended.
	if n, err := byName["stale_replies"].Purge(ctx); err != nil || n != 0 {
		t.Errorf("second run = %d, %v; want none", n, err)
	}
	if p := ended(fresh); p != nil {
		t.Errorf("fresh reply's stream ended with %v", p)
	}

	// A stream that cannot be ended fails the purge (the task is retried).
	clock.Advance(time.Hour)
	_ = rdb.Close()
	if n, err := byName["stale_replies"].Purge(ctx); n != 1 || !errors.Is(err, redis.ErrClosed) {
		t.Errorf("with Redis closed: %d, %v; want 1 and the client's error", n, err)
	}
}

// problemEvents shapes a failed reply's last event as a problem's code and detail; the
// server's shapes are tested with the server.
type problemEvents struct{}

func (problemEvents) Started(conversations.Reply) any { return nil }
func (problemEvents) Event(chat.Event) (string, any)  { return "", nil }
func (problemEvents) Done(conversations.Message, conversations.Outcome, *chat.Result) any {
	return nil
}

func (problemEvents) Text(streams.Event) (string, bool) { return "", false }

func (problemEvents) Failed(_, _ string, e *errs.Error) any {
	return map[string]any{"code": e.Code, "detail": e.Message}
}
