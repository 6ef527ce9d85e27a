package redisclient

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Listen subscribes to channels on rdb until ctx is done. It calls onSubscribe(channel) each
// time the subscription to a channel is (re)established, go-redis resubscribing by itself
// after a reconnect: messages published meanwhile were missed, so the caller resets what
// they would have told it. It calls onMessage for every message. Both run in Listen's
// goroutine, one at a time. Listen returns nil when ctx is done, or an error when the
// subscription closes under it (the client was closed).
func Listen(ctx context.Context, rdb redis.UniversalClient, onSubscribe func(channel string), onMessage func(channel, payload string), channels ...string) error {
	sub := rdb.Subscribe(ctx, channels...)
	defer sub.Close() //nolint:errcheck // closing on the way out; nothing to do with a failure
	msgs := sub.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("subscription closed")
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					onSubscribe(m.Channel)
				}
			case *redis.Message:
				onMessage(m.Channel, m.Payload)
			}
		}
	}
}
