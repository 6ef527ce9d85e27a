package conversations_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// fixture is a conversation service on a fresh database with a controllable clock, an org
// and two of its users.
type fixture struct {
	st    *store.Store
	svc   *conversations.Service
	clock *storetest.Clock
	org   uuid.UUID
	alice uuid.UUID
	bob   uuid.UUID
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st := storetest.New(t)
	// Whole seconds: PostgreSQL keeps microseconds, so stored times compare equal.
	c := storetest.ClockAt(time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC))
	f := &fixture{st: st, svc: conversations.New(st, c.Now), clock: c, org: storetest.Org(t, st)}
	f.alice = storetest.User(t, st, f.org)
	f.bob = storetest.User(t, st, f.org)
	return f
}

// user is the owner of a user of the fixture's org; key the org's API key owner.
func (f *fixture) user(id uuid.UUID) conversations.Owner {
	return conversations.Owner{Org: f.org, User: &id}
}

func (f *fixture) key() conversations.Owner { return conversations.Owner{Org: f.org} }

func (f *fixture) create(t *testing.T, o conversations.Owner, title string) conversations.Conversation {
	t.Helper()
	c, err := f.svc.Create(t.Context(), o, title, "", nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return c
}

func (f *fixture) start(t *testing.T, o conversations.Owner, id uuid.UUID, in conversations.Input) conversations.Reply {
	t.Helper()
	r, err := f.svc.Start(t.Context(), o, id, in, "default", nil, 1<<30)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return r
}

func (f *fixture) finish(t *testing.T, r conversations.Reply, out conversations.Outcome) []conversations.Message {
	t.Helper()
	added, err := f.svc.Finish(t.Context(), r.Conversation.OrgID, r.Conversation.ID, r.Message.ID, out)
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return added
}

// exchange stores a user message and a completed text reply.
func (f *fixture) exchange(t *testing.T, o conversations.Owner, id uuid.UUID, question, answer string) conversations.Reply {
	t.Helper()
	r := f.start(t, o, id, userInput(question))
	f.finish(t, r, completed(answer))
	return r
}

func (f *fixture) messages(t *testing.T, o conversations.Owner, id uuid.UUID) []conversations.Message {
	t.Helper()
	msgs, _, err := f.svc.Messages(t.Context(), o, id, 1000, "")
	if err != nil {
		t.Fatalf("Messages: %v", err)
	}
	return msgs
}

// exists reports whether the conversation's row is still stored (deleted or not).
func (f *fixture) exists(t *testing.T, id uuid.UUID) bool {
	t.Helper()
	var ok bool
	if err := f.st.Pool.QueryRow(t.Context(), "SELECT EXISTS (SELECT 1 FROM conversations WHERE id = $1)", id).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

func userInput(text string) conversations.Input {
	m := llm.TextMessage(llm.RoleUser, text)
	return conversations.Input{User: &m}
}

func completed(text string) conversations.Outcome {
	return conversations.Outcome{Message: llm.TextMessage(llm.RoleAssistant, text), Status: conversations.Completed, FinishReason: llm.FinishStop}
}

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if e, ok := errors.AsType[*errs.Error](err); !ok || e.Code != code {
		t.Fatalf("error %v, want %s", err, code)
	}
}

// fields checks err is an invalid_request and returns its field errors as "pointer message".
func fields(t *testing.T, err error) []string {
	t.Helper()
	wantCode(t, err, errs.Invalid)
	e, _ := errors.AsType[*errs.Error](err)
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.Pointer+" "+f.Message)
	}
	return out
}

func seqs(msgs []conversations.Message) []int {
	out := make([]int, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func titles(cs []conversations.Conversation) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Title
	}
	return out
}

// --- The context-window policy ---

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  llm.Message
		want int
	}{
		{"Empty", llm.Message{Role: llm.RoleAssistant}, 4},
		{"TextRoundedUp", llm.TextMessage(llm.RoleUser, "abcde"), 4 + 2},
		{"TextExactMultiple", llm.TextMessage(llm.RoleUser, "abcdefgh"), 4 + 2},
		{"OneByte", llm.TextMessage(llm.RoleUser, "a"), 4 + 1},
		{"BytesNotRunes", llm.TextMessage(llm.RoleUser, "ééé"), 4 + 2}, // 6 bytes
		{"EachTextPartRounded", llm.Message{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartText, Text: "a"}, {Type: llm.PartText, Text: "b"}}}, 4 + 1 + 1},
		{"Image", llm.Message{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/a.png"}}}}, 4 + 1000},
		{"TextAndTwoImages", llm.Message{Role: llm.RoleUser, Content: []llm.Part{
			{Type: llm.PartText, Text: "what is this?"}, // 13 bytes
			{Type: llm.PartImage, Image: &llm.Image{MediaType: "image/png", Data: make([]byte, 5000)}},
			{Type: llm.PartImage, Image: &llm.Image{URL: "https://example.com/b.png"}},
		}}, 4 + 4 + 2000},
		// A call counts its name and arguments together: "ab" + "cd" is one token, not two.
		{"ToolCall", llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "ab", Arguments: "cd"}}}, 4 + 1},
		{"TwoToolCalls", llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{
			{ID: "c1", Name: "weather", Arguments: `{"city":"Paris"}`}, // 7 + 16 = 23 bytes
			{ID: "c2", Name: "f", Arguments: "{}"},                     // 3 bytes
		}}, 4 + 6 + 1},
		{"TextAndToolCall", llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "let me check"}},
			ToolCalls: []llm.ToolCall{{ID: "c1", Name: "lookup", Arguments: `{"q":"x"}`}}}, 4 + 3 + 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := conversations.EstimateTokens(tt.msg); got != tt.want {
				t.Errorf("EstimateTokens = %d, want %d", got, tt.want)
			}
		})
	}
}

// Window test messages: each text below is at most 4 bytes, so each message is 5 tokens
// (an empty assistant message with a short call is 5 too).
func wUser(text string) conversations.Message {
	return conversations.Message{Role: llm.RoleUser, Content: text, Status: conversations.Completed}
}

func wReply(text string, status conversations.Status, calls ...llm.ToolCall) conversations.Message {
	return conversations.Message{Role: llm.RoleAssistant, Content: text, ToolCalls: calls, Status: status}
}

func wCall(id string) llm.ToolCall { return llm.ToolCall{ID: id, Name: "f", Arguments: "{}"} }

func wResult(id, text string) conversations.Message {
	return conversations.Message{Role: llm.RoleTool, ToolCallID: id, Name: "f", Content: text, Status: conversations.Completed}
}

func llmMessages(history []conversations.Message) []llm.Message {
	out := make([]llm.Message, 0, len(history))
	for _, m := range history {
		out = append(out, m.LLM())
	}
	return out
}

// checkPaired fails unless every tool result follows the call it answers and every call
// is followed by its result.
func checkPaired(t *testing.T, msgs []llm.Message) {
	t.Helper()
	called := map[string]bool{}
	answered := map[string]bool{}
	for _, m := range msgs {
		for _, c := range m.ToolCalls {
			called[c.ID] = true
		}
		if m.Role == llm.RoleTool {
			if !called[m.ToolCallID] {
				t.Errorf("tool result %s is sent without its call", m.ToolCallID)
			}
			answered[m.ToolCallID] = true
		}
	}
	for id := range called {
		if !answered[id] {
			t.Errorf("tool call %s is sent without its result", id)
		}
	}
}

func TestWindow(t *testing.T) {
	t.Parallel()
	// Turn 1: 4 messages, 20 tokens, with a server tool call and its result.
	turn1 := []conversations.Message{
		wUser("q1"), wReply("", conversations.Completed, wCall("c1")), wResult("c1", "r1"), wReply("a1", conversations.Completed),
	}
	// Turn 2: 2 messages, 10 tokens. Turn 3: the message answered, 5 tokens.
	turn2 := []conversations.Message{wUser("q2"), wReply("a2", conversations.Completed)}
	turn3 := []conversations.Message{wUser("q3")}
	history := slices.Concat(turn1, turn2, turn3)

	tests := []struct {
		name        string
		history     []conversations.Message
		budget      int
		want        []llm.Message
		wantDropped int
	}{
		{"EverythingFits", history, 35, llmMessages(history), 0},
		{"RoomToSpare", history, 1000, llmMessages(history), 0},
		{"OldestTurnDroppedWhole", history, 34, llmMessages(slices.Concat(turn2, turn3)), 4},
		// 25 tokens would fit the tool result, the reply after it and turns 2 and 3 message
		// by message; the call's turn goes whole instead.
		{"ToolCallNotSeparatedFromItsResult", history, 25, llmMessages(slices.Concat(turn2, turn3)), 4},
		{"TwoTurnsDropped", history, 14, llmMessages(turn3), 6},
		{"OnlyTheLastTurnFits", history, 5, llmMessages(turn3), 6},
		// Turn 1 does not fit: the 5-token turn before it is not kept either, though it would fit.
		{"NoGapOverAnOlderTurnThatFits", slices.Concat([]conversations.Message{wUser("s")}, turn1, turn3), 14,
			llmMessages(turn3), 5},
		{
			"LastTurnWithToolCallsKept",
			slices.Concat(turn2, turn1), 20, llmMessages(turn1), 2,
		},
		{"Empty", nil, 10, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, dropped, err := conversations.Window(tt.history, tt.budget)
			if err != nil {
				t.Fatalf("Window: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("window =\n%+v\nwant\n%+v", got, tt.want)
			}
			if dropped != tt.wantDropped {
				t.Errorf("dropped = %d, want %d", dropped, tt.wantDropped)
			}
			checkPaired(t, got)
		})
	}

	t.Run("ToolPairsNeverSeparatedAtAnyBudget", func(t *testing.T) {
		t.Parallel()
		h := slices.Concat(turn1, turn2, []conversations.Message{
			wUser("q4"), wReply("", conversations.Completed, wCall("c2"), wCall("c3")), wResult("c2", "r2"), wResult("c3", "r3"),
			wReply("", conversations.Completed, wCall("c4")), wResult("c4", "r4"), wReply("a4", conversations.Completed),
		}, turn3)
		for budget := 5; budget <= 80; budget++ {
			got, dropped, err := conversations.Window(h, budget)
			if err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			}
			checkPaired(t, got)
			if got[0].Role != llm.RoleUser {
				t.Errorf("budget %d: the window starts with a %s message, want a user message", budget, got[0].Role)
			}
			if dropped+len(got) != len(h) {
				t.Errorf("budget %d: dropped %d + kept %d != %d messages", budget, dropped, len(got), len(h))
			}
			size := 0
			for _, m := range got {
				size += conversations.EstimateTokens(m)
			}
			if size > budget {
				t.Errorf("budget %d: window of %d tokens", budget, size)
			}
		}
	})

	t.Run("ErrLastTurnOverBudget", func(t *testing.T) {
		t.Parallel()
		for _, budget := range []int{4, 0, -100} {
			got, dropped, err := conversations.Window(history, budget)
			if errs.CodeOf(err) != errs.Invalid {
				t.Errorf("budget %d: error %v, want %s", budget, err, errs.Invalid)
			}
			if got != nil || dropped != 0 {
				t.Errorf("budget %d: got %d messages, %d dropped with the error", budget, len(got), dropped)
			}
		}
		// A last turn of several messages counts whole.
		if _, _, err := conversations.Window(turn1, 19); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("a 20-token last turn in 19: error %v, want %s", err, errs.Invalid)
		}
	})

	t.Run("UnfinishedReplies", func(t *testing.T) {
		t.Parallel()
		h := []conversations.Message{
			wUser("q1"),
			wReply("", conversations.Cancelled, wCall("x1")), // nothing said: left out
			wUser("q2"),
			wReply("", conversations.Failed), // left out
			wUser("q3"),
			wReply("part", conversations.Cancelled, wCall("x2")), // partial text kept, call dropped
			wUser("q4"),
			wReply("half", conversations.Failed, wCall("x3")), // partial text kept, call dropped
			wUser("q5"),
		}
		want := []llm.Message{
			llm.TextMessage(llm.RoleUser, "q1"),
			llm.TextMessage(llm.RoleUser, "q2"),
			llm.TextMessage(llm.RoleUser, "q3"),
			llm.TextMessage(llm.RoleAssistant, "part"),
			llm.TextMessage(llm.RoleUser, "q4"),
			llm.TextMessage(llm.RoleAssistant, "half"),
			llm.TextMessage(llm.RoleUser, "q5"),
		}
		got, dropped, err := conversations.Window(h, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || dropped != 0 {
			t.Errorf("window (%d dropped) =\n%+v\nwant\n%+v", dropped, got, want)
		}
		// The left-out replies take no room: 7 messages of 5 tokens fit 35.
		if got, _, err := conversations.Window(h, 35); err != nil || len(got) != 7 {
			t.Errorf("in 35 tokens: %d messages, %v; want all 7", len(got), err)
		}
		// The history itself is not changed.
		if len(h[5].ToolCalls) != 1 {
			t.Error("Window changed the history it was given")
		}
	})

	t.Run("ImagesSent", func(t *testing.T) {
		t.Parallel()
		img := llm.Image{URL: "https://example.com/a.png"}
		h := []conversations.Message{{Role: llm.RoleUser, Content: "see", Images: []llm.Image{img}, Status: conversations.Completed}}
		got, _, err := conversations.Window(h, 1005)
		if err != nil {
			t.Fatal(err)
		}
		want := []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartText, Text: "see"}, {Type: llm.PartImage, Image: &img}}}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("window = %+v, want %+v", got, want)
		}
		if _, _, err := conversations.Window(h, 1004); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("a 1005-token image message in 1004: error %v, want %s", err, errs.Invalid)
		}
	})
}

// --- Replies ---

func TestStartAndFinish(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	c := f.create(t, o, "")
	prompt := &conversations.PromptUse{Name: "support", Version: 3}

	r, err := f.svc.Start(ctx, o, c.ID, userInput("What time is it?"), "default", prompt, 1<<30)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if len(r.Inputs) != 1 || r.Inputs[0].Seq != 1 || r.Inputs[0].Role != llm.RoleUser || r.Inputs[0].Content != "What time is it?" || r.Inputs[0].Status != conversations.Completed {
		t.Fatalf("inputs %+v, want the user message at seq 1", r.Inputs)
	}
	m := r.Message
	if m.Seq != 0 || m.Role != llm.RoleAssistant || m.Status != conversations.InProgress || m.Model != "default" || m.CompletedAt != nil {
		t.Errorf("reply %+v, want an assistant reply in progress without a seq", m)
	}
	if m.Prompt == nil || m.Prompt.Name != "support" || m.Prompt.Version != 3 || m.Prompt.ExperimentID != nil {
		t.Errorf("reply prompt %+v, want support v3", m.Prompt)
	}
	var seqNull bool
	if err := f.st.Pool.QueryRow(ctx, "SELECT seq IS NULL FROM messages WHERE id = $1", m.ID).Scan(&seqNull); err != nil || !seqNull {
		t.Errorf("the reply in progress has a seq in the database (null = %t, %v)", seqNull, err)
	}
	if len(r.History) != 1 || r.History[0].ID != r.Inputs[0].ID {
		t.Errorf("history %+v, want only the input", r.History)
	}
	if r.Conversation.ID != c.ID {
		t.Errorf("reply of conversation %s, want %s", r.Conversation.ID, c.ID)
	}

	t.Run("ErrSecondStartWhileOneRuns", func(t *testing.T) {
		_, err := f.svc.Start(ctx, o, c.ID, userInput("Hello?"), "default", nil, 1<<30)
		wantCode(t, err, errs.Conflict)
		if msgs := f.messages(t, o, c.ID); len(msgs) != 2 {
			t.Errorf("%d messages after the refused start, want 2 (its input not stored)", len(msgs))
		}
	})

	steps := []llm.Message{
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "call_1", Name: "current_time", Arguments: `{"tz":"UTC"}`}}},
		{Role: llm.RoleTool, ToolCallID: "call_1", Name: "current_time", Content: []llm.Part{{Type: llm.PartText, Text: "09:00"}}},
	}
	end := f.clock.Advance(3 * time.Second)
	added, err := f.svc.Finish(ctx, f.org, c.ID, m.ID, conversations.Outcome{
		Steps: steps, Message: llm.TextMessage(llm.RoleAssistant, "It is nine."), Status: conversations.Completed,
		Provider: "dev", Model: "dev-echo", FinishReason: llm.FinishStop,
		Usage: llm.Usage{PromptTokens: 12, CompletionTokens: 5, CachedTokens: 2}, CostUSD: 0.0125,
	})
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	if got := seqs(added); !slices.Equal(got, []int{2, 3, 4}) {
		t.Fatalf("Finish returned seqs %v, want [2 3 4]", got)
	}

	msgs := f.messages(t, o, c.ID)
	if got := seqs(msgs); !slices.Equal(got, []int{1, 2, 3, 4}) {
		t.Fatalf("messages at seqs %v, want [1 2 3 4]", got)
	}
	call, result, reply := msgs[1], msgs[2], msgs[3]
	if call.Role != llm.RoleAssistant || !reflect.DeepEqual(call.ToolCalls, steps[0].ToolCalls) || call.Status != conversations.Completed {
		t.Errorf("step 1 %+v, want the assistant's server tool call", call)
	}
	if result.Role != llm.RoleTool || result.ToolCallID != "call_1" || result.Name != "current_time" || result.Content != "09:00" {
		t.Errorf("step 2 %+v, want the tool result", result)
	}
	if reply.ID != m.ID || reply.Content != "It is nine." || reply.Status != conversations.Completed || len(reply.ToolCalls) != 0 {
		t.Errorf("reply %+v, want the completed reply last", reply)
	}
	if reply.Provider != "dev" || reply.ProviderModel != "dev-echo" || reply.Model != "default" || reply.FinishReason != llm.FinishStop || reply.CostUSD != 0.0125 {
		t.Errorf("reply served by %s/%s (%s), finish %q, cost %v", reply.Provider, reply.ProviderModel, reply.Model, reply.FinishReason, reply.CostUSD)
	}
	if want := (llm.Usage{PromptTokens: 12, CompletionTokens: 5, CachedTokens: 2}); reply.Usage == nil || *reply.Usage != want {
		t.Errorf("reply usage %+v, want %+v", reply.Usage, want)
	}
	if reply.CompletedAt == nil || !reply.CompletedAt.Equal(end) || reply.ErrorCode != "" {
		t.Errorf("reply completed at %v with error %q, want %v and none", reply.CompletedAt, reply.ErrorCode, end)
	}
	if reply.Prompt == nil || reply.Prompt.Name != "support" {
		t.Errorf("reply prompt %+v lost at the end", reply.Prompt)
	}
	if got, err := f.svc.Message(ctx, o, c.ID, m.ID); err != nil || got.Seq != 4 || got.Content != "It is nine." {
		t.Errorf("Message = %+v, %v", got, err)
	}

	t.Run("ErrFinishTwice", func(t *testing.T) {
		_, err := f.svc.Finish(ctx, f.org, c.ID, m.ID, conversations.Outcome{Steps: steps, Message: llm.TextMessage(llm.RoleAssistant, "again"), Status: conversations.Completed})
		wantCode(t, err, errs.Conflict)
		msgs := f.messages(t, o, c.ID)
		if got := seqs(msgs); !slices.Equal(got, []int{1, 2, 3, 4}) || msgs[3].Content != "It is nine." {
			t.Errorf("messages at seqs %v after a second Finish, want [1 2 3 4] unchanged", got)
		}
	})

	t.Run("NextStartSeesEverything", func(t *testing.T) {
		r2 := f.start(t, o, c.ID, userInput("Thanks"))
		if r2.Inputs[0].Seq != 5 {
			t.Errorf("next input at seq %d, want 5", r2.Inputs[0].Seq)
		}
		if got := seqs(r2.History); !slices.Equal(got, []int{1, 2, 3, 4, 5}) {
			t.Errorf("history seqs %v, want [1 2 3 4 5]", got)
		}
		// The running reply is listed last.
		msgs := f.messages(t, o, c.ID)
		if last := msgs[len(msgs)-1]; last.ID != r2.Message.ID || last.Status != conversations.InProgress {
			t.Errorf("last message %+v, want the running reply", last)
		}
		f.finish(t, r2, completed("You're welcome."))
	})
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	c := f.create(t, f.user(f.alice), "")

	_, err := f.svc.Start(ctx, f.user(f.alice), uuid.Must(uuid.NewV7()), userInput("hi"), "default", nil, 1<<30)
	wantCode(t, err, errs.NotFound)
	_, err = f.svc.Start(ctx, f.user(f.bob), c.ID, userInput("hi"), "default", nil, 1<<30)
	wantCode(t, err, errs.NotFound)
	_, err = f.svc.Start(ctx, conversations.Owner{Org: storetest.Org(t, f.st)}, c.ID, userInput("hi"), "default", nil, 1<<30)
	wantCode(t, err, errs.NotFound)
	// Nothing waits for tool results.
	_, err = f.svc.Start(ctx, f.user(f.alice), c.ID, conversations.Input{ToolResults: []conversations.ToolResult{{CallID: "c1", Content: "x"}}}, "default", nil, 1<<30)
	wantCode(t, err, errs.Conflict)

	if _, err := f.svc.Delete(ctx, f.user(f.alice), c.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Start(ctx, f.user(f.alice), c.ID, userInput("hi"), "default", nil, 1<<30)
	wantCode(t, err, errs.NotFound)
	var n int
	if err := f.st.Pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d messages stored by refused starts (%v), want 0", n, err)
	}
}

func TestClientToolCalls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	c := f.create(t, o, "")
	r := f.start(t, o, c.ID, userInput("Weather and news?"))
	calls := []llm.ToolCall{{ID: "c1", Name: "weather", Arguments: `{"city":"Paris"}`}, {ID: "c2", Name: "news", Arguments: `{}`}}
	added := f.finish(t, r, conversations.Outcome{
		Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Let me look."}}, ToolCalls: calls},
		Status:  conversations.Completed, FinishReason: llm.FinishToolCalls,
	})
	if got := added[len(added)-1]; !reflect.DeepEqual(got.ToolCalls, calls) || got.Content != "Let me look." {
		t.Fatalf("stored reply %+v, want its tool calls and text", got)
	}
	stored := len(f.messages(t, o, c.ID))

	t.Run("ErrUserMessageWhileCallsWait", func(t *testing.T) {
		_, err := f.svc.Start(ctx, o, c.ID, userInput("Never mind"), "default", nil, 1<<30)
		wantCode(t, err, errs.Conflict)
	})

	results := func(rs ...conversations.ToolResult) conversations.Input { return conversations.Input{ToolResults: rs} }
	bad := []struct {
		name string
		in   conversations.Input
		want []string
	}{
		{"ErrMissingResult", results(conversations.ToolResult{CallID: "c1", Content: "sunny"}),
			[]string{"/results has no result for tool call c2 (news)"}},
		{"ErrNoResults", results(),
			[]string{"/results has no result for tool call c1 (weather)", "/results has no result for tool call c2 (news)"}},
		{"ErrUnknownCall", results(
			conversations.ToolResult{CallID: "nope", Content: "?"}, conversations.ToolResult{CallID: "c1"}, conversations.ToolResult{CallID: "c2"}),
			[]string{"/results/0/tool_call_id answers no waiting tool call"}},
		{"ErrAnsweredTwice", results(
			conversations.ToolResult{CallID: "c1"}, conversations.ToolResult{CallID: "c2"}, conversations.ToolResult{CallID: "c1"}),
			[]string{"/results/2/tool_call_id is answered twice"}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.Start(ctx, o, c.ID, tt.in, "default", nil, 1<<30)
			if got := fields(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("field errors %q, want %q", got, tt.want)
			}
			if n := len(f.messages(t, o, c.ID)); n != stored {
				t.Errorf("%d messages after refused results, want %d", n, stored)
			}
		})
	}

	// In another order than the calls: each result is stored as given, named after its call.
	r2, err := f.svc.Start(ctx, o, c.ID, results(
		conversations.ToolResult{CallID: "c2", Content: "feed down", IsError: true},
		conversations.ToolResult{CallID: "c1", Content: "sunny"},
	), "default", nil, 1<<30)
	if err != nil {
		t.Fatalf("Start with the results: %v", err)
	}
	type got struct {
		Seq           int
		Role          llm.Role
		ID, Name, Txt string
		IsError       bool
	}
	want := []got{{3, llm.RoleTool, "c2", "news", "feed down", true}, {4, llm.RoleTool, "c1", "weather", "sunny", false}}
	var inputs []got
	for _, m := range r2.Inputs {
		inputs = append(inputs, got{m.Seq, m.Role, m.ToolCallID, m.Name, m.Content, m.IsError})
	}
	if !reflect.DeepEqual(inputs, want) {
		t.Errorf("stored results %+v, want %+v", inputs, want)
	}
	msgs := f.messages(t, o, c.ID)
	for i, w := range want {
		m := msgs[2+i]
		if (got{m.Seq, m.Role, m.ToolCallID, m.Name, m.Content, m.IsError}) != w {
			t.Errorf("listed result %+v, want %+v", m, w)
		}
	}
	if n := len(r2.History); n != 4 {
		t.Errorf("history of %d messages, want 4 (results included)", n)
	}
	window, _, err := conversations.Window(r2.History, 1000)
	if err != nil {
		t.Fatal(err)
	}
	checkPaired(t, window)

	f.finish(t, r2, completed("Sunny; the news feed is down."))
	t.Run("ErrResultsWhenNoneWait", func(t *testing.T) {
		_, err := f.svc.Start(ctx, o, c.ID, results(conversations.ToolResult{CallID: "c1", Content: "again"}), "default", nil, 1<<30)
		wantCode(t, err, errs.Conflict)
	})
	t.Run("OKUserMessageOnceAnswered", func(t *testing.T) {
		f.finish(t, f.start(t, o, c.ID, userInput("Thanks")), completed("Welcome."))
	})
}

func TestUnfinishedReplies(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)

	tests := []struct {
		name       string
		out        conversations.Outcome
		wantStatus conversations.Status
		wantCode   errs.Code
		wantDetail string
	}{
		{
			name: "CancelledKeepsTextNotCalls",
			out: conversations.Outcome{Status: conversations.Cancelled, Message: llm.Message{
				Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Half an ans"}}, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "weather", Arguments: "{"}},
			}},
			wantStatus: conversations.Cancelled,
		},
		{
			name: "FailedWithKilnError",
			out: conversations.Outcome{Status: conversations.Failed, Err: errs.E(errs.UpstreamError, "The model's provider failed."),
				Message: llm.Message{Role: llm.RoleAssistant, Content: []llm.Part{{Type: llm.PartText, Text: "Half an ans"}}, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "weather", Arguments: "{}"}}}},
			wantStatus: conversations.Failed, wantCode: errs.UpstreamError, wantDetail: "The model's provider failed.",
		},
		{
			name: "FailedWithOtherErrorHidesIt",
			out: conversations.Outcome{Status: conversations.Failed, Err: errors.New("dial 10.0.0.7: password=hunter2"),
				Message: llm.TextMessage(llm.RoleAssistant, "Half an ans")},
			wantStatus: conversations.Failed, wantCode: errs.Internal, wantDetail: "The reply failed.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.create(t, o, "")
			r := f.start(t, o, c.ID, userInput("Weather?"))
			added := f.finish(t, r, tt.out)
			m, err := f.svc.Message(ctx, o, c.ID, r.Message.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(added) != 1 || added[0].ID != m.ID {
				t.Errorf("Finish returned %+v, want the reply only", added)
			}
			if m.Status != tt.wantStatus || m.Content != "Half an ans" || m.ToolCalls != nil || m.Seq != 2 {
				t.Errorf("reply %+v, want %s at seq 2 with its text and no tool calls", m, tt.wantStatus)
			}
			if m.ErrorCode != tt.wantCode || m.ErrorDetail != tt.wantDetail {
				t.Errorf("reply error %q %q, want %q %q", m.ErrorCode, m.ErrorDetail, tt.wantCode, tt.wantDetail)
			}
			if m.Usage != nil || m.CompletedAt == nil {
				t.Errorf("reply usage %+v (no provider: want none), completed at %v", m.Usage, m.CompletedAt)
			}
			// Its calls do not wait for results: the user may go on.
			f.finish(t, f.start(t, o, c.ID, userInput("Try again")), completed("Sunny."))
		})
	}
}

func TestDeleteWhileReplyRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)

	idle := f.create(t, o, "")
	if running, err := f.svc.Delete(ctx, o, idle.ID, audit.Actor{}); err != nil || running != nil {
		t.Errorf("Delete of an idle conversation = %v, %v; want no running reply", running, err)
	}

	c := f.create(t, o, "")
	r := f.start(t, o, c.ID, userInput("Long story please"))
	running, err := f.svc.Delete(ctx, o, c.ID, audit.Actor{})
	if err != nil || running == nil || *running != r.Message.ID {
		t.Fatalf("Delete = %v, %v; want the running reply %s", running, err, r.Message.ID)
	}
	_, err = f.svc.Get(ctx, o, c.ID)
	wantCode(t, err, errs.NotFound)
	_, err = f.svc.Delete(ctx, o, c.ID, audit.Actor{})
	wantCode(t, err, errs.NotFound)
	// The reply still ends.
	if _, err := f.svc.Finish(ctx, f.org, c.ID, r.Message.ID, conversations.Outcome{Status: conversations.Cancelled}); err != nil {
		t.Errorf("Finish after delete: %v", err)
	}
}

func TestMessagesCursor(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	c := f.create(t, o, "")
	f.exchange(t, o, c.ID, "one", "1")
	f.exchange(t, o, c.ID, "two", "2")
	r := f.start(t, o, c.ID, userInput("three"))

	page, next, err := f.svc.Messages(ctx, o, c.ID, 2, "")
	if err != nil || !slices.Equal(seqs(page), []int{1, 2}) || next != conversations.Cursor(page[1]) {
		t.Fatalf("first page seqs %v, next %q, %v; want [1 2] and a cursor", seqs(page), next, err)
	}
	page, next, err = f.svc.Messages(ctx, o, c.ID, 10, next)
	if err != nil || !slices.Equal(seqs(page), []int{3, 4, 5, 0}) || page[3].ID != r.Message.ID || next != "" {
		t.Fatalf("second page seqs %v, next %q, %v; want [3 4 5] and the running reply, and no cursor", seqs(page), next, err)
	}
	for _, cursor := range []string{"x", "-1", "99999999999"} {
		_, _, err := f.svc.Messages(ctx, o, c.ID, 10, cursor)
		if got := fields(t, err); len(got) != 1 || !strings.HasPrefix(got[0], "/query/cursor ") {
			t.Errorf("cursor %q: field errors %q, want /query/cursor", cursor, got)
		}
	}
	_, _, err = f.svc.Messages(ctx, f.user(f.bob), c.ID, 10, "")
	wantCode(t, err, errs.NotFound)
}

// --- Who sees what ---

func TestOwnerVisibility(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	alice, bob, key := f.user(f.alice), f.user(f.bob), f.key()
	other := conversations.Owner{Org: storetest.Org(t, f.st)}

	ca := f.create(t, alice, "alice's")
	cb := f.create(t, bob, "bob's")
	ck := f.create(t, key, "the key's")
	if ca.UserID == nil || *ca.UserID != f.alice || ck.UserID != nil || ca.OrgID != f.org {
		t.Fatalf("created %+v and %+v, want alice's and no user's", ca, ck)
	}
	ra := f.exchange(t, alice, ca.ID, "hi", "hello")

	newTitle := "renamed"
	tests := []struct {
		name    string
		owner   conversations.Owner
		visible []uuid.UUID
		hidden  []uuid.UUID
	}{
		{"UserSeesOnlyTheirs", alice, []uuid.UUID{ca.ID}, []uuid.UUID{cb.ID, ck.ID}},
		{"OtherUserOfTheOrg", bob, []uuid.UUID{cb.ID}, []uuid.UUID{ca.ID, ck.ID}},
		{"APIKeySeesTheOrgs", key, []uuid.UUID{ck.ID, cb.ID, ca.ID}, nil},
		{"OtherOrgSeesNone", other, nil, []uuid.UUID{ca.ID, cb.ID, ck.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := f.svc.List(ctx, tt.owner, 100, nil, "", false)
			if err != nil {
				t.Fatal(err)
			}
			var ids []uuid.UUID
			for _, c := range list {
				ids = append(ids, c.ID)
			}
			if !slices.Equal(ids, tt.visible) {
				t.Errorf("List = %v, want %v (newest first)", ids, tt.visible)
			}
			for _, id := range tt.visible {
				if _, err := f.svc.Get(ctx, tt.owner, id); err != nil {
					t.Errorf("Get(%s): %v", id, err)
				}
			}
			for _, id := range tt.hidden {
				_, err := f.svc.Get(ctx, tt.owner, id)
				wantCode(t, err, errs.NotFound)
				_, err = f.svc.Update(ctx, tt.owner, id, &newTitle, nil, nil)
				wantCode(t, err, errs.NotFound)
				_, err = f.svc.Delete(ctx, tt.owner, id, audit.Actor{})
				wantCode(t, err, errs.NotFound)
				_, _, err = f.svc.Messages(ctx, tt.owner, id, 10, "")
				wantCode(t, err, errs.NotFound)
				_, err = f.svc.Export(ctx, tt.owner, id)
				wantCode(t, err, errs.NotFound)
			}
			if !slices.Contains(tt.visible, ca.ID) {
				_, err := f.svc.Message(ctx, tt.owner, ca.ID, ra.Message.ID)
				wantCode(t, err, errs.NotFound)
			}
		})
	}
	// The refused updates and deletes changed nothing.
	for _, c := range []conversations.Conversation{ca, cb, ck} {
		got, err := f.svc.Get(ctx, key, c.ID)
		if err != nil || got.Title != c.Title {
			t.Errorf("after refused updates: %+v, %v; want title %q", got, err, c.Title)
		}
	}
	// A message is found only under its own conversation.
	_, err := f.svc.Message(ctx, key, cb.ID, ra.Message.ID)
	wantCode(t, err, errs.NotFound)
	if m, err := f.svc.Message(ctx, key, ca.ID, ra.Message.ID); err != nil || m.Content != "hello" {
		t.Errorf("the key reading alice's reply: %+v, %v", m, err)
	}

	t.Run("UpdateAndDeleteOwn", func(t *testing.T) {
		model := "fast"
		f.clock.Advance(time.Minute)
		got, err := f.svc.Update(ctx, alice, ca.ID, &newTitle, &model, map[string]string{"k": "v"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Title != "renamed" || got.Model != "fast" || got.Metadata["k"] != "v" || !got.UpdatedAt.Equal(f.clock.Now()) || !got.CreatedAt.Equal(ca.CreatedAt) {
			t.Errorf("updated %+v", got)
		}
		// Nil changes nothing.
		got, err = f.svc.Update(ctx, alice, ca.ID, nil, nil, nil)
		if err != nil || got.Title != "renamed" || got.Model != "fast" || got.Metadata["k"] != "v" {
			t.Errorf("empty update: %+v, %v", got, err)
		}
		if _, err := f.svc.Delete(ctx, key, cb.ID, audit.Actor{}); err != nil {
			t.Errorf("the key deleting bob's: %v", err)
		}
		list, err := f.svc.List(ctx, key, 100, nil, "", false)
		if err != nil || len(list) != 2 {
			t.Errorf("List after a delete: %d, %v; want 2", len(list), err)
		}
	})
}

func TestListSearchAndPaging(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.key()
	for _, title := range []string{"100% done", "100 done", "a_b", "axb", `back\slash`, "Plain talk", ""} {
		f.create(t, o, title)
	}
	tests := []struct {
		q    string
		want []string
	}{
		{"%", []string{"100% done"}},
		{"0%", []string{"100% done"}},
		{"_", []string{"a_b"}},
		{"a_", []string{"a_b"}},
		{`\`, []string{`back\slash`}},
		{`k\s`, []string{`back\slash`}},
		{"PLAIN", []string{"Plain talk"}},
		{"done", []string{"100 done", "100% done"}},
		{"nothing", []string{}},
		{"", []string{"", "Plain talk", `back\slash`, "axb", "a_b", "100 done", "100% done"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("q=%q", tt.q), func(t *testing.T) {
			list, err := f.svc.List(ctx, o, 100, nil, tt.q, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := titles(list); !slices.Equal(got, tt.want) {
				t.Errorf("titles %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("Paging", func(t *testing.T) {
		var got []string
		var after *uuid.UUID
		for range 10 {
			page, err := f.svc.List(ctx, o, 3, after, "", false)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, titles(page)...)
			if len(page) < 3 {
				break
			}
			after = &page[len(page)-1].ID
		}
		if want := tests[len(tests)-1].want; !slices.Equal(got, want) {
			t.Errorf("paged titles %q, want %q", got, want)
		}
	})
}

// --- Feedback ---

func TestFeedback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	alice := f.user(f.alice)
	c := f.create(t, alice, "")
	r := f.exchange(t, alice, c.ID, "hi", "hello")

	first := f.clock.Advance(time.Minute)
	fb, err := f.svc.SetFeedback(ctx, alice, r.Message.ID, f.alice, conversations.RatingUp, "nice")
	if err != nil {
		t.Fatalf("SetFeedback: %v", err)
	}
	if fb.MessageID != r.Message.ID || fb.Rating != "up" || fb.Comment != "nice" || !fb.CreatedAt.Equal(first) || !fb.UpdatedAt.Equal(first) {
		t.Errorf("feedback %+v, want up/nice at %v", fb, first)
	}

	second := f.clock.Advance(time.Hour)
	fb, err = f.svc.SetFeedback(ctx, alice, r.Message.ID, f.alice, conversations.RatingDown, "")
	if err != nil {
		t.Fatalf("SetFeedback again: %v", err)
	}
	if fb.Rating != "down" || fb.Comment != "" || !fb.CreatedAt.Equal(first) || !fb.UpdatedAt.Equal(second) {
		t.Errorf("replaced feedback %+v, want down, no comment, created %v, updated %v", fb, first, second)
	}
	var n int
	if err := f.st.Pool.QueryRow(ctx, "SELECT count(*) FROM message_feedback WHERE message_id = $1", r.Message.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d feedback rows (%v), want 1", n, err)
	}

	// Another rater (an API key) rates separately.
	keyID := uuid.Must(uuid.NewV7())
	if _, err := f.svc.SetFeedback(ctx, f.key(), r.Message.ID, keyID, conversations.RatingUp, ""); err != nil {
		t.Errorf("the key rating: %v", err)
	}
	if err := f.st.Pool.QueryRow(ctx, "SELECT count(*) FROM message_feedback WHERE message_id = $1", r.Message.ID).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d feedback rows (%v), want 2", n, err)
	}

	running := f.start(t, alice, c.ID, userInput("more"))
	tests := []struct {
		name    string
		owner   conversations.Owner
		message uuid.UUID
		want    errs.Code
	}{
		{"ErrUserMessage", alice, r.Inputs[0].ID, errs.Conflict},
		{"ErrReplyInProgress", alice, running.Message.ID, errs.Conflict},
		{"ErrAnotherUsersMessage", f.user(f.bob), r.Message.ID, errs.NotFound},
		{"ErrAnotherOrgsMessage", conversations.Owner{Org: storetest.Org(t, f.st)}, r.Message.ID, errs.NotFound},
		{"ErrNoSuchMessage", alice, uuid.Must(uuid.NewV7()), errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.SetFeedback(ctx, tt.owner, tt.message, f.bob, conversations.RatingUp, "")
			wantCode(t, err, tt.want)
		})
	}
	var bobs int
	if err := f.st.Pool.QueryRow(ctx, "SELECT count(*) FROM message_feedback WHERE rater = $1", f.bob).Scan(&bobs); err != nil || bobs != 0 {
		t.Errorf("%d refused ratings stored (%v)", bobs, err)
	}

	// A cancelled reply has ended: it can be rated.
	f.finish(t, running, conversations.Outcome{Status: conversations.Cancelled, Message: llm.TextMessage(llm.RoleAssistant, "par")})
	if _, err := f.svc.SetFeedback(ctx, alice, running.Message.ID, f.alice, conversations.RatingDown, "cut off"); err != nil {
		t.Errorf("rating a cancelled reply: %v", err)
	}
}

// --- Retention ---

func TestRetentionDays(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	days := func(n int) *int { return &n }

	if got, err := f.svc.RetentionDays(ctx, f.org); err != nil || got != nil {
		t.Fatalf("RetentionDays of a new org = %v, %v; want nil", got, err)
	}
	for _, set := range []*int{days(30), days(1), days(36500), nil, days(7)} {
		got, err := f.svc.SetRetentionDays(ctx, f.org, set, audit.Actor{})
		if err != nil {
			t.Fatalf("SetRetentionDays(%v): %v", set, err)
		}
		read, err := f.svc.RetentionDays(ctx, f.org)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, set) || !reflect.DeepEqual(read, set) {
			t.Errorf("SetRetentionDays(%v) = %v, then RetentionDays = %v", set, got, read)
		}
	}
	for _, bad := range []int{0, -1, 36501} {
		_, err := f.svc.SetRetentionDays(ctx, f.org, &bad, audit.Actor{})
		wantCode(t, err, errs.Invalid)
	}
	if got, _ := f.svc.RetentionDays(ctx, f.org); got == nil || *got != 7 {
		t.Errorf("retention after refused changes = %v, want 7", got)
	}
	_, err := f.svc.RetentionDays(ctx, uuid.Must(uuid.NewV7()))
	wantCode(t, err, errs.NotFound)
	_, err = f.svc.SetRetentionDays(ctx, uuid.Must(uuid.NewV7()), days(3), audit.Actor{})
	wantCode(t, err, errs.NotFound)
}

func TestPurgeIdle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	thirty := 30
	if _, err := f.svc.SetRetentionDays(ctx, f.org, &thirty, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	keeper := conversations.Owner{Org: storetest.Org(t, f.st)} // no retention
	o := f.user(f.alice)

	idle := f.create(t, o, "idle")
	f.exchange(t, o, idle.ID, "hi", "hello")
	running := f.create(t, o, "running")
	f.start(t, o, running.ID, userInput("still thinking"))
	active := f.create(t, o, "active")
	kept := f.create(t, keeper, "kept forever")
	deleted := f.create(t, o, "deleted")
	if _, err := f.svc.Delete(ctx, o, deleted.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}

	f.clock.Advance(10 * 24 * time.Hour)
	recent := f.create(t, o, "recent")
	f.clock.Advance(10 * 24 * time.Hour)
	f.exchange(t, o, active.ID, "still here", "yes") // a new message makes it active again

	f.clock.Advance(10*24*time.Hour + time.Minute) // 30 days and a minute after the first ones
	n, err := f.svc.PurgeIdle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("PurgeIdle = %d, want 2 (the idle and the deleted ones)", n)
	}
	want := map[string]bool{"idle": false, "deleted": false, "running": true, "active": true, "recent": true, "kept forever": true}
	for _, c := range []conversations.Conversation{idle, running, active, kept, deleted, recent} {
		if got := f.exists(t, c.ID); got != want[c.Title] {
			t.Errorf("%q kept = %t, want %t", c.Title, got, want[c.Title])
		}
	}
	var msgs int
	if err := f.st.Pool.QueryRow(ctx, "SELECT count(*) FROM messages WHERE conversation_id = $1", idle.ID).Scan(&msgs); err != nil || msgs != 0 {
		t.Errorf("%d messages of the purged conversation left (%v)", msgs, err)
	}

	// Without retention nothing more goes, however old.
	if _, err := f.svc.SetRetentionDays(ctx, f.org, nil, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(365 * 24 * time.Hour)
	if n, err := f.svc.PurgeIdle(ctx); err != nil || n != 0 {
		t.Errorf("PurgeIdle without retention = %d, %v; want 0", n, err)
	}
}

func TestPurgeDeleted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	old := f.create(t, o, "deleted long ago")
	f.exchange(t, o, old.ID, "hi", "hello")
	recent := f.create(t, o, "deleted recently")
	live := f.create(t, o, "live")

	if _, err := f.svc.Delete(ctx, o, old.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(3 * 24 * time.Hour)
	if _, err := f.svc.Delete(ctx, o, recent.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Duration(retention.Builtin.DeletedConversations)*24*time.Hour - 3*24*time.Hour - time.Minute)
	if n, err := f.svc.PurgeDeleted(ctx); err != nil || n != 0 {
		t.Errorf("PurgeDeleted a minute early = %d, %v; want 0", n, err)
	}
	f.clock.Advance(2 * time.Minute)
	n, err := f.svc.PurgeDeleted(ctx)
	if err != nil || n != 1 {
		t.Errorf("PurgeDeleted = %d, %v; want 1", n, err)
	}
	if f.exists(t, old.ID) || !f.exists(t, recent.ID) || !f.exists(t, live.ID) {
		t.Errorf("kept: old %t, recent %t, live %t; want false, true, true", f.exists(t, old.ID), f.exists(t, recent.ID), f.exists(t, live.ID))
	}
}

func TestFailStale(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	otherOrg := conversations.Owner{Org: storetest.Org(t, f.st)}

	c1 := f.create(t, o, "")
	r1 := f.start(t, o, c1.ID, userInput("one"))
	c2 := f.create(t, otherOrg, "")
	r2 := f.start(t, otherOrg, c2.ID, userInput("two"))
	done := f.create(t, o, "")
	rd := f.exchange(t, o, done.ID, "done", "ok")
	f.clock.Advance(40 * time.Minute)
	c3 := f.create(t, o, "")
	r3 := f.start(t, o, c3.ID, userInput("fresh"))
	f.clock.Advance(21 * time.Minute) // r1, r2: 61 minutes; r3: 21

	stale, err := f.svc.FailStale(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	byMessage := func(a, b conversations.Stale) int { return strings.Compare(a.Message.String(), b.Message.String()) }
	slices.SortFunc(stale, byMessage)
	want := []conversations.Stale{{Org: f.org, Conversation: c1.ID, Message: r1.Message.ID}, {Org: otherOrg.Org, Conversation: c2.ID, Message: r2.Message.ID}}
	slices.SortFunc(want, byMessage)
	if !reflect.DeepEqual(stale, want) {
		t.Fatalf("FailStale = %+v, want %+v", stale, want)
	}
	for _, s := range []struct {
		o conversations.Owner
		c uuid.UUID
		m uuid.UUID
	}{{o, c1.ID, r1.Message.ID}, {otherOrg, c2.ID, r2.Message.ID}} {
		m, err := f.svc.Message(ctx, s.o, s.c, s.m)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != conversations.Failed || m.ErrorCode != errs.Internal || m.ErrorDetail == "" || m.Seq != 2 || m.CompletedAt == nil {
			t.Errorf("stale reply %+v, want failed (internal) at seq 2", m)
		}
	}
	if m, err := f.svc.Message(ctx, o, c3.ID, r3.Message.ID); err != nil || m.Status != conversations.InProgress {
		t.Errorf("fresh reply %+v, %v; want still in progress", m, err)
	}
	if m, err := f.svc.Message(ctx, o, done.ID, rd.Message.ID); err != nil || m.Status != conversations.Completed || m.ErrorCode != "" {
		t.Errorf("ended reply %+v, %v; want untouched", m, err)
	}
	// The conversation takes a new reply.
	f.finish(t, f.start(t, o, c1.ID, userInput("again")), completed("ok"))
	if again, err := f.svc.FailStale(ctx, time.Hour); err != nil || len(again) != 0 {
		t.Errorf("second FailStale = %+v, %v; want none", again, err)
	}
}

// --- Titles ---

func TestSetTitle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.key()
	title := func(id uuid.UUID) (string, bool) {
		t.Helper()
		var s *string
		if err := f.st.Pool.QueryRow(ctx, "SELECT title FROM conversations WHERE id = $1", id).Scan(&s); err != nil {
			t.Fatal(err)
		}
		if s == nil {
			return "", false
		}
		return *s, true
	}

	c := f.create(t, o, "")
	for _, blank := range []string{"", "  \n\t "} {
		if ok, err := f.svc.SetTitle(ctx, f.org, c.ID, blank); err != nil || ok {
			t.Errorf("SetTitle(%q) = %t, %v; want false", blank, ok, err)
		}
	}
	if _, set := title(c.ID); set {
		t.Error("a blank title was set")
	}
	if ok, err := f.svc.SetTitle(ctx, f.org, c.ID, "  Trip to Paris \n"); err != nil || !ok {
		t.Fatalf("SetTitle = %t, %v; want true", ok, err)
	}
	if got, _ := title(c.ID); got != "Trip to Paris" {
		t.Errorf("title %q, want it trimmed", got)
	}
	if ok, err := f.svc.SetTitle(ctx, f.org, c.ID, "Another"); err != nil || ok {
		t.Errorf("SetTitle on a titled conversation = %t, %v; want false", ok, err)
	}
	if got, _ := title(c.ID); got != "Trip to Paris" {
		t.Errorf("title %q after a second SetTitle, want it kept", got)
	}

	long := f.create(t, o, "")
	if ok, err := f.svc.SetTitle(ctx, f.org, long.ID, strings.Repeat("é", 250)); err != nil || !ok {
		t.Fatalf("SetTitle of 250 runes = %t, %v", ok, err)
	}
	if got, _ := title(long.ID); got != strings.Repeat("é", 200) || !utf8.ValidString(got) {
		t.Errorf("title of %d runes, want the first 200", utf8.RuneCountInString(got))
	}

	other := f.create(t, o, "")
	if ok, err := f.svc.SetTitle(ctx, storetest.Org(t, f.st), other.ID, "Wrong org"); err != nil || ok {
		t.Errorf("SetTitle from another org = %t, %v; want false", ok, err)
	}
	if _, err := f.svc.Delete(ctx, o, other.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.svc.SetTitle(ctx, f.org, other.ID, "Deleted"); err != nil || ok {
		t.Errorf("SetTitle on a deleted conversation = %t, %v; want false", ok, err)
	}
	if _, set := title(other.ID); set {
		t.Error("a title was set on a deleted or foreign conversation")
	}
}

// --- Export ---

func TestMarkdown(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	c := conversations.Conversation{ID: uuid.Must(uuid.NewV7()), Title: "Trip\nto Paris", CreatedAt: at}
	msgs := []conversations.Message{
		{Role: llm.RoleUser, Content: "Plan a trip", Images: []llm.Image{{URL: "https://example.com/map.png"}, {MediaType: "image/png", Data: make([]byte, 42)}}, Status: conversations.Completed, CreatedAt: at},
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "weather", Arguments: `{"city":"Paris"}`}}, Status: conversations.Completed, CreatedAt: at},
		{Role: llm.RoleTool, ToolCallID: "c1", Name: "weather", Content: "sunny\n", Status: conversations.Completed, CreatedAt: at},
		{Role: llm.RoleTool, ToolCallID: "c2", Name: "code", Content: "```go\nx := 1\n```", IsError: true, Status: conversations.Completed, CreatedAt: at},
		{Role: llm.RoleAssistant, Content: "Go in May.", Model: "default", Provider: "dev", ProviderModel: "dev-echo", Status: conversations.Completed, CreatedAt: at},
		{Role: llm.RoleAssistant, Content: "Half", Status: conversations.Cancelled, CreatedAt: at},
		{Role: llm.RoleAssistant, Status: conversations.Failed, ErrorCode: errs.UpstreamError, ErrorDetail: "The provider\nfailed.", CreatedAt: at},
		{Role: llm.RoleAssistant, Status: conversations.InProgress, CreatedAt: at},
	}
	md := markdown(t, c, msgs, at.Add(time.Hour))
	for _, want := range []string{
		"# Trip to Paris\n",
		c.ID.String(),
		"\n## User · ",
		"\nPlan a trip\n",
		"![image](https://example.com/map.png)",
		"image/png, 42 bytes",
		"\n## Assistant · ",
		"Tool call `weather` (`c1`):\n\n```json\n{\"city\":\"Paris\"}\n```\n",
		"\n## Tool result: `weather` (`c1`) · ",
		"\n```\nsunny\n```\n",
		"\n## Tool result: `code` (`c2`), an error · ",
		"\n````\n```go\nx := 1\n```\n````\n",
		"\n## Assistant (default: dev/dev-echo) · ",
		"\nGo in May.\n",
		"\nHalf\n\n_Cancelled._\n",
		"\n_Failed (upstream_error): The provider failed._\n",
		"\n_Being generated._\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if n := strings.Count(md, "\n## "); n != len(msgs) {
		t.Errorf("%d headings, want one per message (%d)", n, len(msgs))
	}
	if strings.Count(md, "_Cancelled._") != 1 || strings.Count(md, "_Failed") != 1 {
		t.Errorf("status lines on messages that ended well:\n%s", md)
	}

	untitled := markdown(t, conversations.Conversation{ID: c.ID, CreatedAt: at}, nil, at)
	if !strings.HasPrefix(untitled, "# Untitled conversation\n") {
		t.Errorf("untitled export starts %q", untitled)
	}
}

// markdown is the transcript of c with msgs.
func markdown(t *testing.T, c conversations.Conversation, msgs []conversations.Message, at time.Time) string {
	t.Helper()
	var b strings.Builder
	if err := conversations.MarkdownHeader(&b, c, at); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := conversations.MarkdownMessage(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// exportAll reads every page of an export.
func exportAll(t *testing.T, exp *conversations.Export) []conversations.Message {
	t.Helper()
	var all []conversations.Message
	for {
		page, err := exp.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if page == nil {
			return all
		}
		all = append(all, page...)
	}
}

func TestExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()
	o := f.user(f.alice)
	c := f.create(t, o, "Weather")
	r := f.start(t, o, c.ID, userInput("Weather?"))
	f.finish(t, r, conversations.Outcome{
		Steps: []llm.Message{
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "c1", Name: "weather", Arguments: `{"city":"Oslo"}`}}},
			{Role: llm.RoleTool, ToolCallID: "c1", Name: "weather", Content: []llm.Part{{Type: llm.PartText, Text: "rain"}}},
		},
		Message: llm.TextMessage(llm.RoleAssistant, "Rain."), Status: conversations.Completed, Provider: "dev", Model: "dev-echo",
	})
	exp, err := f.svc.Export(ctx, o, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, msgs := exp.Conversation, exportAll(t, exp)
	if got.ID != c.ID || !slices.Equal(seqs(msgs), []int{1, 2, 3, 4}) {
		t.Fatalf("Export = %+v with seqs %v", got, seqs(msgs))
	}
	md := markdown(t, got, msgs, f.clock.Now())
	for _, want := range []string{"# Weather\n", "Weather?", "```json\n{\"city\":\"Oslo\"}\n```", "```\nrain\n```", "Rain."} {
		if !strings.Contains(md, want) {
			t.Errorf("export lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "Oslo"), strings.Index(md, "Rain."); i < 0 || j < i {
		t.Errorf("the tool call is not before the reply:\n%s", md)
	}
}

// TestStepsCutAmidToolCalls: a reply stopped between a server-side tool call and its result
// keeps only the steps whose calls all have results.
func TestStepsCutAmidToolCalls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.user(f.alice)
	c := f.create(t, o, "")
	r := f.start(t, o, c.ID, userInput("Compute"))
	result := func(id string) llm.Message {
		return llm.Message{Role: llm.RoleTool, ToolCallID: id, Name: "calculator", Content: []llm.Part{{Type: llm.PartText, Text: "4"}}}
	}
	steps := []llm.Message{
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "a", Name: "calculator", Arguments: "{}"}}},
		result("a"),
		{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{{ID: "b", Name: "calculator", Arguments: "{}"}, {ID: "c", Name: "calculator", Arguments: "{}"}}},
		result("b"), // "c" never answered: cancelled amid the tools
	}
	added := f.finish(t, r, conversations.Outcome{Status: conversations.Cancelled, Steps: steps, Message: llm.TextMessage(llm.RoleAssistant, "")})
	var got []string
	for _, m := range added {
		got = append(got, string(m.Role)+":"+m.ToolCallID)
	}
	if strings.Join(got, " ") != "assistant: tool:a assistant:" {
		t.Errorf("stored %v, want the answered step and the reply", got)
	}
}

// TestFinishStoresNUL: a reply whose text, tool calls or steps hold U+0000 (which
// PostgreSQL refuses in text and jsonb) is stored with U+FFFD instead (issue 12).
func TestFinishStoresNUL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.user(f.alice)
	c := f.create(t, o, "")
	r := f.start(t, o, c.ID, userInput("hi"))
	call := llm.ToolCall{ID: "c\x001", Name: "calc", Arguments: "{\"x\":\"a\x00b\",\"y\":\"\\u0000\"}"}
	out := conversations.Outcome{
		Status: conversations.Completed,
		Steps: []llm.Message{
			{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}},
			{Role: llm.RoleTool, ToolCallID: call.ID, Name: "calc", Content: []llm.Part{{Type: llm.PartText, Text: "1\x002"}}},
		},
		Message: llm.TextMessage(llm.RoleAssistant, "a\x00b"),
	}
	added, err := f.svc.Finish(t.Context(), o.Org, c.ID, r.Message.ID, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 3 || added[2].Content != "a\uFFFDb" || added[1].Content != "1\uFFFD2" ||
		added[0].ToolCalls[0].Arguments != "{\"x\":\"a\uFFFDb\",\"y\":\"\\u0000\"}" || added[0].ToolCalls[0].ID != "c\uFFFD1" {
		t.Errorf("stored %+v", added)
	}
}

// --- Bounded reads (issue 12) ---

// seedTurns stores turns of a user message, an assistant tool call, its result and the
// reply (text of size bytes each) straight in the database, as many replies would have.
func (f *fixture) seedTurns(t *testing.T, c conversations.Conversation, turns, size int) {
	t.Helper()
	text := strings.Repeat("x", size)
	_, err := f.st.Pool.Exec(t.Context(), `
		WITH s AS (SELECT g AS seq, (g - 1) % 4 AS k, (g - 1) / 4 AS turn FROM generate_series(1, $3::integer * 4) g)
		INSERT INTO messages (id, org_id, conversation_id, seq, role, content, tool_calls, tool_call_id, name, status, created_at)
		SELECT gen_random_uuid(), $1, $2, seq,
		       (ARRAY['user', 'assistant', 'tool', 'assistant'])[k + 1],
		       CASE k WHEN 1 THEN '' ELSE $4 END,
		       CASE k WHEN 1 THEN jsonb_build_array(jsonb_build_object('id', 'c' || turn, 'name', 'lookup', 'arguments', '{}')) END,
		       CASE k WHEN 2 THEN 'c' || turn END,
		       CASE k WHEN 2 THEN 'lookup' END,
		       'completed', $5
		FROM s`, c.OrgID, c.ID, turns, text, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Pool.Exec(t.Context(), `UPDATE conversations SET next_seq = $2 WHERE id = $1`, c.ID, turns*4+1); err != nil {
		t.Fatal(err)
	}
}

// TestHistoryReadsWhatTheWindowKeeps: a reply reads its history newest first until the
// context window is full, not the whole conversation, and keeps the same turns (tool
// calls with their results) as the window over the whole history would.
func TestHistoryReadsWhatTheWindowKeeps(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.user(f.alice)
	c := f.create(t, o, "")
	f.seedTurns(t, c, 100, 400) // 400 messages of about 100 tokens
	const budget = 3000         // about 7 turns
	r, err := f.svc.Start(t.Context(), o, c.ID, userInput("And now?"), "default", nil, budget)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.History); n > 60 || n < 20 {
		t.Errorf("the reply read %d messages of 401; want the newest turns the window holds and at most a page more", n)
	}
	if r.History[len(r.History)-1].ID != r.Inputs[0].ID {
		t.Errorf("the history does not end with the input")
	}
	if r.FirstExchange {
		t.Errorf("FirstExchange in a conversation of 101 user messages")
	}
	all := f.messages(t, o, c.ID)
	want, wantDropped, err := conversations.Window(all[:len(all)-1], budget) // less the reply in progress
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := conversations.Window(r.History, budget)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || wantDropped < 300 {
		t.Errorf("window over the history read: %d messages; over the whole history: %d (%d dropped)", len(got), len(want), wantDropped)
	}
	checkPaired(t, got)
}

// TestMessagesPageByteBudget: a page of messages ends before the message that would take
// it past MaxPageBytes (a message alone bigger than that is a page of its own), and its
// cursor goes on from there.
func TestMessagesPageByteBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.user(f.alice)
	c := f.create(t, o, "")
	f.seedTurns(t, c, 2, conversations.MaxPageBytes*2/5) // 6 messages of 0.4 MiB and 2 tool calls
	var pages [][]int
	for cursor := ""; ; {
		page, next, err := f.svc.Messages(t.Context(), o, c.ID, 100, cursor)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, seqs(page))
		if next == "" {
			break
		}
		cursor = next
	}
	// 1, 2 (a tool call without text) and 3 make 0.8 MiB; 4 would make 1.2.
	if want := [][]int{{1, 2, 3}, {4, 5, 6}, {7, 8}}; !reflect.DeepEqual(pages, want) {
		t.Errorf("pages %v, want %v", pages, want)
	}
	big := f.create(t, o, "")
	f.seedTurns(t, big, 1, conversations.MaxPageBytes+1)
	page, next, err := f.svc.Messages(t.Context(), o, big.ID, 100, "")
	if err != nil || !slices.Equal(seqs(page), []int{1}) || next != "1" {
		t.Errorf("a message past the budget: page %v, next %q, %v; want it alone", seqs(page), next, err)
	}
}
