package llm

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// pair builds a gateway serving alias "m" by p1/m1, then p2/m2: both fallbacks, so they
// are tried in that order. first and second are the providers' scripts; target1 adjusts
// the first target (timeout, concurrency).
func pair(t *testing.T, cfg GatewayConfig, first, second []answer, target1 func(*Target)) (*Gateway, *fakeProvider, *fakeProvider) {
	t.Helper()
	p1, p2 := newFake("p1", first...), newFake("p2", second...)
	t1 := Target{Provider: "p1", Model: "m1"}
	if target1 != nil {
		target1(&t1)
	}
	cfg.Providers = map[string]Provider{"p1": p1, "p2": p2}
	cfg.Aliases = map[string][]Target{"m": {t1, {Provider: "p2", Model: "m2"}}}
	return newTestGateway(t, cfg), p1, p2
}

// single builds a gateway serving alias "m" by p1/m1 alone.
func single(t *testing.T, cfg GatewayConfig, script []answer, target func(*Target)) (*Gateway, *fakeProvider) {
	t.Helper()
	p1 := newFake("p1", script...)
	t1 := Target{Provider: "p1", Model: "m1"}
	if target != nil {
		target(&t1)
	}
	cfg.Providers = map[string]Provider{"p1": p1}
	cfg.Aliases = map[string][]Target{"m": {t1}}
	return newTestGateway(t, cfg), p1
}

func userRequest(text string) *Request {
	return &Request{Model: "m", Messages: []Message{TextMessage(RoleUser, text)}}
}

// attemptTargets lists the targets of served's attempts.
func attemptTargets(s Served) string {
	out := make([]string, len(s.Attempts))
	for i, a := range s.Attempts {
		out[i] = a.Target
	}
	return strings.Join(out, ",")
}

// checkAttemptErrors checks that every attempt but a serving last one has an error.
func checkAttemptErrors(t *testing.T, s Served, servedOK bool) {
	t.Helper()
	for i, a := range s.Attempts {
		last := i == len(s.Attempts)-1
		if servedOK && last {
			if a.Error != "" || a.Target != s.Target.String() {
				t.Errorf("last attempt = %+v, want the serving target %s without error", a, s.Target)
			}
			continue
		}
		if a.Error == "" {
			t.Errorf("attempt %d at %s has no error", i, a.Target)
		}
	}
}

func TestPriceCost(t *testing.T) {
	t.Parallel()
	p := Price{Input: 3, Output: 15, Cached: 0.3}
	tests := []struct {
		name  string
		usage Usage
		want  float64
	}{
		{"Zero", Usage{}, 0},
		{"InputAndOutput", Usage{PromptTokens: 1_000_000, CompletionTokens: 2_000_000}, 3 + 30},
		{"CachedAtCachedRate", Usage{PromptTokens: 1_000_000, CachedTokens: 400_000, CompletionTokens: 10}, 0.6*3 + 0.4*0.3 + 10*15/1e6},
		{"CachedBeyondPromptNeverNegative", Usage{PromptTokens: 10, CachedTokens: 20}, 20 * 0.3 / 1e6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.Cost(tt.usage); math.Abs(got-tt.want) > 1e-12 {
				t.Fatalf("Cost(%+v) = %v, want %v", tt.usage, got, tt.want)
			}
		})
	}
}

func TestNewGateway(t *testing.T) {
	t.Parallel()
	p := newFake("p")
	tests := []struct {
		name    string
		aliases map[string][]Target
		wantErr string
	}{
		{"OK", map[string][]Target{"b": {{Provider: "p", Model: "x"}}, "a": {{Provider: "p", Model: "y"}, {Provider: "p", Model: "x"}}}, ""},
		{"ErrAliasWithoutTargets", map[string][]Target{"a": nil}, `model alias "a" has no targets`},
		{"ErrUnknownProvider", map[string][]Target{"a": {{Provider: "nope", Model: "x"}}}, `model alias "a": unknown provider "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := NewGateway(GatewayConfig{Providers: map[string]Provider{"p": p}, Aliases: tt.aliases, Registry: prometheus.NewRegistry()})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewGateway error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewGateway: %v", err)
			}
			if got := strings.Join(g.Aliases(), ","); got != "a,b" {
				t.Errorf("Aliases() = %s, want a,b", got)
			}
			if !g.Has("a") || g.Has("c") {
				t.Error("Has disagrees with the aliases")
			}
			if got := g.Targets("a"); len(got) != 2 || got[0].String() != "p/y" || got[1].String() != "p/x" {
				t.Errorf("Targets(a) = %v, want p/y, p/x in configured order", got)
			}
		})
	}
}

func TestNewGatewayMetricsRegisteredTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cfg := GatewayConfig{Providers: map[string]Provider{"p": newFake("p")}, Aliases: map[string][]Target{"a": {{Provider: "p", Model: "x"}}}, Registry: reg}
	if _, err := NewGateway(cfg); err != nil {
		t.Fatalf("NewGateway: %v", err)
	}
	if _, err := NewGateway(cfg); err == nil || !strings.Contains(err.Error(), "register llm metrics") {
		t.Fatalf("second NewGateway on one registry: error = %v, want register llm metrics", err)
	}
}

func TestGatewayUnknownAlias(t *testing.T) {
	t.Parallel()
	g, p1 := single(t, GatewayConfig{}, nil, nil)
	ctx := t.Context()
	_, s1, err1 := g.Chat(ctx, "nope", userRequest("hi"))
	_, s2, err2 := g.ChatStream(ctx, "nope", userRequest("hi"))
	_, s3, err3 := g.Embed(ctx, "nope", &EmbedRequest{Input: []string{"hi"}})
	for i, tc := range []struct {
		served Served
		err    error
	}{{s1, err1}, {s2, err2}, {s3, err3}} {
		if errs.CodeOf(tc.err) != errs.NotFound {
			t.Errorf("call %d: error = %v, want code not_found", i, tc.err)
		}
		if tc.served.Alias != "nope" || len(tc.served.Attempts) != 0 {
			t.Errorf("call %d: served = %+v, want alias nope and no attempts", i, tc.served)
		}
	}
	if p1.Calls() != 0 {
		t.Fatalf("provider called %d times for an unknown alias", p1.Calls())
	}
}

func TestGatewayChat(t *testing.T) {
	t.Parallel()
	fail := func(kind ErrorKind) []answer { return []answer{{err: upstream(kind)}} }
	tests := []struct {
		name          string
		retries       int
		first, second []answer
		wantServed    string    // empty: the call fails
		wantKind      ErrorKind // of the error, when it fails
		wantCalls     [2]int
		wantAttempts  string
	}{
		{"OK", 2, nil, nil, "p1/m1", "", [2]int{1, 0}, "p1/m1"},
		{"OKAfterRetry", 2, []answer{{err: upstream(KindOverloaded)}, {}}, nil, "p1/m1", "", [2]int{2, 0}, "p1/m1,p1/m1"},
		{"FailoverOnRateLimited", 0, fail(KindRateLimited), nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"FailoverOnOverloaded", 0, fail(KindOverloaded), nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"FailoverOnTimeout", 0, fail(KindTimeout), nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"FailoverOnConnection", 0, fail(KindConnection), nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"FailoverAfterRetries", 2, fail(KindOverloaded), nil, "p2/m2", "", [2]int{3, 1}, "p1/m1,p1/m1,p1/m1,p2/m2"},
		{"FailoverOnAuthWithoutRetry", 2, fail(KindAuth), nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"FailoverAtOnceOnLongRetryAfter", 3, []answer{{err: &Error{Provider: "p1", Kind: KindRateLimited, RetryAfter: 2 * time.Second}}}, nil, "p2/m2", "", [2]int{1, 1}, "p1/m1,p2/m2"},
		{"ErrInvalidWithoutFailover", 2, fail(KindInvalid), nil, "", KindInvalid, [2]int{1, 0}, "p1/m1"},
		{"ErrUnsupportedWithoutFailover", 2, fail(KindUnsupported), nil, "", KindUnsupported, [2]int{1, 0}, "p1/m1"},
		{"ErrLastWhenEveryTargetFails", 1, fail(KindOverloaded), fail(KindRateLimited), "", KindRateLimited, [2]int{2, 2}, "p1/m1,p1/m1,p2/m2,p2/m2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, p1, p2 := pair(t, GatewayConfig{Retries: tt.retries, MaxRetryAfter: time.Second}, tt.first, tt.second, nil)
			req := userRequest("hi")
			res, served, err := g.Chat(t.Context(), "m", req)
			if tt.wantServed == "" {
				if err == nil || kindOf(err) != tt.wantKind {
					t.Fatalf("Chat error = %v, want kind %s", err, tt.wantKind)
				}
			} else {
				if err != nil {
					t.Fatalf("Chat: %v", err)
				}
				if served.Target.String() != tt.wantServed || res.Message.Text() != strings.Split(tt.wantServed, "/")[0] {
					t.Fatalf("served by %s with %q, want %s", served.Target, res.Message.Text(), tt.wantServed)
				}
			}
			if got := [2]int{p1.Calls(), p2.Calls()}; got != tt.wantCalls {
				t.Errorf("calls = %v, want %v", got, tt.wantCalls)
			}
			if got := attemptTargets(served); got != tt.wantAttempts {
				t.Errorf("attempts = %s, want %s", got, tt.wantAttempts)
			}
			if served.Alias != "m" {
				t.Errorf("served.Alias = %q, want m", served.Alias)
			}
			checkAttemptErrors(t, served, tt.wantServed != "")
			for _, m := range p1.SeenModels() {
				if m != "m1" {
					t.Errorf("p1 got model %q, want m1", m)
				}
			}
			for _, m := range p2.SeenModels() {
				if m != "m2" {
					t.Errorf("p2 got model %q, want m2", m)
				}
			}
			if req.Model != "m" {
				t.Errorf("the caller's request model changed to %q", req.Model)
			}
		})
	}
}

func TestGatewayRetryWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		backoff  time.Duration
		err      *Error
		wantWait time.Duration // at least
	}{
		{"WaitsRetryAfter", time.Microsecond, &Error{Provider: "p1", Kind: KindRateLimited, RetryAfter: 60 * time.Millisecond}, 60 * time.Millisecond},
		{"WaitsJitteredBackoff", 80 * time.Millisecond, upstream(KindOverloaded), 40 * time.Millisecond}, // jitter is 0.5× to 1.5×
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, p1 := single(t, GatewayConfig{Retries: 1, Backoff: tt.backoff, MaxRetryAfter: time.Second}, []answer{{err: tt.err}, {}}, nil)
			if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); err != nil {
				t.Fatalf("Chat: %v", err)
			}
			times := p1.Times()
			if len(times) != 2 {
				t.Fatalf("%d calls, want 2", len(times))
			}
			if gap := times[1].Sub(times[0]); gap < tt.wantWait {
				t.Fatalf("retried after %s, want at least %s", gap, tt.wantWait)
			}
		})
	}
}

func TestGatewayOrder(t *testing.T) {
	t.Parallel()
	g, _ := single(t, GatewayConfig{}, nil, nil)
	a, b := Target{Provider: "p", Model: "a", Weight: 3}, Target{Provider: "p", Model: "b", Weight: 1}
	f0, f1 := Target{Provider: "p", Model: "f0"}, Target{Provider: "p", Model: "f1"}

	t.Run("FirstDrawnByWeight", func(t *testing.T) {
		t.Parallel()
		const n = 4000
		firstA := 0
		for range n {
			got := g.order([]Target{a, b, f0})
			if len(got) != 3 || got[2] != f0 {
				t.Fatalf("order = %v, want a and b then the fallback f0", got)
			}
			if got[0] == a {
				firstA++
			}
		}
		if share := float64(firstA) / n; share < 0.70 || share > 0.80 {
			t.Fatalf("a (weight 3 of 4) first in %.2f of calls, want about 0.75", share)
		}
	})
	t.Run("FallbacksAfterWeightedInConfiguredOrder", func(t *testing.T) {
		t.Parallel()
		for range 100 {
			got := g.order([]Target{f0, a, f1, b})
			if len(got) != 4 || got[2] != f0 || got[3] != f1 || (got[0] != a && got[0] != b) || (got[1] != a && got[1] != b) || got[0] == got[1] {
				t.Fatalf("order = %v, want a and b (either first), then f0, f1", got)
			}
		}
	})
	t.Run("AllFallbacksInConfiguredOrder", func(t *testing.T) {
		t.Parallel()
		if got := g.order([]Target{f1, f0}); len(got) != 2 || got[0] != f1 || got[1] != f0 {
			t.Fatalf("order = %v, want f1, f0", got)
		}
	})
	t.Run("FallbackServesOnlyAfterWeightedFail", func(t *testing.T) {
		t.Parallel()
		fb, w := newFake("fb"), newFake("w", answer{}, answer{err: upstream(KindOverloaded)})
		g := newTestGateway(t, GatewayConfig{
			Providers: map[string]Provider{"fb": fb, "w": w},
			Aliases:   map[string][]Target{"m": {{Provider: "fb", Model: "x"}, {Provider: "w", Model: "y", Weight: 1}}},
		})
		_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
		if err != nil || served.Target.Provider != "w" || fb.Calls() != 0 {
			t.Fatalf("first call: served by %s (err %v, fallback calls %d), want the weighted target", served.Target, err, fb.Calls())
		}
		_, served, err = g.Chat(t.Context(), "m", userRequest("hi"))
		if err != nil || served.Target.Provider != "fb" {
			t.Fatalf("second call: served by %s (err %v), want the fallback after the weighted target failed", served.Target, err)
		}
	})
}

func TestGatewayTimeout(t *testing.T) {
	t.Parallel()
	short := func(t *Target) { t.Timeout = 30 * time.Millisecond }
	late := []answer{{delay: time.Hour}}
	lateFirstEvent := []answer{{events: []fakeEvent{{delay: time.Hour, ev: Event{Type: EventText, Text: "late"}}}}}
	tests := []struct {
		name       string
		stream     bool
		failover   bool // a second target is configured
		script     []answer
		wantServed string // empty: want a KindTimeout error
	}{
		{"ChatFailsOverPastTimeout", false, true, late, "p2/m2"},
		{"ErrTimeoutChatPastTimeout", false, false, late, ""},
		{"StreamFailsOverWhenOpenPastTimeout", true, true, late, "p2/m2"},
		{"StreamFailsOverWhenFirstEventPastTimeout", true, true, lateFirstEvent, "p2/m2"},
		{"ErrTimeoutStreamFirstEventPastTimeout", true, false, lateFirstEvent, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var g *Gateway
			var p1 *fakeProvider
			if tt.failover {
				g, p1, _ = pair(t, GatewayConfig{}, tt.script, nil, short)
			} else {
				g, p1 = single(t, GatewayConfig{}, tt.script, short)
			}
			start := time.Now()
			var served Served
			var err error
			if tt.stream {
				var s Stream
				s, served, err = g.ChatStream(t.Context(), "m", userRequest("hi"))
				if err == nil {
					_ = s.Close()
				}
			} else {
				_, served, err = g.Chat(t.Context(), "m", userRequest("hi"))
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("call took %s: the per-attempt timeout was not applied", elapsed)
			}
			if tt.wantServed == "" {
				if kindOf(err) != KindTimeout {
					t.Fatalf("error = %v, want kind timeout", err)
				}
			} else if err != nil || served.Target.String() != tt.wantServed {
				t.Fatalf("served by %s (err %v), want %s", served.Target, err, tt.wantServed)
			}
			if !strings.Contains(served.Attempts[0].Error, "timeout") {
				t.Errorf("first attempt error = %q, want a timeout", served.Attempts[0].Error)
			}
			if p1.Open() != 0 {
				t.Errorf("the timed-out stream was not closed")
			}
		})
	}
}

func TestGatewayStreamTimeoutCoversFirstEventOnly(t *testing.T) {
	t.Parallel()
	g, _ := single(t, GatewayConfig{}, []answer{{events: []fakeEvent{
		{ev: Event{Type: EventText, Text: "a"}},
		{delay: 100 * time.Millisecond, ev: Event{Type: EventText, Text: "b"}},
		{ev: Event{Type: EventFinish, FinishReason: FinishStop}},
	}}}, func(t *Target) { t.Timeout = 30 * time.Millisecond })
	s, _, err := g.ChatStream(t.Context(), "m", userRequest("hi"))
	if err != nil {
		t.Fatalf("ChatStream: %v", err)
	}
	res, err := Collect(s)
	if err != nil {
		t.Fatalf("Collect: %v (an event after the first one was cut by the attempt timeout)", err)
	}
	if res.Message.Text() != "ab" || res.FinishReason != FinishStop {
		t.Fatalf("reply = %q (%s), want ab (stop)", res.Message.Text(), res.FinishReason)
	}
}

func TestGatewayChatStream(t *testing.T) {
	t.Parallel()
	text := func(s string) fakeEvent { return fakeEvent{ev: Event{Type: EventText, Text: s}} }
	tests := []struct {
		name         string
		first        []answer
		wantServed   string
		wantText     string    // of the collected reply
		wantOpenKind ErrorKind // error of ChatStream
		wantNextKind ErrorKind // error of Collect
		wantCalls    [2]int
	}{
		{"OK", []answer{{events: []fakeEvent{text("a"), text("b"), {ev: Event{Type: EventFinish, FinishReason: FinishStop}}}}}, "p1/m1", "ab", "", "", [2]int{1, 0}},
		{"FailoverWhenOpenFails", []answer{{err: upstream(KindConnection)}}, "p2/m2", "p2", "", "", [2]int{1, 1}},
		{"FailoverWhenFirstEventFails", []answer{{events: []fakeEvent{{err: upstream(KindOverloaded)}}}}, "p2/m2", "p2", "", "", [2]int{1, 1}},
		{"ErrAfterFirstEventReachesCaller", []answer{{events: []fakeEvent{text("a"), {err: upstream(KindConnection)}}}}, "p1/m1", "", "", KindConnection, [2]int{1, 0}},
		{"ErrInvalidWithoutFailover", []answer{{err: upstream(KindInvalid)}}, "", "", KindInvalid, "", [2]int{1, 0}},
		{"ErrInvalidFirstEventWithoutFailover", []answer{{events: []fakeEvent{{err: upstream(KindInvalid)}}}}, "", "", KindInvalid, "", [2]int{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, p1, p2 := pair(t, GatewayConfig{}, tt.first, nil, nil)
			s, served, err := g.ChatStream(t.Context(), "m", userRequest("hi"))
			if tt.wantOpenKind != "" {
				if kindOf(err) != tt.wantOpenKind {
					t.Fatalf("ChatStream error = %v, want kind %s", err, tt.wantOpenKind)
				}
			} else {
				if err != nil {
					t.Fatalf("ChatStream: %v", err)
				}
				if served.Target.String() != tt.wantServed {
					t.Fatalf("served by %s, want %s", served.Target, tt.wantServed)
				}
				checkAttemptErrors(t, served, true)
				res, err := Collect(s)
				if tt.wantNextKind != "" {
					if kindOf(err) != tt.wantNextKind {
						t.Fatalf("Collect error = %v, want kind %s", err, tt.wantNextKind)
					}
				} else if err != nil || res.Message.Text() != tt.wantText {
					t.Fatalf("Collect = %q, %v; want %q", res.Message.Text(), err, tt.wantText)
				}
			}
			if got := [2]int{p1.Calls(), p2.Calls()}; got != tt.wantCalls {
				t.Errorf("calls = %v, want %v", got, tt.wantCalls)
			}
			if p1.Open() != 0 || p2.Open() != 0 {
				t.Errorf("streams left open: p1 %d, p2 %d", p1.Open(), p2.Open())
			}
		})
	}
}

func TestGatewayEmbed(t *testing.T) {
	t.Parallel()
	g, p1, p2 := pair(t, GatewayConfig{}, []answer{{err: upstream(KindOverloaded)}}, nil, nil)
	res, served, err := g.Embed(t.Context(), "m", &EmbedRequest{Model: "m", Input: []string{"a", "b"}})
	if err != nil {
		t.Fatalf("Embed: %v", err)
	}
	if served.Target.String() != "p2/m2" || res.Model != "m2" || len(res.Vectors) != 2 {
		t.Fatalf("served by %s, model %q, %d vectors; want p2/m2, m2, 2", served.Target, res.Model, len(res.Vectors))
	}
	if p1.Calls() != 1 || p2.Calls() != 1 {
		t.Fatalf("calls = %d, %d; want 1, 1", p1.Calls(), p2.Calls())
	}
}

func TestGatewayCallerCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		stream bool
		script []answer
		cfg    GatewayConfig
	}{
		{"ErrCanceledDuringChat", false, []answer{{delay: time.Hour}}, GatewayConfig{}},
		{"ErrCanceledDuringStreamOpen", true, []answer{{delay: time.Hour}}, GatewayConfig{}},
		{"ErrCanceledDuringBackoff", false, []answer{{err: upstream(KindOverloaded)}}, GatewayConfig{Retries: 1, Backoff: time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.Timeout = time.Hour
			g, p1, p2 := pair(t, tt.cfg, tt.script, nil, nil)
			ctx, cancel := context.WithCancel(t.Context())
			stop := time.AfterFunc(30*time.Millisecond, cancel)
			t.Cleanup(func() { stop.Stop() })
			var err error
			if tt.stream {
				_, _, err = g.ChatStream(ctx, "m", userRequest("hi"))
			} else {
				_, _, err = g.Chat(ctx, "m", userRequest("hi"))
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("error = %v, want context.Canceled", err)
			}
			if p1.Calls() != 1 || p2.Calls() != 0 {
				t.Fatalf("calls = %d, %d; want 1, 0: a cancelled call must not fail over", p1.Calls(), p2.Calls())
			}
		})
	}
}

func TestGatewayMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	g, _, _ := pair(t, GatewayConfig{Retries: 1, Registry: reg}, []answer{{err: upstream(KindOverloaded)}}, nil, nil)
	if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); err != nil {
		t.Fatalf("Chat: %v", err)
	}
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"attempts p1 overloaded", g.metrics.attempts.WithLabelValues("p1", "m1", "overloaded"), 2},
		{"attempts p2 ok", g.metrics.attempts.WithLabelValues("p2", "m2", "ok"), 1},
		{"failovers from p1", g.metrics.failovers.WithLabelValues("m", "p1/m1"), 1},
		{"failovers from p2", g.metrics.failovers.WithLabelValues("m", "p2/m2"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	n, err := testutil.GatherAndCount(reg, "kiln_llm_attempts_total", "kiln_llm_failovers_total")
	if err != nil || n == 0 {
		t.Fatalf("metrics on the registry: %d series, %v", n, err)
	}
}

func TestGatewayBreaker(t *testing.T) {
	t.Parallel()
	breakerCfg := GatewayConfig{BreakerFailures: 2, BreakerCooldown: time.Minute}
	overloaded := answer{err: upstream(KindOverloaded)}

	t.Run("OpensThenProbesThenCloses", func(t *testing.T) {
		t.Parallel()
		g, p1 := single(t, breakerCfg, []answer{overloaded, overloaded, overloaded, {}}, nil)
		clk := newClock(g)
		gauge := func() float64 { return testutil.ToFloat64(g.metrics.circuit.WithLabelValues("p1", "m1")) }
		// want is the outcome of each call: ok, failed (the upstream's error) or skipped (circuit open).
		steps := []struct {
			advance   time.Duration
			want      string
			wantCalls int
			wantOpen  float64
		}{
			{0, "failed", 1, 0},
			{0, "failed", 2, 1}, // the second failure in a row opens the circuit
			{0, "skipped", 2, 1},
			{59 * time.Second, "skipped", 2, 1},
			{time.Second, "failed", 3, 1}, // cooldown over: one probe, which fails and reopens
			{0, "skipped", 3, 1},
			{time.Minute, "ok", 4, 0}, // the next probe succeeds and closes the circuit
			{0, "ok", 5, 0},
		}
		for i, s := range steps {
			clk.Advance(s.advance)
			_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
			switch s.want {
			case "ok":
				if err != nil {
					t.Fatalf("step %d: Chat: %v", i, err)
				}
			case "failed":
				if kindOf(err) != KindOverloaded {
					t.Fatalf("step %d: error = %v, want the upstream's", i, err)
				}
			case "skipped":
				if !errors.Is(err, ErrNoTarget) {
					t.Fatalf("step %d: error = %v, want ErrNoTarget", i, err)
				}
				if len(served.Attempts) != 1 || served.Attempts[0].Error != "circuit open" {
					t.Fatalf("step %d: attempts = %+v, want one skipped with circuit open", i, served.Attempts)
				}
			}
			if p1.Calls() != s.wantCalls {
				t.Fatalf("step %d: %d calls, want %d", i, p1.Calls(), s.wantCalls)
			}
			if gauge() != s.wantOpen {
				t.Fatalf("step %d: kiln_llm_circuit_open = %v, want %v", i, gauge(), s.wantOpen)
			}
		}
	})
	t.Run("CountsConsecutiveFailuresOnly", func(t *testing.T) {
		t.Parallel()
		g, p1 := single(t, breakerCfg, []answer{overloaded, {}, overloaded, overloaded}, nil)
		newClock(g)
		for range 3 {
			_, _, _ = g.Chat(t.Context(), "m", userRequest("hi"))
		}
		if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); errors.Is(err, ErrNoTarget) || p1.Calls() != 4 {
			t.Fatalf("after fail, ok, fail: error = %v, %d calls; want the target still tried", err, p1.Calls())
		}
	})
	t.Run("FailsOverWhileOpen", func(t *testing.T) {
		t.Parallel()
		g, p1, p2 := pair(t, breakerCfg, []answer{overloaded}, nil, nil)
		newClock(g)
		for range 2 {
			_, _, _ = g.Chat(t.Context(), "m", userRequest("hi"))
		}
		_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
		if err != nil || served.Target.String() != "p2/m2" {
			t.Fatalf("served by %s (err %v), want p2/m2", served.Target, err)
		}
		if p1.Calls() != 2 || p2.Calls() != 3 {
			t.Fatalf("calls = %d, %d; want 2, 3", p1.Calls(), p2.Calls())
		}
		if got := served.Attempts[0]; got.Target != "p1/m1" || got.Error != "circuit open" {
			t.Fatalf("first attempt = %+v, want p1/m1 skipped with circuit open", got)
		}
	})
	t.Run("OneProbeAtATime", func(t *testing.T) {
		t.Parallel()
		gate := make(chan struct{})
		g, p1 := single(t, GatewayConfig{BreakerFailures: 1, BreakerCooldown: time.Minute}, []answer{overloaded, {gate: gate}, {}}, nil)
		clk := newClock(g)
		_, _, _ = g.Chat(t.Context(), "m", userRequest("hi"))
		clk.Advance(time.Minute)
		probe := make(chan error, 1)
		go func() {
			_, _, err := g.Chat(t.Context(), "m", userRequest("probe"))
			probe <- err
		}()
		waitFor(t, func() bool { return p1.Calls() == 2 })
		if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); !errors.Is(err, ErrNoTarget) {
			t.Fatalf("call during the probe: error = %v, want ErrNoTarget", err)
		}
		close(gate)
		if err := <-probe; err != nil {
			t.Fatalf("probe: %v", err)
		}
		if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); err != nil {
			t.Fatalf("after a successful probe: %v", err)
		}
	})
	t.Run("OpenCircuitEndsRetries", func(t *testing.T) {
		t.Parallel()
		cfg := GatewayConfig{BreakerFailures: 1, BreakerCooldown: time.Minute, Retries: 3}
		g, p1, p2 := pair(t, cfg, []answer{overloaded}, nil, nil)
		newClock(g)
		_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
		if err != nil || served.Target.String() != "p2/m2" {
			t.Fatalf("served by %s (err %v), want p2/m2", served.Target, err)
		}
		if p1.Calls() != 1 || p2.Calls() != 1 {
			t.Fatalf("calls = %d, %d; want 1, 1: the failure that opened p1's circuit must end its retries", p1.Calls(), p2.Calls())
		}
	})
}

// TestGatewayBreakerProbeWithoutVerdict checks that a probe which ends without a success
// or a retryable failure does not leave the breaker waiting for a verdict for ever.
func TestGatewayBreakerProbeWithoutVerdict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		probe func(t *testing.T, g *Gateway) error
		// script's second answer is the probe's
		script []answer
	}{
		{
			"RecoversAfterProbeRefusedAsInvalid",
			func(t *testing.T, g *Gateway) error {
				_, _, err := g.Chat(t.Context(), "m", userRequest("probe"))
				return err
			},
			[]answer{{err: upstream(KindOverloaded)}, {err: upstream(KindInvalid)}, {}},
		},
		{
			"RecoversAfterProbeCancelledByCaller",
			func(t *testing.T, g *Gateway) error {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
				defer cancel()
				_, _, err := g.Chat(ctx, "m", userRequest("probe"))
				return err
			},
			[]answer{{err: upstream(KindOverloaded)}, {delay: time.Hour}, {}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, p1 := single(t, GatewayConfig{BreakerFailures: 1, BreakerCooldown: time.Minute, Timeout: time.Hour}, tt.script, nil)
			clk := newClock(g)
			if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); kindOf(err) != KindOverloaded {
				t.Fatalf("opening call: error = %v, want overloaded", err)
			}
			clk.Advance(time.Minute)
			if err := tt.probe(t, g); err == nil {
				t.Fatal("probe succeeded, want it to fail")
			}
			if p1.Calls() != 2 {
				t.Fatalf("%d calls, want 2: the probe did not reach the target", p1.Calls())
			}
			clk.Advance(time.Hour)
			if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); err != nil {
				t.Fatalf("an hour after the probe: error = %v, want the target probed again and answering", err)
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after a few seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGatewayMaxConcurrency(t *testing.T) {
	t.Parallel()
	limit := func(n int) func(*Target) { return func(t *Target) { t.MaxConcurrency = n } }

	t.Run("NeverExceedsLimit", func(t *testing.T) {
		t.Parallel()
		g, p1, p2 := pair(t, GatewayConfig{}, []answer{{delay: 2 * time.Millisecond}}, []answer{{delay: time.Millisecond}}, limit(2))
		const n = 64
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for range n {
			wg.Go(func() {
				_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
				if err == nil && served.Target.Provider == "p2" && served.Attempts[0].Error != "at max concurrency" {
					err = errors.New("p2 served but p1 was not skipped as full: " + served.Attempts[0].Error)
				}
				errc <- err
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatalf("Chat: %v", err)
			}
		}
		if got := p1.MaxInflight(); got > 2 || got == 0 {
			t.Fatalf("p1 had %d calls in flight, want 1 or 2", got)
		}
		if p1.Calls()+p2.Calls() != n {
			t.Fatalf("calls = %d + %d, want %d in all", p1.Calls(), p2.Calls(), n)
		}
	})
	t.Run("StreamsNeverExceedLimit", func(t *testing.T) {
		t.Parallel()
		g, p1 := single(t, GatewayConfig{}, nil, limit(2))
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				s, _, err := g.ChatStream(t.Context(), "m", userRequest("hi"))
				if err != nil {
					if !errors.Is(err, ErrNoTarget) {
						t.Errorf("ChatStream: %v", err)
					}
					return
				}
				time.Sleep(time.Millisecond)
				if _, err := Collect(s); err != nil {
					t.Errorf("Collect: %v", err)
				}
			})
		}
		wg.Wait()
		if got := p1.MaxOpen(); got > 2 || got == 0 {
			t.Fatalf("p1 had %d streams open, want 1 or 2", got)
		}
	})
	t.Run("ErrNoTargetWhenFull", func(t *testing.T) {
		t.Parallel()
		gate := make(chan struct{})
		g, p1 := single(t, GatewayConfig{}, []answer{{gate: gate}, {}}, limit(1))
		done := make(chan error, 1)
		go func() {
			_, _, err := g.Chat(t.Context(), "m", userRequest("slow"))
			done <- err
		}()
		waitFor(t, func() bool { return p1.Calls() == 1 })
		_, served, err := g.Chat(t.Context(), "m", userRequest("hi"))
		if !errors.Is(err, ErrNoTarget) {
			t.Fatalf("error = %v, want ErrNoTarget", err)
		}
		if len(served.Attempts) != 1 || served.Attempts[0].Error != "at max concurrency" {
			t.Fatalf("attempts = %+v, want one skipped at max concurrency", served.Attempts)
		}
		close(gate)
		if err := <-done; err != nil {
			t.Fatalf("slow call: %v", err)
		}
		if _, _, err := g.Chat(t.Context(), "m", userRequest("hi")); err != nil {
			t.Fatalf("after the slot was freed: %v", err)
		}
	})
	t.Run("StreamHoldsSlotUntilClose", func(t *testing.T) {
		t.Parallel()
		g, _ := single(t, GatewayConfig{}, nil, limit(1))
		open := func() (Stream, error) {
			s, _, err := g.ChatStream(t.Context(), "m", userRequest("hi"))
			return s, err
		}
		s1, err := open()
		if err != nil {
			t.Fatalf("first stream: %v", err)
		}
		if _, err := open(); !errors.Is(err, ErrNoTarget) {
			t.Fatalf("second stream while the first is open: error = %v, want ErrNoTarget", err)
		}
		for {
			if _, err := s1.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("read first stream: %v", err)
				}
				break
			}
		}
		if _, err := open(); !errors.Is(err, ErrNoTarget) {
			t.Fatalf("after the first stream ended but before Close: error = %v, want ErrNoTarget", err)
		}
		_ = s1.Close()
		_ = s1.Close() // a second Close must not free a second slot
		s2, err := open()
		if err != nil {
			t.Fatalf("stream after Close: %v", err)
		}
		t.Cleanup(func() { _ = s2.Close() })
		if _, err := open(); !errors.Is(err, ErrNoTarget) {
			t.Fatalf("a second Close freed another slot: error = %v, want ErrNoTarget", err)
		}
	})
}

// newClock gives g a clock of its own, for the circuit breaker's timing.
func newClock(g *Gateway) *storetest.Clock {
	c := storetest.ClockAt(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	g.now = c.Now
	return c
}
