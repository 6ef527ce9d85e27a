package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// The plans of the admin API live in PostgreSQL (billing_plans) beside config's, which
// are never stored. The rule is one, in checkConfigPlan: a config plan's id is read-only
// through the API (plan_from_config), so an API plan never shadows a config plan and the
// default plan stays config's. Each replica holds every plan in one immutable Catalog,
// swapped whole: at once on the replica that wrote a change, within planRefresh (the
// subscriptions' cache TTL, billing.cache_ttl) on the others (RunPlans). Entitlements,
// quota reservations, Admit, the plan's rate limit, checkouts and feature_not_in_plan all
// read that one catalog, so a changed limit applies to the next call.

var (
	planIDPattern      = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)
	featureNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
)

// maxPlanName bounds a plan's name, as the table does.
const maxPlanName = 100

// PlanInput is what an operator sets of a plan of the admin API: all of it, on creation
// and on each change.
type PlanInput struct {
	ID       string // creation only; the path names the plan of a change
	Name     string
	Prices   []Price
	Features map[string]bool
	Limits   []NamedLimit // each name once
}

// NamedLimit is one limit of a PlanInput.
type NamedLimit struct {
	Name string
	Limit
}

// LoadPlans reads the admin API's plans and swaps them into the catalog. The composition
// root calls it once before serving; RunPlans keeps them fresh.
func (s *Service) LoadPlans(ctx context.Context) error {
	s.planMu.Lock()
	defer s.planMu.Unlock()
	rows, err := s.st.ListBillingPlans(ctx)
	if err != nil {
		return fmt.Errorf("list plans: %w", store.Translate(err))
	}
	plans := make([]Plan, len(rows))
	for i, r := range rows {
		if plans[i], err = toPlan(r); err != nil {
			return err
		}
	}
	s.plans.Store(s.config.with(plans...))
	return nil
}

// RunPlans reloads the admin API's plans every planRefresh until ctx is done, so that a
// change made on another replica applies here within it. A failed reload is logged and
// the catalog kept until the next one.
func (s *Service) RunPlans(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(s.planRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.LoadPlans(ctx); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "reload plans; keeping the ones loaded", "error", err)
		}
	}
}

// putPlan swaps p, just written, into this replica's catalog.
func (s *Service) putPlan(p Plan) {
	s.planMu.Lock()
	defer s.planMu.Unlock()
	s.plans.Store(s.Plans().with(p))
}

// CreatePlan creates a plan of the admin API, audited as plan.create in the same
// transaction. It returns invalid_request naming each bad field, plan_from_config for a
// config plan's id and conflict for an id taken.
func (s *Service) CreatePlan(ctx context.Context, by audit.Actor, in PlanInput) (Plan, error) {
	var fields []errs.FieldError
	if !planIDPattern.MatchString(in.ID) {
		fields = append(fields, errs.FieldError{Pointer: "/id", Message: "must be lowercase letters, digits, _ and -, starting with a letter (at most 64)"})
	} else if err := s.checkConfigPlan(in.ID); err != nil {
		return Plan{}, err
	}
	p, fields := s.validatePlan(in.ID, in, fields)
	if err := errs.InvalidFields("invalid plan", fields); err != nil {
		return Plan{}, err
	}
	doc, err := toPlanDoc(p)
	if err != nil {
		return Plan{}, err
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var row db.BillingPlan
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		row, err = q.CreateBillingPlan(ctx, db.CreateBillingPlanParams{ID: p.ID, Name: p.Name, Prices: doc.Prices,
			Features: doc.Features, Limits: doc.Limits, Now: s.now().UTC()})
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.Conflict, "A plan with the id %q exists (GET /v1/admin/plans?archived=true lists them).", p.ID)
		}
		if err != nil {
			return fmt.Errorf("create plan: %w", store.Translate(err))
		}
		return audit.Write(ctx, q, by, audit.Event{Action: "plan.create", TargetType: "plan", TargetID: p.ID, Data: doc.audit(p.Name)})
	})
	if err != nil {
		return Plan{}, err
	}
	return s.stored(row)
}

// UpdatePlan replaces the name, prices, features and limits of a plan of the admin API,
// audited as plan.update (with the previous plan) in the same transaction. Its subscribers
// have the new limits at once. It returns invalid_request naming each bad field,
// plan_from_config for a config plan and not_found for no plan.
func (s *Service) UpdatePlan(ctx context.Context, by audit.Actor, id string, in PlanInput) (Plan, error) {
	if err := s.checkConfigPlan(id); err != nil {
		return Plan{}, err
	}
	p, fields := s.validatePlan(id, in, nil)
	if err := errs.InvalidFields("invalid plan", fields); err != nil {
		return Plan{}, err
	}
	doc, err := toPlanDoc(p)
	if err != nil {
		return Plan{}, err
	}
	return s.changePlan(ctx, by, id, "plan.update", func(q *db.Queries, before db.BillingPlan) (db.BillingPlan, map[string]any, error) {
		row, err := q.UpdateBillingPlan(ctx, db.UpdateBillingPlanParams{ID: id, Name: p.Name, Prices: doc.Prices,
			Features: doc.Features, Limits: doc.Limits, Now: s.now().UTC()})
		if err != nil {
			return row, nil, fmt.Errorf("update plan: %w", store.Translate(err))
		}
		data := doc.audit(p.Name)
		data["previous"] = planDoc{Prices: before.Prices, Features: before.Features, Limits: before.Limits}.audit(before.Name)
		return row, data, nil
	})
}

// ArchivePlan archives a plan of the admin API, audited as plan.archive in the same
// transaction: it is offered to no new subscription or order, its subscribers keep it.
// Archiving an archived plan changes nothing. It returns plan_from_config for a config
// plan and not_found for no plan.
func (s *Service) ArchivePlan(ctx context.Context, by audit.Actor, id string) (Plan, error) {
	if err := s.checkConfigPlan(id); err != nil {
		return Plan{}, err
	}
	return s.changePlan(ctx, by, id, "plan.archive", func(q *db.Queries, before db.BillingPlan) (db.BillingPlan, map[string]any, error) {
		if before.ArchivedAt != nil {
			return before, nil, nil
		}
		row, err := q.ArchiveBillingPlan(ctx, db.ArchiveBillingPlanParams{ID: id, Now: s.now().UTC()})
		if err != nil {
			return row, nil, fmt.Errorf("archive plan: %w", store.Translate(err))
		}
		return row, map[string]any{"name": row.Name}, nil
	})
}

// changePlan runs change on the locked plan id and audits it as action with the data
// change returns (nil: nothing changed, nothing audited), then swaps the plan in.
func (s *Service) changePlan(ctx context.Context, by audit.Actor, id, action string,
	change func(q *db.Queries, before db.BillingPlan) (db.BillingPlan, map[string]any, error)) (Plan, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var row db.BillingPlan
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		before, err := q.GetBillingPlanForUpdate(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return errs.E(errs.NotFound, "No plan with this id.")
		}
		if err != nil {
			return fmt.Errorf("get plan: %w", store.Translate(err))
		}
		var data map[string]any
		row, data, err = change(q, before)
		if err != nil || data == nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{Action: action, TargetType: "plan", TargetID: id, Data: data})
	})
	if err != nil {
		return Plan{}, err
	}
	return s.stored(row)
}

// stored converts row, just written, and swaps it into this replica's catalog.
func (s *Service) stored(row db.BillingPlan) (Plan, error) {
	p, err := toPlan(row)
	if err != nil {
		return Plan{}, err
	}
	s.putPlan(p)
	return sortPrices(p), nil
}

// checkConfigPlan is the one rule between config's plans and the admin API's: a config
// plan's id is read-only through the API (plan_from_config).
func (s *Service) checkConfigPlan(id string) error {
	if _, ok := s.config.Get(id); ok {
		return errs.E(errs.PlanFromConfig, "The plan %q is from config (billing.plans): read-only through the API, and its id is taken; change the config (and restart) or use another id.", id)
	}
	return nil
}

// validatePlan returns in as the plan id, appending to fields each bad field of in.
func (s *Service) validatePlan(id string, in PlanInput, fields []errs.FieldError) (Plan, []errs.FieldError) {
	bad := func(pointer, message string) {
		fields = append(fields, errs.FieldError{Pointer: pointer, Message: message})
	}
	p := Plan{ID: id, Name: strings.TrimSpace(in.Name), Prices: in.Prices, Features: map[string]bool{}, Limits: map[string]Limit{}}
	if p.Name == "" || utf8.RuneCountInString(p.Name) > maxPlanName {
		bad("/name", fmt.Sprintf("must be 1 to %d characters", maxPlanName))
	}
	seen := map[string]bool{}
	for i, pr := range in.Prices {
		at := "/prices/" + strconv.Itoa(i)
		switch {
		case pr.Interval != "month" && pr.Interval != "year":
			bad(at+"/interval", "must be month or year")
		case pr.Currency != "USD" && pr.Currency != "CNY":
			bad(at+"/currency", "must be USD or CNY")
		case seen[pr.Interval+pr.Currency]:
			bad(at, fmt.Sprintf("a second price per %s in %s", pr.Interval, pr.Currency))
		}
		seen[pr.Interval+pr.Currency] = true
		if pr.Amount < 0 {
			bad(at+"/amount", "must not be negative (minor units)")
		}
		if pr.StripePrice == "" {
			continue
		}
		if !strings.HasPrefix(pr.StripePrice, "price_") || pr.Amount <= 0 {
			bad(at+"/stripe_price", "must be a Stripe Price id (price_…) of a positive amount")
		} else if other, _, ok := s.Plans().byStripePrice(pr.StripePrice); ok && other != id {
			bad(at+"/stripe_price", fmt.Sprintf("is the Stripe Price of the plan %q", other))
		}
	}
	for f, on := range in.Features {
		if !featureNamePattern.MatchString(f) {
			bad("/features", fmt.Sprintf("%q: a feature name is lowercase letters, digits, _, . and -, starting with a letter", f))
		}
		p.Features[f] = on
	}
	for i, l := range in.Limits {
		at := "/limits/" + strconv.Itoa(i)
		if _, dup := p.Limits[l.Name]; dup {
			bad(at+"/name", "a second limit "+l.Name)
		} else if !slices.Contains(LimitNames, l.Name) {
			bad(at+"/name", "must be one of "+strings.Join(LimitNames, ", "))
		}
		if l.Value < 0 {
			bad(at+"/value", "must not be negative")
		}
		if l.Name == LimitRequestsPerMinute && l.Overage != Block {
			bad(at+"/overage", "must be block for requests_per_minute (a rate is refused past its limit, never billed)")
		}
		switch l.Overage {
		case AllowAndBill:
			if !(l.UnitPrice > 0) {
				bad(at+"/unit_price", "must be positive with overage allow_and_bill (minor units per unit past the limit)")
			}
		case Block, AllowAndAlert:
			l.UnitPrice = 0
		default:
			bad(at+"/overage", "must be block, allow_and_bill or allow_and_alert")
		}
		p.Limits[l.Name] = l.Limit
	}
	return p, fields
}

// planDoc is a plan's prices, features and limits as the table stores them (JSON).
type planDoc struct {
	Prices, Features, Limits []byte
}

type priceJSON struct {
	Interval    string `json:"interval"`
	Currency    string `json:"currency"`
	Amount      int64  `json:"amount"`
	StripePrice string `json:"stripe_price,omitempty"`
}

type limitJSON struct {
	Value     int64   `json:"value"`
	Overage   Overage `json:"overage"`
	UnitPrice float64 `json:"unit_price,omitempty"`
}

// toPlanDoc encodes p's prices, features and limits.
func toPlanDoc(p Plan) (planDoc, error) {
	prices := make([]priceJSON, len(p.Prices))
	for i, pr := range p.Prices {
		prices[i] = priceJSON(pr)
	}
	limits := make(map[string]limitJSON, len(p.Limits))
	for name, l := range p.Limits {
		limits[name] = limitJSON(l)
	}
	var d planDoc
	var err error
	if d.Prices, err = json.Marshal(prices); err == nil {
		if d.Features, err = json.Marshal(p.Features); err == nil {
			d.Limits, err = json.Marshal(limits)
		}
	}
	if err != nil {
		return planDoc{}, fmt.Errorf("encode plan: %w", err)
	}
	return d, nil
}

// audit is the plan as an audit event records it.
func (d planDoc) audit(name string) map[string]any {
	return map[string]any{"name": name, "prices": json.RawMessage(d.Prices), "features": json.RawMessage(d.Features), "limits": json.RawMessage(d.Limits)}
}

// toPlan converts a stored plan.
func toPlan(r db.BillingPlan) (Plan, error) {
	var prices []priceJSON
	var limits map[string]limitJSON
	p := Plan{ID: r.ID, Name: r.Name, Source: SourceAPI, ArchivedAt: store.UTC(r.ArchivedAt), Features: map[string]bool{}, Limits: map[string]Limit{}}
	err := json.Unmarshal(r.Prices, &prices)
	if err == nil {
		if err = json.Unmarshal(r.Features, &p.Features); err == nil {
			err = json.Unmarshal(r.Limits, &limits)
		}
	}
	if err != nil {
		return Plan{}, fmt.Errorf("decode plan %s: %w", r.ID, err)
	}
	for _, pr := range prices {
		p.Prices = append(p.Prices, Price(pr))
	}
	for name, l := range limits {
		p.Limits[name] = Limit(l)
	}
	return p, nil
}

// offer returns the plan with id for a new order of org, or why not (see Catalog.offer):
// an archived plan is offered to its subscribers only.
func (s *Service) offer(ctx context.Context, org uuid.UUID, id string) (Plan, string, error) {
	plans, current := s.Plans(), ""
	if p, ok := plans.Get(id); ok && p.ArchivedAt != nil {
		sub, err := s.Subscription(ctx, org)
		if err != nil {
			return Plan{}, "", err
		}
		current = sub.Plan
	}
	p, why := plans.offer(id, current)
	return p, why, nil
}
