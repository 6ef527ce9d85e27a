package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TestPlanFeatureGate: an operation declared with x-kiln-feature answers only an org whose
// plan has the feature, for its users and its keys alike: 403 feature_not_in_plan naming
// the feature and a plan that has it, until the org is on that plan.
func TestPlanFeatureGate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin, _ := b.signUpAdmin(t, "root-feature@example.com")
	user := b.signUp(t, "feature@example.com").AccessToken
	key := b.createKey(t, user, []string{"chat"}).Key
	org := b.currentUser(t, user).PersonalOrgId
	for name, credential := range map[string]string{"User": user, "APIKey": key} {
		res := b.call(t, "GET", "/test/feature", credential, nil, nil)
		p := decodeProblem(t, res)
		if res.StatusCode != 403 || p.Code != api.ErrorCode(errs.FeatureNotInPlan) || p.Detail == nil ||
			!strings.Contains(*p.Detail, `"sso"`) || !strings.Contains(*p.Detail, `"team"`) {
			t.Fatalf("%s on the free plan: %d %+v, want feature_not_in_plan naming sso and team", name, res.StatusCode, p)
		}
	}
	if res := b.call(t, "PUT", fmt.Sprintf("/v1/admin/orgs/%s/subscription", org), admin.AccessToken, map[string]any{"plan": "team"}, nil); res.StatusCode != 200 {
		t.Fatalf("put on team: %d", res.StatusCode)
	}
	for name, credential := range map[string]string{"User": user, "APIKey": key} {
		if res := b.call(t, "GET", "/test/feature", credential, nil, nil); res.StatusCode != 200 {
			t.Errorf("%s on the team plan: %d %s", name, res.StatusCode, readAll(res))
		}
	}
}

// TestFeaturesActForAnOrg: the feature gate needs the org an operation acts for, so every
// operation declared with x-kiln-feature takes Kiln-Org.
func TestFeaturesActForAnOrg(t *testing.T) {
	t.Parallel()
	gated := 0
	for route, req := range requirements(testSpec(t)) {
		if req.feature == "" {
			continue
		}
		gated++
		if !req.org {
			t.Errorf("%s declares x-kiln-feature %q but takes no Kiln-Org: the gate would not run", route, req.feature)
		}
	}
	if gated == 0 {
		t.Fatal("no operation declares x-kiln-feature: the test op is gone")
	}
}
