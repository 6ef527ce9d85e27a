package server

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestDependencyOutage cuts PostgreSQL, then Redis, under a running server (through
// proxies: the shared services are untouched). Every request that needs the missing
// dependency is a 503 unavailable problem with Retry-After, a live stream ends with an
// unavailable error event, /ready names the failed check, and once the dependency is back
// the same requests succeed again without a restart.
func TestDependencyOutage(t *testing.T) {
	t.Parallel()
	pg := storetest.NewProxy(t, storetest.PostgresAddr())
	rd := storetest.NewProxy(t, storetest.RedisAddr())
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
		send("[DONE]")
	})
	b := setupBehind(t, pg, rd, withGateway(t, devProviders(map[string]llm.Provider{"gated": up.provider(t, "gated")}),
		map[string][]llm.Target{"default": {devTarget}, "gated": {{Provider: "gated", Model: "m"}}}))
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	alice := b.signUp(t, "alice@example.com").AccessToken
	key := b.createKey(t, alice, []string{"chat"}).Key // not used before the outage: authenticating it reads the database
	var conv api.Conversation
	wantStatus(t, b.call(t, "POST", "/v1/conversations", alice, map[string]any{}, &conv), 201)
	messages := "/v1/conversations/" + conv.Id.String() + "/messages"

	needPostgres := map[string]func() *http.Response{
		"Me": func() *http.Response { return b.call(t, "GET", "/v1/me", alice, nil, nil) },
		"Login": func() *http.Response {
			return b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "alice@example.com", "password": testPassword}, nil)
		},
		"Conversations":  func() *http.Response { return b.call(t, "GET", "/v1/conversations", alice, nil, nil) },
		"APIKeyAuthOnly": func() *http.Response { return b.call(t, "GET", "/v1/conversations", key, nil, nil) },
	}
	newMessage := func() *http.Response { return b.call(t, "POST", messages, alice, map[string]any{"content": "hi"}, nil) }

	t.Run("PostgresDown", func(t *testing.T) {
		pg.Cut()
		for name, req := range needPostgres {
			unavailable(t, name, req())
		}
		notReady(t, b, "postgres")
		pg.Restore()
		for name, req := range needPostgres {
			recovers(t, name, req)
		}
		notReady(t, b)
	})

	t.Run("RedisDown", func(t *testing.T) {
		var gated api.Conversation
		wantStatus(t, b.call(t, "POST", "/v1/conversations", alice, map[string]any{"model": "gated"}, &gated), 201)
		path := "/v1/conversations/" + gated.Id.String() + "/messages"
		res, origin := postStream(t.Context(), t, ts, path, alice, `{"content":"hi","stream":true}`)
		var last string
		for ev := range origin {
			if ev.event == "message.delta" {
				last = ev.id
				break
			}
		}
		_, follower := openEvents(t, ts, alice, path+"/"+res.Header.Get("Kiln-Message-Id")+"/events", "Last-Event-ID", last)

		rd.Cut()
		close(gate) // the reply goes on, with nowhere to publish
		for name, stream := range map[string]<-chan sseEvent{"Origin": origin, "Follower": follower} {
			events := drain(t, stream)
			if len(events) == 0 || events[len(events)-1].event != "error" {
				t.Fatalf("%s stream: events %v, want an error event last", name, kinds(events))
			}
			if p := decodeEvent[api.Problem](t, events[len(events)-1:], "error"); p.Code != api.ErrorCode(errs.Unavailable) || p.Status != http.StatusServiceUnavailable {
				t.Errorf("%s stream: error event %+v, want unavailable", name, p)
			}
		}
		unavailable(t, "NewMessage", newMessage())
		notReady(t, b, "redis")
		rd.Restore()
		recovers(t, "NewMessage", newMessage)
		notReady(t, b)
	})
}

// unavailable requires res to be a 503 unavailable problem with Retry-After.
func unavailable(t *testing.T, name string, res *http.Response) {
	t.Helper()
	p := decodeProblem(t, res)
	if res.StatusCode != http.StatusServiceUnavailable || p.Code != api.ErrorCode(errs.Unavailable) {
		t.Errorf("%s: %d %s (%s), want 503 unavailable", name, res.StatusCode, p.Code, deref(p.Detail))
	}
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || s <= 0 {
		t.Errorf("%s: Retry-After %q, want seconds", name, res.Header.Get("Retry-After"))
	}
}

// recovers requires req to succeed again within the Retry-After of an unavailable answer.
func recovers(t *testing.T, name string, req func() *http.Response) {
	t.Helper()
	waitFor(t, name+" to succeed again", func() bool { return req().StatusCode < 300 })
}

// notReady requires /ready to fail exactly the checks named (none: ready).
func notReady(t *testing.T, b *bundle, failed ...string) {
	t.Helper()
	res := b.do(t, httptest.NewRequest("GET", "/ready", nil))
	var body struct {
		Checks []api.Check `json:"checks"`
	}
	decodeJSON(t, res, &body)
	var got []string
	for _, c := range body.Checks {
		if c.Status == api.CheckStatusFailed {
			got = append(got, c.Name)
		}
	}
	want := http.StatusOK
	if len(failed) > 0 {
		want = http.StatusServiceUnavailable
	}
	if res.StatusCode != want || !slices.Equal(got, failed) {
		t.Errorf("/ready: %d, failed checks %v; want %d, %v", res.StatusCode, got, want, failed)
	}
}
