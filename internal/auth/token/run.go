package token

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

const (
	// reloadTimeout bounds one reload from the database.
	reloadTimeout = 5 * time.Second
	// missingKeyReloadGap spaces reloads asked for by tokens naming unknown keys, so that
	// garbage key ids cost at most one query per replica per gap.
	missingKeyReloadGap = time.Second
)

// Run keeps this replica's keys and revocations current until ctx is done: it reloads the
// keys when any replica rotates or creates one, records the sessions any replica revokes,
// reloads both from the database on every (re)subscription (go-redis resubscribes by
// itself after a reconnect) and every minute, and drops expired entries. A failed reload is
// logged and the previous state kept. Run returns nil when ctx is done, or an error if the
// client is closed under it.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	wg.Go(func() { s.reloadEvery(ctx) })

	// Messages published while not subscribed were missed: read the database.
	onSubscribe := func(channel string) {
		if channel == s.keysChannel {
			s.reload(ctx, "keys", s.loadKeys)
		} else {
			s.reload(ctx, "revocations", s.loadRevocations)
		}
	}
	onMessage := func(channel, payload string) {
		if channel == s.keysChannel {
			s.reload(ctx, "keys", s.loadKeys)
		} else {
			s.applyRevocationMessage(ctx, payload)
		}
	}
	if err := redisclient.Listen(ctx, s.rdb, onSubscribe, onMessage, s.keysChannel, s.revokedChannel); err != nil {
		return fmt.Errorf("token keys and revocations: %w", err)
	}
	return nil
}

// reloadEvery reloads the keys and revocations and drops expired entries every
// reloadInterval, and reloads the keys early when a token names an unknown one, until ctx
// is done. It runs apart from the subscription; loads are safe to run concurrently.
func (s *Service) reloadEvery(ctx context.Context) {
	tick := time.NewTicker(reloadInterval)
	defer tick.Stop()
	// Real time, not the injected clock: this paces database queries, not token validity.
	var lastAsked time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.missingKey:
			if time.Since(lastAsked) >= missingKeyReloadGap {
				lastAsked = time.Now()
				s.reload(ctx, "keys", s.loadKeys)
			}
		case <-tick.C:
			s.reload(ctx, "keys", s.loadKeys)
			s.reload(ctx, "revocations", s.loadRevocations)
			now := s.now()
			s.revoked.sweep(now)
			if s.verified != nil {
				s.verified.sweep(now)
			}
		}
	}
}

// reload runs one load with a timeout and logs its failure.
func (s *Service) reload(ctx context.Context, what string, load func(context.Context) error) {
	loadCtx, cancel := context.WithTimeout(ctx, reloadTimeout)
	defer cancel()
	if err := load(loadCtx); err != nil && ctx.Err() == nil { // not when shutting down
		s.log.ErrorContext(ctx, "reload token "+what+"; keeping the previous ones", "err", err)
	}
}
