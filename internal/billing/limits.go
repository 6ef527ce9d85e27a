package billing

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
)

// Use is what a change adds to one of the plan's count limits (LimitSeats,
// LimitKnowledgeBases, LimitDocuments, LimitStorageBytes).
type Use struct {
	Limit  string
	Amount int64
}

// Admit checks, in the transaction q of the change that adds uses, that org's plan allows
// them. Only limits that block are checked; a change that passes one is refused with
// plan_limit_reached (its Quota names the limit, its value and what the org has). The
// check takes a transaction-level lock per org, so two replicas adding at once cannot both
// take the last unit. A change that adds documents or storage is an ingestion: a frozen
// org is refused it with payment_required.
func (s *Service) Admit(ctx context.Context, q *db.Queries, org uuid.UUID, uses ...Use) error {
	sub, err := s.cached(ctx, org)
	if err == nil && ingests(uses) {
		sub, err = s.unfrozen(ctx, org, sub)
	}
	if err != nil {
		return err
	}
	plan := s.planFor(sub)
	var enforced []Use
	for _, u := range uses {
		if l, ok := plan.Limits[u.Limit]; ok && l.Overage == Block && u.Amount > 0 {
			enforced = append(enforced, u)
		}
	}
	if len(enforced) == 0 {
		return nil
	}
	if err := q.LockOrgPlanLimits(ctx, org); err != nil {
		return fmt.Errorf("lock plan limits: %w", err)
	}
	has, err := s.counts(ctx, q, org)
	if err != nil {
		return err
	}
	for _, u := range enforced {
		limit := plan.Limits[u.Limit].Value
		if used := has[u.Limit]; used+u.Amount > limit {
			return s.limitReached(plan, u, limit, used)
		}
	}
	return nil
}

// ingests reports whether uses add documents or storage.
func ingests(uses []Use) bool {
	for _, u := range uses {
		if u.Limit == LimitDocuments || u.Limit == LimitStorageBytes {
			return true
		}
	}
	return false
}

// counts returns what org has of each count limit.
func (s *Service) counts(ctx context.Context, q *db.Queries, org uuid.UUID) (map[string]int64, error) {
	r, err := q.OrgPlanUsage(ctx, db.OrgPlanUsageParams{OrgID: org, Now: s.now()})
	if err != nil {
		return nil, fmt.Errorf("count plan usage: %w", err)
	}
	return map[string]int64{LimitSeats: r.Seats, LimitKnowledgeBases: r.KnowledgeBases, LimitDocuments: r.Documents,
		LimitStorageBytes: r.StorageBytes}, nil
}

// limitReached is the plan_limit_reached refusal of u, naming a plan that allows more.
func (s *Service) limitReached(plan Plan, u Use, limit, used int64) error {
	what := map[string]string{LimitSeats: "seats (members and open invitations)", LimitKnowledgeBases: "knowledge bases",
		LimitDocuments: "documents", LimitStorageBytes: "bytes of document text"}[u.Limit]
	more := ""
	if other := s.plans.withMore(u.Limit, used+u.Amount); other != "" {
		more = fmt.Sprintf("; the plan %q allows more", other)
	}
	e := errs.E(errs.PlanLimitReached, "The org's plan %q allows %d %s and the org has %d: this would add %d%s.",
		plan.ID, limit, what, used, u.Amount, more)
	e.Quota = &errs.Quota{Name: u.Limit, Limit: limit, Used: used}
	return e
}

// withMore returns the id of the first plan (by id) whose limit name allows at least
// need (no limit, a higher one, or one that does not block), or "" when none does.
func (c *Catalog) withMore(name string, need int64) string {
	for _, p := range c.List() {
		if l, ok := p.Limits[name]; !ok || l.Overage != Block || l.Value >= need {
			return p.ID
		}
	}
	return ""
}

// RequestsPerMinute returns the requests a minute org's plan allows when its
// requests_per_minute limit blocks, else 0 (no limit). It reads the subscription through
// the replica's cache: it is on every request's path.
func (s *Service) RequestsPerMinute(ctx context.Context, org uuid.UUID) (int64, error) {
	sub, err := s.cached(ctx, org)
	if err != nil {
		return 0, err
	}
	if l, ok := s.planFor(sub).Limits[LimitRequestsPerMinute]; ok && l.Overage == Block {
		return l.Value, nil
	}
	return 0, nil
}
