package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
)

// putOnPlan puts org on plan (with status, "" for active) as a platform admin.
func (b *bundle) putOnPlan(t *testing.T, org uuid.UUID, plan, status string) {
	t.Helper()
	admin, _ := b.signUpAdmin(t, "root-"+uuid.NewString()[:8]+"@example.com")
	body := map[string]any{"plan": plan}
	if status != "" {
		body["status"] = status
	}
	if res := b.call(t, "PUT", fmt.Sprintf("/v1/admin/orgs/%s/subscription", org), admin.AccessToken, body, nil); res.StatusCode != 200 {
		t.Fatalf("put org on %s: %d %s", plan, res.StatusCode, readAll(res))
	}
}

// limitReached requires res to be the capped plan's refusal on limit: 403
// plan_limit_reached naming the limit, its value and what the org has.
func limitReached(t *testing.T, res *http.Response, limit api.ProblemLimitName, value, used int64) {
	t.Helper()
	if res.StatusCode != 403 {
		t.Fatalf("status %d %s, want 403 plan_limit_reached", res.StatusCode, readAll(res))
	}
	p := decodeProblem(t, res)
	if p.Code != api.ErrorCode(errs.PlanLimitReached) || p.LimitName == nil || *p.LimitName != limit || p.Limit == nil || *p.Limit != value ||
		p.Used == nil || *p.Used != used || p.Reserved != nil || p.ResetsAt != nil || p.Detail == nil || !strings.Contains(*p.Detail, `plan "capped"`) {
		raw, _ := json.Marshal(p)
		t.Fatalf("problem %s, want plan_limit_reached on %s: limit %d, used %d", raw, limit, value, used)
	}
	if res.Header.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q on a count limit, which no wait lifts", res.Header.Get("Retry-After"))
	}
}

// TestPlanCountLimits: an org on a plan whose count limits block cannot pass its seats
// (members and open invitations), knowledge bases, documents or storage; the
// entitlements show what it has of each; a frozen org adds no document.
func TestPlanCountLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "owner@capped.example")
	org := b.org(t, owner, "Capped Co")
	b.putOnPlan(t, org, "capped", "")
	inOrg := []string{"Kiln-Org", org.String()}

	t.Run("Seats", func(t *testing.T) {
		// The owner and one invitation fill the two seats.
		b.invite(t, owner, org, "first@capped.example", "member")
		res := b.call(t, "POST", orgPath(org, "invitations"), owner.token, map[string]string{"email": "second@capped.example", "role": "member"}, nil)
		limitReached(t, res, api.ProblemLimitNameSeats, 2, 2)
		// Inviting the same address again replaces its invitation: no seat more.
		_, token := b.invite(t, owner, org, "first@capped.example", "admin")
		first := b.person(t, "first@capped.example")
		if res := b.accept(t, first, token); res.StatusCode != 200 {
			t.Fatalf("accept within the seats: %d %s", res.StatusCode, readAll(res))
		}
		if got := len(b.members(t, owner, org)); got != 2 {
			t.Fatalf("%d members, want 2", got)
		}
	})

	t.Run("KnowledgeBasesDocumentsStorage", func(t *testing.T) {
		var kb api.KnowledgeBase
		if res := b.call(t, "POST", "/v1/knowledge-bases", owner.token, map[string]any{"name": "Docs"}, &kb, inOrg...); res.StatusCode != 201 {
			t.Fatalf("create the one knowledge base: %d %s", res.StatusCode, readAll(res))
		}
		res := b.call(t, "POST", "/v1/knowledge-bases", owner.token, map[string]any{"name": "More"}, nil, inOrg...)
		limitReached(t, res, api.ProblemLimitNameKnowledgeBases, 1, 1)

		docs := "/v1/knowledge-bases/" + kb.Id.String() + "/documents"
		add := func(title, text string) *http.Response {
			return b.call(t, "POST", docs, owner.token, map[string]any{"title": title, "text": text, "external_id": title}, nil, inOrg...)
		}
		wantStatus(t, add("a", strings.Repeat("a", 30)), 202)
		limitReached(t, add("b", strings.Repeat("b", 40)), api.ProblemLimitNameStorageBytes, 64, 30)
		// Replacing a document counts only the bytes it adds.
		limitReached(t, add("a", strings.Repeat("c", 70)), api.ProblemLimitNameStorageBytes, 64, 30)
		wantStatus(t, add("a", strings.Repeat("c", 44)), 202)
		wantStatus(t, add("b", strings.Repeat("b", 20)), 202)
		limitReached(t, add("c", "c"), api.ProblemLimitNameDocuments, 2, 2)

		var ent api.Entitlements
		if res := b.call(t, "GET", orgPath(org, "entitlements"), owner.token, nil, &ent); res.StatusCode != 200 {
			t.Fatalf("entitlements: %d", res.StatusCode)
		}
		want := map[api.LimitUsageName]int64{api.LimitUsageNameSeats: 2, api.LimitUsageNameKnowledgeBases: 1, api.LimitUsageNameDocuments: 2, api.LimitUsageNameStorageBytes: 64}
		for _, l := range ent.Limits {
			if l.Name == api.LimitUsageNameRequestsPerMinute {
				if l.Used != nil {
					t.Errorf("requests_per_minute used %d, want none (a moving window)", *l.Used)
				}
				continue
			}
			if l.Used == nil || *l.Used != want[l.Name] {
				t.Errorf("%s used %v, want %d", l.Name, l.Used, want[l.Name])
			}
			delete(want, l.Name)
		}
		if len(want) != 0 {
			t.Errorf("entitlements lack %v", want)
		}
	})

	t.Run("FrozenAddsNoDocument", func(t *testing.T) {
		other := b.person(t, "frozen@capped.example")
		var kb api.KnowledgeBase
		if res := b.call(t, "POST", "/v1/knowledge-bases", other.token, map[string]any{"name": "Frozen"}, &kb); res.StatusCode != 201 {
			t.Fatalf("create: %d", res.StatusCode)
		}
		b.putOnPlan(t, other.personalOrg, "free", "frozen")
		res := b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/documents", other.token, map[string]any{"title": "t", "text": "text"}, nil)
		if res.StatusCode != 402 || decodeProblem(t, res).Code != api.ErrorCode(errs.PaymentRequired) {
			t.Fatalf("a frozen org's document: %d, want 402 payment_required", res.StatusCode)
		}
		b.putOnPlan(t, other.personalOrg, "free", "active")
		res = b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/documents", other.token, map[string]any{"title": "t", "text": "text"}, nil)
		wantStatus(t, res, 202)
	})
}

// TestPlanCountLimitsAcrossConcurrentCalls: concurrent creations against the last unit of
// a limit take it once, whichever connection they run on.
func TestPlanCountLimitsAcrossConcurrentCalls(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "race@capped.example")
	b.putOnPlan(t, owner.personalOrg, "capped", "")
	const callers = 12
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		byStatus = map[int]int{}
		start    = make(chan struct{})
	)
	for i := range callers {
		wg.Go(func() {
			<-start
			res := b.call(t, "POST", "/v1/knowledge-bases", owner.token, map[string]any{"name": fmt.Sprintf("kb %d", i)}, nil)
			mu.Lock()
			byStatus[res.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if byStatus[201] != 1 || byStatus[403] != callers-1 {
		t.Fatalf("statuses %v, want one 201 and %d 403", byStatus, callers-1)
	}
}

// TestPlanRequestsPerMinute: an org's plan's requests_per_minute limits its API keys and
// members together, listed as the "plan" item of the RateLimit headers, and a 429 past it.
// Its owner is alerted once at 80 % of the minute and once at the first refusal.
func TestPlanRequestsPerMinute(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.srv.llm.Billing.EnableAlerts(b.srv.notify, b.srv.log)
	owner := b.person(t, "rpm@capped.example")
	key := b.createKey(t, owner.token, []string{"kb:read"}).Key
	b.putOnPlan(t, owner.personalOrg, "capped", "")
	policy := regexp.MustCompile(`(^|, )"plan";q=30;w=60($|, )`)
	state := regexp.MustCompile(`(^|, )"plan";r=(\d+);t=\d+($|, )`)
	var last *http.Response
	for i := range 30 {
		credential := key
		if i%2 == 1 {
			credential = owner.token
		}
		last = b.call(t, "GET", "/v1/knowledge-bases", credential, nil, nil)
		if last.StatusCode != 200 {
			t.Fatalf("request %d within the plan's 30 a minute: %d %s", i+1, last.StatusCode, readAll(last))
		}
		if !policy.MatchString(last.Header.Get("RateLimit-Policy")) {
			t.Fatalf("RateLimit-Policy %q, want the plan's item", last.Header.Get("RateLimit-Policy"))
		}
	}
	if m := state.FindStringSubmatch(last.Header.Get("RateLimit")); m == nil || m[2] != "0" {
		t.Fatalf("RateLimit %q after 30 requests, want the plan's item with 0 left", last.Header.Get("RateLimit"))
	}
	b.srv.llm.Billing.WaitAlerts()
	if got := b.rateAlerts(t, owner.id); len(got) != 1 || got[80] != 1 {
		t.Fatalf("30 of 30 requests: the owner got the alerts %v, want one at 80 %%", got)
	}
	for i := range 5 {
		res := b.call(t, "GET", "/v1/knowledge-bases", key, nil, nil)
		if res.StatusCode != 429 || res.Header.Get("Retry-After") == "" || decodeProblem(t, res).Code != api.ErrorCode(errs.RateLimited) {
			t.Fatalf("request %d: %d (Retry-After %q), want 429 rate_limited", 31+i, res.StatusCode, res.Header.Get("Retry-After"))
		}
	}
	b.srv.llm.Billing.WaitAlerts()
	if got := b.rateAlerts(t, owner.id); len(got) != 2 || got[80] != 1 || got[100] != 1 {
		t.Fatalf("5 requests refused: the owner got the alerts %v, want one at 80 %% and one at 100 %%", got)
	}
	// Another org is not limited by it.
	if res := b.call(t, "GET", "/v1/knowledge-bases", b.signUp(t, "free@capped.example").AccessToken, nil, nil); res.StatusCode != 200 ||
		policy.MatchString(res.Header.Get("RateLimit-Policy")) {
		t.Fatalf("an org on the free plan: %d, RateLimit-Policy %q", res.StatusCode, res.Header.Get("RateLimit-Policy"))
	}
}

// rateAlerts counts user's requests_per_minute quota alerts by percent.
func (b *bundle) rateAlerts(t *testing.T, user uuid.UUID) map[int]int {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), "SELECT (data->>'percent')::int FROM notifications WHERE user_id = $1 AND data->>'kind' = $2 AND data->>'limit_name' = $3",
		user, billing.KindQuotaThreshold, billing.LimitRequestsPerMinute)
	if err != nil {
		t.Fatal(err)
	}
	percents, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for _, p := range percents {
		got[p]++
	}
	return got
}
