// Package billing holds an org to what it pays for: plans (from config and the admin
// API), each org's subscription, the entitlements they give, and the token quota every
// model call is reserved against.
package billing

import (
	"maps"
	"slices"
	"sort"
	"time"
)

// Overage is what happens to usage past a limit.
type Overage string

// The overage policies.
const (
	Block         Overage = "block"           // refuse (quota_exceeded)
	AllowAndBill  Overage = "allow_and_bill"  // allow, billed per unit past the limit
	AllowAndAlert Overage = "allow_and_alert" // allow, and alert the org
)

// The limits a plan may set.
const (
	LimitTokens            = "tokens" // per period, prompt and completion, across every model call
	LimitRequestsPerMinute = "requests_per_minute"
	LimitSeats             = "seats"
	LimitKnowledgeBases    = "knowledge_bases"
	LimitDocuments         = "documents"
	LimitStorageBytes      = "storage_bytes"
)

// LimitNames lists the limits in the order they are shown.
var LimitNames = []string{LimitTokens, LimitRequestsPerMinute, LimitSeats, LimitKnowledgeBases, LimitDocuments, LimitStorageBytes}

// Limit is one limit of a plan.
type Limit struct {
	Value     int64
	Overage   Overage
	UnitPrice float64 // minor units per unit past Value (AllowAndBill)
}

// Price is what a plan costs per interval in one currency, in minor units (cents, fen).
type Price struct {
	Interval string // month or year
	Currency string // USD or CNY
	Amount   int64
	// StripePrice is the id of the Stripe Price (price_…) a Stripe Checkout subscribes
	// to for this interval and currency; empty: not sold through Stripe.
	StripePrice string
}

// Where a plan comes from.
const (
	SourceConfig = "config" // billing.plans: read-only through the admin API
	SourceAPI    = "api"    // the admin API, stored in PostgreSQL
)

// Plan is a plan of the catalog.
type Plan struct {
	ID       string
	Name     string
	Prices   []Price // by interval, then currency
	Features map[string]bool
	Limits   map[string]Limit // absent: unlimited
	Source   string           // SourceConfig or SourceAPI
	// ArchivedAt is when the plan was archived (SourceAPI only), nil while it is offered:
	// an archived plan is offered to no new subscription, its subscribers keep it.
	ArchivedAt *time.Time
}

// Price returns the plan's price per interval in currency, in minor units.
func (p Plan) Price(interval, currency string) (int64, bool) {
	for _, pr := range p.Prices {
		if pr.Interval == interval && pr.Currency == currency {
			return pr.Amount, true
		}
	}
	return 0, false
}

// stripePrice returns the Stripe Price of the plan per interval in currency, "" when none.
func (p Plan) stripePrice(interval, currency string) string {
	for _, pr := range p.Prices {
		if pr.Interval == interval && pr.Currency == currency {
			return pr.StripePrice
		}
	}
	return ""
}

// Catalog is an immutable set of plans and the default one: config's, or config's and the
// admin API's (Service.Plans), swapped whole when the latter change, so that readers
// need no lock.
type Catalog struct {
	plans map[string]Plan
	def   string
}

// NewCatalog returns the catalog of config's plans with defaultPlan (which config
// validated to exist) for orgs without a subscription.
func NewCatalog(plans []Plan, defaultPlan string) *Catalog {
	c := &Catalog{plans: make(map[string]Plan, len(plans)), def: defaultPlan}
	for _, p := range plans {
		p.Source, p.ArchivedAt = SourceConfig, nil
		c.plans[p.ID] = sortPrices(p)
	}
	return c
}

// with returns a new catalog of c's plans and the API plans apis, which replace c's of
// the same id but never a config plan (the service refuses such ids).
func (c *Catalog) with(apis ...Plan) *Catalog {
	out := &Catalog{plans: make(map[string]Plan, len(c.plans)+len(apis)), def: c.def}
	maps.Copy(out.plans, c.plans)
	for _, p := range apis {
		if old, ok := c.plans[p.ID]; ok && old.Source == SourceConfig {
			continue
		}
		p.Source = SourceAPI
		out.plans[p.ID] = sortPrices(p)
	}
	return out
}

func sortPrices(p Plan) Plan {
	p.Prices = slices.Clone(p.Prices)
	sort.Slice(p.Prices, func(i, j int) bool {
		a, b := p.Prices[i], p.Prices[j]
		return a.Interval < b.Interval || a.Interval == b.Interval && a.Currency < b.Currency
	})
	return p
}

// List returns the plans sorted by id, archived ones too.
func (c *Catalog) List() []Plan {
	out := make([]Plan, 0, len(c.plans))
	for _, p := range c.plans {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Offered returns the plans offered to new subscriptions (not archived), sorted by id.
func (c *Catalog) Offered() []Plan {
	return slices.DeleteFunc(c.List(), func(p Plan) bool { return p.ArchivedAt != nil })
}

// Get returns the plan with id, archived or not.
func (c *Catalog) Get(id string) (Plan, bool) {
	p, ok := c.plans[id]
	return p, ok
}

// offer returns the plan with id for a new subscription or order of an org now on the
// plan current, or why not as the message of a field error: no such plan, or an archived
// one (offered to its own subscribers only).
func (c *Catalog) offer(id, current string) (Plan, string) {
	p, ok := c.plans[id]
	switch {
	case !ok:
		return Plan{}, "names no plan (GET /v1/admin/plans lists them)"
	case p.ArchivedAt != nil && id != current:
		return Plan{}, "names an archived plan, offered to no new subscription (its subscribers keep it)"
	}
	return p, ""
}

// byStripePrice returns the plan and interval whose Stripe Price is price.
func (c *Catalog) byStripePrice(price string) (plan, interval string, ok bool) {
	if price == "" {
		return "", "", false
	}
	for _, p := range c.plans {
		for _, pr := range p.Prices {
			if pr.StripePrice == price {
				return p.ID, pr.Interval, true
			}
		}
	}
	return "", "", false
}

// Default returns the plan of orgs without a subscription.
func (c *Catalog) Default() Plan { return c.plans[c.def] }

// planOf returns the plan with id, or the default one when the catalog no longer has it
// (a plan removed from config leaves its subscribers on the default plan, not unlimited).
func (c *Catalog) planOf(id string) Plan {
	if p, ok := c.plans[id]; ok {
		return p
	}
	return c.Default()
}

// WithFeature returns the id of the first plan offered (by id) that has feature, or ""
// when none has it: the plan a feature_not_in_plan error points to.
func (c *Catalog) WithFeature(feature string) string {
	for _, p := range c.Offered() {
		if p.Features[feature] {
			return p.ID
		}
	}
	return ""
}
