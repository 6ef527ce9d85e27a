package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kilnhq/kiln/internal/errs"
)

// heartbeatInterval is how often an idle stream sends a comment line, so proxies and
// clients see the connection alive.
const heartbeatInterval = 15 * time.Second

// sseStream is the one SSE writer: every event carries a monotonic id, a type and a JSON
// payload, and is flushed as soon as it is written. The response is committed by the
// first event, so a failure before it is still an ordinary error response.
//
// A replayed stream (a reply's events read back from the stream bus) carries the ids the
// events were stored under (SendStored); the events only this connection sees (shutdown,
// an error of the connection) then carry no id, so a client resuming from the last id it
// saw misses nothing.
type sseStream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	id      uint64
	stored  bool
	started bool
}

// Send writes one event and flushes it.
func (st *sseStream) Send(event string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", event, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stored {
		return st.write("", event, b)
	}
	st.id++
	return st.write(strconv.FormatUint(st.id, 10), event, b)
}

// open commits the response of a replayed stream before its first event.
func (st *sseStream) open() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stored = true
	if !st.started {
		st.started = true
		commitEventStream(st.w)
	}
	return st.rc.Flush()
}

// SendStored writes an event read back from the stream bus, under its stored id.
func (st *sseStream) SendStored(id uint64, event string, data []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.write(strconv.FormatUint(id, 10), event, data)
}

// write writes one event (without an id line when id is empty) and flushes it; st.mu is held.
func (st *sseStream) write(id, event string, data []byte) error {
	if !st.started {
		st.started = true
		commitEventStream(st.w)
	}
	var err error
	if id != "" {
		_, err = fmt.Fprintf(st.w, "id: %s\nevent: %s\ndata: %s\n\n", id, event, data)
	} else {
		_, err = fmt.Fprintf(st.w, "event: %s\ndata: %s\n\n", event, data)
	}
	if err != nil {
		return err
	}
	return st.rc.Flush()
}

func (st *sseStream) heartbeat() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started {
		return nil
	}
	if _, err := fmt.Fprint(st.w, ": heartbeat\n\n"); err != nil {
		return err
	}
	return st.rc.Flush()
}

// commitEventStream sends the 200 headers of a text/event-stream: Kiln's events and the
// OpenAI-compatible chunks alike.
func commitEventStream(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
}

// ShutdownEvent is the last event of a stream cut by a server shutdown.
type ShutdownEvent struct {
	Reason string `json:"reason"`
}

// serveSSE streams the events produced by produce. produce must return when ctx is done:
// ctx ends when the client goes away or the server starts draining, in which case a final
// `shutdown` event is sent. An error from produce is sent as an `error` event carrying a
// problem document, or, when produce sent nothing yet, as an ordinary error response.
// Headers set on w before the first event go out with the stream.
func (s *Server) serveSSE(w http.ResponseWriter, r *http.Request, produce func(ctx context.Context, st *sseStream) error) {
	st := &sseStream{w: w, rc: http.NewResponseController(w)}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var drained bool
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.draining:
				drained = true
				cancel()
				return
			case <-t.C:
				if err := st.heartbeat(); err != nil {
					cancel()
					return
				}
			}
		}
	})
	err := produce(ctx, st)
	cancel()
	wg.Wait()
	st.mu.Lock()
	started := st.started
	st.mu.Unlock()
	switch {
	case !started && drained:
		s.respondError(w, r, errs.E(errs.NotReady, "The server is shutting down; retry on another replica."))
	case !started && err != nil:
		s.respondError(w, r, err)
	case drained:
		_ = st.Send("shutdown", ShutdownEvent{Reason: "The server is shutting down; reconnect to continue."})
	case err != nil && !errors.Is(r.Context().Err(), context.Canceled): // a deadline is worth an error event; a gone client reads nothing
		_ = st.Send("error", newProblem(r.Context(), r.URL.Path, s.classify(r, err)))
	}
}
