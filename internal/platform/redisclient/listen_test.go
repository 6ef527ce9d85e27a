package redisclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestListen(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	a, b := ks.Key("listen", 1, "a"), ks.Key("listen", 1, "b")
	type event struct{ kind, channel, payload string }
	events := make(chan event, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- redisclient.Listen(ctx, rdb,
			func(channel string) { events <- event{"subscribe", channel, ""} },
			func(channel, payload string) { events <- event{"message", channel, payload} },
			a, b)
	}()
	next := func() event {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
			return event{}
		}
	}

	subscribed := map[string]bool{}
	for range 2 {
		e := next()
		if e.kind != "subscribe" {
			t.Fatalf("got %+v before both subscriptions", e)
		}
		subscribed[e.channel] = true
	}
	if !subscribed[a] || !subscribed[b] {
		t.Fatalf("onSubscribe ran for %v, want %s and %s", subscribed, a, b)
	}

	for _, want := range []event{{"message", a, "one"}, {"message", b, "two"}} {
		if err := rdb.Publish(ctx, want.channel, want.payload).Err(); err != nil {
			t.Fatalf("publish: %v", err)
		}
		if got := next(); got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Listen after ctx done = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return within 5s of ctx done")
	}
}

func TestListenClosed(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	subscribed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- redisclient.Listen(t.Context(), rdb,
			func(string) { subscribed <- struct{}{} },
			func(string, string) {},
			ks.Key("listen", 1, "closed"))
	}()
	select {
	case <-subscribed:
	case <-time.After(5 * time.Second):
		t.Fatal("not subscribed within 5s")
	}
	_ = rdb.Close()
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("Listen after the client closed = %v, want an error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Listen did not return within 5s of the client closing")
	}
}
