package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// BenchmarkResume measures how soon a client resuming a finished reply of 200 events
// after event 100 (GET /v1/conversations/{id}/messages/{message_id}/events with
// Last-Event-ID: 100) has event 101 parsed, over a real HTTP connection, against a
// GET /health round trip on the same server and client in the same run. ns/op is the
// mean, p50-ns the median.
//
// health reads /health to the end, so its connection is kept alive. events is timed until
// event 101 is parsed; the other 99 events are then read untimed, so its connection is
// kept alive too; p50-vs-health is its p50 over health's. events_newconn closes the body
// at event 101: Go's transport drops a connection whose body was not read to the end, so
// each resume dials a new one, as a client whose connection broke does.
//
//	go test ./server -run '^$' -bench Resume -benchmem -count 5
func BenchmarkResume(b *testing.B) {
	bd := setup(b)
	bd.srv.log = logging.New(io.Discard, "info") // the access line is still encoded
	ts := httptest.NewServer(bd.srv)
	b.Cleanup(ts.Close)
	client := ts.Client() // keep-alive
	token := bd.signUp(b, "resume@example.com").AccessToken

	// A finished reply of 200 events: reply.started, 197 deltas (the dev model says
	// "[dev] You said: " and the 194 words, word by word), usage and done.
	var conv api.Conversation
	if res := bd.call(b, "POST", "/v1/conversations", token, map[string]any{}, &conv); res.StatusCode != http.StatusCreated {
		b.Fatalf("create conversation: %d %s", res.StatusCode, readAll(res))
	}
	words := make([]string, 194)
	for i := range words {
		words[i] = fmt.Sprintf("word%d", i)
	}
	path := "/v1/conversations/" + conv.Id.String() + "/messages"
	req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(`{"stream":true,"content":"`+strings.Join(words, " ")+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	msgID := res.Header.Get("Kiln-Message-Id")
	all, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasSuffix(string(all), "\n\n") || !strings.Contains(string(all), "id: 200\nevent: done\n") {
		b.Fatalf("the reply did not end with event 200, done: %d %s", res.StatusCode, all)
	}
	events := ts.URL + path + "/" + msgID + "/events"

	var healthP50 time.Duration
	b.Run("health", func(b *testing.B) {
		b.ReportAllocs()
		var took []time.Duration
		for b.Loop() {
			start := time.Now()
			res, err := client.Get(ts.URL + "/health")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			took = append(took, time.Since(start))
			if res.StatusCode != http.StatusOK {
				b.Fatalf("GET /health: %d", res.StatusCode)
			}
		}
		healthP50 = reportP50(b, took)
	})
	br := bufio.NewReader(nil)
	resume := func(b *testing.B, newConn bool) time.Duration {
		start := time.Now()
		req, _ := http.NewRequest("GET", events, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Last-Event-ID", "100")
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			b.Fatalf("GET events: %d %s", res.StatusCode, readAll(res))
		}
		br.Reset(res.Body)
		first := firstEventID(b, br)
		took := time.Since(start)
		if first != "101" {
			b.Fatalf("first event id %q, want 101", first)
		}
		if !newConn {
			b.StopTimer()
			if rest, err := io.ReadAll(br); err != nil || !strings.Contains(string(rest), "id: 200\nevent: done\n") {
				b.Fatalf("the rest of the stream: %v %s", err, rest)
			}
		}
		_ = res.Body.Close()
		if !newConn {
			b.StartTimer()
		}
		return took
	}
	b.Run("events", func(b *testing.B) {
		b.ReportAllocs()
		var took []time.Duration
		for b.Loop() {
			took = append(took, resume(b, false))
		}
		p50 := reportP50(b, took)
		if healthP50 > 0 {
			b.ReportMetric(float64(p50)/float64(healthP50), "p50-vs-health")
		}
	})
	b.Run("events_newconn", func(b *testing.B) {
		b.ReportAllocs()
		var took []time.Duration
		for b.Loop() {
			took = append(took, resume(b, true))
		}
		reportP50(b, took)
	})
}

// firstEventID reads the stream's first event and returns its id.
func firstEventID(b *testing.B, br *bufio.Reader) string {
	id := ""
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatalf("read the first event: %v", err)
		}
		switch {
		case len(line) == 1: // the blank line ending the event
			return id
		case bytes.HasPrefix(line, []byte("id: ")):
			id = string(bytes.TrimSuffix(line[len("id: "):], []byte("\n")))
		}
	}
}

// reportP50 reports the median of took as p50-ns and returns it.
func reportP50(b *testing.B, took []time.Duration) time.Duration {
	if len(took) == 0 {
		return 0
	}
	slices.Sort(took)
	p50 := took[len(took)/2]
	b.ReportMetric(float64(p50.Nanoseconds()), "p50-ns")
	return p50
}
