package replies

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/streams"
)

// Follow calls fn with reply's events after `after`, stored then live, until its last
// one. While it follows a reply in progress it checks, twice a lease, that a replica still
// generates it: one that died leaves the reply without a lease, and Follow then ends the
// reply as failed (keeping its published text), so the follower gets its error event
// within about a lease and a half.
func (s *Service) Follow(ctx context.Context, org uuid.UUID, reply conversations.Message, after uint64, fn func(streams.Event) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.d.StreamTimeout+time.Minute)
	defer cancel()
	if reply.Status == conversations.InProgress {
		stop := s.watch(ctx, org, reply)
		defer stop()
	}
	return s.d.Streams.Follow(ctx, reply.ID.String(), after, fn)
}

// watch ends reply if its generator dies while ctx lasts.
func (s *Service) watch(ctx context.Context, org uuid.UUID, reply conversations.Message) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(s.d.LeaseTTL / 2)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ended, err := s.endOrphaned(ctx, org, reply)
			if err != nil && ctx.Err() == nil {
				s.d.Log.WarnContext(ctx, "end an orphaned reply", "message_id", reply.ID, "error", err)
			}
			if ended {
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// Events returns reply id of the conversation, whose events the caller is about to
// follow: not_found when there is no such message or it is not a reply, stream_expired
// once its events are no longer kept.
func (s *Service) Events(ctx context.Context, o conversations.Owner, conversation, id uuid.UUID) (conversations.Message, error) {
	m, err := s.d.Conversations.Message(ctx, o, conversation, id)
	if err == nil && m.Role != llm.RoleAssistant {
		err = errs.E(errs.NotFound, "Message %s is not a reply: it has no events.", id)
	}
	if err == nil {
		err = s.Kept(ctx, m)
	}
	return m, err
}

// Kept returns stream_expired when reply m has ended and its events are no longer kept
// (past conversations.stream_ttl).
func (s *Service) Kept(ctx context.Context, m conversations.Message) error {
	if m.Status == conversations.InProgress {
		return nil
	}
	ok, err := s.d.Streams.Exists(ctx, m.ID.String())
	if err == nil && !ok {
		err = errs.E(errs.StreamExpired, "The reply's events are no longer kept; read the reply with GET /v1/conversations/%s/messages.", m.ConversationID)
	}
	return err
}

// Cancel asks reply id of the conversation to stop, on whichever replica generates it,
// and returns the reply as it was when asked. A reply that has ended is left as it is.
func (s *Service) Cancel(ctx context.Context, o conversations.Owner, conversation, id uuid.UUID) (conversations.Message, error) {
	m, err := s.d.Conversations.Message(ctx, o, conversation, id)
	if err != nil {
		return m, err
	}
	if m.Status == conversations.InProgress {
		if err := s.d.Streams.Cancel(ctx, m.ID.String()); err != nil {
			return m, fmt.Errorf("cancel reply: %w", err)
		}
	}
	return m, nil
}

// Delete soft-deletes a conversation, audited (conversation.delete) by by, and cancels its
// running reply. The deletion stands
// when the cancellation fails (logged): the reply ends at its own time limit.
func (s *Service) Delete(ctx context.Context, o conversations.Owner, id uuid.UUID, by audit.Actor) error {
	running, err := s.d.Conversations.Delete(ctx, o, id, by)
	if err != nil || running == nil {
		return err
	}
	if err := s.d.Streams.Cancel(ctx, running.String()); err != nil {
		s.d.Log.ErrorContext(ctx, "cancel the reply of a deleted conversation", "message_id", running, "error", err)
	}
	return nil
}

// Attached is the reply that a retried request re-attaches to, as it is now.
type Attached struct {
	conversations.Message
	firstInput uuid.UUID
}

// Reattach finds the reply that the first request with ref (Started.Ref) started, for a
// retry of that request: not_found when it is gone.
func (s *Service) Reattach(ctx context.Context, o conversations.Owner, ref string) (Attached, error) {
	var ids [3]uuid.UUID // conversation, reply, first input
	parts := strings.Split(ref, "/")
	if len(parts) != len(ids) {
		return Attached{}, fmt.Errorf("malformed reply reference %q", ref)
	}
	for i := range ids {
		var err error
		if ids[i], err = uuid.Parse(parts[i]); err != nil {
			return Attached{}, fmt.Errorf("malformed reply reference %q: %w", ref, err)
		}
	}
	m, err := s.d.Conversations.Message(ctx, o, ids[0], ids[1])
	return Attached{Message: m, firstInput: ids[2]}, err
}

// Result waits, up to ctx, for an attached reply's end and returns the messages its
// request added (inputs, server-side tool steps and the reply), or the error the reply
// failed with.
func (s *Service) Result(ctx context.Context, o conversations.Owner, a Attached) ([]conversations.Message, error) {
	m := a.Message
	if m.Status == conversations.InProgress {
		if err := s.Follow(ctx, o.Org, m, 0, func(streams.Event) error { return nil }); err != nil {
			return nil, err
		}
		var err error
		if m, err = s.d.Conversations.Message(ctx, o, m.ConversationID, m.ID); err != nil {
			return nil, err
		}
	}
	if m.Status == conversations.Failed {
		return nil, &errs.Error{Code: m.ErrorCode, Message: m.ErrorDetail}
	}
	return s.d.Conversations.Turn(ctx, o, m.ConversationID, a.firstInput, m.ID)
}

// FailStale ends, as failed, the replies whose generator died: those in progress past
// one lease that hold none, and those in progress for longer than maxAge whatever their
// lease (no reply runs that long). It keeps the text each published and ends its event
// stream, and returns how many it ended.
func (s *Service) FailStale(ctx context.Context, maxAge time.Duration) (int64, error) {
	now := s.d.Now()
	unfinished, err := s.d.Conversations.Unfinished(ctx, now.Add(-min(maxAge, s.d.LeaseTTL)))
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range unfinished {
		if now.Sub(r.CreatedAt) < maxAge {
			held, err := s.d.Streams.Leased(ctx, r.Message.String())
			if err != nil {
				return n, err
			}
			if held {
				continue
			}
		}
		ended, err := s.endStale(ctx, r.Org, r.Conversation, r.Message)
		if ended {
			n++
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
