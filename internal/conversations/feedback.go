package conversations

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store"
)

// The feedback ratings.
const (
	RatingUp   = "up"
	RatingDown = "down"
)

// Feedback is one rater's rating of a reply.
type Feedback struct {
	MessageID uuid.UUID
	Rating    string
	Comment   string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// SetFeedback records (or replaces) the rater's rating of a finished assistant reply.
func (s *Service) SetFeedback(ctx context.Context, o Owner, message, rater uuid.UUID, rating, comment string) (Feedback, error) {
	row, err := s.st.GetMessage(ctx, db.GetMessageParams{OrgID: o.Org, ID: message, UserID: store.NullUUID(o.User)})
	if err != nil {
		if isNotFound(err) {
			return Feedback{}, errs.E(errs.NotFound, "No such message.")
		}
		return Feedback{}, err
	}
	if row.Role != string(llm.RoleAssistant) || row.Status == string(InProgress) {
		return Feedback{}, errs.E(errs.Conflict, "Only a finished assistant reply can be rated.")
	}
	f, err := s.st.UpsertMessageFeedback(ctx, db.UpsertMessageFeedbackParams{
		MessageID: message, OrgID: o.Org, Rater: rater, Rating: rating, Comment: comment, CreatedAt: s.now().UTC(),
	})
	if err != nil {
		return Feedback{}, store.Translate(err)
	}
	return Feedback{MessageID: f.MessageID, Rating: f.Rating, Comment: f.Comment, CreatedAt: f.CreatedAt, UpdatedAt: f.UpdatedAt}, nil
}

// RetentionDays is the org's conversation retention; nil keeps conversations.
func (s *Service) RetentionDays(ctx context.Context, org uuid.UUID) (*int, error) {
	days, err := s.st.GetOrgSettings(ctx, org)
	if err != nil {
		if isNotFound(err) {
			return nil, errs.E(errs.NotFound, "No such org.")
		}
		return nil, err
	}
	return intPtr(days), nil
}

// SetRetentionDays sets the org's conversation retention (nil: keep them), audited
// (org.settings_update) by by.
func (s *Service) SetRetentionDays(ctx context.Context, org uuid.UUID, days *int, by audit.Actor) (*int, error) {
	var v pgtype.Int4
	if days != nil {
		v = int4(*days)
	}
	var got pgtype.Int4
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		if got, err = q.SetOrgSettings(ctx, db.SetOrgSettingsParams{ID: org, ConversationRetentionDays: v}); err != nil {
			return store.Translate(err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "org.settings_update", TargetType: "org", TargetID: org.String(),
			Data: map[string]any{"conversation_retention_days": intPtr(got)}})
	})
	if err != nil {
		return nil, err
	}
	return intPtr(got), nil
}

func intPtr(v pgtype.Int4) *int {
	if !v.Valid {
		return nil
	}
	n := int(v.Int32)
	return &n
}

// PurgeDeleted deletes for good the conversations deleted longer ago than their org's
// retention for deleted conversations.
func (s *Service) PurgeDeleted(ctx context.Context) (int64, error) {
	now := s.now()
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return s.st.PurgeDeletedConversations(ctx, db.PurgeDeletedConversationsParams{
			Now: now, DefaultDays: int32(s.retention.DeletedConversations), MaxRows: limit, //nolint:gosec // bounded by retention.Days.Check
		})
	})
}

// PurgeIdle deletes for good the conversations idle past their org's retention.
func (s *Service) PurgeIdle(ctx context.Context) (int64, error) {
	now := s.now()
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return s.st.PurgeIdleConversations(ctx, db.PurgeIdleConversationsParams{Now: now, MaxRows: limit})
	})
}

// Stale is a reply left in progress by a replica that died.
type Stale struct {
	Org, Conversation, Message uuid.UUID
}

// Unfinished is a reply in progress.
type Unfinished struct {
	Stale
	CreatedAt time.Time
}

// Unfinished returns up to 1000 replies in progress since before `before`, of every org
// (housekeeping looks for those whose generator died).
func (s *Service) Unfinished(ctx context.Context, before time.Time) ([]Unfinished, error) {
	rows, err := s.st.ListStaleMessages(ctx, before)
	if err != nil {
		return nil, err
	}
	out := make([]Unfinished, len(rows))
	for i, r := range rows {
		out[i] = Unfinished{Stale: Stale{Org: r.OrgID, Conversation: r.ConversationID, Message: r.ID}, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// Running returns the reply in progress in a conversation of org; not_found when none is.
func (s *Service) Running(ctx context.Context, org, conversation uuid.UUID) (Message, error) {
	row, err := s.st.RunningMessage(ctx, db.RunningMessageParams{OrgID: org, ConversationID: conversation})
	if err != nil {
		if isNotFound(err) {
			return Message{}, errs.E(errs.NotFound, "No reply is in progress in this conversation.")
		}
		return Message{}, err
	}
	return messageFromRow(row)
}

// ErrStale is the error a stale reply fails with.
var ErrStale = errs.E(errs.Internal, "The replica generating this reply stopped before it ended.")

// FailStale ends, as failed, the replies in progress for longer than maxAge (no reply can
// run that long: their replica died) and returns them.
func (s *Service) FailStale(ctx context.Context, maxAge time.Duration) ([]Stale, error) {
	rows, err := s.st.ListStaleMessages(ctx, s.now().Add(-maxAge))
	if err != nil {
		return nil, err
	}
	var out []Stale
	for _, r := range rows {
		_, err := s.Finish(ctx, r.OrgID, r.ConversationID, r.ID, Outcome{
			Status: Failed, Err: ErrStale,
		})
		if errs.CodeOf(err) == errs.Conflict {
			continue // it ended by itself meanwhile
		}
		if err != nil {
			return out, err
		}
		out = append(out, Stale{Org: r.OrgID, Conversation: r.ConversationID, Message: r.ID})
	}
	return out, nil
}
