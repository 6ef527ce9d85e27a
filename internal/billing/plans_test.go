package billing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

var admin = audit.Actor{Type: audit.ActorSystem}

// gold is a plan of the admin API: 5 seats and 1,000 tokens that block, feature reports.
func gold() billing.PlanInput {
	return billing.PlanInput{ID: "gold", Name: "Gold", Features: map[string]bool{"reports": true},
		Prices: []billing.Price{{Interval: "year", Currency: "USD", Amount: 50000}, {Interval: "month", Currency: "CNY", Amount: 3500, StripePrice: "price_gold_cny"}},
		Limits: []billing.NamedLimit{
			{Name: billing.LimitSeats, Limit: billing.Limit{Value: 5, Overage: billing.Block}},
			{Name: billing.LimitTokens, Limit: billing.Limit{Value: 1000, Overage: billing.Block}},
			{Name: billing.LimitDocuments, Limit: billing.Limit{Value: 10, Overage: billing.AllowAndBill, UnitPrice: 0.5}},
		}}
}

// admitSeat is whether org may add a seat now, through svc.
func admitSeat(t *testing.T, b bundle, svc *billing.Service) error {
	t.Helper()
	return svc.Admit(t.Context(), b.st.Queries, b.org, billing.Use{Limit: billing.LimitSeats, Amount: 1})
}

// TestAdminPlans covers a plan's life through the admin API's service: created, it is
// offered, subscribed to and enforced; changed, its limits apply at once here and within
// the refresh interval on another replica; archived, it is offered to no one new while its
// subscribers keep it. Each change is audited.
func TestAdminPlans(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := t.Context()
	p, err := b.svc.CreatePlan(ctx, admin, gold())
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != billing.SourceAPI || p.Prices[0].Interval != "month" || p.Limits[billing.LimitDocuments].UnitPrice != 0.5 {
		t.Fatalf("created: %+v", p)
	}
	if got, ok := b.svc.Plans().Get("gold"); !ok || got.Name != "Gold" || !slices.ContainsFunc(b.svc.Plans().Offered(), func(p billing.Plan) bool { return p.ID == "gold" }) {
		t.Fatalf("gold in the catalog: %+v %v", got, ok)
	}
	if _, err := b.svc.CreatePlan(ctx, admin, gold()); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("the same id again: %v", err)
	}

	// Another replica on the same database, which reloads every 20 ms.
	other := billing.New(b.st, billing.NewCatalog([]billing.Plan{{ID: "free", Name: "Free"}}, "free"), b.quota, 20*time.Millisecond, gracePeriod, b.clock.Now)
	if err := other.LoadPlans(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { other.RunPlans(runCtx, slog.New(slog.NewTextHandler(io.Discard, nil))) })
	t.Cleanup(func() { stop(); wg.Wait() })

	if _, err := b.svc.Set(ctx, admin, b.org, billing.SetSubscription{Plan: "gold"}); err != nil {
		t.Fatal(err)
	}
	ent, err := b.svc.Entitlements(ctx, b.org)
	if err != nil || ent.Plan.ID != "gold" || !ent.Features["reports"] || len(ent.Limits) != 3 || ent.Limits[0].Name != billing.LimitTokens || ent.Limits[0].Limit.Value != 1000 {
		t.Fatalf("entitlements on gold: %+v, %v", ent, err)
	}
	if err := b.svc.Require(ctx, b.org, "reports"); err != nil {
		t.Fatalf("gold has reports: %v", err)
	}
	for _, svc := range []*billing.Service{b.svc, other} {
		if err := admitSeat(t, b, svc); err != nil {
			t.Fatalf("a seat of 5: %v", err)
		}
	}

	// One seat now: the org has none yet, so a second one is refused, here at once.
	in := gold()
	in.Name = "Gold (one seat)"
	in.Limits[0].Value = 0
	if p, err = b.svc.UpdatePlan(ctx, admin, "gold", in); err != nil || p.Name != "Gold (one seat)" || p.Limits[billing.LimitSeats].Value != 0 {
		t.Fatalf("update: %+v, %v", p, err)
	}
	if err := admitSeat(t, b, b.svc); errs.CodeOf(err) != errs.PlanLimitReached {
		t.Fatalf("a seat past the new limit, on the replica that changed it: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for err := admitSeat(t, b, other); errs.CodeOf(err) != errs.PlanLimitReached; err = admitSeat(t, b, other) {
		if time.Now().After(deadline) {
			t.Fatalf("the other replica still admits a seat after 5 s: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The token limit too, through the model-call path.
	in.Limits[1].Value = 5
	if _, err = b.svc.UpdatePlan(ctx, admin, "gold", in); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Reserve(ctx, b.org, 10); !errors.As(err, new(*billing.QuotaError)) {
		t.Fatalf("10 tokens of 5: %v", err)
	}

	// Archived: offered to no one new; its subscriber keeps it.
	if p, err = b.svc.ArchivePlan(ctx, admin, "gold"); err != nil || p.ArchivedAt == nil {
		t.Fatalf("archive: %+v, %v", p, err)
	}
	if again, err := b.svc.ArchivePlan(ctx, admin, "gold"); err != nil || !again.ArchivedAt.Equal(*p.ArchivedAt) {
		t.Fatalf("archive again: %+v, %v", again, err)
	}
	newcomer := storetest.Org(t, b.st)
	if _, err := b.svc.Set(ctx, admin, newcomer, billing.SetSubscription{Plan: "gold"}); !hasField(err, "/plan", "archived") {
		t.Fatalf("a new subscription to an archived plan: %v", err)
	}
	if _, err := b.svc.CreateOrder(ctx, billing.NewOrder{Org: newcomer, Provider: billing.ProviderWeChatPay, Purpose: billing.PurposeSubscription,
		Plan: "gold", Interval: "month", Currency: "CNY"}); !hasField(err, "/plan", "archived") {
		t.Fatalf("a new order of an archived plan: %v", err)
	}
	if _, err := b.svc.CreateOrder(ctx, billing.NewOrder{Org: b.org, Provider: billing.ProviderWeChatPay, Purpose: billing.PurposeSubscription,
		Plan: "gold", Interval: "month", Currency: "CNY"}); err != nil {
		t.Fatalf("its subscriber renews it: %v", err)
	}
	if sub, err := b.svc.Set(ctx, admin, b.org, billing.SetSubscription{Plan: "gold", Status: billing.PastDue}); err != nil || sub.Plan != "gold" {
		t.Fatalf("its subscriber's status changes: %+v, %v", sub, err)
	}
	if ent, err := b.svc.Entitlements(ctx, b.org); err != nil || ent.Plan.ID != "gold" {
		t.Fatalf("the subscriber keeps gold: %+v, %v", ent, err)
	}
	if slices.ContainsFunc(b.svc.Plans().Offered(), func(p billing.Plan) bool { return p.ID == "gold" }) {
		t.Error("an archived plan among those offered")
	}
	err = b.svc.Require(ctx, newcomer, "reports")
	if e, _ := errs.Classify(err); e == nil || e.Code != errs.FeatureNotInPlan || strings.Contains(e.Message, "gold") {
		t.Errorf("feature_not_in_plan points to an archived plan: %v", err)
	}

	rows, err := b.st.Pool.Query(ctx, "SELECT action FROM audit_events WHERE target_type = 'plan' AND target_id = 'gold' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, a)
	}
	if want := []string{"plan.create", "plan.update", "plan.update", "plan.archive"}; !slices.Equal(actions, want) {
		t.Errorf("audit events: %v, want %v", actions, want)
	}
}

// TestConfigPlansReadOnly: a config plan's id is read-only through the admin API, and
// nothing is written on the way to the refusal.
func TestConfigPlansReadOnly(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	in := gold()
	in.ID = "pro"
	for name, call := range map[string]func() error{
		"Create":  func() error { _, err := b.svc.CreatePlan(t.Context(), admin, in); return err },
		"Update":  func() error { _, err := b.svc.UpdatePlan(t.Context(), admin, "free", in); return err },
		"Archive": func() error { _, err := b.svc.ArchivePlan(t.Context(), admin, "pro"); return err },
	} {
		t.Run("Err"+name, func(t *testing.T) {
			if err := call(); errs.CodeOf(err) != errs.PlanFromConfig {
				t.Fatalf("%s: %v, want plan_from_config", name, err)
			}
		})
	}
	if p, _ := b.svc.Plans().Get("pro"); p.Source != billing.SourceConfig || p.Name != "Pro" || p.ArchivedAt != nil {
		t.Errorf("pro after the refusals: %+v", p)
	}
	if _, err := b.svc.UpdatePlan(t.Context(), admin, "nope", gold()); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("update of no plan: %v", err)
	}
	var n int
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT count(*) FROM billing_plans").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d plans stored, %v", n, err)
	}
}

// TestPlanValidation: each bad field is named.
func TestPlanValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	tests := []struct {
		name, pointer string
		change        func(*billing.PlanInput)
	}{
		{"ID", "/id", func(in *billing.PlanInput) { in.ID = "Gold!" }},
		{"Name", "/name", func(in *billing.PlanInput) { in.Name = " " }},
		{"Interval", "/prices/0/interval", func(in *billing.PlanInput) { in.Prices[0].Interval = "week" }},
		{"Currency", "/prices/0/currency", func(in *billing.PlanInput) { in.Prices[0].Currency = "EUR" }},
		{"Amount", "/prices/0/amount", func(in *billing.PlanInput) { in.Prices[0].Amount = -1 }},
		{"SecondPrice", "/prices/1", func(in *billing.PlanInput) { in.Prices[1] = in.Prices[0] }},
		{"StripePrice", "/prices/1/stripe_price", func(in *billing.PlanInput) { in.Prices[1].StripePrice = "prod_1" }},
		{"StripePriceOfFree", "/prices/1/stripe_price", func(in *billing.PlanInput) { in.Prices[1].Amount = 0 }},
		{"StripePriceTaken", "/prices/1/stripe_price", func(in *billing.PlanInput) { in.Prices[1].StripePrice = proPrice }},
		{"Feature", "/features", func(in *billing.PlanInput) { in.Features["Bad Name"] = true }},
		{"LimitName", "/limits/0/name", func(in *billing.PlanInput) { in.Limits[0].Name = "gpus" }},
		{"SecondLimit", "/limits/1/name", func(in *billing.PlanInput) { in.Limits[1].Name = billing.LimitSeats }},
		{"Value", "/limits/0/value", func(in *billing.PlanInput) { in.Limits[0].Value = -1 }},
		{"Overage", "/limits/0/overage", func(in *billing.PlanInput) { in.Limits[0].Overage = "shrug" }},
		{"UnitPrice", "/limits/2/unit_price", func(in *billing.PlanInput) { in.Limits[2].UnitPrice = 0 }},
		{"RequestRateNotBlocking", "/limits/0/overage", func(in *billing.PlanInput) {
			in.Limits[0] = billing.NamedLimit{Name: billing.LimitRequestsPerMinute, Limit: billing.Limit{Value: 60, Overage: billing.AllowAndAlert}}
		}},
	}
	for _, tt := range tests {
		t.Run("Err"+tt.name, func(t *testing.T) {
			in := gold()
			tt.change(&in)
			_, err := b.svc.CreatePlan(t.Context(), admin, in)
			if !hasField(err, tt.pointer, "") {
				t.Fatalf("create: %v, want a field error on %s", err, tt.pointer)
			}
			if tt.pointer == "/id" {
				return
			}
			if _, err := b.svc.UpdatePlan(t.Context(), admin, "gold", in); !hasField(err, tt.pointer, "") {
				t.Fatalf("update: %v", err)
			}
		})
	}
	if _, ok := b.svc.Plans().Get("gold"); ok {
		t.Error("an invalid plan was created")
	}
}

// hasField reports whether err is invalid_request with a field error on pointer whose
// message holds text.
func hasField(err error, pointer, text string) bool {
	e, _ := errs.Classify(err)
	if e == nil || e.Code != errs.Invalid {
		return false
	}
	return slices.ContainsFunc(e.Fields, func(f errs.FieldError) bool { return f.Pointer == pointer && strings.Contains(f.Message, text) })
}
