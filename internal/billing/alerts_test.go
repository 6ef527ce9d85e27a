package billing_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
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
	rd                   *storetest.Proxy // between the service and Redis
	logs                 *logtest.Buffer  // the service's warnings and errors
	org                  uuid.UUID
	owner, admin, member uuid.UUID
}

const alertLimit = 1000

// setupAlerts builds the service over a real database and Redis (each behind a proxy the
// test may cut). Plans: limited (the default: tokens alertLimit and 10 requests a minute,
// block; 10 seats and 10 knowledge bases, block; 10 documents, allow_and_alert; 1000
// bytes of storage, allow_and_bill), strict (1000 bytes of storage, block) and unlimited
// (no limits). The clock starts on
// 2026-12-07, so the default plan's period is December 2026.
func setupAlerts(t *testing.T) alertBundle {
	t.Helper()
	pg := storetest.NewProxy(t, storetest.PostgresAddr())
	st := storetest.NewBehind(t, pg)
	rd := storetest.NewProxy(t, storetest.RedisAddr())
	rdb, ks := storetest.RedisBehind(t, rd)
	clock := storetest.ClockAt(time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC))
	plans := billing.NewCatalog([]billing.Plan{
		{ID: "limited", Name: "Limited", Limits: map[string]billing.Limit{
			billing.LimitTokens: {Value: alertLimit, Overage: billing.Block}, billing.LimitRequestsPerMinute: {Value: 10, Overage: billing.Block},
			billing.LimitSeats: {Value: 10, Overage: billing.Block}, billing.LimitKnowledgeBases: {Value: 10, Overage: billing.Block},
			billing.LimitDocuments: {Value: 10, Overage: billing.AllowAndAlert}, billing.LimitStorageBytes: {Value: 1000, Overage: billing.AllowAndBill},
		}},
		{ID: "strict", Name: "Strict", Limits: map[string]billing.Limit{billing.LimitStorageBytes: {Value: 1000, Overage: billing.Block}}},
		{ID: "unlimited", Name: "Unlimited"},
	}, "limited")
	svc := billing.New(st, plans, billing.NewQuota(rdb, ks, time.Minute, clock.Now), time.Minute, time.Hour, clock.Now)
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	center := notify.New(notify.Config{LongJob: time.Minute}, notify.Deps{
		Store: st, Jobs: jobs.NewRegistry(), Mailer: notify.LogMailer{Log: log}, Redis: rdb, Keyspace: ks, Log: log, Now: clock.Now,
	})
	t.Cleanup(func() { _ = center.Close() })
	svc.EnableAlerts(center, log)
	b := alertBundle{st: st, svc: svc, clock: clock, pg: pg, rd: rd, logs: logs, org: storetest.Org(t, st)}
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

// errRollBack makes add's transaction roll back after its change.
var errRollBack = errors.New("rolled back by the test")

// add runs one change of org in a transaction: Admit u, then add what u counts (a member
// per seat, a knowledge base, a document of one byte, or one document of u.Amount bytes),
// then commit, or roll back when rollBack. It returns Admit's error.
func (b alertBundle) add(t *testing.T, org uuid.UUID, u billing.Use, rollBack bool) error {
	t.Helper()
	ctx := t.Context()
	var seat uuid.UUID
	if u.Limit == billing.LimitSeats {
		seat = storetest.User(t, b.st, storetest.Org(t, b.st))
	}
	err := pgx.BeginFunc(ctx, b.st.Pool, func(tx pgx.Tx) error {
		if err := b.svc.Admit(ctx, db.New(tx), org, u); err != nil {
			return err
		}
		var err error
		now, id := time.Now(), uuid.Must(uuid.NewV7())
		switch u.Limit {
		case billing.LimitSeats:
			_, err = tx.Exec(ctx, "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, 'member')", org, seat)
		case billing.LimitKnowledgeBases:
			_, err = insertKB(ctx, tx, org)
		default:
			var kb uuid.UUID
			if kb, err = insertKB(ctx, tx, org); err == nil {
				_, err = tx.Exec(ctx, `INSERT INTO kb_documents (id, org_id, kb_id, source, media_type, content, content_hash, bytes, status, created_at, updated_at)
					VALUES ($1, $2, $3, 'text', 'text/plain', 'x', '\x00', $4, 'ready', $5, $5)`, id, org, kb, max(u.Amount, 1), now)
			}
		}
		if err != nil {
			t.Errorf("add %s: %v", u.Limit, err)
			return err
		}
		if rollBack {
			return errRollBack
		}
		return nil
	})
	if errors.Is(err, errRollBack) {
		return nil
	}
	return err
}

// insertKB inserts a knowledge base of org in tx.
func insertKB(ctx context.Context, tx pgx.Tx, org uuid.UUID) (uuid.UUID, error) {
	id := uuid.Must(uuid.NewV7())
	_, err := tx.Exec(ctx, `INSERT INTO knowledge_bases (id, org_id, name, embedding_model, dimensions, chunk_max_tokens, chunk_overlap, created_at, updated_at)
		VALUES ($1, $2, 'kb', 'embed', 256, 256, 0, now(), now())`, id, org)
	return id, err
}

// adds runs n concurrent adds of u to org (add, committed), waits for the alerts they
// sent and returns how many were refused with plan_limit_reached.
func (b alertBundle) adds(t *testing.T, org uuid.UUID, n int, u billing.Use) int {
	t.Helper()
	var refused atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			err := b.add(t, org, u, false)
			switch {
			case errs.CodeOf(err) == errs.PlanLimitReached:
				refused.Add(1)
			case err != nil:
				t.Errorf("add %s: %v", u.Limit, err)
			}
		})
	}
	wg.Wait()
	b.svc.WaitAlerts()
	return int(refused.Load())
}

// alertData returns the data of user's alert of limit at percent.
func (b alertBundle) alertData(t *testing.T, user uuid.UUID, limit string, percent int) (body string, data map[string]any) {
	t.Helper()
	err := b.st.Pool.QueryRow(t.Context(), "SELECT body, data FROM notifications WHERE user_id = $1 AND data->>'limit_name' = $2 AND data->>'percent' = $3",
		user, limit, strconv.Itoa(percent)).Scan(&body, &data)
	if err != nil {
		t.Fatalf("the %s alert at %d %%: %v", limit, percent, err)
	}
	return body, data
}

// TestCountLimitAlerts: for each count limit, changes that bring the org's usage to 80 %
// and then past 100 % (or to the refusals at it, under block) alert each owner and admin
// once per threshold, in-app and by email, however many changes race past it; a change
// that rolls back alerts nothing; another org on the same plan is alerted for its own
// usage only; the next period alerts again.
func TestCountLimitAlerts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit  string
		amount int64 // per change
		had    int64 // before the first change: the bundle's three members are seats
		block  bool
	}{
		{billing.LimitSeats, 1, 3, true},
		{billing.LimitKnowledgeBases, 1, 0, true},
		{billing.LimitDocuments, 1, 0, false},      // allow_and_alert, 10
		{billing.LimitStorageBytes, 100, 0, false}, // allow_and_bill, 1000
	} {
		t.Run(tc.limit, func(t *testing.T) {
			t.Parallel()
			b := setupAlerts(t)
			u := billing.Use{Limit: tc.limit, Amount: tc.amount}
			// To 70 % (7 of 10), one change at a time.
			for range 7 - tc.had {
				if err := b.add(t, b.org, u, false); err != nil {
					t.Fatal(err)
				}
			}
			b.svc.WaitAlerts()
			b.expect(t, "at 70 %", map[int]int{})
			if err := b.add(t, b.org, u, true); err != nil {
				t.Fatal(err)
			}
			b.expect(t, "a change to 80 % rolled back", map[int]int{})

			other := storetest.Org(t, b.st)
			otherOwner := b.memberOf(t, other, "owner")
			if refused := b.adds(t, other, 5, u); refused != 0 {
				t.Fatalf("another org: %d of 5 changes refused", refused)
			}
			if got, _ := b.alerts(t, otherOwner); len(got) != 0 {
				t.Fatalf("another org below 80 %%: its owner got alerts %v", got)
			}

			// 30 racing changes: 80 % and 100 % reached (past it, or refused at it).
			want := 0
			if tc.block {
				want = 30 - 3
			}
			if refused := b.adds(t, b.org, 30, u); refused != want {
				t.Fatalf("%d of 30 changes refused, want %d", refused, want)
			}
			b.expect(t, "past 100 %", map[int]int{80: 1, 100: 1})
			b.adds(t, b.org, 10, u)
			b.expect(t, "again past 100 %", map[int]int{80: 1, 100: 1})
			_, data := b.alertData(t, b.owner, tc.limit, 80)
			if data["plan"] != "limited" || data["used"] != float64(8*tc.amount) || data["limit"] != float64(10*tc.amount) {
				t.Fatalf("80 %% alert of %s: %v", tc.limit, data)
			}
			if got, _ := b.alerts(t, otherOwner); len(got) != 0 {
				t.Fatalf("another org: its owner got the first org's alerts %v", got)
			}
			b.adds(t, other, 3, u)
			if got, _ := b.alerts(t, otherOwner); len(got) != 1 || got[80] != 1 {
				t.Fatalf("another org at 80 %%: its owner got alerts %v", got)
			}

			// The next period alerts again: a refusal at the limit, or a change past it.
			b.clock.Advance(31 * 24 * time.Hour)
			b.adds(t, b.org, 1, u)
			if tc.block {
				b.expect(t, "next period, refused", map[int]int{80: 1, 100: 2})
			} else {
				b.expect(t, "next period, past 100 %", map[int]int{80: 2, 100: 2})
			}
		})
	}
}

// TestCountLimitAlertOnRefusal: under block a change is refused when it would pass the
// limit, so usage may stop short of 100 %: a refusal past 80 % sends the 100 % alert,
// once, saying a change was refused; one below 80 % sends nothing.
func TestCountLimitAlertOnRefusal(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	if _, err := b.svc.Set(t.Context(), audit.Actor{Type: audit.ActorSystem}, b.org, billing.SetSubscription{Plan: "strict"}); err != nil {
		t.Fatal(err)
	}
	use := func(n int64) billing.Use { return billing.Use{Limit: billing.LimitStorageBytes, Amount: n} }
	if err := b.add(t, b.org, use(1001), false); errs.CodeOf(err) != errs.PlanLimitReached {
		t.Fatalf("a change past the limit: %v", err)
	}
	b.svc.WaitAlerts()
	b.expect(t, "refused below 80 %", map[int]int{})
	if err := b.add(t, b.org, use(850), false); err != nil {
		t.Fatal(err)
	}
	b.expect(t, "at 85 %", map[int]int{80: 1})
	if refused := b.adds(t, b.org, 20, use(200)); refused != 20 {
		t.Fatalf("%d of 20 changes past the limit refused", refused)
	}
	b.expect(t, "refused at 85 %", map[int]int{80: 1, 100: 1})
	body, data := b.alertData(t, b.owner, billing.LimitStorageBytes, 100)
	if !strings.HasPrefix(body, "A document was refused") || data["used"] != float64(850) || data["plan"] != "strict" {
		t.Fatalf("100 %% alert on refusal: %q %v", body, data)
	}
}

// TestRequestRateAlerts: the API limiter's view of requests_per_minute (10 a minute)
// sends the 80 % alert once 8 of the minute's requests are used, and the 100 % one on a
// refusal, each once per period however many requests race; once this replica sent them,
// it asks neither PostgreSQL nor Redis again (both cut, nothing fails); the next period
// alerts again.
func TestRequestRateAlerts(t *testing.T) {
	t.Parallel()
	b := setupAlerts(t)
	seen := func(n int, used int64, refused bool) {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { b.svc.RequestsSeen(t.Context(), b.org, used, refused) })
		}
		wg.Wait()
		b.svc.WaitAlerts()
	}
	seen(20, 7, false)
	b.expect(t, "at 70 %", map[int]int{})
	seen(50, 8, false)
	seen(50, 9, false)
	b.expect(t, "at 80 %", map[int]int{80: 1})
	seen(50, 10, false)
	b.expect(t, "the minute used up, none refused", map[int]int{80: 1})
	seen(50, 10, true)
	b.expect(t, "refused", map[int]int{80: 1, 100: 1})
	body, data := b.alertData(t, b.owner, billing.LimitRequestsPerMinute, 100)
	if !strings.HasPrefix(body, "Requests were refused") || data["used"] != float64(10) || data["limit"] != float64(10) {
		t.Fatalf("100 %% alert: %q %v", body, data)
	}

	b.logs.Reset()
	b.pg.Cut()
	b.rd.Cut()
	seen(100, 10, true)
	b.pg.Restore()
	b.rd.Restore()
	if logs := b.logs.String(); logs != "" {
		t.Fatalf("requests past the alerts sent went to PostgreSQL or Redis:\n%s", logs)
	}

	b.clock.Advance(31 * 24 * time.Hour)
	seen(50, 10, true)
	b.expect(t, "next period", map[int]int{80: 2, 100: 2})
}
