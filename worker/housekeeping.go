package worker

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/store"
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

// ConversationPurgers delete conversations past their retention and fail the replies whose
// replica died (in progress for longer than maxReply), ending their event streams.
func ConversationPurgers(c *conversations.Service, r *replies.Service, maxReply time.Duration) []Purger {
	return []Purger{
		{Name: "deleted_conversations", Purge: c.PurgeDeleted},
		{Name: "idle_conversations", Purge: c.PurgeIdle},
		{Name: "stale_replies", Purge: func(ctx context.Context) (int64, error) { return r.FailStale(ctx, maxReply) }},
	}
}
