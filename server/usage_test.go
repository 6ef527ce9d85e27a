package server

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

// usagePrice is the default alias's price table: $1 per million prompt tokens, $2 per
// million completion tokens.
var usagePrice = llm.Price{Input: 1, Output: 2, Cached: 0.5}

func (b *bundle) usageReport(t testing.TB, credential string, query url.Values) api.UsageReport {
	t.Helper()
	var out api.UsageReport
	if res := b.call(t, "GET", "/v1/usage?"+query.Encode(), credential, nil, &out); res.StatusCode != 200 {
		t.Fatalf("usage %s: %d %s", query.Encode(), res.StatusCode, readAll(res))
	}
	return out
}

// metricValue reads the sample of name whose labels include every label given ("k", "v"
// pairs) from a Prometheus text exposition; ok is false when there is none.
func metricValue(body, name string, labels ...string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		rest, found := strings.CutPrefix(line, name+"{")
		if !found {
			continue
		}
		set, value, found := strings.Cut(rest, "} ")
		if !found {
			continue
		}
		pairs := strings.Split(set, ",")
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && slices.Contains(pairs, labels[i]+"="+strconv.Quote(labels[i+1]))
		}
		if match {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func closeTo(a, b float64) bool { return math.Abs(a-b) <= 1e-12+1e-9*math.Abs(b) }

func TestUsage(t *testing.T) {
	t.Parallel()
	failing := newUpstream(t, failWith(500))
	gone := make(chan struct{}, 1)
	slow := newUpstream(t, hangAfter("Hel", gone))
	defaultTarget := devTarget
	defaultTarget.Price = usagePrice
	b := setup(t, withGateway(t,
		devProviders(map[string]llm.Provider{"failing": failing.provider(t, "failing"), "slow": slow.provider(t, "slow")}),
		map[string][]llm.Target{
			"default": {defaultTarget},
			"flaky":   {{Provider: "failing", Model: "m"}},
			"slow":    {{Provider: "slow", Model: "m"}},
		}))
	alice := b.signUp(t, "alice@example.com")
	keyA := b.createKey(t, alice.AccessToken, []string{"chat"})
	keyB := b.createKey(t, alice.AccessToken, []string{"chat"})
	billing := b.createKey(t, alice.AccessToken, []string{"chat", "billing:read"})
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	firstDay := time.Now().UTC().Format(time.DateOnly)

	// Every kind of call on the default alias (blocking, streamed, WebSocket, OpenAI chat and
	// embeddings, another key's), the tokens each reported, and the cost it should have.
	var prompt, completion int
	count := func(u api.ChatUsage) {
		t.Helper()
		prompt, completion = prompt+u.PromptTokens, completion+u.CompletionTokens
		if want := (float64(u.PromptTokens)*1 + float64(u.CompletionTokens)*2) / 1e6; u.CostUsd <= 0 || !closeTo(u.CostUsd, want) {
			t.Errorf("cost_usd %v for %+v, want %v at $1 and $2 per million", u.CostUsd, u, want)
		}
	}
	var blocking api.ChatCompletion
	if res := b.call(t, "POST", "/v1/chat/completions", keyA.Key, json.RawMessage(chatJSON("hello")), &blocking); res.StatusCode != 200 {
		t.Fatalf("blocking: %d", res.StatusCode)
	}
	count(blocking.Usage)
	_, stream := postStream(t.Context(), t, ts, "/v1/chat/completions", keyA.Key, chatJSON("hello there", `"stream":true`))
	count(decodeEvent[api.ChatUsage](t, drain(t, stream), "usage"))
	var oai sdkCompletion
	b.openAIOK(t, openAIRequest("POST", "/openai/v1/chat/completions", keyA.Key, `{"model":"default","messages":[{"role":"user","content":"hi"}]}`), &oai)
	prompt, completion = prompt+oai.Usage.PromptTokens, completion+oai.Usage.CompletionTokens
	var emb sdkEmbeddings
	b.openAIOK(t, openAIRequest("POST", "/openai/v1/embeddings", keyA.Key, `{"model":"default","input":["one two","three"]}`), &emb)
	prompt += emb.Usage.PromptTokens
	ws := dialChat(t, ts, keyA.Key)
	ws.send(`{"type":"chat","data":` + chatJSON("hello socket") + `}`)
	for _, f := range ws.untilEnd() {
		if f.Type == "usage" {
			var u api.ChatUsage
			if err := json.Unmarshal(f.Data, &u); err != nil {
				t.Fatal(err)
			}
			count(u)
		}
	}
	var fromB api.ChatCompletion
	if res := b.call(t, "POST", "/v1/chat/completions", keyB.Key, json.RawMessage(chatJSON("hi from B")), &fromB); res.StatusCode != 200 {
		t.Fatalf("key B: %d", res.StatusCode)
	}
	count(fromB.Usage)
	wantCost := (float64(prompt)*usagePrice.Input + float64(completion)*usagePrice.Output) / 1e6

	// A failed call (the upstream answers 500) and a cancelled stream.
	problemIs(t, b.call(t, "POST", "/v1/chat/completions", keyA.Key, json.RawMessage(chatJSON("hi", `"model":"flaky"`)), nil), 502, errs.UpstreamError)
	ctx, cancel := context.WithCancel(t.Context())
	_, stream = postStream(ctx, t, ts, "/v1/chat/completions", keyA.Key, chatJSON("hi", `"stream":true`, `"model":"slow"`))
	next(t, stream)
	cancel()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled stream's upstream request still runs")
	}

	// The recorder writes every 10ms, off the request path.
	byModel := url.Values{"group_by": {"model"}}
	waitFor(t, "8 calls in the usage report", func() bool { return b.usageReport(t, billing.Key, byModel).Total.Requests == 8 })

	t.Run("OKByModel", func(t *testing.T) {
		t.Parallel()
		got := b.usageReport(t, billing.Key, byModel)
		if got.GroupBy != api.UsageReportGroupByModel || len(got.Data) != 3 {
			t.Fatalf("report %+v", got)
		}
		want := map[string]api.UsageBucket{
			"default": {Key: "default", Requests: 6, PromptTokens: int64(prompt), CompletionTokens: int64(completion), CostUsd: wantCost},
			"flaky":   {Key: "flaky", Requests: 1, Errors: 1},
			"slow":    {Key: "slow", Requests: 1},
		}
		for _, bucket := range got.Data {
			w := want[bucket.Key]
			w.LatencyMsAvg = bucket.LatencyMsAvg
			w.CostUsd, bucket.CostUsd = 0, 0
			if bucket != w {
				t.Errorf("bucket %+v, want %+v", bucket, w)
			}
		}
		if d := got.Data[0]; d.Key != "default" || !closeTo(d.CostUsd, wantCost) {
			t.Errorf("default cost_usd %v, want %v", d.CostUsd, wantCost)
		}
		if tot := got.Total; tot.Key != "total" || tot.Requests != 8 || tot.Errors != 1 || tot.PromptTokens != int64(prompt) || !closeTo(tot.CostUsd, wantCost) {
			t.Errorf("total %+v", tot)
		}
	})

	t.Run("OKByDay", func(t *testing.T) {
		t.Parallel()
		got := b.usageReport(t, billing.Key, url.Values{"group_by": {"day"}})
		var requests, errors, tokens int64
		today := time.Now().UTC().Format(time.DateOnly)
		for _, d := range got.Data {
			if _, err := time.Parse(time.DateOnly, d.Key); err != nil || d.Key < firstDay || d.Key > today {
				t.Errorf("bucket key %q is not a day from %s to %s", d.Key, firstDay, today)
			}
			requests, errors, tokens = requests+d.Requests, errors+d.Errors, tokens+d.PromptTokens+d.CompletionTokens
		}
		if got.GroupBy != api.UsageReportGroupByDay || requests != 8 || errors != 1 || tokens != int64(prompt+completion) || got.Total.Requests != 8 {
			t.Errorf("report %+v", got)
		}
	})

	for _, tt := range []struct {
		name, credential string
		query            url.Values
		requests, errors int64
	}{
		{"OKUserTokenSeesTheOrg", alice.AccessToken, nil, 8, 1},
		{"OKKeyWithoutBillingReadSeesItsOwn", keyA.Key, nil, 7, 1},
		{"OKOtherKeyWithoutBillingReadSeesItsOwn", keyB.Key, nil, 1, 0},
		{"OKKeyFiltersByItself", keyA.Key, url.Values{"api_key_id": {keyA.Id.String()}}, 7, 1},
		{"OKBillingKeyFiltersByKey", billing.Key, url.Values{"api_key_id": {keyB.Id.String()}}, 1, 0},
		{"OKModelFilter", billing.Key, url.Values{"model": {"flaky"}}, 1, 1},
		{"OKWindowWithoutCalls", billing.Key, url.Values{"from": {"2000-01-01T00:00:00Z"}, "to": {"2000-01-02T00:00:00Z"}}, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := b.usageReport(t, tt.credential, tt.query)
			if got.Total.Requests != tt.requests || got.Total.Errors != tt.errors {
				t.Errorf("total %+v, want %d requests, %d errors", got.Total, tt.requests, tt.errors)
			}
		})
	}

	t.Run("OKBillingReadOnlyKey", func(t *testing.T) {
		t.Parallel()
		key := b.createKey(t, alice.AccessToken, []string{"billing:read"})
		var got api.UsageReport
		res := b.call(t, "GET", "/v1/usage", key.Key, nil, &got)
		if res.StatusCode != 200 || got.Total.Requests != 8 {
			t.Fatalf("%d %s %+v: a billing:read key reads the org's usage", res.StatusCode, readAll(res), got.Total)
		}
	})

	t.Run("ErrOtherKeyWithoutBillingRead", func(t *testing.T) {
		t.Parallel()
		res := b.call(t, "GET", "/v1/usage?api_key_id="+keyB.Id.String(), keyA.Key, nil, nil)
		wantProblem(t, res, 403, errs.PermissionDenied, "billing:read")
	})

	for _, tt := range []struct{ name, from, to string }{
		{"ErrFromEqualsTo", "2026-01-02T00:00:00Z", "2026-01-02T00:00:00Z"},
		{"ErrFromAfterTo", "2026-01-03T00:00:00Z", "2026-01-02T00:00:00Z"},
		{"ErrWindowOverAYear", "2024-01-01T00:00:00Z", "2026-01-02T00:00:00Z"}, // issue 12: a scan of every row
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := b.call(t, "GET", "/v1/usage?"+url.Values{"from": {tt.from}, "to": {tt.to}}.Encode(), billing.Key, nil, nil)
			if p := problemIs(t, res, 400, errs.Invalid); !hasField(p, "/query/from", "") {
				t.Errorf("problem %+v, want a field error at /query/from", p)
			}
		})
	}

	t.Run("OKMetrics", func(t *testing.T) {
		t.Parallel()
		res := b.do(t, httptest.NewRequest("GET", "/metrics", nil))
		raw, _ := io.ReadAll(res.Body)
		body := string(raw)
		for _, tt := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"kiln_llm_requests_total", []string{"alias", "default", "provider", "dev", "status", "ok"}, 6},
			{"kiln_llm_requests_total", []string{"alias", "flaky", "status", "error"}, 1},
			{"kiln_llm_requests_total", []string{"alias", "slow", "status", "cancelled"}, 1},
			{"kiln_llm_tokens_total", []string{"alias", "default", "provider", "dev", "type", "prompt"}, float64(prompt)},
			{"kiln_llm_tokens_total", []string{"alias", "default", "provider", "dev", "type", "completion"}, float64(completion)},
		} {
			if got, ok := metricValue(body, tt.name, tt.labels...); !ok || got != tt.want {
				t.Errorf("%s%v = %v (found %t), want %v", tt.name, tt.labels, got, ok, tt.want)
			}
		}
		if got, ok := metricValue(body, "kiln_llm_cost_usd_total", "alias", "default"); !ok || !closeTo(got, wantCost) {
			t.Errorf("kiln_llm_cost_usd_total = %v, want %v", got, wantCost)
		}
	})
}
