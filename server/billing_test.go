package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
)

// TestBilling walks an org through its plans over HTTP: the default plan, an operator's
// plan change (audited), the token quota's refusal, freeze and the entitlements.
func TestBilling(t *testing.T) {
	t.Parallel()
	b := setup(t)
	adminPair, _ := b.signUpAdmin(t, "root@example.com")
	pair := b.signUp(t, "ada@example.com")
	org := b.currentUser(t, pair.AccessToken).PersonalOrgId
	subPath := fmt.Sprintf("/v1/orgs/%s/subscription", org)
	chat := func() int {
		t.Helper()
		body := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Hello, quota"}}, "max_tokens": 20}
		return b.call(t, "POST", "/v1/chat/completions", pair.AccessToken, body, nil).StatusCode
	}

	var sub api.Subscription
	if res := b.call(t, "GET", subPath, pair.AccessToken, nil, &sub); res.StatusCode != 200 || sub.Plan != "free" || !sub.Default {
		t.Fatalf("default subscription: %d %+v", res.StatusCode, sub)
	}
	if res := b.call(t, "GET", subPath, b.signUp(t, "eve@example.com").AccessToken, nil, nil); res.StatusCode != 404 {
		t.Errorf("another org's subscription: %d, want 404", res.StatusCode)
	}
	var plans api.PlanList
	if res := b.call(t, "GET", "/v1/admin/plans", adminPair.AccessToken, nil, &plans); res.StatusCode != 200 || len(plans.Data) != 4 || plans.Data[0].Id != "capped" || plans.Data[1].Id != "free" {
		t.Fatalf("plans: %d %+v", res.StatusCode, plans)
	}
	if res := b.call(t, "GET", "/v1/admin/plans", pair.AccessToken, nil, nil); res.StatusCode != 403 {
		t.Errorf("plans for a non-admin: %d, want 403", res.StatusCode)
	}
	adminPath := fmt.Sprintf("/v1/admin/orgs/%s/subscription", org)
	if res := b.call(t, "PUT", adminPath, adminPair.AccessToken, map[string]any{"plan": "gold"}, nil); res.StatusCode != 400 {
		t.Errorf("an unknown plan: %d, want 400", res.StatusCode)
	}

	// Tiny: 50 tokens; a call reserves its prompt bound plus 20, so two fit at most.
	if res := b.call(t, "PUT", adminPath, adminPair.AccessToken, map[string]any{"plan": "tiny"}, &sub); res.StatusCode != 200 || sub.Plan != "tiny" || sub.Default {
		t.Fatalf("put on tiny: %d %+v", res.StatusCode, sub)
	}
	if code := chat(); code != 200 {
		t.Fatalf("first call on tiny: %d", code)
	}
	var refused *api.Problem
	for range 3 {
		body := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Hello, quota"}}, "max_tokens": 20}
		res := b.call(t, "POST", "/v1/chat/completions", pair.AccessToken, body, nil)
		if res.StatusCode == 429 {
			p := decodeProblem(t, res)
			refused = &p
			if res.Header.Get("Retry-After") == "" {
				t.Error("quota_exceeded without Retry-After")
			}
			break
		}
	}
	if refused == nil || refused.Code != api.ErrorCode("quota_exceeded") || !strings.Contains(*refused.Detail, "limit of 50") {
		t.Fatalf("past tiny's limit: %+v", refused)
	}
	var ent api.Entitlements
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/entitlements", org), pair.AccessToken, nil, &ent); res.StatusCode != 200 {
		t.Fatalf("entitlements: %d", res.StatusCode)
	}
	if ent.Plan != "tiny" || len(ent.Limits) != 1 || ent.Limits[0].Used == nil || *ent.Limits[0].Used == 0 || *ent.Limits[0].Used > 50 || ent.Limits[0].ResetsAt == nil {
		t.Errorf("entitlements on tiny: %+v", ent)
	}

	// Frozen: model calls are 402, reads still work.
	if res := b.call(t, "PUT", adminPath, adminPair.AccessToken, map[string]any{"plan": "team", "status": "frozen", "currency": "CNY"}, &sub); res.StatusCode != 200 || sub.Status != api.SubscriptionFrozen {
		t.Fatalf("freeze: %d %+v", res.StatusCode, sub)
	}
	if code := chat(); code != 402 {
		t.Errorf("a frozen org's call: %d, want 402", code)
	}
	if res := b.call(t, "GET", subPath, pair.AccessToken, nil, &sub); res.StatusCode != 200 || sub.Status != api.SubscriptionFrozen || sub.Currency != api.SubscriptionCurrency("CNY") {
		t.Errorf("a frozen org's subscription: %d %+v", res.StatusCode, sub)
	}
	if res := b.call(t, "PUT", adminPath, adminPair.AccessToken, map[string]any{"plan": "team"}, nil); res.StatusCode != 200 {
		t.Fatalf("unfreeze: %d", res.StatusCode)
	}
	if code := chat(); code != 200 {
		t.Errorf("an unfrozen org's call: %d, want 200", code)
	}
	var events api.AuditEventList
	if res := b.call(t, "GET", fmt.Sprintf("/v1/orgs/%s/audit-events?action=billing.subscription_set", org), pair.AccessToken, nil, &events); res.StatusCode != 200 || len(events.Data) != 3 {
		t.Errorf("audit events: %d, %d events, want 3", res.StatusCode, len(events.Data))
	}
}
