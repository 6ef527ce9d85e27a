package worker

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
)

// identityRetention is how long ended sessions, expired email tokens and closed
// invitations are kept (for support and audit questions) before the purge deletes them.
const identityRetention = 30 * 24 * time.Hour

// IdentityPurgers delete identity rows past their retention.
func IdentityPurgers(st *store.Store, now func() time.Time) []Purger {
	cutoff := func() time.Time { return now().Add(-identityRetention) }
	return []Purger{
		{Name: "sessions", Purge: func(ctx context.Context) (int64, error) {
			c := cutoff()
			return st.PurgeEndedSessions(ctx, &c)
		}},
		{Name: "email_tokens", Purge: func(ctx context.Context) (int64, error) { return st.PurgeExpiredEmailTokens(ctx, cutoff()) }},
		{Name: "invitations", Purge: func(ctx context.Context) (int64, error) { return st.PurgeClosedInvitations(ctx, cutoff()) }},
	}
}

// ReplyEnder publishes the last event of a reply that will never end by itself.
type ReplyEnder func(ctx context.Context, message uuid.UUID, problem map[string]any) error

// ConversationPurgers delete conversations past their retention and fail the replies whose
// replica died (in progress for longer than maxReply), ending their event streams.
func ConversationPurgers(c *conversations.Service, maxReply time.Duration, end ReplyEnder) []Purger {
	return []Purger{
		{Name: "deleted_conversations", Purge: c.PurgeDeleted},
		{Name: "idle_conversations", Purge: c.PurgeIdle},
		{Name: "stale_replies", Purge: func(ctx context.Context) (int64, error) {
			stale, err := c.FailStale(ctx, maxReply)
			for _, r := range stale { // failed already: each must get its error event
				problem := map[string]any{
					"type": "urn:kiln:problem:internal", "title": "Internal error", "status": 500, "code": "internal",
					"detail": "The replica generating this reply stopped before it ended.", "request_id": "",
				}
				if endErr := end(ctx, r.Message, problem); endErr != nil && !errors.Is(endErr, streams.ErrFinished) {
					err = errors.Join(err, endErr)
				}
			}
			return int64(len(stale)), err
		}},
	}
}
