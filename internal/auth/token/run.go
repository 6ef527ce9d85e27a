package token

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
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
	sub := s.rdb.Subscribe(ctx, s.keysChannel, s.revokedChannel)
	defer sub.Close() //nolint:errcheck // closing on the way out; nothing to do with a failure
	msgs := sub.ChannelWithSubscriptions()
	tick := time.NewTicker(reloadInterval)
	defer tick.Stop()
	// Real time, not the injected clock: this paces database queries, not token validity.
	var lastAsked time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("token keys and revocations: subscription closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				// Messages published while not subscribed were missed: read the database.
				if m.Channel == s.keysChannel {
					s.reload(ctx, "keys", s.loadKeys)
				} else {
					s.reload(ctx, "revocations", s.loadRevocations)
				}
			case *redis.Message:
				if m.Channel == s.keysChannel {
					s.reload(ctx, "keys", s.loadKeys)
				} else {
					s.applyRevocationMessage(ctx, m.Payload)
				}
			}
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
