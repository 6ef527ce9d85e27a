package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// KindPublish is the job kind that publishes a notification created inside a transaction
// this package cannot see commit (the jobs' Finished hook): the job runs only once it has.
const KindPublish = "notify.publish"

// PublishPayload is a notify.publish job's payload.
type PublishPayload struct {
	NotificationID uuid.UUID `json:"notification_id"`
	UserID         uuid.UUID `json:"user_id"`
}

// channel is the pub/sub channel of a user's new notifications.
func (c *Center) channel(user uuid.UUID) string { return c.ks.Key("notify", 1, "user:"+user.String()) }

// Publish sends a committed notification to its user's live subscribers, on every
// replica (Redis pub/sub). Call it after the transaction that created it committed.
func (c *Center) Publish(ctx context.Context, n Notification) error {
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("publish notification: %w", err)
	}
	if err := c.rdb.Publish(ctx, c.channel(n.UserID), b).Err(); err != nil {
		return fmt.Errorf("publish notification: %w", err)
	}
	return nil
}

func (c *Center) publishJob(ctx context.Context, _ *jobs.Run, p PublishPayload) (any, error) {
	row, err := c.st.GetNotification(ctx, db.GetNotificationParams{ID: p.NotificationID, UserID: p.UserID})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil // deleted with its user: nobody to tell
	}
	if err != nil {
		return nil, fmt.Errorf("publish notification %s: %w", p.NotificationID, err)
	}
	return nil, c.Publish(ctx, toNotification(row))
}

// Subscription receives a user's new notifications until it is closed.
type Subscription struct {
	// C delivers the notifications. A subscriber that does not keep up misses some (its
	// buffer holds 64): live delivery is a hint, the list is the record.
	C     <-chan Notification
	c     chan Notification
	h     *hub
	key   string
	once  sync.Once
	close func()
}

// Close ends the subscription.
func (s *Subscription) Close() { s.once.Do(s.close) }

// Subscribe returns a subscription to user's new notifications, in effect when it
// returns: every notification published afterwards reaches it.
func (c *Center) Subscribe(ctx context.Context, user uuid.UUID) (*Subscription, error) {
	return c.hub.subscribe(ctx, c.channel(user))
}

// hub shares one Redis pub/sub connection among a replica's live subscribers: it listens
// on the channels of the users connected here, and only those.
type hub struct {
	rdb redis.UniversalClient
	log *slog.Logger

	mu      sync.Mutex
	ps      *redis.PubSub // nil until the first subscriber
	closed  bool
	subs    map[string]map[*Subscription]struct{}
	pending map[string][]chan struct{} // subscribers waiting for Redis to confirm a channel
}

func newHub(rdb redis.UniversalClient, log *slog.Logger) *hub {
	return &hub{rdb: rdb, log: log, subs: map[string]map[*Subscription]struct{}{}, pending: map[string][]chan struct{}{}}
}

// errHubClosed is returned by subscribe once the center is closed.
var errHubClosed = errors.New("notification hub closed")

func (h *hub) subscribe(ctx context.Context, key string) (*Subscription, error) {
	ch := make(chan Notification, 64)
	s := &Subscription{C: ch, c: ch, h: h, key: key}
	s.close = func() { h.unsubscribe(s) }
	confirmed := make(chan struct{})
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errHubClosed
	}
	if h.ps == nil {
		h.ps = h.rdb.Subscribe(context.WithoutCancel(ctx))
		go h.run(h.ps)
	}
	first := len(h.subs[key]) == 0
	if h.subs[key] == nil {
		h.subs[key] = map[*Subscription]struct{}{}
	}
	h.subs[key][s] = struct{}{}
	_, waiting := h.pending[key]
	h.pending[key] = append(h.pending[key], confirmed)
	var err error
	if first && !waiting {
		err = h.ps.Subscribe(ctx, key)
	} else if !waiting {
		close(confirmed) // the channel is subscribed already
		h.pending[key] = h.pending[key][:len(h.pending[key])-1]
		if len(h.pending[key]) == 0 {
			delete(h.pending, key)
		}
	}
	h.mu.Unlock()
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("subscribe to notifications: %w", err)
	}
	select {
	case <-confirmed:
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, fmt.Errorf("subscribe to notifications: %w", ctx.Err())
	case <-time.After(10 * time.Second):
		s.Close()
		return nil, errors.New("subscribe to notifications: Redis did not confirm within 10s")
	}
}

func (h *hub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.subs[s.key]
	if _, ok := set[s]; !ok {
		return
	}
	delete(set, s)
	if len(set) > 0 || h.closed {
		return
	}
	delete(h.subs, s.key)
	if _, waiting := h.pending[s.key]; waiting {
		return // the confirmation is still to come; the channel is dropped when nobody waits
	}
	go h.drop(h.ps, s.key)
}

// drop unsubscribes from a channel nobody here listens to any more, unless someone
// subscribed again meanwhile.
func (h *hub) drop(ps *redis.PubSub, key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs[key]) > 0 || h.closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ps.Unsubscribe(ctx, key); err != nil {
		h.log.Warn("unsubscribe from notifications", "error", err)
	}
}

// run fans the messages of ps out to the subscribers of their channel until ps closes.
// go-redis reconnects and subscribes again by itself; what is published meanwhile is
// missed (the list has it).
func (h *hub) run(ps *redis.PubSub) {
	for m := range ps.ChannelWithSubscriptions(redis.WithChannelSize(1024)) {
		switch m := m.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			h.mu.Lock()
			for _, c := range h.pending[m.Channel] {
				close(c)
			}
			delete(h.pending, m.Channel)
			abandoned := len(h.subs[m.Channel]) == 0 && !h.closed
			h.mu.Unlock()
			if abandoned { // every subscriber left before Redis confirmed
				go h.drop(ps, m.Channel)
			}
		case *redis.Message:
			var n Notification
			if err := json.Unmarshal([]byte(m.Payload), &n); err != nil {
				h.log.Warn("undecodable notification on pub/sub", "channel", m.Channel, "error", err)
				continue
			}
			h.mu.Lock()
			for s := range h.subs[m.Channel] {
				select {
				case s.c <- n:
				default: // a subscriber that does not read loses live events, not the server's memory
				}
			}
			h.mu.Unlock()
		}
	}
}

func (h *hub) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.ps == nil {
		return nil
	}
	return h.ps.Close()
}
