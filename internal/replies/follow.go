package replies

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/streams"
)

// Follow calls fn with reply id's events after `after`, stored then live, until its last
// one. A reply whose replica died before it ended its stream never ends it: following
// stops (with a deadline error) when no reply could still be running.
func (s *Service) Follow(ctx context.Context, id uuid.UUID, after uint64, fn func(streams.Event) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.d.StreamTimeout+time.Minute)
	defer cancel()
	return s.d.Streams.Follow(ctx, id.String(), after, fn)
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

// Delete soft-deletes a conversation and cancels its running reply. The deletion stands
// when the cancellation fails (logged): the reply ends at its own time limit.
func (s *Service) Delete(ctx context.Context, o conversations.Owner, id uuid.UUID) error {
	running, err := s.d.Conversations.Delete(ctx, o, id)
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
		if err := s.Follow(ctx, m.ID, 0, func(streams.Event) error { return nil }); err != nil {
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

// FailStale ends, as failed, the replies left in progress for longer than maxAge (no
// reply runs that long: their replica died) and ends their event streams. It returns how
// many it ended.
func (s *Service) FailStale(ctx context.Context, maxAge time.Duration) (int64, error) {
	stale, err := s.d.Conversations.FailStale(ctx, maxAge)
	for _, r := range stale { // failed already: each must get its error event
		problem := s.d.Events.Failed("", "", conversations.ErrStale)
		_, endErr := s.d.Streams.Publisher(r.Message.String()).Finish(ctx, EventError, problem)
		if endErr != nil && !errors.Is(endErr, streams.ErrFinished) {
			err = errors.Join(err, fmt.Errorf("end the stream of reply %s: %w", r.Message, endErr))
		}
	}
	return int64(len(stale)), err
}
