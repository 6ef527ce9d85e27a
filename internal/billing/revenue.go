package billing

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
)

// Amount is a sum of money in one currency, in minor units.
type Amount struct {
	Currency string
	Minor    int64
}

// Usage is what model calls used: calls, prompt and completion tokens, and what the
// providers charged (USD).
type Usage struct {
	Requests int64
	Tokens   int64
	CostUSD  float64
}

// PlanRevenue is a plan's line of the revenue report.
type PlanRevenue struct {
	Plan string
	// Orgs on the plan now.
	Orgs int64
	// Billed is what invoices issued in the range billed before tax, net of credit notes,
	// per currency.
	Billed                []Amount
	Invoices, CreditNotes int64
	Usage                 Usage
}

// OrgRevenue is an org's line of the revenue report.
type OrgRevenue struct {
	Org    uuid.UUID
	Name   string
	Plan   string
	Billed []Amount
	Usage  Usage
}

// Revenue is the revenue report of a time range.
type Revenue struct {
	From, To time.Time
	Plans    []PlanRevenue
	// Orgs are the orgs with usage or invoices in the range, most tokens first, at most
	// the limit asked for; OrgsTruncated says more had some.
	Orgs          []OrgRevenue
	OrgsTruncated bool
	// Subscriptions counts subscriptions by the status they read as now; orgs never put
	// on a plan count as active on the default plan.
	Subscriptions map[Status]int64
}

// MaxRevenueOrgs is the most orgs a revenue report lists.
const MaxRevenueOrgs = 1000

// Revenue reports what invoices billed and what model calls used in [from, to), per plan
// and per org (the orgLimit orgs that used the most tokens), with the subscriptions by
// status now. Usage counts under the plan each org is on now. Errors: invalid_request
// when to is not after from.
func (s *Service) Revenue(ctx context.Context, from, to time.Time, orgLimit int) (Revenue, error) {
	if !to.After(from) {
		return Revenue{}, errs.E(errs.Invalid, "to must be after from.")
	}
	orgLimit = min(max(orgLimit, 1), MaxRevenueOrgs)
	out := Revenue{From: from.UTC(), To: to.UTC(), Subscriptions: map[Status]int64{}}
	def := s.Plans().Default().ID
	byPlan := map[string]*PlanRevenue{}
	planOf := func(id string) *PlanRevenue {
		p, ok := byPlan[id]
		if !ok {
			p = &PlanRevenue{Plan: id, Billed: []Amount{}}
			byPlan[id] = p
		}
		return p
	}
	orgs, err := s.st.OrgsByPlan(ctx, def)
	if err != nil {
		return Revenue{}, fmt.Errorf("orgs by plan: %w", err)
	}
	for _, r := range orgs {
		planOf(r.PlanID).Orgs = r.Orgs
	}
	billed, err := s.st.RevenueByPlan(ctx, db.RevenueByPlanParams{FromAt: from, ToAt: to})
	if err != nil {
		return Revenue{}, fmt.Errorf("revenue by plan: %w", err)
	}
	for _, r := range billed {
		p := planOf(r.PlanID)
		p.Billed = append(p.Billed, Amount{Currency: r.Currency, Minor: r.BilledMinor})
		p.Invoices += r.Invoices
		p.CreditNotes += r.CreditNotes
	}
	used, err := s.st.UsageByPlan(ctx, db.UsageByPlanParams{DefaultPlan: def, FromAt: from, ToAt: to})
	if err != nil {
		return Revenue{}, fmt.Errorf("usage by plan: %w", err)
	}
	for _, r := range used {
		planOf(r.PlanID).Usage = Usage{Requests: r.Requests, Tokens: r.Tokens, CostUSD: r.CostUsd}
	}
	for _, id := range slices.Sorted(maps.Keys(byPlan)) {
		out.Plans = append(out.Plans, *byPlan[id])
	}

	ids, err := s.st.TopOrgsByUsage(ctx, db.TopOrgsByUsageParams{FromAt: from, ToAt: to, Lim: int32(orgLimit + 1)}) //nolint:gosec // at most MaxRevenueOrgs+1
	if err != nil {
		return Revenue{}, fmt.Errorf("top orgs: %w", err)
	}
	if len(ids) > orgLimit {
		ids, out.OrgsTruncated = ids[:orgLimit], true
	}
	out.Orgs = make([]OrgRevenue, len(ids))
	at := make(map[uuid.UUID]int, len(ids))
	for i, id := range ids {
		out.Orgs[i], at[id] = OrgRevenue{Org: id, Plan: def, Billed: []Amount{}}, i
	}
	if len(ids) > 0 {
		named, err := s.st.OrgsPlanAndName(ctx, db.OrgsPlanAndNameParams{DefaultPlan: def, OrgIds: ids})
		if err != nil {
			return Revenue{}, fmt.Errorf("orgs: %w", err)
		}
		for _, r := range named {
			o := &out.Orgs[at[r.ID]]
			o.Name, o.Plan = r.Name, r.PlanID
		}
		usage, err := s.st.UsageOfOrgs(ctx, db.UsageOfOrgsParams{OrgIds: ids, FromAt: from, ToAt: to})
		if err != nil {
			return Revenue{}, fmt.Errorf("usage of orgs: %w", err)
		}
		for _, r := range usage {
			out.Orgs[at[r.OrgID]].Usage = Usage{Requests: r.Requests, Tokens: r.Tokens, CostUSD: r.CostUsd}
		}
		rev, err := s.st.RevenueOfOrgs(ctx, db.RevenueOfOrgsParams{OrgIds: ids, FromAt: from, ToAt: to})
		if err != nil {
			return Revenue{}, fmt.Errorf("revenue of orgs: %w", err)
		}
		for _, r := range rev {
			o := &out.Orgs[at[r.OrgID]]
			o.Billed = append(o.Billed, Amount{Currency: r.Currency, Minor: r.BilledMinor})
		}
	}

	subs, err := s.st.SubscriptionsByStatus(ctx, db.SubscriptionsByStatusParams{Now: s.now(), GraceSeconds: s.grace.Seconds()})
	if err != nil {
		return Revenue{}, fmt.Errorf("subscriptions by status: %w", err)
	}
	for _, r := range subs {
		out.Subscriptions[Status(r.Status)] += r.Subscriptions
	}
	unsubscribed, err := s.st.CountOrgsWithoutSubscription(ctx)
	if err != nil {
		return Revenue{}, fmt.Errorf("orgs without subscription: %w", err)
	}
	out.Subscriptions[Active] += unsubscribed
	return out, nil
}
