package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
)

type sseEvent struct {
	id, event, data string
	comment         bool
}

// openEvents GETs the event stream at path on ts with credential and headers (name, value
// pairs); the events of a 200 arrive on the channel, read until the stream ends.
func openEvents(t *testing.T, ts *httptest.Server, credential, path string, header ...string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+credential)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	if res.StatusCode != http.StatusOK {
		return res, nil
	}
	return res, readEvents(t, res)
}

// readEvents parses SSE frames from the live connection as they arrive.
func readEvents(t *testing.T, res *http.Response) <-chan sseEvent {
	t.Helper()
	out := make(chan sseEvent, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				out <- ev
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = true
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

func next(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseEvent{}
}

// streamServer mounts produce on GET /test/stream and serves over a real connection,
// with a 50ms request deadline that streams must not be cut by.
func streamServer(t *testing.T, produce func(ctx context.Context, send func(string, any) error) error) (*bundle, *http.Response, <-chan sseEvent) {
	t.Helper()
	b := setup(t, withConfig(func(c *config.HTTP) { c.RequestTimeout = 50 * time.Millisecond }))
	b.srv.heartbeat = 30 * time.Millisecond
	b.srv.HandleStream("GET /test/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.srv.serveSSE(w, r, func(ctx context.Context, st *sseStream) error { return produce(ctx, st.Send) })
	}))
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	res, err := http.Get(ts.URL + "/test/stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" || res.Header.Get("X-Request-Id") == "" {
		t.Fatalf("status %d, headers %v", res.StatusCode, res.Header)
	}
	return b, res, readEvents(t, res)
}

func TestSSE(t *testing.T) {
	t.Parallel()

	t.Run("OKFlushedPerEventWithMonotonicIDs", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		_, _, events := streamServer(t, func(ctx context.Context, send func(string, any) error) error {
			for i := 1; i <= 3; i++ {
				if err := send("tick", map[string]int{"n": i}); err != nil {
					return err
				}
			}
			<-release // the events above must arrive while the handler is still running
			return nil
		})
		for i := 1; i <= 3; i++ {
			ev := next(t, events)
			if ev.id != string(rune('0'+i)) || ev.event != "tick" || ev.data != `{"n":`+string(rune('0'+i))+`}` {
				t.Fatalf("event %d: %+v", i, ev)
			}
		}
		close(release)
	})

	t.Run("OKHeartbeatsAndNoRequestDeadline", func(t *testing.T) {
		t.Parallel()
		_, _, events := streamServer(t, func(ctx context.Context, send func(string, any) error) error {
			if err := send("start", 1); err != nil { // the first event commits the response
				return err
			}
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond): // 6× the request deadline
			}
			return send("done", map[string]bool{"ok": true})
		})
		if ev := next(t, events); ev.event != "start" {
			t.Fatalf("%+v", ev)
		}
		heartbeats := 0
		for {
			ev := next(t, events)
			if ev.comment {
				heartbeats++
				continue
			}
			if ev.event != "done" {
				t.Fatalf("stream cut: %+v", ev)
			}
			break
		}
		if heartbeats < 2 {
			t.Errorf("%d heartbeats in 300ms at a 30ms interval", heartbeats)
		}
	})

	t.Run("OKShutdownEndsWithFinalEvent", func(t *testing.T) {
		t.Parallel()
		b, _, events := streamServer(t, func(ctx context.Context, send func(string, any) error) error {
			if err := send("tick", 1); err != nil {
				return err
			}
			<-ctx.Done()
			return ctx.Err()
		})
		if ev := next(t, events); ev.event != "tick" {
			t.Fatalf("%+v", ev)
		}
		b.srv.StartDraining()
		ev := next(t, events)
		for ev.comment {
			ev = next(t, events)
		}
		if ev.event != "shutdown" || ev.id != "2" || !strings.Contains(ev.data, "reconnect") {
			t.Fatalf("final event %+v", ev)
		}
		if _, open := <-events; open {
			t.Error("stream still open after the shutdown event")
		}
	})

	t.Run("ErrSentAsProblemEvent", func(t *testing.T) {
		t.Parallel()
		_, res, events := streamServer(t, func(ctx context.Context, send func(string, any) error) error {
			if err := send("tick", 1); err != nil {
				return err
			}
			return errs.E(errs.Conflict, "the reply was already generated")
		})
		if ev := next(t, events); ev.event != "tick" {
			t.Fatalf("%+v", ev)
		}
		ev := next(t, events)
		for ev.comment {
			ev = next(t, events)
		}
		var p api.Problem
		if ev.event != "error" || json.Unmarshal([]byte(ev.data), &p) != nil {
			t.Fatalf("%+v", ev)
		}
		if p.Code != api.ErrorCode(errs.Conflict) || p.RequestId != res.Header.Get("X-Request-Id") || p.Detail == nil {
			t.Errorf("problem %+v", p)
		}
	})

	t.Run("ErrBeforeTheFirstEventIsAnOrdinaryProblem", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.srv.HandleStream("GET /test/stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.srv.serveSSE(w, r, func(context.Context, *sseStream) error {
				return errs.E(errs.Conflict, "the reply was already generated")
			})
		}))
		res := b.do(t, httptest.NewRequest(http.MethodGet, "/test/stream", nil))
		if res.StatusCode != http.StatusConflict || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("status %d, %s", res.StatusCode, res.Header.Get("Content-Type"))
		}
	})
}
