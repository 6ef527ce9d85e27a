package server

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/llm/usage"
)

// usageTotals are the sums an export must reproduce.
type usageTotals struct {
	Rows, Prompt, Completion, Cached int64
	Cost                             float64
}

// insertUsageRows writes n usage rows for org, one a minute back from an hour ago. Costs
// are multiples of 1/1024, so their sums are exact in any order; every 97th row has an
// alias that a spreadsheet would run as a formula, and a request id needing CSV quotes.
func (b *bundle) insertUsageRows(t *testing.T, org uuid.UUID, n int) {
	t.Helper()
	if _, err := b.pool.Exec(t.Context(), `INSERT INTO llm_usage (id, org_id, request_id, endpoint, alias, provider, model,
		status, error_code, prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
		SELECT gen_random_uuid(), $1,
		       CASE WHEN g % 97 = 0 THEN 'req,"quoted"' || g ELSE 'req-' || g END, 'chat',
		       CASE WHEN g % 97 = 0 THEN '=HYPERLINK("http://x")' ELSE 'default' END, 'dev', 'dev-echo',
		       CASE WHEN g % 11 = 0 THEN 'error' ELSE 'ok' END, '', g % 100, g % 37, g % 5, (g % 7) / 1024.0, g % 50, g % 13 = 0, 1,
		       now() - interval '1 hour' - g * interval '1 minute'
		FROM generate_series(1, $2::integer) g`, org, n); err != nil {
		t.Fatal(err)
	}
}

func (b *bundle) usageSums(t *testing.T, org *uuid.UUID) usageTotals {
	t.Helper()
	var s usageTotals
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost_usd)
		FROM llm_usage WHERE ($1::uuid IS NULL OR org_id = $1) AND deleted_at IS NULL`, org).Scan(&s.Rows, &s.Prompt, &s.Completion, &s.Cached, &s.Cost); err != nil {
		t.Fatal(err)
	}
	return s
}

// exportCSV fetches a CSV export and sums it per org ("" when it has no org column),
// checking its header and that every cell of the formula row is defused.
func (b *bundle) exportCSV(t *testing.T, path, credential string, wantHeader []string) (map[string]usageTotals, []string) {
	t.Helper()
	res := b.call(t, "GET", path, credential, nil, nil)
	wantStatus(t, res, 200)
	if ct := res.Header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
	r := csv.NewReader(res.Body)
	header, err := r.Read()
	if err != nil || !slices.Equal(header, wantHeader) {
		t.Fatalf("header %v (%v), want %v", header, err, wantHeader)
	}
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	sums, ids := map[string]usageTotals{}, []string{}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if a := rec[col["alias"]]; a != "default" && a != `'=HYPERLINK("http://x")` {
			t.Fatalf("alias cell %q: not defused", a)
		}
		org := ""
		if i, ok := col["org_id"]; ok {
			org = rec[i]
		}
		s := sums[org]
		s.Rows++
		s.Prompt += mustInt(t, rec[col["prompt_tokens"]])
		s.Completion += mustInt(t, rec[col["completion_tokens"]])
		s.Cached += mustInt(t, rec[col["cached_tokens"]])
		cost, err := strconv.ParseFloat(rec[col["cost_usd"]], 64)
		if err != nil {
			t.Fatal(err)
		}
		s.Cost += cost
		sums[org] = s
		ids = append(ids, rec[col["id"]])
	}
	return sums, ids
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUsageExport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "alice@example.com")
	bob := b.signUp(t, "bob@example.com")
	admin, _ := b.signUpAdmin(t, "root@example.com")
	aliceOrg := b.currentUser(t, alice.AccessToken).PersonalOrgId
	bobOrg := b.currentUser(t, bob.AccessToken).PersonalOrgId
	b.insertUsageRows(t, aliceOrg, 30000)
	b.insertUsageRows(t, bobOrg, 20000)
	wantAlice, wantBob := b.usageSums(t, &aliceOrg), b.usageSums(t, &bobOrg)
	if wantAlice.Rows != 30000 || wantBob.Rows != 20000 {
		t.Fatalf("inserted %d and %d rows", wantAlice.Rows, wantBob.Rows)
	}
	window := url.Values{"from": {time.Now().UTC().Add(-60 * 24 * time.Hour).Format(time.RFC3339)}, "to": {time.Now().UTC().Format(time.RFC3339)}}
	orgPath := "/v1/orgs/" + aliceOrg.String() + "/usage/export?" + window.Encode()

	t.Run("OrgCSV", func(t *testing.T) {
		t.Parallel()
		sums, ids := b.exportCSV(t, orgPath, alice.AccessToken, usage.CSVColumns(false))
		if got := sums[""]; got != wantAlice {
			t.Fatalf("export totals %+v, usage rows %+v", got, wantAlice)
		}
		var foreign int
		if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM llm_usage WHERE id = ANY($1::uuid[]) AND org_id <> $2`, ids, aliceOrg).Scan(&foreign); err != nil || foreign != 0 {
			t.Fatalf("%d rows of another org in the export (%v)", foreign, err)
		}
	})
	t.Run("OrgNDJSON", func(t *testing.T) {
		t.Parallel()
		res := b.call(t, "GET", orgPath+"&format=json", alice.AccessToken, nil, nil)
		wantStatus(t, res, 200)
		if ct := res.Header.Get("Content-Type"); ct != "application/x-ndjson" {
			t.Fatalf("content type %q", ct)
		}
		var got usageTotals
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			var row struct {
				OrgID                                        *uuid.UUID `json:"org_id"`
				PromptTokens, CompletionTokens, CachedTokens int64
				CostUSD                                      float64 `json:"cost_usd"`
			}
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatalf("line %d: %v", got.Rows+1, err)
			}
			if row.OrgID != nil {
				t.Fatalf("org_id %s in an org's export", row.OrgID)
			}
			var fields map[string]json.RawMessage
			_ = json.Unmarshal(sc.Bytes(), &fields)
			got.Rows++
			got.Prompt += mustInt(t, string(fields["prompt_tokens"]))
			got.Completion += mustInt(t, string(fields["completion_tokens"]))
			got.Cached += mustInt(t, string(fields["cached_tokens"]))
			got.Cost += row.CostUSD
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if got != wantAlice {
			t.Fatalf("export totals %+v, usage rows %+v", got, wantAlice)
		}
	})
	t.Run("AdminCSV", func(t *testing.T) {
		t.Parallel()
		sums, _ := b.exportCSV(t, "/v1/admin/usage/export?"+window.Encode(), admin.AccessToken, usage.CSVColumns(true))
		if len(sums) != 2 || sums[aliceOrg.String()] != wantAlice || sums[bobOrg.String()] != wantBob {
			t.Fatalf("export totals per org %+v, want %s: %+v and %s: %+v", sums, aliceOrg, wantAlice, bobOrg, wantBob)
		}
	})
	t.Run("KeyWithBillingRead", func(t *testing.T) {
		t.Parallel()
		key := b.createKey(t, alice.AccessToken, []string{"billing:read"})
		sums, _ := b.exportCSV(t, orgPath, key.Key, usage.CSVColumns(false))
		if sums[""] != wantAlice {
			t.Fatalf("export totals %+v, usage rows %+v", sums[""], wantAlice)
		}
	})
	t.Run("ErrPermission", func(t *testing.T) {
		t.Parallel()
		chatKey := b.createKey(t, alice.AccessToken, []string{"chat"})
		for name, c := range map[string]struct {
			credential, path string
			status           int
		}{
			"OtherOrg":   {bob.AccessToken, orgPath, 404},
			"ChatKey":    {chatKey.Key, orgPath, 403},
			"AdminRoute": {alice.AccessToken, "/v1/admin/usage/export", 403},
		} {
			if res := b.call(t, "GET", c.path, c.credential, nil, nil); res.StatusCode != c.status {
				t.Errorf("%s: %d %s, want %d", name, res.StatusCode, readAll(res), c.status)
			}
		}
	})
	t.Run("ErrInvalidWindow", func(t *testing.T) {
		t.Parallel()
		now := time.Now().UTC()
		for name, q := range map[string]url.Values{
			"Reversed": {"from": {now.Format(time.RFC3339)}, "to": {now.Add(-time.Hour).Format(time.RFC3339)}},
			"TooLong":  {"from": {now.Add(-400 * 24 * time.Hour).Format(time.RFC3339)}, "to": {now.Format(time.RFC3339)}},
			"NotATime": {"from": {"yesterday"}},
			"Format":   {"format": {"xml"}},
		} {
			res := b.call(t, "GET", "/v1/orgs/"+aliceOrg.String()+"/usage/export?"+q.Encode(), alice.AccessToken, nil, nil)
			if p := decodeProblem(t, res); res.StatusCode != 400 || p.Errors == nil || len(*p.Errors) == 0 {
				t.Errorf("%s: %d %+v", name, res.StatusCode, p)
			}
		}
	})
}

// slowClient is a response writer whose first write blocks until release is closed, as a
// client that stops reading does once the socket buffers are full.
type slowClient struct {
	header  http.Header
	blocked chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	body    strings.Builder
}

func newSlowClient() *slowClient {
	return &slowClient{header: http.Header{}, blocked: make(chan struct{}), release: make(chan struct{})}
}

func (c *slowClient) Header() http.Header { return c.header }
func (c *slowClient) WriteHeader(int)     {}
func (c *slowClient) Flush()              {}
func (c *slowClient) Write(p []byte) (int, error) {
	c.once.Do(func() { close(c.blocked); <-c.release })
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.body.Write(p)
}

// TestUsageExportStreams shows the export holds a page, not the export: rows deleted
// while the client is not reading are not sent, and a client that goes away stops it.
func TestUsageExportStreams(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "alice@example.com")
	org := b.currentUser(t, alice.AccessToken).PersonalOrgId
	b.insertUsageRows(t, org, 20000)

	serve := func(t *testing.T, c *slowClient, cancel func()) (aborted bool) {
		t.Helper()
		req := httptest.NewRequest("GET", "/v1/orgs/"+org.String()+"/usage/export", nil)
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if cancel != nil {
			ctx, stop := context.WithCancel(req.Context())
			req = req.WithContext(ctx)
			go func() { <-c.blocked; stop(); cancel() }()
		}
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler { //nolint:errorlint // the sentinel net/http compares
					panic(v)
				}
				aborted = true
			}
		}()
		b.srv.ServeHTTP(c, req)
		return false
	}
	rowsOf := func(t *testing.T, c *slowClient) int {
		t.Helper()
		c.mu.Lock()
		defer c.mu.Unlock()
		return strings.Count(c.body.String(), "\r\n") - 1 // the header; no cell holds a line break
	}

	t.Run("HoldsOnePage", func(t *testing.T) {
		c := newSlowClient()
		go func() {
			<-c.blocked // the server has read its first page and waits on the client
			if _, err := b.pool.Exec(t.Context(), `UPDATE llm_usage SET deleted_at = now() WHERE org_id = $1`, org); err != nil {
				t.Error(err)
			}
			close(c.release)
		}()
		if serve(t, c, nil) {
			t.Fatal("aborted")
		}
		if n := rowsOf(t, c); n == 0 || n > usage.ExportPageSize {
			t.Fatalf("%d rows sent after the rest were deleted: the server read more than a page ahead of the client", n)
		}
	})
	t.Run("StopsWhenTheClientGoes", func(t *testing.T) {
		if _, err := b.pool.Exec(t.Context(), `UPDATE llm_usage SET deleted_at = NULL WHERE org_id = $1`, org); err != nil {
			t.Fatal(err)
		}
		c := newSlowClient()
		if !serve(t, c, func() { close(c.release) }) {
			t.Fatal("the export ran to its end after the client went away")
		}
		if n := rowsOf(t, c); n > usage.ExportPageSize {
			t.Fatalf("%d rows written after the client went away", n)
		}
	})
}
