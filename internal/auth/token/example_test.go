package token_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/auth/token"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store"
)

// One Service per process: make sure a key exists, follow other replicas for as long as the
// process runs, then issue at sign-in and refresh and verify on every request.
func ExampleService() {
	var (
		ctx     = context.Background()
		st      *store.Store          // from store.New
		keyring *secrets.Keyring      // from secrets.ParseKeyring
		rdb     redis.UniversalClient // from redisclient.Open
	)
	tokens := token.New(st, keyring, rdb, redisclient.Keyspace{Env: "production"},
		token.Config{Issuer: "https://api.example.com", Audience: "kiln-api", AccessTTL: 15 * time.Minute},
		slog.Default(), time.Now)
	if err := tokens.EnsureKey(ctx); err != nil {
		panic(err) // in Kiln, the composition root reports it and exits
	}
	go tokens.Run(ctx) //nolint:errcheck // in Kiln, run by the composition root's errgroup

	userID, sessionID := uuid.New(), uuid.New() // from the session just created
	access, expiresAt, err := tokens.Issue(ctx, userID, sessionID)
	if err != nil {
		panic(err)
	}
	_ = expiresAt // returned to the client beside the token

	claims, err := tokens.Verify(ctx, access) // unauthenticated, whatever the reason
	if err != nil {
		return
	}
	_ = claims.UserID

	// At sign-out, after the session's row is revoked:
	_ = tokens.RevokeSessions(ctx, claims.SessionID)
}
