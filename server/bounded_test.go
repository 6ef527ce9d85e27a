package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
)

// writeCounter is a ResponseWriter that counts the writes of a body.
type writeCounter struct {
	*httptest.ResponseRecorder
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.ResponseRecorder.Write(p)
}

// TestExportStreams: an export is written as its pages are read (issue 12: it was built
// whole in memory, then written at once), in both formats, and the document is whole.
func TestExportStreams(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	token := b.signUp(t, "ada@example.com").AccessToken
	var c api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", token, map[string]any{"title": "Long"}, &c), 201)
	const n, size = 8, 600 << 10 // 4.8 MiB: at least 8 pages of 1 MiB
	_, err := b.pool.Exec(ctx, `
		INSERT INTO messages (id, org_id, conversation_id, seq, role, content, status, created_at)
		SELECT gen_random_uuid(), c.org_id, c.id, g, CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
		       g || ':' || repeat('x', $2), 'completed', now()
		FROM conversations c, generate_series(1, $3::integer) g WHERE c.id = $1`, c.Id, size, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"json", "markdown"} {
		t.Run(format, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/v1/conversations/"+c.Id.String()+"/export?format="+format, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			w := &writeCounter{ResponseRecorder: httptest.NewRecorder()}
			b.srv.ServeHTTP(w, req)
			res := w.Result()
			if res.StatusCode != 200 || res.Header.Get("Content-Length") != "" {
				t.Fatalf("export: %d, Content-Length %q; want 200 streamed", res.StatusCode, res.Header.Get("Content-Length"))
			}
			if w.writes < n/2 {
				t.Errorf("%d writes of the body; want one per page at least (%d pages)", w.writes, n/2)
			}
			body := w.Body.String()
			b.validateResponse(t, req, &http.Response{StatusCode: 200, Header: res.Header, Body: io.NopCloser(strings.NewReader(body))})
			if format == "markdown" {
				if !strings.HasPrefix(body, "# Long\n") || strings.Count(body, "\n## ") != n || !strings.Contains(body, "\n8:xxx") {
					t.Errorf("markdown of %d bytes with %d messages", len(body), strings.Count(body, "\n## "))
				}
				return
			}
			var ex api.ConversationExport
			if err := json.Unmarshal([]byte(body), &ex); err != nil {
				t.Fatalf("the JSON export does not decode: %v", err)
			}
			if ex.Conversation.Id != c.Id || len(ex.Messages) != n {
				t.Fatalf("export of %d messages, want %d", len(ex.Messages), n)
			}
			for i, m := range ex.Messages {
				if m.Content == nil || !strings.HasPrefix(*m.Content, strconv.Itoa(i+1)+":") || len(*m.Content) < size {
					t.Errorf("message %d out of order or cut", i)
				}
			}
		})
	}
}

// TestDisconnectStopsQuery: when the client of an expensive request goes away (here a
// usage report stuck behind a lock), the handler returns and its query stops in
// PostgreSQL too, at once (issue 12).
func TestDisconnectStopsQuery(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	token := b.signUp(t, "ada@example.com").AccessToken
	lock, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, "LOCK TABLE llm_usage IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	waiting := func() int {
		var n int
		err := b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%llm_usage%'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	reqCtx, hangUp := context.WithCancel(ctx)
	req := httptest.NewRequestWithContext(reqCtx, "GET", "/v1/usage?group_by=day", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.srv.ServeHTTP(httptest.NewRecorder(), req)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the report never waited for the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hungUp := time.Now()
	hangUp()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not return after the client went away")
	}
	for waiting() > 0 {
		if time.Since(hungUp) > 3*time.Second {
			t.Fatal("PostgreSQL still runs the report of a client that went away")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
