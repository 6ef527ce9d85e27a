package server

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
)

// billingService returns the billing service, or not_ready when this server has none.
func (s *Server) billingService() (*billing.Service, error) {
	if s.llm.Billing == nil {
		return nil, errs.E(errs.NotReady, "Billing is not configured on this server.")
	}
	return s.llm.Billing, nil
}

// GetOrgSubscription returns the org's subscription to a member or the org's API key.
func (s *Server) GetOrgSubscription(ctx context.Context, req api.GetOrgSubscriptionRequestObject) (api.GetOrgSubscriptionResponseObject, error) {
	b, err := s.billingService()
	if err != nil {
		return nil, err
	}
	access, err := s.orgFor(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	sub, err := b.Subscription(ctx, access.OrgID)
	if err != nil {
		return nil, err
	}
	return api.GetOrgSubscription200JSONResponse(toAPISubscription(sub)), nil
}

// GetOrgEntitlements returns what the org's plan gives it, with what the org has used of each limit.
func (s *Server) GetOrgEntitlements(ctx context.Context, req api.GetOrgEntitlementsRequestObject) (api.GetOrgEntitlementsResponseObject, error) {
	b, err := s.billingService()
	if err != nil {
		return nil, err
	}
	access, err := s.orgFor(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	e, err := b.Entitlements(ctx, access.OrgID)
	if err != nil {
		return nil, err
	}
	out := api.GetOrgEntitlements200JSONResponse{Plan: e.Plan.ID, Status: api.SubscriptionStatus(e.Subscription.Status),
		Features: e.Features, Limits: make([]api.LimitUsage, len(e.Limits))}
	for i, l := range e.Limits {
		lu := api.LimitUsage{Name: api.LimitUsageName(l.Name), Value: l.Limit.Value, Overage: api.LimitUsageOverage(l.Limit.Overage), UnitPrice: unitPrice(l.Limit)}
		if l.Measured {
			lu.Used = &l.Used
		}
		if l.Name == billing.LimitTokens {
			lu.Reserved, lu.ResetsAt = &l.Reserved, &l.ResetsAt
		}
		out.Limits[i] = lu
	}
	return out, nil
}

// AdminListPlans lists the configured plans to a platform admin.
func (s *Server) AdminListPlans(ctx context.Context, _ api.AdminListPlansRequestObject) (api.AdminListPlansResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	b, err := s.billingService()
	if err != nil {
		return nil, err
	}
	plans := b.Plans().List()
	out := api.AdminListPlans200JSONResponse{Data: make([]api.Plan, len(plans))}
	for i, p := range plans {
		out.Data[i] = toAPIPlan(p)
	}
	return out, nil
}

// AdminSetOrgSubscription puts an org on a plan by hand (audited by the billing service).
func (s *Server) AdminSetOrgSubscription(ctx context.Context, req api.AdminSetOrgSubscriptionRequestObject) (api.AdminSetOrgSubscriptionResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	b, err := s.billingService()
	if err != nil {
		return nil, err
	}
	in := billing.SetSubscription{Plan: req.Body.Plan}
	if req.Body.Status != nil {
		in.Status = billing.Status(*req.Body.Status)
	}
	if req.Body.Interval != nil {
		in.Interval = string(*req.Body.Interval)
	}
	if req.Body.Currency != nil {
		in.Currency = string(*req.Body.Currency)
	}
	if req.Body.PeriodStart != nil {
		in.PeriodStart = *req.Body.PeriodStart
	}
	sub, err := b.Set(ctx, actor(ctx), req.Id, in)
	if err != nil {
		return nil, err
	}
	return api.AdminSetOrgSubscription200JSONResponse(toAPISubscription(sub)), nil
}

func toAPISubscription(sub billing.Subscription) api.Subscription {
	return api.Subscription{
		OrgId: sub.Org, Plan: sub.Plan, Status: api.SubscriptionStatus(sub.Status), Interval: api.SubscriptionInterval(sub.Interval),
		Currency: api.SubscriptionCurrency(sub.Currency), CurrentPeriodStart: sub.Period.Start.UTC().Truncate(time.Second),
		CurrentPeriodEnd: sub.Period.End.UTC().Truncate(time.Second), Provider: api.SubscriptionProvider(sub.Provider), Default: sub.Default,
		PastDueSince: sub.PastDueSince,
	}
}

func toAPIPlan(p billing.Plan) api.Plan {
	out := api.Plan{Id: p.ID, Name: p.Name, Features: map[string]bool{}, Prices: make([]api.PlanPrice, len(p.Prices)), Limits: []api.PlanLimit{}}
	for f, on := range p.Features {
		out.Features[f] = on
	}
	for i, pr := range p.Prices {
		out.Prices[i] = api.PlanPrice{Interval: api.PlanPriceInterval(pr.Interval), Currency: api.PlanPriceCurrency(pr.Currency), Amount: pr.Amount}
	}
	for _, name := range billing.LimitNames {
		if l, ok := p.Limits[name]; ok {
			out.Limits = append(out.Limits, api.PlanLimit{Name: api.PlanLimitName(name), Value: l.Value, Overage: api.PlanLimitOverage(l.Overage), UnitPrice: unitPrice(l)})
		}
	}
	return out
}

// unitPrice is a limit's overage price, only where it bills.
func unitPrice(l billing.Limit) *float32 {
	if l.Overage != billing.AllowAndBill {
		return nil
	}
	p := float32(l.UnitPrice)
	return &p
}
