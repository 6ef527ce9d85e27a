package billing

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/platform/localcache"
	"github.com/kilnhq/kiln/internal/store"
)

// Status is a subscription's state.
type Status string

// The subscription states.
const (
	Trialing  Status = "trialing"
	Active    Status = "active"
	PastDue   Status = "past_due" // a renewal failed; still served during the grace period
	Frozen    Status = "frozen"   // unpaid past the grace period: model calls and ingestions are refused (payment_required)
	Cancelled Status = "cancelled"
)

func (s Status) valid() bool {
	switch s {
	case Trialing, Active, PastDue, Frozen, Cancelled:
		return true
	}
	return false
}

// Period is a half-open billing period [Start, End).
type Period struct {
	Start, End time.Time
}

// Subscription is an org's plan and the state of its payment.
type Subscription struct {
	Org      uuid.UUID
	Plan     string
	Status   Status
	Interval string // month or year
	Currency string // USD or CNY
	// Period is the current one: a stored period that has passed rolls on by Interval (a
	// manual subscription renews until an operator changes it).
	Period   Period
	Provider string
	// PastDueSince is when a renewal first went unpaid (past_due or frozen), else nil.
	PastDueSince *time.Time
	// Default is true for an org without a stored subscription: on the default plan.
	Default   bool
	UpdatedAt time.Time
}

// Service reads and changes subscriptions and holds model calls to their quota.
type Service struct {
	st     *store.Store
	config *Catalog                // billing.plans
	plans  atomic.Pointer[Catalog] // config's and the admin API's, swapped whole
	// planMu orders the swaps of plans: a reload that read the table before a write
	// committed swaps before that write's own swap, never after it.
	planMu      sync.Mutex
	planRefresh time.Duration // how often RunPlans reloads the admin API's plans
	quota       *Quota
	now         func() time.Time
	grace       time.Duration

	subs    *localcache.Map[uuid.UUID, Subscription] // the model-call path's, by org
	budgets *localcache.Map[uuid.UUID, int64]        // API keys' token budgets (0: none), by key

	alerts *alerter // nil: no quota alerts
}

// New returns the billing service over config's plans. cacheTTL is how long the
// model-call path trusts an org's subscription read before, and how often RunPlans
// reloads the admin API's plans (a change on another replica reaches this one within
// that); grace is how long a subscription stays past_due before it is frozen. The admin
// API's plans are unknown until LoadPlans.
func New(st *store.Store, plans *Catalog, quota *Quota, cacheTTL, grace time.Duration, now func() time.Time) *Service {
	s := &Service{st: st, config: plans, planRefresh: cacheTTL, quota: quota, now: now, grace: grace,
		subs: localcache.New[uuid.UUID, Subscription](cacheTTL), budgets: localcache.New[uuid.UUID, int64](cacheTTL)}
	s.plans.Store(plans)
	return s
}

// Plans returns the plan catalog now: config's plans and the admin API's. It is
// immutable: a change to the plans swaps in another one.
func (s *Service) Plans() *Catalog { return s.plans.Load() }

// Subscription returns org's subscription, the default plan's when it has none stored.
func (s *Service) Subscription(ctx context.Context, org uuid.UUID) (Subscription, error) {
	row, err := s.st.GetSubscription(ctx, org)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return s.defaultSubscription(org), nil
		}
		return Subscription{}, fmt.Errorf("get subscription: %w", store.Translate(err))
	}
	return s.toSubscription(row), nil
}

func (s *Service) defaultSubscription(org uuid.UUID) Subscription {
	now := s.now().UTC()
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	return Subscription{Org: org, Plan: s.config.Default().ID, Status: Active, Interval: "month", Currency: "USD",
		Period: Period{Start: start, End: start.AddDate(0, 1, 0)}, Provider: "manual", Default: true}
}

// toSubscription converts a stored subscription. A past_due one whose grace period has
// run out reads as frozen: the freeze is decided at read time, so it needs no job and
// every replica agrees on it.
func (s *Service) toSubscription(r db.Subscription) Subscription {
	sub := Subscription{
		Org: r.OrgID, Plan: r.PlanID, Status: Status(r.Status), Interval: r.BillingInterval, Currency: r.Currency,
		Period:   rollPeriod(Period{Start: r.CurrentPeriodStart.UTC(), End: r.CurrentPeriodEnd.UTC()}, r.BillingInterval, s.now()),
		Provider: r.Provider, PastDueSince: r.PastDueSince, UpdatedAt: r.UpdatedAt.UTC(),
	}
	if sub.Provider != ProviderManual {
		// A provider's subscription does not roll on by itself: its period moves when a
		// renewal is paid, and one whose period ended unrenewed is past due from its end.
		sub.Period = Period{Start: r.CurrentPeriodStart.UTC(), End: r.CurrentPeriodEnd.UTC()}
		if (sub.Status == Active || sub.Status == Trialing) && !s.now().Before(sub.Period.End) {
			sub.Status, sub.PastDueSince = PastDue, &sub.Period.End
		}
	}
	if sub.PastDueSince != nil {
		t := sub.PastDueSince.UTC()
		sub.PastDueSince = &t
		if sub.Status == PastDue && !s.now().Before(t.Add(s.grace)) {
			sub.Status = Frozen
		}
	}
	return sub
}

// rollPeriod moves p on by interval until it holds now.
func rollPeriod(p Period, interval string, now time.Time) Period {
	for i := 0; !now.Before(p.End) && i < 10_000; i++ {
		p.Start = p.End
		if interval == "year" {
			p.End = p.End.AddDate(1, 0, 0)
		} else {
			p.End = p.End.AddDate(0, 1, 0)
		}
	}
	return p
}

// SetSubscription is what an operator sets: a plan by hand (provider manual).
type SetSubscription struct {
	Plan     string
	Status   Status
	Interval string // month (default) or year
	Currency string // USD (default) or CNY
	// PeriodStart starts the first period; zero: now.
	PeriodStart time.Time
}

// Set puts org on a plan by hand, writing the audit event in the same transaction. It
// returns not_found for an unknown org and invalid_request naming a bad field (among
// them an unknown plan, or an archived one the org is not on).
func (s *Service) Set(ctx context.Context, by audit.Actor, org uuid.UUID, in SetSubscription) (Subscription, error) {
	if in.Interval == "" {
		in.Interval = "month"
	}
	if in.Currency == "" {
		in.Currency = "USD"
	}
	if in.Status == "" {
		in.Status = Active
	}
	var fields []errs.FieldError
	plans := s.Plans()
	if _, ok := plans.Get(in.Plan); !ok {
		fields = append(fields, errs.FieldError{Pointer: "/plan", Message: "names no plan (GET /v1/admin/plans lists them)"})
	}
	if !in.Status.valid() {
		fields = append(fields, errs.FieldError{Pointer: "/status", Message: "must be trialing, active, past_due, frozen or cancelled"})
	}
	if err := errs.InvalidFields("invalid subscription", fields); err != nil {
		return Subscription{}, err
	}
	now := s.now().UTC()
	start := in.PeriodStart.UTC()
	if in.PeriodStart.IsZero() {
		start = now.Truncate(time.Second)
	}
	end := start.AddDate(0, 1, 0)
	if in.Interval == "year" {
		end = start.AddDate(1, 0, 0)
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var row db.Subscription
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		exists, err := q.BillingOrgExists(ctx, org)
		if err != nil {
			return fmt.Errorf("find org: %w", store.Translate(err))
		}
		if !exists {
			return errs.E(errs.NotFound, "No org with this id.")
		}
		before, err := q.GetSubscription(ctx, org)
		prev := s.config.Default().ID
		if err == nil {
			prev = before.PlanID
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("get subscription: %w", store.Translate(err))
		}
		if _, why := plans.offer(in.Plan, prev); why != "" {
			return errs.InvalidFields("invalid subscription", []errs.FieldError{{Pointer: "/plan", Message: why}})
		}
		row, err = q.UpsertSubscription(ctx, db.UpsertSubscriptionParams{
			OrgID: org, PlanID: in.Plan, Status: string(in.Status), BillingInterval: in.Interval, Currency: in.Currency,
			CurrentPeriodStart: start, CurrentPeriodEnd: end, Provider: "manual", Now: now,
		})
		if err != nil {
			return fmt.Errorf("set subscription: %w", store.Translate(err))
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "billing.subscription_set", TargetType: "org", TargetID: org.String(),
			Data: map[string]any{"plan": in.Plan, "previous_plan": prev, "status": string(in.Status), "interval": in.Interval, "currency": in.Currency}})
	})
	if err != nil {
		return Subscription{}, err
	}
	s.forget(org)
	return s.toSubscription(row), nil
}

// FrozenMessage is the detail of payment_required: where to pay.
const FrozenMessage = "The org's subscription is frozen for an unpaid renewal: model calls and new ingestions resume as soon as it is paid " +
	"(POST /v1/orgs/{id}/billing/checkout, or the billing portal from POST /v1/orgs/{id}/billing/portal). Reads and exports still work."

// cached is Subscription through a per-replica cache of cacheTTL, for the model-call path.
func (s *Service) cached(ctx context.Context, org uuid.UUID) (Subscription, error) {
	now := s.now()
	if sub, ok := s.subs.Get(org, now); ok && now.Before(sub.Period.End) {
		return sub, nil
	}
	sub, err := s.Subscription(ctx, org)
	if err != nil {
		return Subscription{}, err
	}
	s.subs.Put(org, sub, now)
	return sub, nil
}

// unfrozen returns sub, read again past the cache when it is frozen (a payment on another
// replica unfreezes at once); payment_required when it is frozen still.
func (s *Service) unfrozen(ctx context.Context, org uuid.UUID, sub Subscription) (Subscription, error) {
	if sub.Status != Frozen {
		return sub, nil
	}
	sub, err := s.Subscription(ctx, org)
	if err != nil {
		return Subscription{}, err
	}
	if sub.Status == Frozen {
		return Subscription{}, errs.E(errs.PaymentRequired, "%s", FrozenMessage)
	}
	s.forget(org)
	return sub, nil
}

// planFor is the plan a subscription serves: a cancelled one falls back to the default.
func (s *Service) planFor(sub Subscription) Plan {
	plans := s.Plans()
	if sub.Status == Cancelled {
		return plans.Default()
	}
	return plans.planOf(sub.Plan)
}

// QuotaError refuses a call that would pass a token limit (quota_exceeded): it carries
// the limit, the usage and when the period resets.
type QuotaError struct {
	errs.Quota
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("token quota %s exceeded: %d used and %d reserved of %d", e.Name, e.Used, e.Reserved, e.Limit)
}

// Classify makes the error quota_exceeded, with the quota's figures.
func (e *QuotaError) Classify() *errs.Error {
	whose := "the org past its plan's token limit"
	if e.Name == LimitAPIKeyTokens {
		whose = "the API key past its token budget"
	}
	out := errs.E(errs.QuotaExceeded, "This call could take %s of %d for the period (limit %q): %d used, %d held by calls in flight; the period resets at %s.",
		whose, e.Limit, e.Name, e.Used, e.Reserved, e.ResetsAt.UTC().Format(time.RFC3339))
	q := e.Quota
	out.Quota = &q
	return out
}

// Reserve holds tokens of org's token quota for one model call (llm.Meter). It returns
// payment_required for a frozen org and a *QuotaError (quota_exceeded) when the plan's
// token limit blocks and the call could pass it.
func (s *Service) Reserve(ctx context.Context, org uuid.UUID, tokens int) (llm.Reservation, error) {
	sub, err := s.cached(ctx, org)
	if err == nil {
		sub, err = s.unfrozen(ctx, org, sub)
	}
	if err != nil {
		return nil, err
	}
	plan := s.planFor(sub)
	limit, limited := plan.Limits[LimitTokens]
	enforce := limited && limit.Overage == Block
	c := Counter{Org: org, Period: sub.Period}
	h, ok, used, reserved, err := s.quota.Reserve(ctx, c, int64(tokens), limit.Value, enforce)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.alerts.newWatch(c, plan, LimitTokens).refused(ctx, used)
		return nil, &QuotaError{errs.Quota{Name: LimitTokens, Limit: limit.Value, Used: used, Reserved: reserved,
			Window: sub.Period.End.Sub(sub.Period.Start), ResetsAt: sub.Period.End}}
	}
	h.watch = s.alerts.newWatch(c, plan, LimitTokens)
	key := llm.APIKeyOf(ctx)
	if key == uuid.Nil {
		return h, nil
	}
	kh, err := s.reserveKey(ctx, Counter{Org: org, Period: sub.Period, Key: key}, tokens)
	if err != nil || kh == nil {
		if err != nil {
			// The org's hold goes back: the call does not run.
			_ = h.Settle(context.WithoutCancel(ctx), 0)
			return nil, err
		}
		return h, nil
	}
	return holds{h, kh}, nil
}

// LimitAPIKeyTokens names an API key's own token budget in a quota_exceeded refusal.
const LimitAPIKeyTokens = "api_key_tokens" //nolint:gosec // a limit's name, not a credential

// reserveKey holds tokens of c's API key's token budget (nil hold: the key has none). It
// returns a *QuotaError (limit api_key_tokens) when the call could pass the budget.
func (s *Service) reserveKey(ctx context.Context, c Counter, tokens int) (*Hold, error) {
	budget, err := s.keyBudget(ctx, c.Key)
	if err != nil || budget == 0 {
		return nil, err
	}
	h, ok, used, reserved, err := s.quota.Reserve(ctx, c, int64(tokens), budget, true)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &QuotaError{errs.Quota{Name: LimitAPIKeyTokens, Limit: budget, Used: used, Reserved: reserved,
			Window: c.Period.End.Sub(c.Period.Start), ResetsAt: c.Period.End}}
	}
	return h, nil
}

// keyBudget returns API key's token budget (0: none) through a per-replica cache of
// cacheTTL, as subscriptions are read on the model-call path.
func (s *Service) keyBudget(ctx context.Context, key uuid.UUID) (int64, error) {
	now := s.now()
	if tokens, ok := s.budgets.Get(key, now); ok {
		return tokens, nil
	}
	b, err := s.st.GetAPIKeyTokenBudget(ctx, key)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("get api key token budget: %w", store.Translate(err))
	}
	s.budgets.Put(key, b.Int64, now)
	return b.Int64, nil
}

// holds is a call's hold on its org's quota and on its API key's budget, settled together.
type holds []*Hold

// Settle settles every hold, returning the first error.
func (hs holds) Settle(ctx context.Context, used int) error {
	var first error
	for _, h := range hs {
		if err := h.Settle(ctx, used); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// LimitUsage is one limit of an org's entitlements.
type LimitUsage struct {
	Name  string
	Limit Limit
	// Used is measured for every limit but requests_per_minute (Measured true): tokens
	// spent this period, or what the org has of a count limit. Reserved is tokens only.
	Measured       bool
	Used, Reserved int64
	ResetsAt       time.Time // tokens: the end of the period
}

// Entitlements is what an org's subscription gives it now.
type Entitlements struct {
	Subscription Subscription
	Plan         Plan
	Features     map[string]bool
	Limits       []LimitUsage // by name
}

// Entitlements returns org's effective plan, features and limits, with the tokens used
// and held so far this period.
func (s *Service) Entitlements(ctx context.Context, org uuid.UUID) (Entitlements, error) {
	sub, err := s.Subscription(ctx, org)
	if err != nil {
		return Entitlements{}, err
	}
	plan := s.planFor(sub)
	e := Entitlements{Subscription: sub, Plan: plan, Features: map[string]bool{}}
	for f, on := range plan.Features {
		e.Features[f] = on
	}
	var counts map[string]int64
	for _, name := range LimitNames {
		l, ok := plan.Limits[name]
		if !ok {
			continue
		}
		lu := LimitUsage{Name: name, Limit: l}
		switch name {
		case LimitTokens:
			lu.Measured, lu.ResetsAt = true, sub.Period.End
			lu.Used, lu.Reserved, err = s.quota.Usage(ctx, Counter{Org: org, Period: sub.Period})
			if err != nil {
				return Entitlements{}, err
			}
		case LimitSeats, LimitKnowledgeBases, LimitDocuments, LimitStorageBytes:
			if counts == nil {
				if counts, err = s.counts(ctx, s.st.Queries, org); err != nil {
					return Entitlements{}, err
				}
			}
			lu.Measured, lu.Used = true, counts[name]
		}
		e.Limits = append(e.Limits, lu)
	}
	return e, nil
}

// Require returns nil when org's plan has feature, else feature_not_in_plan naming the
// feature and a plan that has it. It is the one entitlement check.
func (s *Service) Require(ctx context.Context, org uuid.UUID, feature string) error {
	sub, err := s.cached(ctx, org)
	if err != nil {
		return err
	}
	if s.planFor(sub).Features[feature] {
		return nil
	}
	if other := s.Plans().WithFeature(feature); other != "" {
		return errs.E(errs.FeatureNotInPlan, "The feature %q is not in the org's plan; the plan %q has it.", feature, other)
	}
	return errs.E(errs.FeatureNotInPlan, "The feature %q is not in the org's plan, nor in any plan offered.", feature)
}
