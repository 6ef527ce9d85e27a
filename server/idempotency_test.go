package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/idempotency"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// withIdempotency replaces the server's idempotency store (nil turns it off).
func withIdempotency(s *idempotency.Store) option {
	return func(d *Deps) { d.Idempotency = s }
}

// isReplay reports whether res is a stored replay.
func isReplay(res *http.Response) bool { return res.Header.Get(replayedHeader) == "true" }

func TestIdempotentRoutes(t *testing.T) {
	t.Parallel()
	spec := testSpec(t)
	var got []string
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if idempotentRoutes(spec)[method+" "+path] {
				got = append(got, strings.ToLower(op.OperationID))
			}
		}
	}
	slices.Sort(got)
	want := []string{"adminrefundpayment", "createalipaypayment", "createapikey", "createchatcompletion", "createconversation", "createconversationmessage", "createdocument", "createevaluation", "createknowledgebase", "createorg", "createorginvitation", "createprompt",
		"createpromptversion", "createstripecheckout", "createwechatpaypayment", "exportme", "exportorg", "openaicreatechatcompletion", "openaicreateembeddings", "openaicreateresponse", "reindexknowledgebase", "rotateapikey", "submittoolresults"}
	if !slices.Equal(got, want) {
		t.Fatalf("operations taking an Idempotency-Key: %v, want %v", got, want)
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "alice@example.com")
	createKey := func(t *testing.T, credential, idemKey string, body any, header ...string) (*http.Response, string) {
		t.Helper()
		if idemKey != "" {
			header = append(header, idempotencyKeyHeader, idemKey)
		}
		res := b.call(t, "POST", "/v1/api-keys", credential, body, nil, header...)
		return res, readAll(res)
	}
	keyNames := func(t *testing.T, credential string, header ...string) []string {
		t.Helper()
		var list api.APIKeyList
		if res := b.call(t, "GET", "/v1/api-keys", credential, nil, &list, header...); res.StatusCode != 200 {
			t.Fatalf("list keys: %d", res.StatusCode)
		}
		var names []string
		for _, k := range list.Data {
			names = append(names, k.Name)
		}
		slices.Sort(names)
		return names
	}
	ciKey := map[string]any{"name": "ci", "scopes": []string{"chat"}}

	first, firstBody := createKey(t, alice.AccessToken, "key-1", ciKey)
	if first.StatusCode != 201 || isReplay(first) {
		t.Fatalf("first: %d, replayed %q: %s", first.StatusCode, first.Header.Get(replayedHeader), firstBody)
	}

	t.Run("OKReplay", func(t *testing.T) {
		res, body := createKey(t, alice.AccessToken, "key-1", ciKey)
		if res.StatusCode != 201 || !isReplay(res) || body != firstBody {
			t.Fatalf("retry: %d, replayed %q\n%s\nwant\n%s", res.StatusCode, res.Header.Get(replayedHeader), body, firstBody)
		}
		if res.Header.Get("Content-Type") != first.Header.Get("Content-Type") {
			t.Errorf("content type %q, want %q", res.Header.Get("Content-Type"), first.Header.Get("Content-Type"))
		}
		if id := res.Header.Get(requestIDHeader); id == "" || id == first.Header.Get(requestIDHeader) {
			t.Errorf("the replay's request id %q is not its own", id)
		}
		if names := keyNames(t, alice.AccessToken); !slices.Equal(names, []string{"ci"}) {
			t.Fatalf("keys after the retry: %v, want one", names)
		}
	})

	t.Run("ErrKeyReusedWithAnotherBody", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/api-keys", alice.AccessToken, map[string]any{"name": "cd", "scopes": []string{"chat"}}, nil, idempotencyKeyHeader, "key-1")
		problemIs(t, res, 422, errs.IdempotencyKeyReused)
	})

	t.Run("OKScopedToTheCaller", func(t *testing.T) {
		bob := b.signUp(t, "bob@example.com")
		res, body := createKey(t, bob.AccessToken, "key-1", ciKey)
		if res.StatusCode != 201 || isReplay(res) || body == firstBody {
			t.Fatalf("another user's key-1: %d, replayed %q: %s", res.StatusCode, res.Header.Get(replayedHeader), body)
		}
		admin := b.createKey(t, alice.AccessToken, []string{"admin"})
		res, body = createKey(t, admin.Key, "key-1", ciKey)
		if res.StatusCode != 201 || isReplay(res) || body == firstBody {
			t.Fatalf("alice's API key's key-1: %d, replayed %q", res.StatusCode, res.Header.Get(replayedHeader))
		}
	})

	t.Run("OKScopedToTheOrg", func(t *testing.T) {
		var org api.OrgMembership
		res := b.call(t, "POST", "/v1/orgs", alice.AccessToken, map[string]string{"name": "Acme"}, &org, idempotencyKeyHeader, "org-1")
		if res.StatusCode != 201 {
			t.Fatalf("create org: %d", res.StatusCode)
		}
		var again api.OrgMembership
		if res := b.call(t, "POST", "/v1/orgs", alice.AccessToken, map[string]string{"name": "Acme"}, &again, idempotencyKeyHeader, "org-1"); res.StatusCode != 201 || !isReplay(res) || again.Id != org.Id {
			t.Fatalf("create org again: %d, replayed %q, %s vs %s", res.StatusCode, res.Header.Get(replayedHeader), again.Id, org.Id)
		}
		res, body := createKey(t, alice.AccessToken, "key-1", ciKey, "Kiln-Org", org.Id.String())
		if res.StatusCode != 201 || isReplay(res) || body == firstBody {
			t.Fatalf("key-1 in another org: %d, replayed %q", res.StatusCode, res.Header.Get(replayedHeader))
		}
		if names := keyNames(t, alice.AccessToken, "Kiln-Org", org.Id.String()); !slices.Equal(names, []string{"ci"}) {
			t.Fatalf("keys of the new org: %v", names)
		}
	})

	t.Run("OKRefusedRequestClaimsNothing", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/api-keys", alice.AccessToken, map[string]any{"name": "", "scopes": []string{"chat"}}, nil, idempotencyKeyHeader, "key-2")
		problemIs(t, res, 400, errs.Invalid)
		res, body := createKey(t, alice.AccessToken, "key-2", map[string]any{"name": "fixed", "scopes": []string{"chat"}})
		if res.StatusCode != 201 || isReplay(res) {
			t.Fatalf("the corrected request: %d %s", res.StatusCode, body)
		}
	})

	t.Run("OKWithoutTheHeader", func(t *testing.T) {
		carol := b.signUp(t, "carol@example.com")
		for range 2 {
			if res, body := createKey(t, carol.AccessToken, "", ciKey); res.StatusCode != 201 || isReplay(res) {
				t.Fatalf("%d, replayed %q: %s", res.StatusCode, res.Header.Get(replayedHeader), body)
			}
		}
		if names := keyNames(t, carol.AccessToken); !slices.Equal(names, []string{"ci", "ci"}) {
			t.Fatalf("keys: %v, want two", names)
		}
	})
}

// slowReply answers text like replyWith, after delay.
func slowReply(text string, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		replyWith(text)(w, r)
	}
}

// usageRows counts the usage rows recorded.
func (b *bundle) usageRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestIdempotentChatConcurrent(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, slowReply("the one reply", 500*time.Millisecond))
	b := setup(t, withGateway(t, devProviders(map[string]llm.Provider{"slow": up.provider(t, "slow")}),
		map[string][]llm.Target{"default": {devTarget}, "slow": {{Provider: "slow", Model: "m"}}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"})
	body := chatJSON("hello", `"model":"slow"`)
	request := func() *http.Request {
		req := jsonRequest("POST", "/v1/chat/completions", body)
		req.Header.Set("Authorization", "Bearer "+key.Key)
		req.Header.Set(idempotencyKeyHeader, "chat-1")
		return req
	}

	const n = 20
	reqs, results := make([]*http.Request, n), make([]*http.Response, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		reqs[i] = request()
		wg.Go(func() {
			<-start
			rec := httptest.NewRecorder()
			b.srv.ServeHTTP(rec, reqs[i])
			results[i] = rec.Result()
		})
	}
	close(start)
	wg.Wait()

	var original []byte
	var originals, conflicts, replays int
	var replayed [][]byte
	for i, res := range results {
		b.validateResponse(t, reqs[i], res)
		switch {
		case res.StatusCode == 200 && !isReplay(res):
			originals++
			original, _ = io.ReadAll(res.Body)
		case res.StatusCode == 200:
			replays++
			body, _ := io.ReadAll(res.Body)
			replayed = append(replayed, body)
		case res.StatusCode == 409:
			conflicts++
			problemIs(t, res, 409, errs.IdempotencyInProgress)
			if ra := res.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("409 Retry-After %q, want 1", ra)
			}
		default:
			t.Errorf("response %d: %d %s", i, res.StatusCode, readAll(res))
		}
	}
	if originals != 1 || conflicts+replays != n-1 {
		t.Fatalf("%d originals, %d conflicts, %d replays; want 1 original", originals, conflicts, replays)
	}
	res := b.call(t, "POST", "/v1/chat/completions", key.Key, json.RawMessage(body), nil, idempotencyKeyHeader, "chat-1")
	if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 || !isReplay(res) {
		t.Fatalf("after the reply: %d, replayed %q: %s", res.StatusCode, res.Header.Get(replayedHeader), body)
	} else {
		replayed = append(replayed, body)
	}
	for _, r := range replayed {
		if !bytes.Equal(r, original) {
			t.Errorf("replay\n%s\nwant\n%s", r, original)
		}
	}
	if p := res.Header.Get("Kiln-Provider"); p != "slow" {
		t.Errorf("replayed Kiln-Provider %q, want slow", p)
	}
	if got := up.requests.Load(); got != 1 {
		t.Fatalf("%d upstream generations, want 1", got)
	}
	waitFor(t, "the usage row", func() bool { return b.usageRows(t) >= 1 })
	time.Sleep(100 * time.Millisecond) // several flush intervals of the usage recorder
	if got := b.usageRows(t); got != 1 {
		t.Fatalf("%d usage rows, want 1", got)
	}
}

// postRaw posts body to path on ts with headers (name, value pairs) and returns the
// response, its body left to read.
func postRaw(t *testing.T, ts *httptest.Server, path, credential, body string, header ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+credential)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Body.Close() })
	return res
}

func TestIdempotentStream(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		send := startEvents(w)
		send(upstreamChunk(`{"role":"assistant","content":"Hel"}`, "null"))
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		send(upstreamChunk(`{"content":"lo"}`, "null"))
		send(upstreamChunk(`{}`, `"stop"`))
		send(`{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1700000000,"model":"up-model","choices":[],"usage":` + upstreamUsage + `}`)
		send("[DONE]")
	})
	b := setup(t, withGateway(t, devProviders(map[string]llm.Provider{"gated": up.provider(t, "gated")}),
		map[string][]llm.Target{"default": {devTarget}, "gated": {{Provider: "gated", Model: "m"}}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"})
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	body := chatJSON("hello", `"model":"gated"`, `"stream":true`)

	first := postRaw(t, ts, "/v1/chat/completions", key.Key, body, idempotencyKeyHeader, "stream-1")
	if first.StatusCode != 200 || first.Header.Get("Content-Type") != "text/event-stream" || isReplay(first) {
		t.Fatalf("first: %d %q, replayed %q", first.StatusCode, first.Header.Get("Content-Type"), first.Header.Get(replayedHeader))
	}
	var raw bytes.Buffer
	first.Body = io.NopCloser(io.TeeReader(first.Body, &raw))
	events := readEvents(t, first)
	if ev := next(t, events); ev.event != "message.delta" { // flushed through the recorder while the upstream waits
		t.Fatalf("first event %+v", ev)
	}

	t.Run("ErrInProgressWhileStreaming", func(t *testing.T) {
		res := postRaw(t, ts, "/v1/chat/completions", key.Key, body, idempotencyKeyHeader, "stream-1")
		if res.StatusCode != 409 || res.Header.Get("Retry-After") != "1" {
			t.Fatalf("%d, Retry-After %q: %s", res.StatusCode, res.Header.Get("Retry-After"), readAll(res))
		}
		problemIs(t, res, 409, errs.IdempotencyInProgress)
	})

	close(gate)
	if kinds := kinds(drain(t, events)); kinds[len(kinds)-1] != "done" {
		t.Fatalf("events %v", kinds)
	}
	var res *http.Response
	var replayed []byte
	waitFor(t, "the stored stream", func() bool { // stored as the handler returns, after the client read the end
		res = postRaw(t, ts, "/v1/chat/completions", key.Key, body, idempotencyKeyHeader, "stream-1")
		replayed, _ = io.ReadAll(res.Body)
		return res.StatusCode != 409
	})
	if res.StatusCode != 200 || !isReplay(res) || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("retry: %d %q, replayed %q: %s", res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get(replayedHeader), replayed)
	}
	if !bytes.Equal(replayed, raw.Bytes()) {
		t.Fatalf("replayed stream\n%s\nwant\n%s", replayed, raw.Bytes())
	}
	if got := up.requests.Load(); got != 1 {
		t.Fatalf("%d upstream generations, want 1", got)
	}
}

func TestIdempotentServerError(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, failWith(500))
	b := setup(t, withGateway(t, devProviders(map[string]llm.Provider{"failing": up.provider(t, "failing")}),
		map[string][]llm.Target{"default": {devTarget}, "flaky": {{Provider: "failing", Model: "m"}}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"})
	body := json.RawMessage(chatJSON("hello", `"model":"flaky"`))

	first := b.call(t, "POST", "/v1/chat/completions", key.Key, body, nil, idempotencyKeyHeader, "fail-1")
	firstBody := readAll(first)
	if first.StatusCode < 500 || isReplay(first) {
		t.Fatalf("first: %d %s", first.StatusCode, firstBody)
	}
	calls := up.requests.Load()
	// Not through b.call: a replayed problem carries the first request's request_id (where
	// the failure was logged), the X-Request-Id header the retry's own.
	req := jsonRequest("POST", "/v1/chat/completions", string(body))
	req.Header.Set("Authorization", "Bearer "+key.Key)
	req.Header.Set(idempotencyKeyHeader, "fail-1")
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	again := rec.Result()
	if againBody := readAll(again); again.StatusCode != first.StatusCode || !isReplay(again) || againBody != firstBody {
		t.Fatalf("retry: %d, replayed %q: %s\nwant %d %s", again.StatusCode, again.Header.Get(replayedHeader), againBody, first.StatusCode, firstBody)
	}
	if ct := again.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("replayed content type %q", ct)
	}
	if got := up.requests.Load(); got != calls {
		t.Fatalf("the retry reached the upstream: %d requests, want %d", got, calls)
	}
}

func TestIdempotentOpenAI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"})
	send := func() (*http.Response, string) {
		req := openAIRequest("POST", "/openai/v1/embeddings", key.Key, `{"model":"default","input":["one two"]}`)
		req.Header.Set(idempotencyKeyHeader, "emb-1")
		res := b.doOpenAI(t, req)
		return res, readAll(res)
	}
	first, firstBody := send()
	again, againBody := send()
	if first.StatusCode != 200 || isReplay(first) || again.StatusCode != 200 || !isReplay(again) || againBody != firstBody {
		t.Fatalf("first %d %s\nretry %d (replayed %q) %s", first.StatusCode, firstBody, again.StatusCode, again.Header.Get(replayedHeader), againBody)
	}
	req := openAIRequest("POST", "/openai/v1/embeddings", key.Key, `{"model":"default","input":["other"]}`)
	req.Header.Set(idempotencyKeyHeader, "emb-1")
	openAIErrorIs(t, b.doOpenAI(t, req), 422, "invalid_request_error", errs.IdempotencyKeyReused, nil)
}

func TestIdempotencyRedisDown(t *testing.T) {
	t.Parallel()
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = down.Close() })
	_, ks := storetest.Redis(t)
	b := setup(t, withIdempotency(idempotency.New(down, ks, idempotency.Config{})))
	alice := b.signUp(t, "alice@example.com")
	var ids []string
	for range 2 {
		var key api.APIKeyWithSecret
		res := b.call(t, "POST", "/v1/api-keys", alice.AccessToken, map[string]any{"name": "ci", "scopes": []string{"chat"}}, &key, idempotencyKeyHeader, "key-1")
		if res.StatusCode != 201 || isReplay(res) {
			t.Fatalf("%d, replayed %q", res.StatusCode, res.Header.Get(replayedHeader))
		}
		ids = append(ids, key.Id.String())
	}
	if ids[0] == ids[1] {
		t.Fatal("one key from two requests with Redis down")
	}
	if !strings.Contains(b.logs.String(), "idempotency unavailable") {
		t.Fatalf("no warning logged:\n%s", b.logs.String())
	}
}

func TestIdempotencyResponseTooLarge(t *testing.T) {
	t.Parallel()
	rdb, ks := storetest.Redis(t)
	b := setup(t, withIdempotency(idempotency.New(rdb, ks, idempotency.Config{MaxBody: 32})))
	alice := b.signUp(t, "alice@example.com")
	for range 2 {
		res := b.call(t, "POST", "/v1/api-keys", alice.AccessToken, map[string]any{"name": "ci", "scopes": []string{"chat"}}, nil, idempotencyKeyHeader, "key-1")
		if res.StatusCode != 201 || isReplay(res) {
			t.Fatalf("%d, replayed %q", res.StatusCode, res.Header.Get(replayedHeader))
		}
	}
	if !strings.Contains(b.logs.String(), "exceeds the size limit") {
		t.Fatalf("no warning logged:\n%s", b.logs.String())
	}
}

// TestIdempotencyIncomplete drives the middleware with handlers that do not finish a
// response: the key is released, so the retry runs.
func TestIdempotencyIncomplete(t *testing.T) {
	t.Parallel()
	user := uuid.New()
	for _, tt := range []struct {
		name  string
		serve func(b *bundle, w http.ResponseWriter, r *http.Request, cancel context.CancelFunc)
	}{
		{"Panic", func(_ *bundle, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			w.WriteHeader(200)
			panic("handler bug")
		}},
		{"ClientGone", func(_ *bundle, w http.ResponseWriter, _ *http.Request, cancel context.CancelFunc) {
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"partial":`)
			cancel()
		}},
		{"StreamCutByShutdown", func(b *bundle, w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "event: shutdown\n\n")
			b.srv.StartDraining()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			const route = "POST /test/echo"
			b.srv.idemRoutes[route] = true
			b.srv.streaming[route] = true
			var runs int
			serve := func(h func(w http.ResponseWriter, r *http.Request, cancel context.CancelFunc)) *http.Response {
				ctx, cancel := context.WithCancel(context.WithValue(t.Context(), principalKey{}, principal{UserID: user}))
				defer cancel()
				req := jsonRequest("POST", "/test/echo", `{"name":"x"}`).WithContext(ctx)
				req.Header.Set(idempotencyKeyHeader, "k")
				rec := httptest.NewRecorder()
				func() {
					defer func() { _ = recover() }()
					b.srv.idempotent(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						runs++
						h(w, r, cancel)
					})).ServeHTTP(rec, req)
				}()
				return rec.Result()
			}
			serve(func(w http.ResponseWriter, r *http.Request, cancel context.CancelFunc) { tt.serve(b, w, r, cancel) })
			if tt.name == "StreamCutByShutdown" {
				b.srv.streaming[route] = false // the retry lands on a replica that is not draining
			}
			ok := func(w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"name":"x"}`)
			}
			if res := serve(ok); res.StatusCode != 200 || isReplay(res) || runs != 2 {
				t.Fatalf("retry: %d, replayed %q, %d runs; want the handler to run again", res.StatusCode, res.Header.Get(replayedHeader), runs)
			}
			if res := serve(ok); res.StatusCode != 200 || !isReplay(res) || runs != 2 || readAll(res) != `{"name":"x"}` {
				t.Fatalf("second retry: %d, replayed %q, %d runs; want the replay", res.StatusCode, res.Header.Get(replayedHeader), runs)
			}
		})
	}
}
