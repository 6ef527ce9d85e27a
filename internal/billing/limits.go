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
// them. Only limits that block are enforced; a change that passes one is refused with
// plan_limit_reached (its Quota names the limit, its value and what the org has). The
// check takes a transaction-level lock per org, so two replicas adding at once cannot both
// take the last unit. A change that adds documents or storage is an ingestion: a frozen
// org is refused it with payment_required.
//
// With alerts on, a change that brings a limit (any overage policy) to 80 % or 100 %
// alerts the org's owners and admins in q's transaction, once per period, and a refusal
// past 80 % sends the 100 % alert; so uses of any limit the plan sets take the lock.
func (s *Service) Admit(ctx context.Context, q *db.Queries, org uuid.UUID, uses ...Use) error {
	sub, err := s.cached(ctx, org)
	if err == nil && ingests(uses) {
		sub, err = s.unfrozen(ctx, org, sub)
	}
	if err != nil {
		return err
	}
	plan := s.planFor(sub)
	var checked []Use
	for _, u := range uses {
		if l, ok := plan.Limits[u.Limit]; ok && u.Amount > 0 && (l.Overage == Block || s.alerts != nil) {
			checked = append(checked, u)
		}
	}
	if len(checked) == 0 {
		return nil
	}
	if err := q.LockOrgPlanLimits(ctx, org); err != nil {
		return fmt.Errorf("lock plan limits: %w", err)
	}
	has, err := s.counts(ctx, q, org)
	if err != nil {
		return err
	}
	c := Counter{Org: org, Period: sub.Period}
	for _, u := range checked {
		limit := plan.Limits[u.Limit]
		if used := has[u.Limit]; limit.Overage == Block && used+u.Amount > limit.Value {
			s.alerts.newWatch(c, plan, u.Limit).refused(ctx, used)
			return s.limitReached(plan, u, limit.Value, used)
		}
	}
	for _, u := range checked {
		if err := s.alerts.newWatch(c, plan, u.Limit).reached(ctx, q, has[u.Limit]+u.Amount); err != nil {
			return err
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
	what := limitWords[u.Limit].unit
	if u.Limit == LimitSeats {
		what += " (members and open invitations)"
	}
	more := ""
	if other := s.Plans().withMore(u.Limit, used+u.Amount); other != "" {
		more = fmt.Sprintf("; the plan %q allows more", other)
	}
	e := errs.E(errs.PlanLimitReached, "The org's plan %q allows %d %s and the org has %d: this would add %d%s.",
		plan.ID, limit, what, used, u.Amount, more)
	e.Quota = &errs.Quota{Name: u.Limit, Limit: limit, Used: used}
	return e
}

// withMore returns the id of the first plan offered (by id) whose limit name allows at
// least need (no limit, a higher one, or one that does not block), or "" when none does.
func (c *Catalog) withMore(name string, need int64) string {
	for _, p := range c.Offered() {
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

// RequestsSeen is what the API limiter saw of org's requests_per_minute after a request:
// used of the minute's allowance, or refused. It sends the 80 % alert when used reaches
// it and the 100 % one on a refusal, each once per period, off the request's path. It is
// on every limited request's path: below 80 % it reads only the replica's cache, and once
// this replica knows an alert was sent it asks nothing of Redis or PostgreSQL.
func (s *Service) RequestsSeen(ctx context.Context, org uuid.UUID, used int64, refused bool) {
	if s.alerts == nil {
		return
	}
	sub, err := s.cached(ctx, org)
	if err != nil {
		return // RequestsPerMinute, just before, logged it
	}
	w := s.alerts.newWatch(Counter{Org: org, Period: sub.Period}, s.planFor(sub), LimitRequestsPerMinute)
	if w == nil {
		return
	}
	if refused {
		used = w.limit.Value
	}
	var claimed []int
	for _, t := range w.thresholds {
		if used >= t.At && (t.Percent < 100 || refused) && w.claim(ctx, t.Percent) {
			claimed = append(claimed, t.Percent)
		}
	}
	if len(claimed) > 0 {
		w.claimed(ctx, used, claimed)
	}
}
