package jobs_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// schedClock is a settable test clock shared by schedulers.
type schedClock struct{ t atomic.Pointer[time.Time] }

func newSchedClock(t time.Time) *schedClock {
	c := &schedClock{}
	c.set(t)
	return c
}
func (c *schedClock) now() time.Time      { return *c.t.Load() }
func (c *schedClock) set(t time.Time)     { c.t.Store(&t) }
func (c *schedClock) add(d time.Duration) { c.set(c.now().Add(d)) }
func schedLog() *slog.Logger              { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func schedSpec(name, cron string) jobs.ScheduleSpec {
	return jobs.ScheduleSpec{Name: name, Cron: cron, Kind: "test.echo", Payload: json.RawMessage(`{"text":"tick"}`)}
}

// scheduleSetup is a test bundle: a database, a registry, a clock, a scheduler and an
// admin acting on it.
type scheduleSetup struct {
	st    *store.Store
	reg   *jobs.Registry
	clock *schedClock
	sched *jobs.Scheduler
	admin audit.Actor
}

func setupSchedules(t *testing.T, start time.Time) scheduleSetup {
	t.Helper()
	st, reg, c := storetest.New(t), registry(), newSchedClock(start)
	return scheduleSetup{
		st: st, reg: reg, clock: c, sched: jobs.NewScheduler(st, reg, schedLog(), time.Second, c.now),
		admin: userActor(schedUser(t, st), "192.0.2.1"),
	}
}

// userActor is the user id acting from ip.
func userActor(id uuid.UUID, ip string) audit.Actor {
	return audit.Actor{Type: audit.ActorUser, ID: &id, IP: ip, UserAgent: "test"}
}

// schedUser creates a user with a personal org.
func schedUser(t testing.TB, st *store.Store) uuid.UUID {
	t.Helper()
	org, id := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if _, err := st.CreateOrg(t.Context(), db.CreateOrgParams{ID: org, Name: "org", Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateUser(t.Context(), db.CreateUserParams{
		ID: id, Email: id.String() + "@example.com", Name: "u", PersonalOrgID: org, Now: time.Now(),
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// runs returns the slot of every run created, oldest first, and checks the payload each
// carries.
func (s scheduleSetup) runs(t *testing.T) []string {
	t.Helper()
	rows, err := s.st.Pool.Query(context.Background(), "SELECT unique_key, payload->>'text' FROM jobs WHERE kind = 'test.echo' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var key, text string
		if err := rows.Scan(&key, &text); err != nil {
			t.Fatal(err)
		}
		if text != "tick" {
			t.Fatalf("run payload text = %q, want tick", text)
		}
		keys = append(keys, key[len("schedule:")+36+1:]) // schedule:<id>:<slot, RFC 3339>
	}
	return keys
}

func (s scheduleSetup) get(t *testing.T, name string) jobs.Schedule {
	t.Helper()
	all, err := s.sched.Schedules(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range all {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("no schedule %s", name)
	return jobs.Schedule{}
}

func TestSchedulerRunsEachSlotOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := setupSchedules(t, time.Date(2026, 12, 6, 12, 0, 30, 0, time.UTC))
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("every-minute", "* * * * *"), false); err != nil {
		t.Fatal(err)
	}
	// Two replicas, each with its own pool, ticking from four goroutines at once.
	replicas := []*jobs.Scheduler{
		s.sched,
		jobs.NewScheduler(store.New(storetest.Pool(t, s.st.Pool.Config().ConnString())), s.reg, schedLog(), time.Second, s.clock.now),
	}
	const minutes = 15
	var created atomic.Int64
	for m := 1; m <= minutes; m++ {
		s.clock.add(time.Minute)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				n, err := replicas[i%2].Tick(ctx)
				if err != nil {
					t.Error(err)
				}
				created.Add(int64(n))
			})
		}
		wg.Wait()
		if got := len(s.runs(t)); got != m {
			t.Fatalf("after minute %d: %d runs, want %d", m, got, m)
		}
	}
	if created.Load() != minutes {
		t.Fatalf("ticks reported %d runs, want %d", created.Load(), minutes)
	}
	runs := s.runs(t)
	for i, slot := range runs {
		want := time.Date(2026, 12, 6, 12, 1+i, 0, 0, time.UTC).Format(time.RFC3339)
		if slot != want {
			t.Fatalf("run %d is for slot %s, want %s", i, slot, want)
		}
	}
}

func TestSchedulerCoalescesMissedRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Date(2026, 12, 6, 12, 0, 30, 0, time.UTC)
	s := setupSchedules(t, start)
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("every-minute", "* * * * *"), false); err != nil {
		t.Fatal(err)
	}
	// Everything was down for ten minutes and a half: slots 12:01 … 12:10 were missed.
	s.clock.set(start.Add(10*time.Minute + 15*time.Second))
	n, err := s.sched.Tick(ctx)
	if err != nil || n != 1 {
		t.Fatalf("tick after the outage: %d runs, %v; want one run for every missed slot", n, err)
	}
	if runs := s.runs(t); len(runs) != 1 || runs[0] != "2026-12-06T12:01:00Z" {
		t.Fatalf("runs = %v, want one, for the first missed slot", runs)
	}
	sc := s.get(t, "every-minute")
	if want := time.Date(2026, 12, 6, 12, 11, 0, 0, time.UTC); !sc.NextRunAt.Equal(want) {
		t.Fatalf("next run at %s, want the first slot after now, %s", sc.NextRunAt, want)
	}
	if sc.LastRunAt == nil || sc.LastJobID == nil {
		t.Fatalf("last run not recorded: %+v", sc)
	}
	if n, _ := s.sched.Tick(ctx); n != 0 {
		t.Fatalf("a second tick in the same minute created %d runs", n)
	}
	s.clock.add(time.Minute)
	if n, _ := s.sched.Tick(ctx); n != 1 {
		t.Fatalf("the next slot created %d runs, want 1", n)
	}
}

func TestSchedulePauseResume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Date(2026, 12, 6, 12, 0, 30, 0, time.UTC)
	s := setupSchedules(t, start)
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("hourly", "@hourly"), false); err != nil {
		t.Fatal(err)
	}
	paused, err := s.sched.Pause(ctx, s.admin, "hourly")
	if err != nil || paused.PausedAt == nil {
		t.Fatalf("pause: %+v, %v", paused, err)
	}
	if got := jobs.NextRuns(paused, 3); len(got) != 0 {
		t.Fatalf("a paused schedule lists next runs %v", got)
	}
	s.clock.add(3 * time.Hour)
	if n, _ := s.sched.Tick(ctx); n != 0 || len(s.runs(t)) != 0 {
		t.Fatalf("a paused schedule created %d runs", n)
	}
	resumed, err := s.sched.Resume(ctx, s.admin, "hourly")
	if err != nil || resumed.PausedAt != nil {
		t.Fatalf("resume: %+v, %v", resumed, err)
	}
	// The slots of the pause are skipped: the next is the first after the resume.
	if want := time.Date(2026, 12, 6, 16, 0, 0, 0, time.UTC); !resumed.NextRunAt.Equal(want) {
		t.Fatalf("next run after resume %s, want %s", resumed.NextRunAt, want)
	}
	if n, _ := s.sched.Tick(ctx); n != 0 {
		t.Fatalf("resume ran the paused slots: %d runs", n)
	}
	next := jobs.NextRuns(resumed, 3)
	if len(next) != 3 || !next[2].Equal(time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)) {
		t.Fatalf("next runs = %v", next)
	}
	s.clock.add(time.Hour)
	if n, _ := s.sched.Tick(ctx); n != 1 {
		t.Fatalf("after resume: %d runs, want 1", n)
	}
	var actions []string
	rows, err := s.st.Pool.Query(ctx, "SELECT action FROM audit_events WHERE target_type = 'job_schedule' ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		_ = rows.Scan(&a)
		actions = append(actions, a)
	}
	if strings.Join(actions, ",") != "job_schedule.create,job_schedule.pause,job_schedule.resume" {
		t.Fatalf("audit actions = %v", actions)
	}
}

func TestScheduleErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := setupSchedules(t, time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	for name, tc := range map[string]struct {
		spec jobs.ScheduleSpec
		code errs.Code
	}{
		"ErrBadCron":      {schedSpec("a", "61 * * * *"), errs.Invalid},
		"ErrBadEvery":     {schedSpec("a", "@every soon"), errs.Invalid},
		"ErrBadTimezone":  {jobs.ScheduleSpec{Name: "a", Cron: "@daily", Kind: "test.echo", Timezone: "Mars/Olympus"}, errs.Invalid},
		"ErrUnknownKind":  {jobs.ScheduleSpec{Name: "a", Cron: "@daily", Kind: "test.nope"}, errs.Invalid},
		"ErrBadName":      {schedSpec("A B", "@daily"), errs.Invalid},
		"ErrBadPayload":   {jobs.ScheduleSpec{Name: "a", Cron: "@daily", Kind: "test.echo", Payload: json.RawMessage(`{`)}, errs.Invalid},
		"ErrTZInCronExpr": {schedSpec("a", "CRON_TZ=UTC 0 * * * *"), errs.Invalid},
	} {
		if _, err := s.sched.Create(ctx, s.admin, tc.spec, false); errs.CodeOf(err) != tc.code {
			t.Errorf("%s: err = %v, want %s", name, err, tc.code)
		}
	}
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("dup", "@daily"), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("dup", "@daily"), false); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("ErrDuplicate: err = %v, want conflict", err)
	}
	if _, err := s.sched.Pause(ctx, s.admin, "nope"); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("ErrNotFound: err = %v", err)
	}
	if err := s.sched.Delete(ctx, s.admin, "dup"); err != nil {
		t.Fatal(err)
	}
	if err := s.sched.Delete(ctx, s.admin, "dup"); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("delete twice: err = %v, want not_found", err)
	}
}

func TestScheduleTimezone(t *testing.T) {
	t.Parallel()
	sched, err := jobs.ParseCron("0 3 * * *", "Asia/Shanghai")
	if err != nil {
		t.Fatal(err)
	}
	// 03:00 in Shanghai (UTC+8) is 19:00 UTC the day before.
	got := sched.Next(time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC))
	if want := time.Date(2026, 12, 6, 19, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("next = %s, want %s", got.UTC(), want)
	}
}

func TestSyncConfigSchedules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := setupSchedules(t, time.Date(2026, 12, 6, 12, 0, 30, 0, time.UTC))
	if err := s.sched.SyncConfig(ctx, []jobs.ScheduleSpec{schedSpec("nightly", "0 3 * * *"), schedSpec("often", "*/5 * * * *")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.sched.Pause(ctx, s.admin, "nightly"); err != nil {
		t.Fatal(err)
	}
	if err := s.sched.Delete(ctx, s.admin, "nightly"); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("delete of a config schedule: err = %v, want conflict", err)
	}
	// Restarted with nightly moved to 04:00 and often gone.
	if err := s.sched.SyncConfig(ctx, []jobs.ScheduleSpec{schedSpec("nightly", "0 4 * * *")}); err != nil {
		t.Fatal(err)
	}
	all, err := s.sched.Schedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("schedules = %+v, want nightly only", all)
	}
	n := all[0]
	if n.Source != jobs.SourceConfig || n.PausedAt == nil || n.NextRunAt.Hour() != 4 {
		t.Fatalf("nightly = %+v: want source config, still paused, next at 04:00", n)
	}
	if _, err := s.sched.Create(ctx, s.admin, schedSpec("mine", "@daily"), false); err != nil {
		t.Fatal(err)
	}
	err = s.sched.SyncConfig(ctx, []jobs.ScheduleSpec{schedSpec("mine", "@hourly")})
	if err == nil || !strings.Contains(err.Error(), "jobs.schedules.mine") {
		t.Fatalf("config clashing with an API schedule: err = %v", err)
	}
	err = s.sched.SyncConfig(ctx, []jobs.ScheduleSpec{schedSpec("bad", "nope")})
	if err == nil || !strings.Contains(err.Error(), "jobs.schedules.bad") {
		t.Fatalf("invalid config schedule: err = %v", err)
	}
}
