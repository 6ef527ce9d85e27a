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

// AdminListPlans lists the plans of config and of the admin API to a platform admin,
// archived ones with archived=true.
func (s *Server) AdminListPlans(ctx context.Context, req api.AdminListPlansRequestObject) (api.AdminListPlansResponseObject, error) {
	b, err := s.adminBilling(ctx)
	if err != nil {
		return nil, err
	}
	catalog := b.Plans()
	plans := catalog.Offered()
	if orZero(req.Params.Archived) {
		plans = catalog.List()
	}
	out := api.AdminListPlans200JSONResponse{Data: make([]api.Plan, len(plans))}
	for i, p := range plans {
		out.Data[i] = toAPIPlan(catalog, p)
	}
	return out, nil
}

// AdminCreatePlan creates a plan (audited by the billing service).
func (s *Server) AdminCreatePlan(ctx context.Context, req api.AdminCreatePlanRequestObject) (api.AdminCreatePlanResponseObject, error) {
	b, err := s.adminBilling(ctx)
	if err != nil {
		return nil, err
	}
	p, err := b.CreatePlan(ctx, actor(ctx), toPlanInput(req.Body.Id, api.PlanFields{Name: req.Body.Name, Prices: req.Body.Prices,
		Features: req.Body.Features, Limits: req.Body.Limits}))
	if err != nil {
		return nil, err
	}
	return api.AdminCreatePlan201JSONResponse(toAPIPlan(b.Plans(), p)), nil
}

// AdminGetPlan returns one plan, archived or not.
func (s *Server) AdminGetPlan(ctx context.Context, req api.AdminGetPlanRequestObject) (api.AdminGetPlanResponseObject, error) {
	b, err := s.adminBilling(ctx)
	if err != nil {
		return nil, err
	}
	catalog := b.Plans()
	p, ok := catalog.Get(req.PlanId)
	if !ok {
		return nil, errs.E(errs.NotFound, "No plan with this id.")
	}
	return api.AdminGetPlan200JSONResponse(toAPIPlan(catalog, p)), nil
}

// AdminUpdatePlan changes a plan of the admin API (audited by the billing service).
func (s *Server) AdminUpdatePlan(ctx context.Context, req api.AdminUpdatePlanRequestObject) (api.AdminUpdatePlanResponseObject, error) {
	b, err := s.adminBilling(ctx)
	if err != nil {
		return nil, err
	}
	p, err := b.UpdatePlan(ctx, actor(ctx), req.PlanId, toPlanInput(req.PlanId, *req.Body))
	if err != nil {
		return nil, err
	}
	return api.AdminUpdatePlan200JSONResponse(toAPIPlan(b.Plans(), p)), nil
}

// AdminArchivePlan archives a plan of the admin API (audited by the billing service).
func (s *Server) AdminArchivePlan(ctx context.Context, req api.AdminArchivePlanRequestObject) (api.AdminArchivePlanResponseObject, error) {
	b, err := s.adminBilling(ctx)
	if err != nil {
		return nil, err
	}
	p, err := b.ArchivePlan(ctx, actor(ctx), req.PlanId)
	if err != nil {
		return nil, err
	}
	return api.AdminArchivePlan200JSONResponse(toAPIPlan(b.Plans(), p)), nil
}

// adminBilling returns the billing service to a platform admin.
func (s *Server) adminBilling(ctx context.Context) (*billing.Service, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	return s.billingService()
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

func toAPIPlan(catalog *billing.Catalog, p billing.Plan) api.Plan {
	out := api.Plan{Id: p.ID, Name: p.Name, Source: api.PlanSource(p.Source), Default: p.ID == catalog.Default().ID, ArchivedAt: p.ArchivedAt,
		Features: map[string]bool{}, Prices: make([]api.PlanPrice, len(p.Prices)), Limits: []api.PlanLimit{}}
	for f, on := range p.Features {
		out.Features[f] = on
	}
	for i, pr := range p.Prices {
		out.Prices[i] = api.PlanPrice{Interval: api.PlanPriceInterval(pr.Interval), Currency: api.PlanPriceCurrency(pr.Currency), Amount: pr.Amount}
		if pr.StripePrice != "" {
			out.Prices[i].StripePrice = &pr.StripePrice
		}
	}
	for _, name := range billing.LimitNames {
		if l, ok := p.Limits[name]; ok {
			out.Limits = append(out.Limits, api.PlanLimit{Name: api.PlanLimitName(name), Value: l.Value, Overage: api.PlanLimitOverage(l.Overage), UnitPrice: unitPrice(l)})
		}
	}
	return out
}

func toPlanInput(id string, in api.PlanFields) billing.PlanInput {
	out := billing.PlanInput{ID: id, Name: in.Name, Features: in.Features, Prices: make([]billing.Price, len(in.Prices)),
		Limits: make([]billing.NamedLimit, len(in.Limits))}
	for i, pr := range in.Prices {
		out.Prices[i] = billing.Price{Interval: string(pr.Interval), Currency: string(pr.Currency), Amount: pr.Amount, StripePrice: orZero(pr.StripePrice)}
	}
	for i, l := range in.Limits {
		out.Limits[i] = billing.NamedLimit{Name: string(l.Name), Limit: billing.Limit{Value: l.Value, Overage: billing.Overage(l.Overage), UnitPrice: orZero(l.UnitPrice)}}
	}
	return out
}

// unitPrice is a limit's overage price, only where it bills.
func unitPrice(l billing.Limit) *float64 {
	if l.Overage != billing.AllowAndBill {
		return nil
	}
	return &l.UnitPrice
}
