package streams_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

const wait = 5 * time.Second

func newBus(t *testing.T, cfg streams.Config) (*streams.Bus, redis.UniversalClient, redisclient.Keyspace) {
	t.Helper()
	rdb, ks := storetest.Redis(t)
	b := streams.New(rdb, ks, cfg)
	t.Cleanup(b.Close)
	return b, rdb, ks
}

// otherReplica returns a Bus on a client of its own in the same key space, as another
// replica has.
func otherReplica(t *testing.T, ks redisclient.Keyspace) *streams.Bus {
	t.Helper()
	rdb, err := redisclient.Open(t.Context(), storetest.RedisURL(), 0)
	if err != nil {
		t.Fatalf("open second client: %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	b := streams.New(rdb, ks, streams.Config{})
	t.Cleanup(b.Close)
	return b
}

func streamKey(ks redisclient.Keyspace, id string) string { return ks.Key("stream", 1, id) }

type delta struct {
	N int `json:"n"`
}

// publish appends n message.delta events (data {"n":i}) and, if finish, a done event.
func publish(t *testing.T, p *streams.Publisher, n int, finish bool) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if _, err := p.Publish(t.Context(), "message.delta", delta{i}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if finish {
		if _, err := p.Finish(t.Context(), "done", nil); err != nil {
			t.Fatalf("finish: %v", err)
		}
	}
}

// checkEvents checks events are ids from..to of a stream written by publish.
func checkEvents(t *testing.T, events []streams.Event, from, to, deltas uint64, finished bool) {
	t.Helper()
	if uint64(len(events)) != to-from+1 {
		t.Fatalf("got %d events, want ids %d..%d: %+v", len(events), from, to, events)
	}
	for i, ev := range events {
		id := from + uint64(i)
		if ev.ID != id {
			t.Fatalf("event %d has id %d, want %d", i, ev.ID, id)
		}
		last := finished && id == deltas+1
		if last {
			if ev.Type != "done" || string(ev.Data) != "null" || !ev.Final {
				t.Fatalf("event %d = %+v, want the final done event", id, ev)
			}
			continue
		}
		if want := fmt.Sprintf(`{"n":%d}`, id); ev.Type != "message.delta" || string(ev.Data) != want || ev.Final {
			t.Fatalf("event %d = %+v (data %s), want message.delta %s", id, ev, ev.Data, want)
		}
	}
}

func TestPublishRead(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	ctx := t.Context()

	events, finished, err := bus.Read(ctx, "r1", 0, 0)
	if err != nil || len(events) != 0 || finished {
		t.Fatalf("Read of a missing stream = %v, %v, %v; want nothing", events, finished, err)
	}
	if ok, err := bus.Exists(ctx, "r1"); err != nil || ok {
		t.Fatalf("Exists before the first event = %v, %v", ok, err)
	}

	p := bus.Publisher("r1")
	for i := uint64(1); i <= 3; i++ {
		id, err := p.Publish(ctx, "message.delta", delta{int(i)})
		if err != nil || id != i {
			t.Fatalf("Publish = %d, %v; want %d", id, err, i)
		}
	}
	if ok, err := bus.Exists(ctx, "r1"); err != nil || !ok {
		t.Fatalf("Exists after publishing = %v, %v", ok, err)
	}
	events, finished, err = bus.Read(ctx, "r1", 0, 0)
	if err != nil || finished {
		t.Fatalf("Read of a live stream: finished %v, err %v", finished, err)
	}
	checkEvents(t, events, 1, 3, 3, false)

	if id, err := p.Finish(ctx, "done", nil); err != nil || id != 4 {
		t.Fatalf("Finish = %d, %v; want 4", id, err)
	}
	events, finished, err = bus.Read(ctx, "r1", 0, 0)
	if err != nil || !finished {
		t.Fatalf("Read of a finished stream: finished %v, err %v", finished, err)
	}
	checkEvents(t, events, 1, 4, 3, true)

	// A page that stops before the final event still reports the stream finished.
	events, finished, err = bus.Read(ctx, "r1", 1, 2)
	if err != nil || !finished {
		t.Fatalf("Read(after 1, max 2): finished %v, err %v", finished, err)
	}
	checkEvents(t, events, 2, 3, 3, true)

	events, finished, err = bus.Read(ctx, "r1", 4, 0)
	if err != nil || len(events) != 0 || !finished {
		t.Fatalf("Read after the final event = %v, %v, %v; want none, finished", events, finished, err)
	}
}

func TestPublishAfterFinish(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	ctx := t.Context()
	p := bus.Publisher("r")
	publish(t, p, 1, true)
	if _, err := p.Publish(ctx, "message.delta", delta{9}); !errors.Is(err, streams.ErrFinished) {
		t.Fatalf("Publish after Finish = %v, want ErrFinished", err)
	}
	if _, err := p.Finish(ctx, "done", nil); !errors.Is(err, streams.ErrFinished) {
		t.Fatalf("Finish after Finish = %v, want ErrFinished", err)
	}
	// So does a new Publisher on the finished stream.
	if _, err := bus.Publisher("r").Finish(ctx, "error", nil); !errors.Is(err, streams.ErrFinished) {
		t.Fatalf("second Publisher's Finish on a finished stream = %v, want ErrFinished", err)
	}
}

func TestSecondPublisherContinues(t *testing.T) {
	t.Parallel()
	bus, _, ks := newBus(t, streams.Config{})
	ctx := t.Context()
	first := bus.Publisher("r")
	publish(t, first, 2, false)

	// Another replica ends the reply whose generator died.
	id, err := otherReplica(t, ks).Publisher("r").Finish(ctx, "error", map[string]string{"code": "generation_lost"})
	if err != nil || id != 3 {
		t.Fatalf("second Publisher's Finish = %d, %v; want 3", id, err)
	}

	// The first publisher's next id is taken: Redis refuses it, and the error says so.
	_, err = first.Publish(ctx, "message.delta", delta{3})
	if err == nil || errors.Is(err, streams.ErrFinished) || !strings.Contains(err.Error(), "equal or smaller") {
		t.Fatalf("Publish with a taken id = %v, want Redis's XADD id error", err)
	}
	// Its next call reads the stream's top again and sees it finished.
	if _, err := first.Publish(ctx, "message.delta", delta{3}); !errors.Is(err, streams.ErrFinished) {
		t.Fatalf("Publish after resync = %v, want ErrFinished", err)
	}
	events, finished, err := bus.Read(ctx, "r", 0, 0)
	if err != nil || !finished || len(events) != 3 || events[2].Type != "error" || string(events[2].Data) != `{"code":"generation_lost"}` {
		t.Fatalf("Read = %+v, %v, %v", events, finished, err)
	}
}

func TestPublishConcurrently(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	p := bus.Publisher("r")
	const writers, each = 8, 25
	var wg sync.WaitGroup
	ids := make(chan uint64, writers*each)
	for range writers {
		wg.Go(func() {
			for i := range each {
				id, err := p.Publish(t.Context(), "message.delta", delta{i})
				if err != nil {
					t.Errorf("Publish: %v", err)
					return
				}
				ids <- id
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] || id < 1 || id > writers*each {
			t.Fatalf("id %d repeated or out of 1..%d", id, writers*each)
		}
		seen[id] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d ids, want %d", len(seen), writers*each)
	}
}

func TestMaxEvents(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{MaxEvents: 3})
	ctx := t.Context()
	p := bus.Publisher("r")
	publish(t, p, 2, false)
	// The last slot is kept for the final event.
	if _, err := p.Publish(ctx, "message.delta", delta{3}); !errors.Is(err, streams.ErrTooManyEvents) {
		t.Fatalf("Publish of event 3 of 3 = %v, want ErrTooManyEvents", err)
	}
	if id, err := p.Finish(ctx, "error", nil); err != nil || id != 3 {
		t.Fatalf("Finish as event 3 of 3 = %d, %v", id, err)
	}
	events, finished, err := bus.Read(ctx, "r", 0, 0)
	if err != nil || !finished || len(events) != 3 {
		t.Fatalf("Read = %d events, %v, %v; want 3, finished", len(events), finished, err)
	}
}

func TestTTL(t *testing.T) {
	t.Parallel()
	bus, rdb, ks := newBus(t, streams.Config{TTL: time.Hour})
	ctx := t.Context()
	key := streamKey(ks, "r")
	pttl := func() time.Duration {
		t.Helper()
		d, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatalf("PTTL: %v", err)
		}
		return d
	}
	p := bus.Publisher("r")
	publish(t, p, 1, false)
	if d := pttl(); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("PTTL after the first event = %v, want about 1h", d)
	}
	if err := rdb.PExpire(ctx, key, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	publish(t, p, 1, false)
	if d := pttl(); d > time.Minute {
		t.Fatalf("PTTL after a later event = %v, want it left alone (≤ 1m)", d)
	}
	if _, err := p.Finish(ctx, "done", nil); err != nil {
		t.Fatal(err)
	}
	if d := pttl(); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("PTTL after the final event = %v, want it reset to about 1h", d)
	}
}

func TestMalformedEntries(t *testing.T) {
	t.Parallel()
	bus, rdb, ks := newBus(t, streams.Config{})
	ctx := t.Context()
	for name, entry := range map[string]redis.XAddArgs{
		"id":    {ID: "7-1", Values: []string{"t", "x", "d", "1"}},
		"type":  {ID: "0-1", Values: []string{"d", "1"}},
		"data":  {ID: "0-1", Values: []string{"t", "x"}},
		"json":  {ID: "0-1", Values: []string{"t", "x", "d", "{"}},
		"final": {ID: "0-1", Values: []string{"t", "x", "d", "1", "f", "yes"}},
	} {
		entry.Stream = streamKey(ks, name)
		if err := rdb.XAdd(ctx, &entry).Err(); err != nil {
			t.Fatalf("%s: XADD: %v", name, err)
		}
		if _, _, err := bus.Read(ctx, name, 0, 0); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: Read = %v, want a malformed entry error", name, err)
		}
		err := bus.Follow(ctx, name, 0, func(streams.Event) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: Follow = %v, want a malformed entry error", name, err)
		}
		if _, err := bus.Publisher(name).Publish(ctx, "x", 1); err == nil || !strings.Contains(err.Error(), "malformed") {
			t.Errorf("%s: Publish = %v, want a malformed entry error", name, err)
		}
	}
}

// collect follows the stream into a channel; the returned channel gets Follow's result.
func collect(ctx context.Context, bus *streams.Bus, id string, after uint64) (<-chan streams.Event, <-chan error) {
	events := make(chan streams.Event, 1024)
	done := make(chan error, 1)
	go func() {
		done <- bus.Follow(ctx, id, after, func(ev streams.Event) error {
			events <- ev
			return nil
		})
		close(events)
	}()
	return events, done
}

// drain returns the events collect delivered, once Follow has returned nil.
func drain(t *testing.T, events <-chan streams.Event, done <-chan error) []streams.Event {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Follow = %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatalf("Follow did not return within %v", wait)
	}
	var got []streams.Event
	for ev := range events {
		got = append(got, ev)
	}
	return got
}

func TestFollowFinished(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	publish(t, bus.Publisher("r"), 40, true) // more than Follow's first page
	for _, after := range []uint64{0, 3, 16, 17, 40} {
		events, done := collect(t.Context(), bus, "r", after)
		checkEvents(t, drain(t, events, done), after+1, 41, 40, true)
	}
	// Resuming after the final event (or beyond) ends at once.
	for _, after := range []uint64{41, 100} {
		events, done := collect(t.Context(), bus, "r", after)
		if got := drain(t, events, done); len(got) != 0 {
			t.Fatalf("Follow after %d delivered %+v, want nothing", after, got)
		}
	}
}

func TestFollowLive(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	p := bus.Publisher("r")
	publish(t, p, 2, false)
	events, done := collect(t.Context(), bus, "r", 1)
	// The stored event arrives first; the rest are published while Follow waits.
	select {
	case ev := <-events:
		if ev.ID != 2 {
			t.Fatalf("first event %d, want 2", ev.ID)
		}
	case <-time.After(wait):
		t.Fatal("no stored event")
	}
	for i := 3; i <= 50; i++ {
		if _, err := p.Publish(t.Context(), "message.delta", delta{i}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(10 * time.Millisecond) // let Follow block in between
		}
	}
	if _, err := p.Finish(t.Context(), "done", nil); err != nil {
		t.Fatal(err)
	}
	checkEvents(t, drain(t, events, done), 3, 51, 50, true)
}

func TestFollowWaitsForStream(t *testing.T) {
	t.Parallel()
	bus, _, ks := newBus(t, streams.Config{})
	events, done := collect(t.Context(), bus, "r", 0)
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Follow of a stream not created yet returned %v", err)
	default:
	}
	publish(t, otherReplica(t, ks).Publisher("r"), 3, true)
	checkEvents(t, drain(t, events, done), 1, 4, 3, true)
}

func TestFollowContextEnds(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	publish(t, bus.Publisher("r"), 1, false)
	ctx, cancel := context.WithCancel(t.Context())
	events, done := collect(ctx, bus, "r", 0)
	<-events
	time.Sleep(300 * time.Millisecond) // Follow is blocked in XREAD
	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d >= 2*time.Second {
			t.Fatalf("Follow returned %v after ctx ended, want < 2s", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Follow did not return within 2s of ctx ending")
	}
}

func TestFollowCallbackError(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	publish(t, bus.Publisher("r"), 5, true)
	stop := errors.New("stop")
	var got []uint64
	err := bus.Follow(t.Context(), "r", 0, func(ev streams.Event) error {
		got = append(got, ev.ID)
		if ev.ID == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || len(got) != 2 {
		t.Fatalf("Follow = %v after %v, want fn's error after events 1 and 2", err, got)
	}
}

// waitSubscribed waits until the key space's cancel channel has exactly one subscriber: a
// Bus subscribes once, however many replies it watches.
func waitSubscribed(t *testing.T, rdb redis.UniversalClient, ks redisclient.Keyspace) {
	t.Helper()
	channel := ks.Key("stream", 1, "cancel")
	deadline := time.Now().Add(wait)
	for {
		n, err := rdb.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		switch {
		case n[channel] == 1:
			return
		case n[channel] > 1:
			t.Fatalf("%d subscriptions to %s, want 1", n[channel], channel)
		case time.Now().After(deadline):
			t.Fatalf("no subscription to %s within %v", channel, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watchDone waits for ctx to end and checks its cause.
func watchDone(t *testing.T, ctx context.Context, cause error) {
	t.Helper()
	select {
	case <-ctx.Done():
		if got := context.Cause(ctx); !errors.Is(got, cause) {
			t.Fatalf("cause = %v, want %v", got, cause)
		}
	case <-time.After(wait):
		t.Fatalf("watched context not done within %v", wait)
	}
}

func TestCancelBeforeWatch(t *testing.T) {
	t.Parallel()
	bus, rdb, ks := newBus(t, streams.Config{TTL: time.Hour})
	if err := otherReplica(t, ks).Cancel(t.Context(), "r"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if d, err := rdb.PTTL(t.Context(), streamKey(ks, "r")+":cancel").Result(); err != nil || d <= 0 {
		t.Fatalf("cancel marker PTTL = %v, %v; want a TTL", d, err)
	}
	ctx, stop := bus.Watch(t.Context(), "r")
	defer stop()
	// The marker is checked before Watch returns.
	if !errors.Is(context.Cause(ctx), streams.ErrCancelled) {
		t.Fatalf("cause right after Watch = %v, want ErrCancelled", context.Cause(ctx))
	}
}

func TestCancelAfterWatch(t *testing.T) {
	t.Parallel()
	bus, rdb, ks := newBus(t, streams.Config{})
	ctx, stop := bus.Watch(t.Context(), "r")
	defer stop()
	other, stopOther := bus.Watch(t.Context(), "other")
	defer stopOther()
	same, stopSame := bus.Watch(t.Context(), "r") // two watches of one reply
	defer stopSame()
	if ctx.Err() != nil {
		t.Fatalf("watched context done before Cancel: %v", context.Cause(ctx))
	}
	waitSubscribed(t, rdb, ks) // so the announcement, not the marker, cancels
	if err := otherReplica(t, ks).Cancel(t.Context(), "r"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	watchDone(t, ctx, streams.ErrCancelled)
	watchDone(t, same, streams.ErrCancelled)
	if other.Err() != nil {
		t.Fatalf("another reply's watch ended: %v", context.Cause(other))
	}
}

func TestWatchStop(t *testing.T) {
	t.Parallel()
	bus, rdb, ks := newBus(t, streams.Config{})
	ctx, stop := bus.Watch(t.Context(), "r")
	sentinel, stopSentinel := bus.Watch(t.Context(), "sentinel")
	defer stopSentinel()
	stop()
	stop() // idempotent
	if ctx.Err() != nil {
		t.Fatalf("stop cancelled the context: %v", context.Cause(ctx))
	}
	waitSubscribed(t, rdb, ks)
	replica := otherReplica(t, ks)
	for _, id := range []string{"r", "sentinel"} {
		if err := replica.Cancel(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	// Cancellations are dispatched in order: once the sentinel's arrived, r's was handled.
	watchDone(t, sentinel, streams.ErrCancelled)
	if ctx.Err() != nil {
		t.Fatalf("a stopped watch was cancelled: %v", context.Cause(ctx))
	}
}

func TestWatchParentEnds(t *testing.T) {
	t.Parallel()
	bus, _, _ := newBus(t, streams.Config{})
	parent, cancel := context.WithCancel(t.Context())
	ctx, stop := bus.Watch(parent, "r")
	defer stop()
	cancel()
	watchDone(t, ctx, context.Canceled)
}

func TestClose(t *testing.T) {
	t.Parallel()
	bus, _, ks := newBus(t, streams.Config{})
	_, stop := bus.Watch(t.Context(), "r")
	stop()
	bus.Close()
	bus.Close()
	// After Close, Watch still sees a cancel made before it.
	if err := otherReplica(t, ks).Cancel(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	ctx, stop := bus.Watch(t.Context(), "r")
	defer stop()
	if !errors.Is(context.Cause(ctx), streams.ErrCancelled) {
		t.Fatalf("cause = %v, want ErrCancelled", context.Cause(ctx))
	}
}

// TestFollowersDoNotStarveTheBus: followers block on the Blocking client's pool, so a bus
// whose own pool is smaller than the number of followers still publishes at once.
func TestFollowersDoNotStarveTheBus(t *testing.T) {
	t.Parallel()
	_, ks := storetest.Redis(t)
	small, err := redisclient.Open(t.Context(), storetest.RedisURL(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = small.Close() })
	blocking, err := redisclient.Open(t.Context(), storetest.RedisURL(), 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = blocking.Close() })
	b := streams.New(small, ks, streams.Config{Blocking: blocking})
	t.Cleanup(b.Close)

	const followers = 8
	got := make(chan streams.Event, followers)
	var wg sync.WaitGroup
	for range followers {
		wg.Go(func() {
			_ = b.Follow(t.Context(), "busy", 0, func(ev streams.Event) error {
				if ev.Final {
					got <- ev
				}
				return nil
			})
		})
	}
	waitBlocked := time.Now().Add(5 * time.Second)
	for blocking.PoolStats().TotalConns < followers && time.Now().Before(waitBlocked) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if _, err := b.Publisher("busy").Finish(t.Context(), "done", nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("publishing beside %d blocked followers took %v", followers, took)
	}
	wg.Wait()
	if len(got) != followers {
		t.Errorf("%d followers got the final event, want %d", len(got), followers)
	}
}
