package apikey_test

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// One Service per process, with Run keeping its cache coherent with the other replicas for
// as long as the process runs; the auth middleware only calls Authenticate and Has.
func ExampleService() {
	var (
		ctx = context.Background()
		st  *store.Store          // from store.New
		rdb redis.UniversalClient // from redisclient.Open
	)
	keys := apikey.New(st, rdb, redisclient.Keyspace{Env: "production"},
		apikey.Config{Env: "live", CacheTTL: time.Minute, LastUsedFlushInterval: 10 * time.Second},
		slog.Default(), time.Now)
	go keys.Run(ctx) //nolint:errcheck // in Kiln, run by the composition root's errgroup

	orgID := uuid.New() // the caller's org
	_, secret, _ := keys.Create(ctx, orgID, audit.Actor{}, "CI", []string{apikey.ScopeChat}, nil, nil)
	fmt.Println("shown once:", apikey.Display(secret))

	// Later, for a request with Authorization: Bearer <secret>:
	key, err := keys.Authenticate(ctx, secret)
	if errs.CodeOf(err) == errs.Unauthenticated {
		return // 401, the same for every unusable key
	}
	if !apikey.Has(key.Scopes, apikey.ScopeKBWrite) {
		return // 403
	}
}

func ExampleHas() {
	fmt.Println(apikey.Has([]string{"chat", "kb:read"}, "kb:write"))
	fmt.Println(apikey.Has([]string{"admin"}, "kb:write"))
	// Output:
	// false
	// true
}
