package server

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/store"
)

// adminService is the admin package on the bundle's database, as `kiln admin` uses it.
func (b *bundle) adminService() *admin.Service {
	return admin.New(store.New(b.pool), time.Now)
}

// signUpAdmin creates an account and makes it a platform admin, as `kiln admin grant` does.
func (b *bundle) signUpAdmin(t testing.TB, email string) (api.TokenPair, uuid.UUID) {
	t.Helper()
	pair := b.signUp(t, email)
	u, err := b.adminService().Grant(t.Context(), email)
	if err != nil {
		t.Fatalf("grant %s: %v", email, err)
	}
	return pair, u.ID
}

// signUpNamed creates an account with a name of its own.
func (b *bundle) signUpNamed(t testing.TB, email, name string) api.TokenPair {
	t.Helper()
	var pair api.TokenPair
	res := b.call(t, "POST", "/v1/auth/signup", "", map[string]string{"email": email, "password": testPassword, "name": name}, &pair)
	if res.StatusCode != 201 {
		t.Fatalf("signup %s: %d %s", email, res.StatusCode, readAll(res))
	}
	return pair
}

// currentUser returns who credential belongs to, failing the test unless it works.
func (b *bundle) currentUser(t testing.TB, credential string) api.Me {
	t.Helper()
	var me api.Me
	if res := b.call(t, "GET", "/v1/me", credential, nil, &me); res.StatusCode != 200 {
		t.Fatalf("me: %d %s", res.StatusCode, readAll(res))
	}
	return me
}

// loginOK starts another session for email, failing the test unless it succeeds.
func (b *bundle) loginOK(t testing.TB, email string) api.TokenPair {
	t.Helper()
	var pair api.TokenPair
	if res := b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": testPassword}, &pair); res.StatusCode != 200 {
		t.Fatalf("login %s: %d %s", email, res.StatusCode, readAll(res))
	}
	return pair
}

// walkPages follows next_cursor from path (which has a query string) and returns every
// page's items, failing the test after 20 pages.
func walkPages[P, T any](t *testing.T, b *bundle, path, credential string, items func(P) ([]T, *string)) []T {
	t.Helper()
	var all []T
	p := path
	for range 20 {
		var page P
		if res := b.call(t, "GET", p, credential, nil, &page); res.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", p, res.StatusCode, readAll(res))
		}
		got, next := items(page)
		all = append(all, got...)
		if next == nil {
			return all
		}
		p = path + "&cursor=" + url.QueryEscape(*next)
	}
	t.Fatalf("GET %s: more than 20 pages", path)
	return nil
}

// TestAdminRequiresPlatformAdmin sends every admin operation of the spec as an ordinary
// user, as a platform admin whose grant was revoked, and with an API key: all are refused.
func TestAdminRequiresPlatformAdmin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user := b.signUp(t, "user@example.com")
	revoked, _ := b.signUpAdmin(t, "revoked@example.com")
	if res := b.call(t, "GET", "/v1/admin/users", revoked.AccessToken, nil, nil); res.StatusCode != 200 {
		t.Fatalf("admin before revoke: %d %s", res.StatusCode, readAll(res))
	}
	if _, err := b.adminService().Revoke(t.Context(), "revoked@example.com"); err != nil {
		t.Fatal(err)
	}
	key := b.createKey(t, user.AccessToken, []string{"admin"})
	victim := b.currentUser(t, user.AccessToken)

	spec, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	ops := 0
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if !slices.Contains(op.Tags, "admin") {
				continue
			}
			ops++
			target := strings.NewReplacer("{id}", victim.Id.String(), "{doc_id}", victim.Id.String(), "{key}", "chat.beta", "{name}", "default", "{order_id}", victim.Id.String(), "{invoice_id}", victim.Id.String(), "{plan_id}", "free").Replace(path)
			// Valid bodies, so that only the caller is refused.
			var body any
			if op.RequestBody != nil {
				body = map[string]map[string]any{
					"/v1/admin/feature-flags/{key}":          {"enabled": true},
					"/v1/admin/schedules":                    {"name": "nightly", "cron": "@daily", "kind": "housekeeping"},
					"/v1/admin/jobs/retry":                   {"all": true},
					"/v1/admin/jobs/discard":                 {"all": true},
					"/v1/admin/orgs/{id}/subscription":       {"plan": "tiny"},
					"/v1/admin/payments/{order_id}/refund":   {},
					"/v1/admin/invoices/{invoice_id}/status": {"status": "paid"},
					"/v1/admin/plans":                        {"id": "gold", "name": "Gold", "prices": []any{}, "features": map[string]bool{}, "limits": []any{}},
					"/v1/admin/plans/{plan_id}":              {"name": "Gold", "prices": []any{}, "features": map[string]bool{}, "limits": []any{}},
				}[path]
			}
			for name, credential := range map[string]string{"User": user.AccessToken, "RevokedAdmin": revoked.AccessToken, "APIKey": key.Key} {
				t.Run("Err"+name+"/"+method+" "+path, func(t *testing.T) {
					res := b.call(t, method, target, credential, body, nil)
					if p := decodeProblem(t, res); res.StatusCode != 403 || p.Code != api.ErrorCode(errs.PermissionDenied) {
						t.Fatalf("%s %s: %d %+v", method, target, res.StatusCode, p)
					}
				})
			}
		}
	}
	if ops != 35 {
		t.Errorf("%d admin operations in the spec, want 35: test the new ones in TestAdmin (billing's in TestBilling, plans' in TestAdminPlans, revenue and invoice status in TestInvoices, payments' in TestWeChatPay and TestAlipay, knowledge bases' in TestAdminKnowledgeBases)", ops)
	}
	// Nothing was done on the way to the refusals.
	if f, err := b.srv.flags.List(t.Context()); err != nil || len(f) != 0 {
		t.Errorf("flags after refused writes: %+v, %v", f, err)
	}
	b.currentUser(t, user.AccessToken) // not disabled
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root, rootID := b.signUpAdmin(t, "root@example.com")
	grace := b.signUpNamed(t, "grace@navy.example", "Grace Hopper")
	b.signUpNamed(t, "rate@example.com", "Rate 100%")
	victim := b.signUpNamed(t, "victim@example.com", "Victor Tim")
	victimMe := b.currentUser(t, victim.AccessToken)
	var acme api.OrgMembership
	if res := b.call(t, "POST", "/v1/orgs", grace.AccessToken, map[string]string{"name": "Acme Rockets"}, &acme); res.StatusCode != 201 {
		t.Fatalf("create org: %d", res.StatusCode)
	}
	newestFirst := []string{"victim@example.com", "rate@example.com", "grace@navy.example", "root@example.com"}

	t.Run("OKListUsers", func(t *testing.T) {
		var list api.AdminUserList
		if res := b.call(t, "GET", "/v1/admin/users", root.AccessToken, nil, &list); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, readAll(res))
		}
		var got []string
		for _, u := range list.Data {
			got = append(got, u.Email)
			if u.PlatformAdmin != (u.Id == rootID) || u.Disabled {
				t.Errorf("user %+v", u)
			}
		}
		if !slices.Equal(got, newestFirst) || list.NextCursor != nil {
			t.Fatalf("users %v (next %v), want %v", got, list.NextCursor, newestFirst)
		}
		paged := walkPages(t, b, "/v1/admin/users?limit=3", root.AccessToken,
			func(l api.AdminUserList) ([]string, *string) {
				var emails []string
				for _, u := range l.Data {
					emails = append(emails, u.Email)
				}
				return emails, l.NextCursor
			})
		if !slices.Equal(paged, newestFirst) {
			t.Errorf("pages of 3: %v, want %v", paged, newestFirst)
		}
	})
	t.Run("OKSearchUsers", func(t *testing.T) {
		for q, want := range map[string][]string{
			"NAVY":   {"grace@navy.example"},
			"hopper": {"grace@navy.example"},
			"%":      {"rate@example.com"}, // a literal percent sign, not a wildcard
			"_":      nil,                  // a literal underscore: nobody has one
			"tim":    {"victim@example.com"},
		} {
			var list api.AdminUserList
			if res := b.call(t, "GET", "/v1/admin/users?q="+url.QueryEscape(q), root.AccessToken, nil, &list); res.StatusCode != 200 {
				t.Fatalf("q=%q: %d", q, res.StatusCode)
			}
			var got []string
			for _, u := range list.Data {
				got = append(got, u.Email)
			}
			if !slices.Equal(got, want) {
				t.Errorf("q=%q: %v, want %v", q, got, want)
			}
		}
	})
	t.Run("ErrBadCursor", func(t *testing.T) {
		res := b.call(t, "GET", "/v1/admin/users?cursor=nope", root.AccessToken, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 400 || p.Errors == nil || (*p.Errors)[0].Pointer != "/query/cursor" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})

	t.Run("OKListOrgs", func(t *testing.T) {
		var found api.AdminOrgList
		if res := b.call(t, "GET", "/v1/admin/orgs?q=ROCKET", root.AccessToken, nil, &found); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, readAll(res))
		}
		if len(found.Data) != 1 || found.Data[0].Id != acme.Id || found.Data[0].Personal || found.Data[0].Name != "Acme Rockets" {
			t.Fatalf("q=ROCKET: %+v", found.Data)
		}
		paged := walkPages(t, b, "/v1/admin/orgs?limit=2", root.AccessToken,
			func(l api.AdminOrgList) ([]string, *string) {
				var names []string
				for _, o := range l.Data {
					names = append(names, o.Name)
				}
				return names, l.NextCursor
			})
		want := []string{"Acme Rockets", "Victor Tim's org", "Rate 100%'s org", "Grace Hopper's org", "Ada's org"}
		if !slices.Equal(paged, want) {
			t.Errorf("orgs %v, want %v", paged, want)
		}
	})

	t.Run("OKDisableEndsEverySessionAtOnce", func(t *testing.T) {
		laptop := b.loginOK(t, "victim@example.com")
		res := b.call(t, "POST", "/v1/admin/users/"+victimMe.Id.String()+"/disable", root.AccessToken, nil, nil)
		if res.StatusCode != 204 {
			t.Fatalf("disable: %d %s", res.StatusCode, readAll(res))
		}
		for name, pair := range map[string]api.TokenPair{"signup": victim, "laptop": laptop} {
			if res := b.call(t, "GET", "/v1/me", pair.AccessToken, nil, nil); res.StatusCode != 401 {
				t.Errorf("%s access token after disable: %d", name, res.StatusCode)
			}
			if res := b.call(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": pair.RefreshToken}, nil); res.StatusCode != 401 {
				t.Errorf("%s refresh after disable: %d", name, res.StatusCode)
			}
		}
		disabled := problemOf(t, b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "victim@example.com", "password": testPassword}, nil))
		unknown := problemOf(t, b.call(t, "POST", "/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": testPassword}, nil))
		if disabled != unknown {
			t.Errorf("login of a disabled user %s\ndiffers from an unknown email %s", disabled, unknown)
		}
		var list api.AdminUserList
		b.call(t, "GET", "/v1/admin/users?q=victim", root.AccessToken, nil, &list)
		if len(list.Data) != 1 || !list.Data[0].Disabled {
			t.Errorf("listed %+v, want victim disabled", list.Data)
		}
		b.currentUser(t, root.AccessToken) // the admin is unaffected
	})
	t.Run("OKEnable", func(t *testing.T) {
		if res := b.call(t, "POST", "/v1/admin/users/"+victimMe.Id.String()+"/enable", root.AccessToken, nil, nil); res.StatusCode != 204 {
			t.Fatalf("enable: %d %s", res.StatusCode, readAll(res))
		}
		b.currentUser(t, b.loginOK(t, "victim@example.com").AccessToken)
	})
	t.Run("ErrDisableSelf", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/admin/users/"+rootID.String()+"/disable", root.AccessToken, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 409 || p.Code != api.ErrorCode(errs.Conflict) {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
		b.currentUser(t, root.AccessToken)
	})
	t.Run("ErrUnknownUser", func(t *testing.T) {
		for _, action := range []string{"disable", "enable"} {
			res := b.call(t, "POST", "/v1/admin/users/"+uuid.NewString()+"/"+action, root.AccessToken, nil, nil)
			if p := decodeProblem(t, res); res.StatusCode != 404 || p.Code != api.ErrorCode(errs.NotFound) {
				t.Errorf("%s: %d %+v", action, res.StatusCode, p)
			}
		}
	})

	org := flags.Subject{OrgID: acme.Id}
	t.Run("OKFeatureFlagRoundTrip", func(t *testing.T) {
		const path = "/v1/admin/feature-flags/chat.beta"
		var put api.FeatureFlag
		if res := b.call(t, "PUT", path, root.AccessToken, map[string]any{"enabled": true, "description": "Beta chat"}, &put); res.StatusCode != 200 {
			t.Fatalf("put: %d %s", res.StatusCode, readAll(res))
		}
		want := api.FeatureFlag{Key: "chat.beta", Description: "Beta chat", Enabled: true, RolloutPercent: 100, StickyBy: api.FeatureFlagStickyByOrg}
		if put != want {
			t.Fatalf("put = %+v, want %+v", put, want)
		}
		if !b.srv.flags.Enabled(t.Context(), "chat.beta", org) {
			t.Error("flag on for everyone is off")
		}
		var got api.FeatureFlag
		if res := b.call(t, "GET", path, root.AccessToken, nil, &got); res.StatusCode != 200 || got != want {
			t.Errorf("get: %d %+v", res.StatusCode, got)
		}
		var list api.FeatureFlagList
		if res := b.call(t, "GET", "/v1/admin/feature-flags", root.AccessToken, nil, &list); res.StatusCode != 200 || len(list.Data) != 1 || list.Data[0] != want {
			t.Errorf("list: %d %+v", res.StatusCode, list)
		}

		if res := b.call(t, "PUT", path, root.AccessToken, map[string]any{"enabled": true, "rollout_percent": 0, "sticky_by": "user"}, &put); res.StatusCode != 200 {
			t.Fatalf("put again: %d %s", res.StatusCode, readAll(res))
		}
		if put.RolloutPercent != 0 || put.StickyBy != api.FeatureFlagStickyByUser || put.Description != "" {
			t.Errorf("put again = %+v: a put replaces the whole flag", put)
		}
		if b.srv.flags.Enabled(t.Context(), "chat.beta", org) {
			t.Error("flag rolled out to 0% is on")
		}

		if res := b.call(t, "PUT", path, root.AccessToken, map[string]any{"enabled": true, "rollout_percent": 101}, nil); res.StatusCode != 400 {
			t.Errorf("put rollout 101: %d", res.StatusCode)
		}
		if res := b.call(t, "DELETE", path, root.AccessToken, nil, nil); res.StatusCode != 204 {
			t.Fatalf("delete: %d %s", res.StatusCode, readAll(res))
		}
		if b.srv.flags.Enabled(t.Context(), "chat.beta", org) {
			t.Error("deleted flag is on")
		}
		for _, method := range []string{"GET", "DELETE"} {
			if res := b.call(t, method, path, root.AccessToken, nil, nil); res.StatusCode != 404 {
				t.Errorf("%s after delete: %d", method, res.StatusCode)
			}
		}
	})

	t.Run("OKAuditEvents", func(t *testing.T) {
		events := func(t *testing.T, query string) []api.AuditEvent {
			t.Helper()
			var list api.AuditEventList
			if res := b.call(t, "GET", "/v1/admin/audit-events?"+query, root.AccessToken, nil, &list); res.StatusCode != 200 {
				t.Fatalf("%s: %d %s", query, res.StatusCode, readAll(res))
			}
			return list.Data
		}
		puts := events(t, "action=admin.flag_put")
		if len(puts) != 2 {
			t.Fatalf("flag_put events %+v", puts)
		}
		newest, oldest := puts[0].Data, puts[1].Data
		if oldest["before"] != nil || jsonObject(oldest["after"])["enabled"] != true ||
			jsonObject(newest["before"])["rollout_percent"] != float64(100) || jsonObject(newest["after"])["rollout_percent"] != float64(0) {
			t.Errorf("flag_put data, newest first: %v; %v", newest, oldest)
		}
		for _, e := range puts {
			if e.ActorType != api.AuditEventActorTypeUser || e.ActorId == nil || *e.ActorId != rootID || e.TargetId != "chat.beta" || e.UserAgent != "kiln-test/1.0" {
				t.Errorf("event %+v", e)
			}
		}
		if del := events(t, "action=admin.flag_delete"); len(del) != 1 || jsonObject(del[0].Data["before"])["key"] != "chat.beta" {
			t.Errorf("flag_delete events %+v", del)
		}
		disables := events(t, "action=admin.user_disable&actor_id="+rootID.String())
		if len(disables) != 1 || disables[0].TargetId != victimMe.Id.String() || disables[0].Data["sessions"] != float64(2) {
			t.Errorf("user_disable events %+v", disables)
		}
		if enables := events(t, "action=admin.user_enable"); len(enables) != 1 || enables[0].TargetId != victimMe.Id.String() {
			t.Errorf("user_enable events %+v", enables)
		}
		if none := events(t, "action=admin.user_disable&actor_id="+victimMe.Id.String()); len(none) != 0 {
			t.Errorf("victim's disables %+v", none)
		}
		inAcme := events(t, "org_id="+acme.Id.String())
		if len(inAcme) != 1 || inAcme[0].Action != "org.create" {
			t.Errorf("acme's events %+v", inAcme)
		}
		paged := walkPages(t, b, "/v1/admin/audit-events?action=admin.flag_put&limit=1", root.AccessToken,
			func(l api.AuditEventList) ([]uuid.UUID, *string) {
				var ids []uuid.UUID
				for _, e := range l.Data {
					ids = append(ids, e.Id)
				}
				return ids, l.NextCursor
			})
		if !slices.Equal(paged, []uuid.UUID{puts[0].Id, puts[1].Id}) {
			t.Errorf("pages of 1: %v", paged)
		}
	})
}

func jsonObject(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}
