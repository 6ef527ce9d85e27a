package server

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TestAdminPlans drives plans through the admin API: created, listed with their source,
// subscribed to and seen in the org's entitlements; changed; archived (no new
// subscription, its subscriber keeps it); config plans read-only; bad input named per
// field; platform admins only; audited.
func TestAdminPlans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root, _ := b.signUpAdmin(t, "root@example.com")
	admin := root.AccessToken
	user := b.signUp(t, "ada@example.com")
	org := b.currentUser(t, user.AccessToken).PersonalOrgId
	gold := func() map[string]any {
		return map[string]any{"id": "gold", "name": "Gold", "features": map[string]bool{"reports": true},
			"prices": []map[string]any{{"interval": "month", "currency": "USD", "amount": 4900, "stripe_price": "price_gold_usd"}},
			"limits": []map[string]any{{"name": "tokens", "value": 2000, "overage": "allow_and_bill", "unit_price": 0.002}, {"name": "seats", "value": 3, "overage": "block"}}}
	}

	var p api.Plan
	if res := b.call(t, "POST", "/v1/admin/plans", admin, gold(), &p); res.StatusCode != 201 || p.Source != api.Api || p.Default ||
		len(p.Limits) != 2 || *p.Limits[0].UnitPrice != 0.002 || *p.Prices[0].StripePrice != "price_gold_usd" {
		t.Fatalf("create: %d %+v", res.StatusCode, p)
	}
	var list api.PlanList
	b.call(t, "GET", "/v1/admin/plans", admin, nil, &list)
	sources := map[string]api.PlanSource{}
	for _, p := range list.Data {
		sources[p.Id] = p.Source
		if p.Default != (p.Id == "free") {
			t.Errorf("%s default %v", p.Id, p.Default)
		}
	}
	if sources["gold"] != api.Api || sources["free"] != api.Config || len(sources) != 5 {
		t.Fatalf("list: %+v", list)
	}

	subPath := fmt.Sprintf("/v1/admin/orgs/%s/subscription", org)
	if res := b.call(t, "PUT", subPath, admin, map[string]any{"plan": "gold"}, nil); res.StatusCode != 200 {
		t.Fatalf("subscribe to gold: %d", res.StatusCode)
	}
	entPath := fmt.Sprintf("/v1/orgs/%s/entitlements", org)
	entitlements := func() (ent api.Entitlements) { // afresh: a reused one keeps absent fields
		b.call(t, "GET", entPath, user.AccessToken, nil, &ent)
		return ent
	}
	if ent := entitlements(); ent.Plan != "gold" || !ent.Features["reports"] || len(ent.Limits) != 2 || ent.Limits[0].Value != 2000 {
		t.Fatalf("entitlements on gold: %+v", ent)
	}

	// PUT replaces the plan; the subscriber has the new limits at once.
	body := gold()
	delete(body, "id")
	body["limits"] = []map[string]any{{"name": "tokens", "value": 10, "overage": "block"}}
	p = api.Plan{}
	if res := b.call(t, "PUT", "/v1/admin/plans/gold", admin, body, &p); res.StatusCode != 200 || len(p.Limits) != 1 || p.Limits[0].UnitPrice != nil {
		t.Fatalf("update: %d %+v", res.StatusCode, p)
	}
	if ent := entitlements(); len(ent.Limits) != 1 || ent.Limits[0].Value != 10 || ent.Limits[0].Overage != api.LimitUsageOverageBlock {
		t.Fatalf("entitlements after the update: %+v", ent)
	}
	chat := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Hello, gold"}}, "max_tokens": 20}
	if res := b.call(t, "POST", "/v1/chat/completions", user.AccessToken, chat, nil); res.StatusCode != 429 {
		t.Fatalf("a call past the new 10-token limit: %d", res.StatusCode)
	}

	// Archived: hidden unless asked for, no new subscription, the subscriber keeps it.
	p = api.Plan{}
	if res := b.call(t, "DELETE", "/v1/admin/plans/gold", admin, nil, &p); res.StatusCode != 200 || p.ArchivedAt == nil {
		t.Fatalf("archive: %d %+v", res.StatusCode, p)
	}
	b.call(t, "GET", "/v1/admin/plans", admin, nil, &list)
	if slices.ContainsFunc(list.Data, func(p api.Plan) bool { return p.Id == "gold" }) {
		t.Error("an archived plan listed without archived=true")
	}
	b.call(t, "GET", "/v1/admin/plans?archived=true", admin, nil, &list)
	if !slices.ContainsFunc(list.Data, func(p api.Plan) bool { return p.Id == "gold" && p.ArchivedAt != nil }) {
		t.Errorf("archived=true: %+v", list)
	}
	if res := b.call(t, "GET", "/v1/admin/plans/gold", admin, nil, &p); res.StatusCode != 200 || p.ArchivedAt == nil {
		t.Errorf("get archived: %d %+v", res.StatusCode, p)
	}
	other := b.currentUser(t, b.signUp(t, "eve@example.com").AccessToken).PersonalOrgId
	res := b.call(t, "PUT", fmt.Sprintf("/v1/admin/orgs/%s/subscription", other), admin, map[string]any{"plan": "gold"}, nil)
	if p := decodeProblem(t, res); res.StatusCode != 400 || p.Errors == nil || (*p.Errors)[0].Pointer != "/plan" {
		t.Fatalf("a new subscription to an archived plan: %d %+v", res.StatusCode, p)
	}
	if ent := entitlements(); ent.Plan != "gold" {
		t.Errorf("the subscriber lost its archived plan: %+v", ent)
	}

	// Config plans are read-only; their ids are taken.
	configBody := gold()
	configBody["id"] = "team"
	delete(body, "id")
	for _, c := range []struct {
		method, path string
		body         any
	}{{"POST", "/v1/admin/plans", configBody}, {"PUT", "/v1/admin/plans/team", body}, {"DELETE", "/v1/admin/plans/free", nil}} {
		res := b.call(t, c.method, c.path, admin, c.body, nil)
		if p := decodeProblem(t, res); res.StatusCode != 409 || p.Code != api.ErrorCode(errs.PlanFromConfig) {
			t.Errorf("%s %s: %d %+v", c.method, c.path, res.StatusCode, p)
		}
	}
	if res := b.call(t, "POST", "/v1/admin/plans", admin, gold(), nil); res.StatusCode != 409 || decodeProblem(t, res).Code != api.ErrorCode(errs.Conflict) {
		t.Errorf("gold again: %d", res.StatusCode)
	}
	if res := b.call(t, "GET", "/v1/admin/plans/nope", admin, nil, nil); res.StatusCode != 404 {
		t.Errorf("no plan: %d", res.StatusCode)
	}

	// Bad input, named per field (by the spec's validator or the service).
	for pointer, change := range map[string]func(map[string]any){
		"/limits/0/unit_price": func(m map[string]any) {
			m["limits"] = []map[string]any{{"name": "tokens", "value": 1, "overage": "allow_and_bill"}}
		},
		"/limits/1/name": func(m map[string]any) {
			m["limits"] = []map[string]any{{"name": "seats", "value": 1, "overage": "block"}, {"name": "seats", "value": 2, "overage": "block"}}
		},
		"/prices/0/stripe_price": func(m map[string]any) {
			m["prices"] = []map[string]any{{"interval": "month", "currency": "USD", "amount": 0, "stripe_price": "price_x"}}
		},
		"/features": func(m map[string]any) { m["features"] = map[string]bool{"Not A Name": true} },
		"/prices/0/currency": func(m map[string]any) {
			m["prices"] = []map[string]any{{"interval": "month", "currency": "EUR", "amount": 1}}
		},
		"/limits/0/value": func(m map[string]any) {
			m["limits"] = []map[string]any{{"name": "seats", "value": -1, "overage": "block"}}
		},
		"/id": func(m map[string]any) { m["id"] = "Gold Plan" },
	} {
		t.Run("Err"+pointer, func(t *testing.T) {
			in := gold()
			in["id"] = "silver"
			change(in)
			res := b.call(t, "POST", "/v1/admin/plans", admin, in, nil)
			p := decodeProblem(t, res)
			if res.StatusCode != 400 || p.Errors == nil || !slices.ContainsFunc(*p.Errors, func(f api.FieldError) bool { return f.Pointer == pointer }) {
				t.Fatalf("%d %+v %+v", res.StatusCode, p, p.Errors)
			}
		})
	}

	// Platform admins only.
	for _, c := range []struct{ method, path string }{{"GET", "/v1/admin/plans/gold"}, {"PUT", "/v1/admin/plans/gold"}, {"DELETE", "/v1/admin/plans/gold"}} {
		var in any
		if c.method == "PUT" {
			in = body
		}
		if res := b.call(t, c.method, c.path, user.AccessToken, in, nil); res.StatusCode != 403 {
			t.Errorf("%s %s as a user: %d", c.method, c.path, res.StatusCode)
		}
	}

	for action, want := range map[string]int{"plan.create": 1, "plan.update": 1, "plan.archive": 1} {
		var events api.AuditEventList
		b.call(t, "GET", "/v1/admin/audit-events?action="+action, admin, nil, &events)
		if len(events.Data) != want || events.Data[0].TargetId != "gold" || events.Data[0].TargetType != "plan" {
			t.Errorf("%s audit events: %+v", action, events.Data)
		}
	}
}
