package worker

import (
	"context"
	"time"

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
