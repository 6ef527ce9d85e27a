package billing_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// alertBundle is a billing service sending quota alerts through a real notification
// center, and an org with an owner, an admin and a member.
type alertBundle struct {
	st                   *store.Store
	svc                  *billing.Service
	clock                *storetest.Clock
	pg                   *storetest.Proxy // between the service and PostgreSQL
	org                  uuid.UUID
	owner, admin, member uuid.UUID
}

const alertLimit = 1000

// setupAlerts builds the service over a real database and Redis. Plans: limited (the
// default: tokens alertLimit, block) and unlimited (no limits). The clock starts on
// 2026-12-07, so the default plan's period is December 2026.
func setupAlerts(t *testing.T) alertBundle {
	t.Helper()
	pg := storetest.NewProxy(t, storetest.PostgresAddr())
	st := storetest.NewBehind(t, pg)
	rdb, ks := storetest.Redis(t)
	clock := storetest.ClockAt(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
	plans := billing.NewCatalog([]billing.Plan{
		{ID: "limited", Name: "Limited", Limits: map[string]billing.Limit{billing.LimitTokens: {Value: alertLimit, Overage: billing.Block}}},
		{ID: "unlimited", Name: "Unlimited"},
	}, "limited")
	svc := billing.New(st, plans, billing.NewQuota(rdb, ks, time.Minute, clock.Now), time.Minute, time.Hour, clock.Now)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	center := notify.New(notify.Config{LongJob: time.Minute}, notify.Deps{
		Store: st, Jobs: jobs.NewRegistry(), Mailer: notify.LogMailer{Log: log}, Redis: rdb, Keyspace: ks, Log: log, Now: clock.Now,
	})
	t.Cleanup(func() { _ = center.Close() })
	svc.EnableAlerts(center, log)
	b := alertBundle{st: st, svc: svc, clock: clock, pg: pg, org: storetest.Org(t, st)}
	b.owner, b.admin, b.member = b.memberOf(t, b.org, "owner"), b.memberOf(t, b.org, "admin"), b.memberOf(t, b.org, "member")
	return b
}

// memberOf adds a new user to org with role.
func (b alertBundle) memberOf(t *testing.T, org uuid.UUID, role string) uuid.UUID {
	t.Helper()
	u := storetest.User(t, b.st, storetest.Org(t, b.st))
	if _, err := b.st.Pool.Exec(t.Context(), "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, $3)", org, u, role); err != nil {
		t.Fatalf("add member: %v", err)
	}
	return u
}

// spend runs n concurrent calls of org, each reserving and then using tokens, and waits
// for the alerts they sent. It returns how many were refused for the quota.
func (b alertBundle) spend(t *testing.T, org uuid.UUID, n, tokens int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for range n {
		wg.Go(func() {
			r, err := b.svc.Reserve(t.Context(), org, tokens)
			if qe := (*billing.QuotaError)(nil); errors.As(err, &qe) {
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			if err != nil {
				t.Errorf("reserve: %v", err)
				return
			}
			if err := r.Settle(t.Context(), tokens); err != nil {
				t.Errorf("settle: %v", err)
			}
		})
	}
	wg.Wait()
	b.svc.WaitAlerts()
	return refused
}

// alerts counts user's quota alerts by percent, in-app, and the emails queued for them.
func (b alertBundle) alerts(t *testing.T, user uuid.UUID) (inApp map[int]int, emails int) {
	t.Helper()
	ctx := context.Background()
	rows, err := b.st.Pool.Query(ctx, "SELECT (data->>'percent')::int FROM notifications WHERE user_id = $1 AND data->>'kind' = $2", user, billing.KindQuotaThreshold)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	inApp = map[int]int{}
	for rows.Next() {
		var p int
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		inApp[p]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.st.Pool.QueryRow(ctx, "SELECT count(*) FROM email_deliveries WHERE user_id = $1 AND template = $2", user, notify.TemplateNotification).Scan(&emails); err != nil {
		t.Fatal(err)
	}
	return inApp, emails
}

// expect checks each recipient got want (percent → count) in-app and as many emails.
func (b alertBundle) expect(t *testing.T, step string, want map[int]int) {
	t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	for _, u := range []uuid.UUID{b.owner, b.admin} {
		got, emails := b.alerts(t, u)
		if len(got) != len(want) || emails != total {
			t.Fatalf("%s: user %s got alerts %v and %d emails, want %v and %d", step, u, got, emails, want, total)
		}
		for p, n := range want {
			if got[p] != n {
				t.Fatalf("%s: user %s got alerts %v, want %v", step, u, got, want)
			}
		}
	}
	if got, emails := b.alerts(t, b.member); len(got) != 0 || emails != 0 {
		t.Fatalf("%s: a member who is neither owner nor admin got alerts %v and %d emails", step, got, emails)
	}
}

// TestQuotaAlertsOncePerThresholdAndPeriod crosses 80 % and then 100 % of the token limit
// with 50 concurrent calls each, then does it again in the next period: each owner and
// admin gets exactly one alert per threshold and period, in-app and by email; a plain
// member gets none.
func TestQuotaAlertsOncePerThresholdAndPeriod(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)

	// 700 then 50 × 4 = 900: past 80 % (800), short of 100 %.
	b.spend(t, b.org, 1, 700)
	b.expect(t, "below 80 %", map[int]int{})
	if refused := b.spend(t, b.org, 50, 4); refused != 0 {
		t.Fatalf("%d calls refused below the limit", refused)
	}
	b.expect(t, "past 80 %", map[int]int{80: 1})

	// 50 × 2 = 1000: exactly the limit; then calls are refused and alert nothing more.
	if refused := b.spend(t, b.org, 50, 2); refused != 0 {
		t.Fatalf("%d calls refused within the limit", refused)
	}
	b.expect(t, "at 100 %", map[int]int{80: 1, 100: 1})
	if refused := b.spend(t, b.org, 10, 1); refused != 10 {
		t.Fatalf("%d of 10 calls past the limit refused, want all", refused)
	}
	b.expect(t, "refused past 100 %", map[int]int{80: 1, 100: 1})

	var data map[string]any
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT data FROM notifications WHERE user_id = $1 AND data->>'percent' = '80'", b.owner).Scan(&data); err != nil {
		t.Fatal(err)
	}
	if data["limit_name"] != "tokens" || data["limit"] != float64(alertLimit) || data["used"].(float64) < 800 || data["resets_at"] != "2027-01-01T00:00:00Z" {
		t.Fatalf("80 %% alert data = %v", data)
	}

	// The next period counts from nothing and alerts again.
	b.clock.Advance(31 * 24 * time.Hour)
	b.spend(t, b.org, 50, 17) // 850
	b.expect(t, "next period past 80 %", map[int]int{80: 2, 100: 1})
}

// TestQuotaAlertsOnRefusal: under block, usage may stop short of 100 % (a call is refused
// when it could pass the limit): a call refused past 80 % sends the 100 % alert, once,
// saying a call was refused; a refusal below 80 % sends nothing.
func TestQuotaAlertsOnRefusal(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	if refused := b.spend(t, b.org, 1, 2*alertLimit); refused != 1 {
		t.Fatalf("a call asking twice the limit: %d refused", refused)
	}
	b.expect(t, "refused below 80 %", map[int]int{})
	b.spend(t, b.org, 1, 900)
	b.expect(t, "past 80 %", map[int]int{80: 1})
	if refused := b.spend(t, b.org, 20, 200); refused != 20 {
		t.Fatalf("%d of 20 calls that could pass the limit refused", refused)
	}
	b.expect(t, "refused past 80 %", map[int]int{80: 1, 100: 1})
	var body string
	var data map[string]any
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT body, data FROM notifications WHERE user_id = $1 AND data->>'percent' = '100'", b.owner).Scan(&body, &data); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(body, "A model call was refused") || data["used"] != float64(900) {
		t.Fatalf("100 %% alert on refusal: %q %v", body, data)
	}
	b.spend(t, b.org, 5, 200)
	b.expect(t, "refused again", map[int]int{80: 1, 100: 1})
}

// TestQuotaAlertsRetryAfterAFailedSend: a settle claims the 80 % alert while PostgreSQL
// is unreachable, so its send fails; settles within the claim's lease send nothing, and
// the first settle past it sends the alert, once.
func TestQuotaAlertsRetryAfterAFailedSend(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	b.spend(t, b.org, 1, 100) // caches the subscription, so reservations need no database
	b.pg.Cut()
	b.spend(t, b.org, 1, 750)
	b.pg.Restore()
	b.expect(t, "send failed", map[int]int{})
	b.spend(t, b.org, 5, 1)
	b.expect(t, "within the lease", map[int]int{})
	b.clock.Advance(2 * time.Minute)
	b.spend(t, b.org, 5, 1)
	b.expect(t, "past the lease", map[int]int{80: 1})
	b.clock.Advance(2 * time.Minute)
	b.spend(t, b.org, 5, 1)
	b.expect(t, "sent", map[int]int{80: 1})
}

// TestQuotaAlertsNeedALimit: an org whose plan has no token limit gets no alert however
// much it spends.
func TestQuotaAlertsNeedALimit(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	if _, err := b.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, b.org, billing.SetSubscription{Plan: "unlimited"}); err != nil {
		t.Fatal(err)
	}
	b.spend(t, b.org, 50, 100) // 5000: five times the limited plan's
	b.expect(t, "unlimited", map[int]int{})
}

// TestQuotaAlertsThroughTheGateway runs 50 concurrent callers of llm.Gateway (the offline
// dev provider, metered by the service), each calling until the quota refuses it: the
// usage passes 80 % on some call of some caller, and each owner and admin gets that
// alert once, and the 100 % one once (at the limit, or at the first refusal short of it).
func TestQuotaAlertsThroughTheGateway(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	g, err := llm.NewGateway(llm.GatewayConfig{
		Providers:        map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"})},
		Aliases:          map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}},
		Meter:            b.svc,
		DefaultMaxTokens: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := llm.WithOrg(t.Context(), b.org)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 100 {
				_, _, err := g.Chat(ctx, "default", request("hello", 8))
				if qe := (*billing.QuotaError)(nil); errors.As(err, &qe) {
					return
				}
				if err != nil {
					t.Errorf("chat: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.svc.WaitAlerts()
	e, err := b.svc.Entitlements(t.Context(), b.org)
	if err != nil {
		t.Fatal(err)
	}
	used := e.Limits[0].Used
	if used < alertLimit*8/10 || used > alertLimit {
		t.Fatalf("used %d of %d", used, alertLimit)
	}
	for _, u := range []uuid.UUID{b.owner, b.admin} {
		got, emails := b.alerts(t, u)
		if got[80] != 1 || got[100] != 1 || emails != 2 {
			t.Fatalf("used %d: user %s got alerts %v and %d emails", used, u, got, emails)
		}
	}
	if got, _ := b.alerts(t, b.member); len(got) != 0 {
		t.Fatalf("a member got alerts %v", got)
	}
}
