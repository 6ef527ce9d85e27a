package chat_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/rag"
)

// fakeKnowledge is an org's knowledge bases as the runner sees them (rag.Service is tested
// against PostgreSQL in internal/rag and through the server): it knows ids, and records
// the queries and budgets it is asked to ground.
type fakeKnowledge struct {
	org     uuid.UUID
	ids     []uuid.UUID
	mu      sync.Mutex
	queries []string
	budgets []int
}

func (k *fakeKnowledge) CheckKnowledgeBases(_ context.Context, org uuid.UUID, ids []uuid.UUID) error {
	for _, id := range ids {
		if org != k.org || !slices.Contains(k.ids, id) {
			return errs.E(errs.NotFound, "No such knowledge base: %s.", id)
		}
	}
	return nil
}

func (k *fakeKnowledge) Ground(_ context.Context, _ uuid.UUID, ids []uuid.UUID, query string, budget int) (rag.Composed, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.queries, k.budgets = append(k.queries, query), append(k.budgets, budget)
	return rag.Composed{Instructions: "SOURCES", Citations: []rag.Citation{{Source: 1, KnowledgeBaseID: ids[0], DocumentID: uuid.New(), ChunkID: uuid.New(), Title: "Doc"}}}, nil
}

// recordingModel is the dev model keeping the messages of the last request it received.
type recordingModel struct {
	*dev.Provider
	mu   sync.Mutex
	last []llm.Message
}

func (m *recordingModel) keep(req *llm.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = slices.Clone(req.Messages)
}

func (m *recordingModel) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	m.keep(req)
	return m.Provider.Chat(ctx, req)
}

func (m *recordingModel) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	m.keep(req)
	return m.Provider.ChatStream(ctx, req)
}

func TestGround(t *testing.T) {
	t.Parallel()
	org, kb := uuid.New(), uuid.New()
	setup := func() (*chat.Runner, *fakeKnowledge, *recordingModel) {
		model := &recordingModel{Provider: dev.New(llm.ProviderConfig{Name: "dev", Type: "dev"})}
		r := newRunner(t, model, 5)
		k := &fakeKnowledge{org: org, ids: []uuid.UUID{kb}}
		r.Knowledge = k
		return r, k, model
	}
	grounded := func() chat.Call {
		return chat.Call{Alias: "dev", Org: org, KnowledgeBases: []uuid.UUID{kb}, Request: llm.Request{Messages: []llm.Message{
			llm.TextMessage(llm.RoleSystem, "Be brief."),
			llm.TextMessage(llm.RoleUser, "first question"),
			llm.TextMessage(llm.RoleAssistant, "first answer"),
			llm.TextMessage(llm.RoleUser, "second question"),
		}}}
	}

	t.Run("OKSourcesAfterTheLeadingSystemMessages", func(t *testing.T) {
		r, k, model := setup()
		res := run(t, r, grounded(), nil)
		if len(res.Citations) != 1 || res.Citations[0].KnowledgeBaseID != kb {
			t.Fatalf("citations %+v", res.Citations)
		}
		if !slices.Equal(k.queries, []string{"second question"}) {
			t.Fatalf("queries %q, want the last user message", k.queries)
		}
		var got []string
		for _, m := range model.last {
			got = append(got, string(m.Role)+":"+m.Text())
		}
		want := []string{"system:Be brief.", "system:SOURCES", "user:first question", "assistant:first answer", "user:second question"}
		if !slices.Equal(got, want) {
			t.Fatalf("the model got %q, want %q", got, want)
		}
	})

	t.Run("OKStreamSendsCitationsOnceAfterStart", func(t *testing.T) {
		r, _, _ := setup()
		var rec recorder
		run(t, r, grounded(), rec.emit)
		kinds := rec.kinds()
		if len(kinds) < 3 || kinds[0] != chat.EventStart || kinds[1] != chat.EventCitations || kinds[2] != chat.EventDelta {
			t.Fatalf("events %v, want start, citations, then the deltas", kinds)
		}
		if n := len(slices.DeleteFunc(kinds, func(k chat.EventKind) bool { return k != chat.EventCitations })); n != 1 {
			t.Fatalf("%d citations events", n)
		}
		if len(rec.events[1].Citations) != 1 {
			t.Fatalf("citations event %+v", rec.events[1])
		}
	})

	t.Run("OKNotGroundedNoCitations", func(t *testing.T) {
		r, k, model := setup()
		c := grounded()
		c.KnowledgeBases = nil
		var rec recorder
		res := run(t, r, c, rec.emit)
		if res.Citations != nil || slices.Contains(rec.kinds(), chat.EventCitations) || len(k.queries) != 0 || len(model.last) != 4 {
			t.Fatalf("citations %+v, events %v, queries %q, messages %d", res.Citations, rec.kinds(), k.queries, len(model.last))
		}
	})

	t.Run("OKBudgetIsTheRoomLeftInTheContextWindow", func(t *testing.T) {
		r, k, _ := setup()
		run(t, r, grounded(), nil) // no context window: the cap
		r.ContextWindow = func(string) int { return 1200 }
		c := grounded()
		c.Request.MaxTokens = intp(200)
		run(t, r, c, nil) // what the reply and the messages leave
		r.ContextWindow = func(string) int { return 1 << 20 }
		r.SourceTokens = 300
		run(t, r, grounded(), nil) // the cap again
		r.ContextWindow = func(string) int { return 100 }
		run(t, r, grounded(), nil) // the reply alone fills the window: no room
		room := 1200 - 200
		for _, m := range c.Request.Messages {
			room -= 4 + rag.EstimateTokens(m.Text()) // a message's own tokens and its text's
		}
		if want := []int{chat.DefaultSourceTokens, room, 300, 0}; !slices.Equal(k.budgets, want) {
			t.Fatalf("budgets %v, want %v", k.budgets, want)
		}
	})

	t.Run("ErrNotFoundOtherKnowledgeBase", func(t *testing.T) {
		r, _, _ := setup()
		c := grounded()
		c.KnowledgeBases = []uuid.UUID{kb, uuid.New()}
		if err := r.Validate(t.Context(), &c); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("Validate: %v, want not_found", err)
		}
		c = grounded()
		c.Org = uuid.New()
		if err := r.Validate(t.Context(), &c); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("Validate in another org: %v, want not_found", err)
		}
	})

	t.Run("ErrNotReadyWithoutKnowledge", func(t *testing.T) {
		r, _, _ := setup()
		r.Knowledge = nil
		c := grounded()
		if err := r.Validate(t.Context(), &c); errs.CodeOf(err) != errs.NotReady {
			t.Fatalf("Validate: %v, want not_ready", err)
		}
	})

	t.Run("OKSourceRoom", func(t *testing.T) {
		r, _, _ := setup()
		c := grounded()
		for _, tc := range []struct{ room, want int }{{10000, chat.DefaultSourceTokens}, {1000, 500}, {0, 0}, {-5, 0}} {
			if got := r.SourceRoom(c, tc.room); got != tc.want {
				t.Errorf("SourceRoom(%d) = %d, want %d", tc.room, got, tc.want)
			}
		}
		c.KnowledgeBases = nil
		if got := r.SourceRoom(c, 10000); got != 0 {
			t.Errorf("SourceRoom without knowledge bases = %d", got)
		}
	})
}
