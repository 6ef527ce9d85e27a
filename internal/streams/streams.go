// Package streams carries a chat reply's events through Redis, decoupled from the HTTP
// connection that asked for it. A reply's events go to a Redis Stream
// (kiln:<env>:stream:v1:<id>, entry ids 0-1, 0-2, … so an entry's id is the event's id);
// any replica can read it, follow it live, resume after an event id, and cancel the reply's
// generation wherever it runs (a marker key plus a pub/sub message; see docs/redis-keys.md).
package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

const (
	area    = "stream"
	version = 1

	defaultTTL       = 24 * time.Hour
	defaultMaxEvents = 100_000

	// Follow reads stored events in pages: a first one of a single event, so a resuming
	// client gets it as fast as a bare XRANGE (go-redis's decoding of each entry costs
	// about a microsecond or two), then pages of many.
	firstPage = 1
	page      = 512
	// blockSlice bounds one blocking XREAD: go-redis does not interrupt a blocking read
	// when a context without deadline is cancelled, so Follow re-checks ctx this often.
	blockSlice = time.Second
)

var (
	// ErrFinished is returned by Publish and Finish once the stream has its final event.
	ErrFinished = errors.New("streams: stream already finished")
	// ErrTooManyEvents is returned when a stream would exceed Config.MaxEvents.
	ErrTooManyEvents = errors.New("streams: too many events in stream")
	// ErrCancelled is the cause (context.Cause) of a Watch context ended by Cancel.
	ErrCancelled = errors.New("streams: reply cancelled")
)

// Event is one event of a reply's stream. IDs are 1, 2, 3, … per stream.
type Event struct {
	ID    uint64
	Type  string          // e.g. "message.delta", "done", "error"
	Data  json.RawMessage // JSON
	Final bool            // the stream's last event
}

// Config sets how long streams are kept and how large they may grow.
type Config struct {
	// TTL is how long a stream's events are kept: set at the first event and reset at the
	// final one. It is also the TTL of a cancel marker. Default 24 h.
	TTL time.Duration
	// MaxEvents is the most events a stream holds. The last slot is kept for the final
	// event, so Publish refuses the MaxEvents-th event and Finish can always end the
	// stream. Default 100000.
	MaxEvents uint64
	// Blocking is the client of Follow's blocking reads, each of which holds a connection
	// while it waits for events: give it a pool of its own, sized for the followers one
	// replica serves, so they never starve the rest of the Redis work. Default: the
	// bus's client.
	Blocking redis.UniversalClient
}

// Bus publishes, reads and cancels reply streams in one Redis key space.
type Bus struct {
	rdb     redis.UniversalClient
	ks      redisclient.Keyspace
	cfg     Config
	channel string

	mu         sync.Mutex
	watchers   map[string]map[*watcher]struct{}
	listening  bool
	closed     bool
	stopListen context.CancelFunc
	listenDone chan struct{}
}

type watcher struct{ cancel context.CancelCauseFunc }

// New returns a Bus on rdb in the key space ks; zero fields of cfg take the defaults.
func New(rdb redis.UniversalClient, ks redisclient.Keyspace, cfg Config) *Bus {
	if cfg.TTL <= 0 {
		cfg.TTL = defaultTTL
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = defaultMaxEvents
	}
	if cfg.Blocking == nil {
		cfg.Blocking = rdb
	}
	return &Bus{
		rdb:      rdb,
		ks:       ks,
		cfg:      cfg,
		channel:  ks.Key(area, version, "cancel"),
		watchers: map[string]map[*watcher]struct{}{},
	}
}

func (b *Bus) streamKey(id string) string   { return b.ks.Key(area, version, id) }
func (b *Bus) markerKey(id string) string   { return b.ks.Key(area, version, id) + ":cancel" }
func (b *Bus) leaseKey(id string) string    { return b.ks.Key(area, version, id) + ":lease" }
func (b *Bus) followedKey(id string) string { return b.ks.Key(area, version, id) + ":followed" }

// Publisher appends the events of one reply. It is safe for concurrent use.
type Publisher struct {
	bus *Bus
	key string

	mu       sync.Mutex
	loaded   bool   // last holds the stream's top id
	last     uint64 // id of the last stored event
	finished bool
}

// Publisher returns a Publisher for the stream of reply id. It numbers its events after
// the last one stored, so a second Publisher can end a reply whose first one died.
func (b *Bus) Publisher(id string) *Publisher {
	return &Publisher{bus: b, key: b.streamKey(id)}
}

// Publish appends an event of type typ with data marshalled to JSON and returns its id.
func (p *Publisher) Publish(ctx context.Context, typ string, data any) (uint64, error) {
	return p.publish(ctx, typ, data, false)
}

// Finish appends the stream's final event and resets the stream's TTL. Publish and Finish
// return ErrFinished afterwards.
func (p *Publisher) Finish(ctx context.Context, typ string, data any) (uint64, error) {
	return p.publish(ctx, typ, data, true)
}

func (p *Publisher) publish(ctx context.Context, typ string, data any, final bool) (uint64, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("streams: marshal %s event: %w", typ, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished {
		return 0, ErrFinished
	}
	if !p.loaded {
		top, err := p.bus.top(ctx, p.key)
		if err != nil {
			return 0, err
		}
		p.loaded, p.last, p.finished = true, top.ID, top.Final
		if p.finished {
			return 0, ErrFinished
		}
	}
	n := p.last + 1
	if limit := p.bus.cfg.MaxEvents; n > limit || (n == limit && !final) {
		return 0, ErrTooManyEvents
	}
	values := []string{"t", typ, "d", string(d)}
	if final {
		values = append(values, "f", "1")
	}
	pipe := p.bus.rdb.TxPipeline()
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: p.key, ID: entryID(n), Values: values})
	if n == 1 || final {
		pipe.PExpire(ctx, p.key, p.bus.cfg.TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// The event may or may not be stored (another publisher took its id, or the reply
		// was lost): the next call reads the stream's top again.
		p.loaded = false
		return 0, fmt.Errorf("streams: add event %d to %s: %w", n, p.key, err)
	}
	p.last, p.finished = n, final
	return n, nil
}

// top returns the stream's last event, or a zero Event when it has none.
func (b *Bus) top(ctx context.Context, key string) (Event, error) {
	msgs, err := b.rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil {
		return Event{}, fmt.Errorf("streams: read last event of %s: %w", key, err)
	}
	if len(msgs) == 0 {
		return Event{}, nil
	}
	return parseEvent(msgs[0])
}

// Read returns the stored events after event id after (0: from the start), at most max of
// them (0: all), and whether the stream is finished: its final event is stored, whether
// or not it is among those returned.
func (b *Bus) Read(ctx context.Context, id string, after uint64, max int) (events []Event, finished bool, err error) {
	key := b.streamKey(id)
	pipe := b.rdb.Pipeline()
	var rng *redis.XMessageSliceCmd
	if max > 0 {
		rng = pipe.XRangeN(ctx, key, exclusive(after), "+", int64(max))
	} else {
		rng = pipe.XRange(ctx, key, exclusive(after), "+")
	}
	last := pipe.XRevRangeN(ctx, key, "+", "-", 1)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, false, fmt.Errorf("streams: read %s: %w", key, err)
	}
	events, err = parseEvents(rng.Val())
	if err != nil {
		return nil, false, err
	}
	if top := last.Val(); len(top) > 0 {
		ev, err := parseEvent(top[0])
		if err != nil {
			return nil, false, err
		}
		finished = ev.Final
	}
	return events, finished, nil
}

// Follow calls fn with every event after event id after (0: from the start), in order:
// the stored ones, then live ones as they are published; a stream not created yet is
// waited for. It returns nil once it delivered the final event (at once if the stream
// ended at or before after), fn's error if fn fails, or ctx.Err() when ctx ends, within
// about a second.
func (b *Bus) Follow(ctx context.Context, id string, after uint64, fn func(Event) error) error {
	key := b.streamKey(id)
	cursor := after
	// deliver hands msgs to fn and reports whether the final event was among them.
	deliver := func(msgs []redis.XMessage) (bool, error) {
		for _, m := range msgs {
			ev, err := parseEvent(m)
			if err != nil {
				return false, err
			}
			if err := fn(ev); err != nil {
				return false, err
			}
			cursor = ev.ID
			if ev.Final {
				return true, nil
			}
		}
		return false, nil
	}

	for count := int64(firstPage); ; count = page {
		if err := ctx.Err(); err != nil {
			return err
		}
		msgs, err := b.rdb.XRangeN(ctx, key, exclusive(cursor), "+", count).Result()
		if err != nil {
			return failed(ctx, fmt.Errorf("streams: follow %s: %w", key, err))
		}
		if done, err := deliver(msgs); done || err != nil {
			return err
		}
		if int64(len(msgs)) < count {
			break
		}
	}
	if cursor == after {
		// Nothing after `after` is stored: if the stream has ended, nothing will come.
		top, err := b.top(ctx, key)
		if err != nil {
			return failed(ctx, err)
		}
		if top.Final && top.ID <= cursor {
			return nil
		}
	}

	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := b.cfg.Blocking.XRead(ctx, &redis.XReadArgs{
			Streams: []string{key, entryID(cursor)},
			Count:   page,
			Block:   blockSlice,
		}).Result()
		if errors.Is(err, redis.Nil) {
			continue // nothing new within blockSlice
		}
		if err != nil {
			return failed(ctx, fmt.Errorf("streams: follow %s: %w", key, err))
		}
		for _, s := range res {
			if done, err := deliver(s.Messages); done || err != nil {
				return err
			}
		}
	}
}

// failed returns ctx's error when ctx has ended (err is then its consequence), else err.
func failed(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}

// Exists reports whether the stream of reply id has any stored event; it does not once
// its TTL has passed.
func (b *Bus) Exists(ctx context.Context, id string) (bool, error) {
	n, err := b.rdb.Exists(ctx, b.streamKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("streams: check stream %s: %w", id, err)
	}
	return n > 0, nil
}

// Lease marks the generation of reply id as alive for ttl. Its generator renews it well
// before it expires and releases it once the reply's end is stored, so a reply still in
// progress without a lease has lost its generator (its replica died or could not store
// the end): any replica may then end it.
func (b *Bus) Lease(ctx context.Context, id string, ttl time.Duration) error {
	if err := b.rdb.Set(ctx, b.leaseKey(id), "1", ttl).Err(); err != nil {
		return fmt.Errorf("streams: lease %s: %w", id, err)
	}
	return nil
}

// Leased reports whether the generation of reply id holds its lease.
func (b *Bus) Leased(ctx context.Context, id string) (bool, error) {
	n, err := b.rdb.Exists(ctx, b.leaseKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("streams: check the lease of %s: %w", id, err)
	}
	return n > 0, nil
}

// Release drops the lease of reply id's generation.
func (b *Bus) Release(ctx context.Context, id string) error {
	if err := b.rdb.Del(ctx, b.leaseKey(id)).Err(); err != nil {
		return fmt.Errorf("streams: release %s: %w", id, err)
	}
	return nil
}

// Cancel asks the generation of reply id to stop, on whichever replica runs it: it sets
// the reply's cancel marker (for a Watch that starts later) and announces it to every
// replica's Watch.
func (b *Bus) Cancel(ctx context.Context, id string) error {
	if err := b.rdb.Set(ctx, b.markerKey(id), "1", b.cfg.TTL).Err(); err != nil {
		return fmt.Errorf("streams: mark %s cancelled: %w", id, err)
	}
	if err := b.rdb.Publish(ctx, b.channel, id).Err(); err != nil {
		return fmt.Errorf("streams: announce cancel of %s: %w", id, err)
	}
	return nil
}

// Watch returns a context derived from parent that is also cancelled, with cause
// ErrCancelled, when Cancel(id) is called on any replica, including before Watch. stop
// unregisters the watch without cancelling ctx; call it when the generation ends. The
// Bus's one subscription to cancellations starts with the first Watch; after Close,
// Watch only catches cancels made before it.
func (b *Bus) Watch(parent context.Context, id string) (ctx context.Context, stop func()) {
	ctxs, stops := b.WatchAll(parent, []context.Context{parent}, []string{id})
	return ctxs[0], stops[0]
}

// WatchAll is Watch for many generations at once, ctxs[i] and stops[i] being
// Watch(parents[i], ids[i]): the cancels made before it are checked in one Redis round
// trip, on ctx, instead of one per generation.
func (b *Bus) WatchAll(ctx context.Context, parents []context.Context, ids []string) (ctxs []context.Context, stops []func()) {
	ctxs, stops = make([]context.Context, len(ids)), make([]func(), len(ids))
	b.mu.Lock()
	for i, id := range ids {
		c, cancel := context.WithCancelCause(parents[i])
		w := &watcher{cancel: cancel}
		if b.watchers[id] == nil {
			b.watchers[id] = map[*watcher]struct{}{}
		}
		b.watchers[id][w] = struct{}{}
		ctxs[i], stops[i] = c, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if ws := b.watchers[id]; ws != nil {
				delete(ws, w)
				if len(ws) == 0 {
					delete(b.watchers, id)
				}
			}
		}
	}
	b.listenLocked()
	b.mu.Unlock()

	// Registered first, so a Cancel is seen either here (its marker is set before it is
	// announced) or by the subscription, which checks every marker when it (re)subscribes.
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, b.markerKey(id))
	}
	_, _ = pipe.Exec(ctx) // a failed check leaves those watches to the announcements
	for i, id := range ids {
		if cmds[i].Val() > 0 {
			b.fire(id)
		}
	}
	return ctxs, stops
}

// listenLocked starts the Bus's subscription to cancellations unless it runs or the Bus
// is closed. b.mu is held.
func (b *Bus) listenLocked() {
	if b.listening || b.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.listening, b.stopListen, b.listenDone = true, cancel, done
	go func() {
		defer close(done)
		defer cancel()
		err := redisclient.Listen(ctx, b.rdb,
			func(string) { b.recheck(ctx) },
			func(_, id string) { b.fire(id) },
			b.channel)
		if err != nil { // the client was closed; a later Watch tries again
			b.mu.Lock()
			b.listening = false
			b.mu.Unlock()
		}
	}()
}

// recheck fires the watches whose reply has a cancel marker: cancels announced while the
// subscription was not established were missed.
func (b *Bus) recheck(ctx context.Context) {
	b.mu.Lock()
	ids := slices.Collect(maps.Keys(b.watchers))
	b.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, b.markerKey(id))
	}
	_, _ = pipe.Exec(ctx) // a failed check leaves that watch to later announcements
	for i, id := range ids {
		if cmds[i].Val() > 0 {
			b.fire(id)
		}
	}
}

// fire cancels and unregisters every watch of reply id.
func (b *Bus) fire(id string) {
	b.mu.Lock()
	ws := b.watchers[id]
	delete(b.watchers, id)
	b.mu.Unlock()
	for w := range ws {
		w.cancel(ErrCancelled)
	}
}

// MarkFollowed records, for ttl, that a follower waits for the events of the streams
// named after id (id itself, or streams whose names start with it, as a caller
// chooses): a publisher that skips the events nobody follows asks Followed first. A
// follower that waits longer than ttl marks again.
func (b *Bus) MarkFollowed(ctx context.Context, id string, ttl time.Duration) error {
	if err := b.rdb.Set(ctx, b.followedKey(id), "1", ttl).Err(); err != nil {
		return fmt.Errorf("streams: mark %s followed: %w", id, err)
	}
	return nil
}

// Followed reports, in one Redis round trip, which of ids are marked followed
// (MarkFollowed).
func (b *Bus) Followed(ctx context.Context, ids []string) ([]bool, error) {
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, b.followedKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("streams: check followers: %w", err)
	}
	out := make([]bool, len(ids))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}

// Close stops the Bus's subscription to cancellations and waits for it to end. Watch
// contexts still registered are not cancelled. Close does not close the Redis client.
func (b *Bus) Close() {
	b.mu.Lock()
	b.closed = true
	stop, done := b.stopListen, b.listenDone
	b.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func entryID(n uint64) string   { return "0-" + strconv.FormatUint(n, 10) }
func exclusive(n uint64) string { return "(" + entryID(n) }

func parseEvents(msgs []redis.XMessage) ([]Event, error) {
	events := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := parseEvent(m)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	return events, nil
}

// parseEvent decodes a stream entry: id 0-<n>, fields t (type), d (JSON data) and f ("1"
// on the final event only).
func parseEvent(m redis.XMessage) (Event, error) {
	rest, ok := strings.CutPrefix(m.ID, "0-")
	n, err := strconv.ParseUint(rest, 10, 64)
	if !ok || err != nil || n == 0 {
		return Event{}, fmt.Errorf("streams: malformed entry id %q", m.ID)
	}
	typ, ok1 := m.Values["t"].(string)
	data, ok2 := m.Values["d"].(string)
	if !ok1 || !ok2 || typ == "" || !json.Valid([]byte(data)) {
		return Event{}, fmt.Errorf("streams: malformed entry %s: missing or invalid type or data", m.ID)
	}
	ev := Event{ID: n, Type: typ, Data: json.RawMessage(data)}
	switch f, ok := m.Values["f"]; {
	case !ok:
	case f == "1":
		ev.Final = true
	default:
		return Event{}, fmt.Errorf("streams: malformed entry %s: final flag %v", m.ID, f)
	}
	return ev, nil
}
