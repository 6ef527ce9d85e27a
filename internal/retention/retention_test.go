package retention_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

const day = 24 * time.Hour

func ptr(n int) *int { return &n }

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if errs.CodeOf(err) != code {
		t.Fatalf("error %v, want %s", err, code)
	}
}

func count(t *testing.T, st *store.Store, query string, args ...any) int {
	t.Helper()
	var n int
	if err := st.Pool.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSettings(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	clock := storetest.NewClock()
	svc := retention.New(st, retention.Builtin, clock.Now)
	org := storetest.Org(t, st)
	ctx := t.Context()

	t.Run("Defaults", func(t *testing.T) {
		got, err := svc.Get(ctx, org)
		if err != nil {
			t.Fatal(err)
		}
		if got.Effective != retention.Builtin || got.UpdatedAt != nil || got.Settings != (retention.Settings{}) {
			t.Fatalf("Get = %+v, want the built-in defaults, never set", got)
		}
	})
	t.Run("SetAudited", func(t *testing.T) {
		got, err := svc.Set(ctx, org, retention.Settings{DeletedPrompts: ptr(3), Usage: ptr(400)}, audit.Actor{Type: audit.ActorSystem})
		if err != nil {
			t.Fatal(err)
		}
		want := retention.Builtin
		want.DeletedPrompts, want.Usage = 3, 400
		if got.Effective != want || got.UpdatedAt == nil || !got.UpdatedAt.Equal(clock.Now()) {
			t.Fatalf("Set = %+v, want effective %+v", got, want)
		}
		if n := count(t, st, "SELECT count(*) FROM audit_events WHERE org_id = $1 AND action = 'org.retention_update'", org); n != 1 {
			t.Fatalf("%d org.retention_update events, want 1", n)
		}
		again, err := svc.Get(ctx, org)
		if err != nil || again.Effective != want {
			t.Fatalf("Get after Set = %+v, %v", again, err)
		}
	})
	t.Run("ErrOutOfBounds", func(t *testing.T) {
		_, err := svc.Set(ctx, org, retention.Settings{FailedJobs: ptr(0), Usage: ptr(399)}, audit.Actor{})
		wantCode(t, err, errs.Invalid)
		var e *errs.Error
		if !errors.As(err, &e) || len(e.Fields) != 2 || e.Fields[0].Pointer != "/failed_jobs_days" || e.Fields[1].Pointer != "/usage_days" {
			t.Fatalf("fields of %v, want /failed_jobs_days and /usage_days", err)
		}
	})
}

// TestPurgePerOrg gives org a short retention of everything and org b none (the
// defaults), deletes and ends the same things in both, and checks that the purges, at
// the same instant, delete org a's only, and that a restore past a's window is refused.
func TestPurgePerOrg(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	clock := storetest.NewClock()
	ctx := context.Background()
	keep := retention.New(st, retention.Builtin, clock.Now)
	a, b := storetest.Org(t, st), storetest.Org(t, st)
	if _, err := keep.Set(ctx, a, retention.Settings{DeletedPrompts: ptr(2), DeletedConversations: ptr(2), FinishedJobs: ptr(1),
		FailedJobs: ptr(3), Usage: ptr(400)}, audit.Actor{}); err != nil {
		t.Fatal(err)
	}

	ps := prompts.New(st, clock.Now)
	cs := conversations.New(st, clock.Now)
	reg := jobs.NewRegistry()
	jobs.Register(reg, jobs.Kind{Name: "test.noop"}, func(context.Context, *jobs.Run, struct{}) (any, error) { return nil, nil })
	convs := map[uuid.UUID]uuid.UUID{}
	for _, org := range []uuid.UUID{a, b} {
		if _, _, err := ps.Create(ctx, org, "greeting", "", prompts.Draft{Messages: []prompts.Message{{Role: "system", Content: "Hi."}}}, audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		if err := ps.Delete(ctx, org, "greeting", audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		o := conversations.Owner{Org: org, User: new(storetest.User(t, st, org))}
		c, err := cs.Create(ctx, o, "hello", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.Delete(ctx, o, c.ID, audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		convs[org] = c.ID
		// A succeeded job ended 2 days ago, a failed one 4 days ago.
		for state, ended := range map[string]time.Duration{"succeeded": 2 * day, "failed": 4 * day} {
			j, err := reg.Enqueue(ctx, st.Queries, clock.Now().Add(-5*day), jobs.New{Kind: "test.noop", OrgID: &org, Payload: struct{}{}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Pool.Exec(ctx, "UPDATE jobs SET state = $2, finished_at = $3 WHERE id = $1", j.ID, state, clock.Now().Add(-ended)); err != nil {
				t.Fatal(err)
			}
		}
		// Usage of 401 days ago.
		if _, err := st.Pool.Exec(ctx, `INSERT INTO llm_usage (id, org_id, request_id, endpoint, alias, provider, model, status, error_code,
			prompt_tokens, completion_tokens, cached_tokens, cost_usd, latency_ms, cached, attempts, created_at)
			VALUES ($1, $2, 'r', 'chat', 'default', 'dev', 'dev', 'ok', '', 1, 1, 0, 0, 1, false, 1, $3)`,
			uuid.Must(uuid.NewV7()), org, clock.Now().Add(-401*day)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(3 * day)

	t.Run("ErrRestorePastWindow", func(t *testing.T) {
		_, err := ps.Restore(ctx, a, "greeting", nil, audit.Actor{})
		wantCode(t, err, errs.RetentionExpired)
		_, err = cs.Restore(ctx, conversations.Owner{Org: a}, convs[a], audit.Actor{})
		wantCode(t, err, errs.RetentionExpired)
	})

	purges := map[string]func(context.Context) (int64, error){
		"prompts":       ps.PurgeDeleted,
		"conversations": cs.PurgeDeleted,
		"jobs": func(ctx context.Context) (int64, error) {
			return jobs.PurgeFinished(ctx, st, clock.Now(), retention.Builtin)
		},
		"usage": keep.PurgeUsage,
	}
	// Org a: one of each, and both of its jobs (1 day for succeeded, 3 for failed).
	want := map[string]int64{"prompts": 1, "conversations": 1, "jobs": 2, "usage": 1}
	for name, purge := range purges {
		n, err := purge(ctx)
		if err != nil || n != want[name] {
			t.Errorf("purge %s = %d, %v; want %d", name, n, err, want[name])
		}
	}
	for _, table := range []string{"prompts", "conversations", "jobs", "llm_usage"} {
		if n := count(t, st, "SELECT count(*) FROM "+table+" WHERE org_id = $1", a); n != 0 {
			t.Errorf("org a keeps %d rows of %s, want 0", n, table)
		}
		wantB := 1
		if table == "jobs" {
			wantB = 2
		}
		if n := count(t, st, "SELECT count(*) FROM "+table+" WHERE org_id = $1", b); n != wantB {
			t.Errorf("org b keeps %d rows of %s, want %d", n, table, wantB)
		}
	}

	t.Run("RestoreWithinWindow", func(t *testing.T) {
		p, err := ps.Restore(ctx, b, "greeting", nil, audit.Actor{})
		if err != nil || p.Name != "greeting" || p.DeletedAt != nil {
			t.Fatalf("Restore = %+v, %v", p, err)
		}
		if _, err := ps.Get(ctx, b, "greeting"); err != nil {
			t.Fatalf("Get after Restore: %v", err)
		}
		_, err = ps.Restore(ctx, a, "greeting", nil, audit.Actor{}) // purged
		wantCode(t, err, errs.NotFound)
	})
}
