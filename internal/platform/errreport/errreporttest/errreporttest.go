// Package errreporttest is a Sentry for tests: an HTTP server that takes envelopes as Sentry's
// ingestion endpoint does and keeps the events they carry.
package errreporttest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Event is the part of a Sentry event the tests look at, decoded from the wire.
type Event struct {
	EventID     string                    `json:"event_id"`
	Level       string                    `json:"level"`
	Environment string                    `json:"environment"`
	Release     string                    `json:"release"`
	Message     string                    `json:"message"`
	Tags        map[string]string         `json:"tags"`
	Fingerprint []string                  `json:"fingerprint"`
	Contexts    map[string]map[string]any `json:"contexts"`
	User        map[string]any            `json:"user"`
	Request     *struct {
		Method      string            `json:"method"`
		URL         string            `json:"url"`
		QueryString string            `json:"query_string"`
		Cookies     string            `json:"cookies"`
		Headers     map[string]string `json:"headers"`
		Data        any               `json:"data"`
		Env         map[string]string `json:"env"`
	} `json:"request"`
	Exception []struct {
		Type       string `json:"type"`
		Value      string `json:"value"`
		Stacktrace *struct {
			Frames []struct {
				Function string `json:"function"`
				Module   string `json:"module"`
			} `json:"frames"`
		} `json:"stacktrace"`
	} `json:"exception"`
	// Raw is the event's JSON as sent, for searching it whole.
	Raw string `json:"-"`
}

// Receiver collects the events sent to its DSN.
type Receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	events []Event
	added  chan struct{}
}

// New starts a Receiver, closed when the test ends.
func New(t testing.TB) *Receiver {
	t.Helper()
	r := &Receiver{added: make(chan struct{}, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/api/42/envelope/" {
			t.Errorf("Sentry got %s %s, want POST /api/42/envelope/", req.Method, req.URL.Path)
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if !strings.Contains(req.Header.Get("X-Sentry-Auth"), "sentry_key=public") {
			t.Errorf("envelope without the DSN's key: X-Sentry-Auth %q", req.Header.Get("X-Sentry-Auth"))
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			t.Errorf("read envelope: %v", err)
			return
		}
		r.add(t, body)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// DSN is the DSN that sends to this Receiver (project 42, key "public").
func (r *Receiver) DSN() string {
	return strings.Replace(r.srv.URL, "http://", "http://public@", 1) + "/42"
}

// add decodes an envelope (a header line, then item header and payload lines) and keeps
// its event items.
func (r *Receiver) add(t testing.TB, body []byte) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	if !sc.Scan() {
		t.Errorf("empty envelope")
		return
	}
	for sc.Scan() {
		var item struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(sc.Bytes(), &item); err != nil {
			t.Errorf("envelope item header %q: %v", sc.Text(), err)
			return
		}
		if !sc.Scan() {
			t.Errorf("envelope item %s without a payload", item.Type)
			return
		}
		if item.Type != "event" {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Errorf("event payload: %v", err)
			return
		}
		e.Raw = sc.Text()
		r.mu.Lock()
		r.events = append(r.events, e)
		r.mu.Unlock()
		select {
		case r.added <- struct{}{}:
		default:
		}
	}
}

// Events returns the events received so far.
func (r *Receiver) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// WaitFor waits up to 10 s for n events in all and returns them; it fails the test when
// fewer arrive.
func (r *Receiver) WaitFor(t testing.TB, n int) []Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if evs := r.Events(); len(evs) >= n {
			return evs
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("Sentry got %d events within 10 s, want %d", len(r.Events()), n)
		}
	}
}
