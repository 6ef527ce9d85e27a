package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm"
)

func TestResponseCache(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, replyWith("the cached answer"))
	price := llm.Price{Input: 1, Output: 2}
	b := setup(t, withGateway(t, map[string]llm.Provider{"up": up.provider(t, "up")}, map[string][]llm.Target{"default": {{Provider: "up", Model: "m", Price: price}}}))
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	owner := b.signUp(t, "cache@example.com").AccessToken
	other := b.signUp(t, "other@example.com").AccessToken

	// post sends a raw body, so field order and whitespace are the test's to choose.
	post := func(t *testing.T, path, credential, body string) *http.Response {
		t.Helper()
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+credential)
		res := b.do(t, req)
		if res.StatusCode != 200 {
			t.Fatalf("POST %s: %d %s", path, res.StatusCode, readAll(res))
		}
		return res
	}
	const (
		first     = `{"temperature": 0, "messages": [{"role": "user", "content": "hello"}]}`
		reordered = `{"messages":[{"content":"hello","role":"user"}],"model":"default","temperature":0.0}`
	)

	res := post(t, "/v1/chat/completions", owner, first)
	if got := res.Header.Get("Kiln-Cache"); got != "miss" {
		t.Fatalf("first call Kiln-Cache %q, want miss", got)
	}
	before := up.requests.Load()

	t.Run("OKHitWhateverTheFieldOrderWhitespaceAndDefaults", func(t *testing.T) {
		res := post(t, "/v1/chat/completions", owner, reordered)
		var out api.ChatCompletion
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		if res.Header.Get("Kiln-Cache") != "hit" || out.Message.Content == nil || *out.Message.Content != "the cached answer" {
			t.Fatalf("Kiln-Cache %q, message %+v", res.Header.Get("Kiln-Cache"), out.Message)
		}
		if out.Usage.CostUsd != 0 || out.Usage.PromptTokens != 10 {
			t.Errorf("usage of a hit %+v: tokens as generated, no cost", out.Usage)
		}
	})
	t.Run("OKAStreamedHitIsReplayedAsAStream", func(t *testing.T) {
		req, _ := http.NewRequest("POST", ts.URL+"/v1/chat/completions", strings.NewReader(`{"stream":true,"temperature":0,"messages":[{"role":"user","content":"hello"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+owner)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.Header.Get("Kiln-Cache") != "hit" || !strings.Contains(string(body), `"text":"the cached answer"`) || !strings.Contains(string(body), "event: done") {
			t.Fatalf("Kiln-Cache %q, body:\n%s", res.Header.Get("Kiln-Cache"), body)
		}
	})
	t.Run("OKTheOpenAISurfaceSharesTheCache", func(t *testing.T) {
		key := b.createKey(t, owner, []string{"chat"}).Key
		req := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(`{"model":"default","temperature":0,"messages":[{"role":"user","content":"hello"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		res := b.doOpenAI(t, req)
		if res.StatusCode != 200 || res.Header.Get("Kiln-Cache") != "hit" {
			t.Fatalf("%d, Kiln-Cache %q", res.StatusCode, res.Header.Get("Kiln-Cache"))
		}
	})
	if n := up.requests.Load(); n != before {
		t.Fatalf("hits reached the upstream: %d more requests", n-before)
	}

	t.Run("OKOtherOrgsDoNotShareEntries", func(t *testing.T) {
		if got := post(t, "/v1/chat/completions", other, first).Header.Get("Kiln-Cache"); got != "miss" {
			t.Fatalf("Kiln-Cache %q, want miss", got)
		}
	})
	t.Run("OKNotCachedWhenNotDeterministicOrRefused", func(t *testing.T) {
		for _, body := range []string{
			`{"messages":[{"role":"user","content":"hello"}]}`,                                              // no temperature
			`{"temperature":0,"cache":false,"messages":[{"role":"user","content":"hello"}]}`,                // refused
			`{"temperature":0,"server_tools":["current_time"],"messages":[{"role":"user","content":"hi"}]}`, // a server tool's result may change
		} {
			if got := post(t, "/v1/chat/completions", owner, body).Header.Get("Kiln-Cache"); got != "" {
				t.Errorf("%s: Kiln-Cache %q", body, got)
			}
		}
		if got := post(t, "/v1/chat/completions", owner, `{"temperature":0.7,"cache":true,"messages":[{"role":"user","content":"hello"}]}`).Header.Get("Kiln-Cache"); got != "miss" {
			t.Errorf("cache: true at temperature 0.7: Kiln-Cache %q, want miss", got)
		}
	})
	t.Run("OKAHitIsUsageWithTheCachedFlagAndNoCost", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			var cached, total int
			var cost float64
			err := b.pool.QueryRow(context.Background(), "SELECT count(*) FILTER (WHERE cached), count(*), coalesce(sum(cost_usd) FILTER (WHERE cached), 0) FROM llm_usage").Scan(&cached, &total, &cost)
			if err != nil {
				t.Fatal(err)
			}
			if cached == 3 && cost == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d cached of %d usage rows, cost %v; want 3 cached at no cost", cached, total, cost)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
