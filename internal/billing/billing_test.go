package billing_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/cache"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// bundle is what a test of the billing service works with.
type bundle struct {
	st      *store.Store
	svc     *billing.Service
	quota   *billing.Quota
	gateway *llm.Gateway
	clock   *storetest.Clock
	org     uuid.UUID
	rdb     redis.UniversalClient
}

const (
	reservationTTL = time.Minute
	gracePeriod    = 72 * time.Hour
)

// setup builds the billing service over a real database and Redis, and a gateway over
// the offline dev provider metered by it. Plans: free (tokens: tokenLimit, block), pro
// (tokens allow_and_alert, feature sso).
func setup(t *testing.T, tokenLimit int64) bundle {
	t.Helper()
	st := storetest.New(t)
	rdb, ks := storetest.Redis(t)
	clock := storetest.NewClock()
	plans := billing.NewCatalog([]billing.Plan{
		{ID: "free", Name: "Free", Limits: map[string]billing.Limit{billing.LimitTokens: {Value: tokenLimit, Overage: billing.Block}, billing.LimitSeats: {Value: 1, Overage: billing.Block}}},
		{ID: "pro", Name: "Pro", Prices: []billing.Price{{Interval: "month", Currency: "USD", Amount: 2000, StripePrice: proPrice}}, Features: map[string]bool{"sso": true},
			Limits: map[string]billing.Limit{billing.LimitTokens: {Value: 10, Overage: billing.AllowAndAlert}}},
	}, "free")
	quota := billing.NewQuota(rdb, ks, reservationTTL, clock.Now)
	svc := billing.New(st, plans, quota, time.Minute, gracePeriod, clock.Now)
	g, err := llm.NewGateway(llm.GatewayConfig{
		Providers:        map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
		Aliases:          map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}},
		Meter:            svc,
		DefaultMaxTokens: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	return bundle{st: st, svc: svc, quota: quota, gateway: g, clock: clock, org: storetest.Org(t, st), rdb: rdb}
}

func request(text string, maxTokens int) *llm.Request {
	return &llm.Request{MaxTokens: &maxTokens, Messages: []llm.Message{{Role: llm.RoleUser, Content: []llm.Part{{Type: llm.PartText, Text: text}}}}}
}

// TestQuotaNeverOverspends runs 200 concurrent callers, half streaming, against one
// org's token limit: each calls until it is refused with no room left for one more
// reservation (a refusal while calls in flight still held tokens is retried). The org's
// spend must end at most at the limit and within one reservation of it.
func TestQuotaNeverOverspends(t *testing.T) {
	t.Parallel()
	const limit, callers, maxTokens = 5000, 200, 24
	b := setup(t, limit)
	ctx := llm.WithOrg(t.Context(), b.org)
	reservation := int64(llm.PromptBound(request("hello quota number 000", maxTokens)) + maxTokens)
	var spent, calls, refused atomic.Int64
	period := mustSub(t, b).Period
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for n := 0; ; n++ {
				req := request(fmt.Sprintf("hello quota number %03d", i), maxTokens)
				used, err := call(ctx, b.gateway, req, i%2 == 0)
				if err == nil {
					spent.Add(int64(used))
					calls.Add(1)
					continue
				}
				var qe *billing.QuotaError
				if !errors.As(err, &qe) {
					t.Errorf("caller %d: %v", i, err)
					return
				}
				refused.Add(1)
				u, _, err := b.quota.Usage(context.Background(), billing.Counter{Org: b.org, Period: period})
				if err != nil {
					t.Error(err)
					return
				}
				if u+reservation > limit {
					return // no room for one more call, even once the calls in flight settle
				}
			}
		})
	}
	wg.Wait()
	used, reserved, err := b.quota.Usage(t.Context(), billing.Counter{Org: b.org, Period: period})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls, %d refusals, %d tokens spent of %d (reservation %d)", calls.Load(), refused.Load(), used, limit, reservation)
	if used != spent.Load() {
		t.Errorf("counted %d tokens, the calls used %d", used, spent.Load())
	}
	if used > limit {
		t.Errorf("overshoot: %d tokens spent past the limit of %d", used-limit, limit)
	}
	if limit-used >= reservation {
		t.Errorf("the limit was not reached: %d tokens left, more than one reservation (%d)", limit-used, reservation)
	}
	if reserved != 0 {
		t.Errorf("%d tokens still reserved after every call ended", reserved)
	}
}

// TestQuotaAfterScriptFlush: a Redis that lost its scripts (restarted empty, SCRIPT
// FLUSH) still reserves and settles, concurrent calls batched together included: a batch
// loads the script again and runs the lost calls once more, and no call twice.
func TestQuotaAfterScriptFlush(t *testing.T) {
	t.Parallel()
	b := setup(t, 1_000_000)
	ctx := llm.WithOrg(t.Context(), b.org)
	period := mustSub(t, b).Period
	var spent atomic.Int64
	for round := range 3 {
		if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				used, err := call(ctx, b.gateway, request(fmt.Sprintf("flushed %d %d", round, i), 16), i%2 == 0)
				if err != nil {
					t.Errorf("a call after SCRIPT FLUSH: %v", err)
				}
				spent.Add(int64(used))
			})
		}
		wg.Wait()
	}
	used, reserved, err := b.quota.Usage(t.Context(), billing.Counter{Org: b.org, Period: period})
	if err != nil {
		t.Fatal(err)
	}
	if used != spent.Load() || reserved != 0 {
		t.Fatalf("counted %d tokens (%d reserved); the calls used %d", used, reserved, spent.Load())
	}
}

// call makes one metered call, blocking or streamed, and returns the tokens it used.
func call(ctx context.Context, g *llm.Gateway, req *llm.Request, stream bool) (int, error) {
	if !stream {
		res, _, err := g.Chat(ctx, "default", req)
		if err != nil {
			return 0, err
		}
		return res.Usage.Total(), nil
	}
	s, _, err := g.ChatStream(ctx, "default", req)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	used := 0
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			return used, nil
		}
		if err != nil {
			return 0, err
		}
		if ev.Type == llm.EventUsage {
			used = ev.Usage.Total()
		}
	}
}

func mustSub(t *testing.T, b bundle) billing.Subscription {
	t.Helper()
	sub, err := b.svc.Subscription(t.Context(), b.org)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestQuotaReservationLapses: a replica that dies mid-call never settles; its
// reservation stops holding the org's tokens once its TTL passed.
func TestQuotaReservationLapses(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	c := billing.Counter{Org: b.org, Period: mustSub(t, b).Period}
	if _, ok, _, _, err := b.quota.Reserve(t.Context(), c, 900, 1000, true); err != nil || !ok {
		t.Fatalf("first reservation: ok %v, %v", ok, err)
	}
	if _, ok, used, reserved, err := b.quota.Reserve(t.Context(), c, 200, 1000, true); err != nil || ok || used != 0 || reserved != 900 {
		t.Fatalf("second reservation while the first holds: ok %v used %d reserved %d, %v", ok, used, reserved, err)
	}
	b.clock.Advance(reservationTTL + time.Second)
	h, ok, _, reserved, err := b.quota.Reserve(t.Context(), c, 200, 1000, true)
	if err != nil || !ok || reserved != 200 {
		t.Fatalf("after the first lapsed: ok %v reserved %d, %v", ok, reserved, err)
	}
	if err := h.Settle(t.Context(), 150); err != nil {
		t.Fatal(err)
	}
	if used, reserved, err := b.quota.Usage(t.Context(), c); err != nil || used != 150 || reserved != 0 {
		t.Fatalf("usage %d reserved %d, %v; want 150 and 0", used, reserved, err)
	}
}

// TestRefusal checks what a refused call says, and that a failed call releases its hold.
func TestRefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := llm.WithOrg(t.Context(), b.org)
	_, _, err := b.gateway.Chat(ctx, "default", request("hello", 1000))
	var qe *billing.QuotaError
	if !errors.As(err, &qe) {
		t.Fatalf("a call past the limit: %v, want a quota error", err)
	}
	e, _ := errs.Classify(err)
	if e.Code != errs.QuotaExceeded || qe.Limit != 100 || !qe.ResetsAt.Equal(mustSub(t, b).Period.End) ||
		e.Quota == nil || *e.Quota != qe.Quota || e.Quota.Name != billing.LimitTokens || e.Quota.Window <= 0 {
		t.Errorf("refusal %+v classified %v", qe, e)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := b.gateway.Chat(cancelled, "default", request("hello", 10)); err == nil {
		t.Fatal("a cancelled call succeeded")
	}
	if used, reserved, err := b.quota.Usage(t.Context(), billing.Counter{Org: b.org, Period: mustSub(t, b).Period}); err != nil || used != 0 || reserved != 0 {
		t.Errorf("after a failed call: used %d reserved %d, %v; want nothing held", used, reserved, err)
	}
}

// TestCacheHitsCostNothing: a reply served from the response cache reserves nothing.
func TestCacheHitsCostNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, 10_000)
	rdb, ks := storetest.Redis(t)
	reg, err := tools.NewRegistry()
	if err != nil {
		t.Fatal(err)
	}
	r := &chat.Runner{Gateway: b.gateway, Tools: reg, Cache: cache.New(rdb, ks, time.Hour), MaxSteps: 1, MaxTokens: 50, Now: time.Now}
	ctx := llm.WithOrg(t.Context(), b.org)
	c := billing.Counter{Org: b.org, Period: mustSub(t, b).Period}
	var spent []int64
	for range 2 {
		call := chat.Call{Alias: "default", Request: *request("cache me", 50), Org: b.org, Cache: true}
		if err := r.Validate(ctx, &call); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Run(ctx, call, nil); err != nil {
			t.Fatal(err)
		}
		used, _, err := b.quota.Usage(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		spent = append(spent, used)
	}
	if spent[0] == 0 || spent[1] != spent[0] {
		t.Errorf("tokens after the miss and the hit: %v; want the hit to add nothing", spent)
	}
}

// TestSubscriptions covers the operator's plan change (audited), freeze and the
// entitlement check.
func TestSubscriptions(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := llm.WithOrg(t.Context(), b.org)
	sub := mustSub(t, b)
	if !sub.Default || sub.Plan != "free" || sub.Status != billing.Active {
		t.Fatalf("an org without a subscription: %+v", sub)
	}
	err := b.svc.Require(t.Context(), b.org, "sso")
	if e, _ := errs.Classify(err); e.Code != errs.FeatureNotInPlan || !strings.Contains(e.Message, `"pro"`) {
		t.Fatalf("free plan, feature sso: %v", err)
	}
	if _, err := b.svc.Set(t.Context(), audit.Actor{}, b.org, billing.SetSubscription{Plan: "gold"}); errs.CodeOf(err) != errs.Invalid {
		t.Fatalf("unknown plan: %v", err)
	}
	if _, err := b.svc.Set(t.Context(), audit.Actor{}, uuid.Must(uuid.NewV7()), billing.SetSubscription{Plan: "pro"}); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("unknown org: %v", err)
	}
	sub, err = b.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, b.org, billing.SetSubscription{Plan: "pro", Status: billing.Frozen, Currency: "CNY"})
	if err != nil || sub.Plan != "pro" || sub.Status != billing.Frozen || sub.Default {
		t.Fatalf("set: %+v, %v", sub, err)
	}
	if _, _, err := b.gateway.Chat(ctx, "default", request("hi", 10)); errs.CodeOf(err) != errs.PaymentRequired {
		t.Fatalf("a frozen org's call: %v", err)
	}
	if _, err := b.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, b.org, billing.SetSubscription{Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	// Pro's token limit alerts instead of blocking: calls past it go through.
	for range 2 {
		if _, _, err := b.gateway.Chat(ctx, "default", request("hi", 10)); err != nil {
			t.Fatalf("a call past an allow_and_alert limit: %v", err)
		}
	}
	if err := b.svc.Require(t.Context(), b.org, "sso"); err != nil {
		t.Fatalf("pro has sso: %v", err)
	}
	ent, err := b.svc.Entitlements(t.Context(), b.org)
	if err != nil {
		t.Fatal(err)
	}
	if len(ent.Limits) != 1 || ent.Limits[0].Name != billing.LimitTokens || ent.Limits[0].Used <= 10 || !ent.Features["sso"] {
		t.Errorf("entitlements: %+v", ent)
	}
	events, err := audit.New(b.st).List(t.Context(), b.org, 10, nil, "billing.subscription_set")
	if err != nil || len(events) != 2 || events[1].Data["plan"] != "pro" || events[1].Data["previous_plan"] != "free" {
		t.Errorf("audit events: %+v, %v", events, err)
	}
}
