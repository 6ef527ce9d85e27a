package replies_test

import (
	"context"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// lease is the short lease of the replicas that find orphans in these tests.
const lease = time.Second

// next starts another reply in conv on s, retrying while the conversation is busy, and
// returns how long it took to be let in; it fails the test past wait.
func (b *bundle) next(t *testing.T, s *replies.Service, conv conversations.Conversation) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		started, err := s.Start(t.Context(), b.caller(), ask(conv.ID, "again"))
		if err == nil {
			if _, err := started.Wait(t.Context()); err != nil && errs.CodeOf(err) != errs.Internal {
				t.Fatalf("the next reply: %v", err)
			}
			return time.Since(start)
		}
		if errs.CodeOf(err) != errs.Conflict || time.Since(start) > wait {
			t.Fatalf("the next message after %s: %v", time.Since(start), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bundle) stored(t *testing.T, conv conversations.Conversation, id conversations.Message) conversations.Message {
	t.Helper()
	m, err := b.convs.Message(t.Context(), b.owner, conv.ID, id.ID)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// refuse makes PostgreSQL refuse the stored end of replies matching when (SQL over NEW),
// as it refuses a value it cannot hold; the returned func lifts it.
func (b *bundle) refuse(t *testing.T, when string) func() {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if _, err := b.st.Pool.Exec(ctx, `CREATE FUNCTION refuse_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF `+when+` THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22021'; END IF; RETURN NEW; END $$;
CREATE TRIGGER refuse_end BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION refuse_end()`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := b.st.Pool.Exec(ctx, `DROP TRIGGER refuse_end ON messages; DROP FUNCTION refuse_end()`); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReplyNeverBlocksItsConversation: a reply that cannot be stored as generated, or
// whose replica died, ends within seconds, keeps the text it published, ends its
// followers' streams and frees its conversation (issue 12).
func TestReplyNeverBlocksItsConversation(t *testing.T) {
	t.Parallel()

	t.Run("NULIsStoredAsReplacementCharacter", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.replica(t)
		conv, err := b.convs.Create(t.Context(), b.owner, "", "nul", nil)
		if err != nil {
			t.Fatal(err)
		}
		started, err := s.Start(t.Context(), b.caller(), ask(conv.ID, "hi"))
		if err != nil {
			t.Fatal(err)
		}
		added, err := started.Wait(t.Context())
		if err != nil || added[1].Content != "a\uFFFDb" || added[1].Status != conversations.Completed {
			t.Fatalf("reply %+v, %v", added, err)
		}
		evs := b.follow(t, s, started.Message)
		if d := data(t, evs[1]); evs[1].Type != "message.delta" || d["text"] != "a\x00b" {
			t.Errorf("the delta %s %v: its event keeps what the model sent", evs[1].Type, d)
		}
		b.next(t, s, conv)
	})

	t.Run("StoreRefusesTheReply", func(t *testing.T) { // kept failed, with its text
		t.Parallel()
		b := setup(t)
		s := b.replica(t)
		lift := b.refuse(t, `NEW.status = 'completed' AND NEW.role = 'assistant'`)
		defer lift()
		conv, err := b.convs.Create(t.Context(), b.owner, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		started, err := s.Start(t.Context(), b.caller(), ask(conv.ID, "hello"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := started.Wait(t.Context()); errs.CodeOf(err) != errs.Internal {
			t.Fatalf("wait: %v, want the internal error of an unstored reply", err)
		}
		evs := b.follow(t, s, started.Message)
		last := evs[len(evs)-1]
		m := b.stored(t, conv, started.Message)
		if last.Type != replies.EventError || m.Status != conversations.Failed || m.Content == "" || m.Content != deltas(t, evs) {
			t.Fatalf("last event %s, stored %s %q; want failed with the published %q", last.Type, m.Status, m.Content, deltas(t, evs))
		}
		b.next(t, s, conv) // at once: no 409
	})

	t.Run("StoreFailsThenRecovers", func(t *testing.T) { // ended by the next message
		t.Parallel()
		b := setup(t)
		s, other := b.replica(t), b.replicaWithLease(t, lease)
		lift := b.refuse(t, `NEW.status <> 'in_progress'`)
		conv, err := b.convs.Create(t.Context(), b.owner, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		started, err := s.Start(t.Context(), b.caller(), ask(conv.ID, "hello"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := started.Wait(t.Context()); err == nil {
			t.Fatal("no error")
		}
		evs := b.follow(t, s, started.Message) // followers' streams end at once
		if last := evs[len(evs)-1]; last.Type != replies.EventError {
			t.Fatalf("last event %s", last.Type)
		}
		if m := b.stored(t, conv, started.Message); m.Status != conversations.InProgress {
			t.Fatalf("stored %s", m.Status)
		}
		lift()
		took := b.next(t, other, conv)
		m := b.stored(t, conv, started.Message)
		if m.Status != conversations.Failed || m.ErrorCode != errs.Internal || m.Content == "" || m.Content != deltas(t, evs) {
			t.Errorf("stored %s %s %q, want failed with %q", m.Status, m.ErrorCode, m.Content, deltas(t, evs))
		}
		t.Logf("the conversation was free again after %s", took)
	})

	t.Run("Orphan", func(t *testing.T) { // its replica died mid-reply: it published "Hel", holds no lease
		t.Parallel()
		b := setup(t)
		s := b.replicaWithLease(t, lease)
		conv, err := b.convs.Create(t.Context(), b.owner, "", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		orphan := func() conversations.Reply {
			m := llm.TextMessage(llm.RoleUser, "hi")
			r, err := b.convs.Start(t.Context(), b.owner, conv.ID, conversations.Input{User: &m}, "default", nil, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			pub := b.bus(t).Publisher(r.Message.ID.String())
			for _, ev := range []struct {
				typ  string
				data any
			}{{"reply.started", map[string]any{}}, {"message.delta", map[string]any{"text": "Hel"}}} {
				if _, err := pub.Publish(t.Context(), ev.typ, ev.data); err != nil {
					t.Fatal(err)
				}
			}
			return r
		}

		followed := orphan()
		start := time.Now()
		evs := b.follow(t, s, followed.Message) // a follower's stream ends
		last := data(t, evs[len(evs)-1])
		if evs[len(evs)-1].Type != replies.EventError || last["code"] != string(errs.Internal) || time.Since(start) > 5*lease {
			t.Errorf("after %s: events %s %v", time.Since(start), types(evs), last)
		}
		if m := b.stored(t, conv, followed.Message); m.Status != conversations.Failed || m.Content != "Hel" {
			t.Errorf("stored %s %q, want failed with the published text", m.Status, m.Content)
		}

		next := orphan() // a new message frees the conversation
		if took := b.next(t, s, conv); took > 5*lease {
			t.Errorf("the conversation was free after %s", took)
		}
		if m := b.stored(t, conv, next.Message); m.Status != conversations.Failed || m.Content != "Hel" {
			t.Errorf("stored %s %q, want failed with the published text", m.Status, m.Content)
		}
	})
}

// bus is a stream bus over the test's key space, as a replica's.
func (b *bundle) bus(t *testing.T) *streams.Bus {
	t.Helper()
	rdb, err := redisclient.Open(t.Context(), storetest.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	bus := streams.New(rdb, b.ks, streams.Config{TTL: time.Hour})
	t.Cleanup(func() { bus.Close(); _ = rdb.Close() })
	return bus
}

// deltas is the text of evs' message.delta events.
func deltas(t *testing.T, evs []streams.Event) string {
	t.Helper()
	text := ""
	for _, ev := range evs {
		if ev.Type == "message.delta" {
			text += data(t, ev)["text"].(string)
		}
	}
	return text
}
