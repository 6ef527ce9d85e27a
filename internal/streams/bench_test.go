package streams_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

var errFirst = errors.New("first event received")

// BenchmarkResume measures how soon a client resuming a finished 200-event stream after
// event 100 gets its first event: through Follow, and, as a baseline, with a bare
// XRANGE <key> (0-100 + COUNT 1.
func BenchmarkResume(b *testing.B) {
	rdb, ks := storetest.Redis(b)
	bus := streams.New(rdb, ks, streams.Config{})
	b.Cleanup(bus.Close)
	ctx := context.Background()
	p := bus.Publisher("r")
	data := map[string]string{"text": strings.Repeat("x", 29)} // {"text":"xxx…"}: 40 bytes
	for range 199 {
		if _, err := p.Publish(ctx, "message.delta", data); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := p.Finish(ctx, "done", data); err != nil {
		b.Fatal(err)
	}
	key := ks.Key("stream", 1, "r")

	b.Run("follow", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			err := bus.Follow(ctx, "r", 100, func(ev streams.Event) error {
				if ev.ID != 101 {
					b.Fatalf("first event %d, want 101", ev.ID)
				}
				return errFirst
			})
			if !errors.Is(err, errFirst) {
				b.Fatal(err)
			}
		}
	})
	b.Run("xrange", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msgs, err := rdb.XRangeN(ctx, key, "(0-100", "+", 1).Result()
			if err != nil || len(msgs) != 1 {
				b.Fatal(msgs, err)
			}
		}
	})
}
