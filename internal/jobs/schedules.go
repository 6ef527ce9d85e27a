package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/robfig/cron/v3"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Where a schedule was defined.
const (
	SourceConfig = "config" // jobs.schedules in the configuration
	SourceAPI    = "api"    // the admin API
)

// Schedule is a cron schedule that creates a job of its kind at every slot.
//
// Missed runs are coalesced: when a replica finds a schedule due (its next slot has
// passed, perhaps many slots ago because every replica was down), it creates ONE job for
// all the slots missed and moves the schedule to the first slot after now. A paused
// schedule creates nothing; resumed, it starts at the first slot after the resume (the
// slots of the pause are skipped, not coalesced).
type Schedule struct {
	ID        uuid.UUID
	Name      string
	Source    string // SourceConfig or SourceAPI
	Cron      string
	Timezone  string
	Kind      string
	Payload   json.RawMessage
	NextRunAt time.Time  // the first slot not yet run
	PausedAt  *time.Time // nil: active
	LastRunAt *time.Time // the slot of the last run created
	LastJobID *uuid.UUID
	CreatedBy *uuid.UUID
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ScheduleSpec is a schedule to create or, from config, to keep in step.
type ScheduleSpec struct {
	Name     string
	Cron     string // five fields (minute hour day-of-month month day-of-week) or @hourly, @every 5m, …
	Timezone string // IANA name; empty: UTC
	Kind     string
	Payload  json.RawMessage // empty: {}
}

// event is an audit event of a change to targetType targetID.
func event(action, targetType, targetID string, data map[string]any) audit.Event {
	return audit.Event{Action: action, TargetType: targetType, TargetID: targetID, Data: data}
}

// maxScheduleRunsPerTick bounds one tick, so a backlog of schedules is spread over ticks
// (and replicas) instead of holding one replica.
const maxScheduleRunsPerTick = 100

// Scheduler creates the runs of due schedules as jobs and manages the schedules. Every
// replica runs one; each due slot becomes exactly one job whichever replica takes it.
type Scheduler struct {
	st       *store.Store
	reg      *Registry
	log      *slog.Logger
	now      func() time.Time
	interval time.Duration
}

// NewScheduler returns a scheduler creating jobs through reg; interval is how often it
// looks for due schedules (1 s when zero); now is the clock.
func NewScheduler(st *store.Store, reg *Registry, log *slog.Logger, interval time.Duration, now func() time.Time) *Scheduler {
	if interval <= 0 {
		interval = time.Second
	}
	return &Scheduler{st: st, reg: reg, log: log, now: now, interval: interval}
}

var scheduleNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// cronParser reads five-field expressions and the @ descriptors (@every rounds down to
// whole seconds, one at least: the scheduler's tick).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a five-field cron expression or a descriptor (@daily, @every 10m)
// in the IANA time zone tz (UTC when empty). Errors: invalid_request naming what is wrong.
func ParseCron(expr, tz string) (cron.Schedule, error) {
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil || tz == "Local" {
		return nil, errs.E(errs.Invalid, "Unknown time zone %q: use an IANA name such as Europe/Paris.", tz)
	}
	expr = strings.TrimSpace(expr)
	if strings.Contains(expr, "TZ=") {
		return nil, errs.E(errs.Invalid, "Give the time zone in timezone, not in the cron expression.")
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return nil, errs.E(errs.Invalid, "Invalid cron expression %q: %v.", expr, err)
	}
	if spec, ok := sched.(*cron.SpecSchedule); ok {
		spec.Location = loc
	}
	return sched, nil
}

// validate checks a spec against the registry and returns its parsed cron and payload.
func (s *Scheduler) validate(spec ScheduleSpec) (cron.Schedule, []byte, error) {
	if !scheduleNameRE.MatchString(spec.Name) {
		return nil, nil, errs.E(errs.Invalid, "Invalid schedule name %q: lower-case letters, digits, '.', '_' and '-', at most 64.", spec.Name)
	}
	if _, ok := s.reg.Kind(spec.Kind); !ok {
		return nil, nil, errs.E(errs.Invalid, "Unknown job kind %q (known: %s).", spec.Kind, strings.Join(s.reg.Names(), ", "))
	}
	sched, err := ParseCron(spec.Cron, spec.Timezone)
	if err != nil {
		return nil, nil, err
	}
	payload := []byte(spec.Payload)
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	if !json.Valid(payload) {
		return nil, nil, errs.E(errs.Invalid, "The payload of schedule %s is not JSON.", spec.Name)
	}
	return sched, payload, nil
}

func tzOrUTC(tz string) string {
	if tz == "" {
		return "UTC"
	}
	return tz
}

// SyncConfig makes the config's schedules the stored ones of source config: new ones are
// created, changed ones updated (a changed cron or time zone moves the next run; a pause
// stays), and those no longer in config deleted. A name already taken by an API schedule
// is an error, as is an invalid spec (naming the schedule).
func (s *Scheduler) SyncConfig(ctx context.Context, specs []ScheduleSpec) error {
	now := s.now()
	names := make([]string, 0, len(specs))
	return s.st.InTx(ctx, func(q *db.Queries) error {
		for _, spec := range specs {
			sched, payload, err := s.validate(spec)
			if err != nil {
				return fmt.Errorf("jobs.schedules.%s: %w", spec.Name, err)
			}
			_, err = q.UpsertConfigJobSchedule(ctx, db.UpsertConfigJobScheduleParams{
				ID: uuid.Must(uuid.NewV7()), Name: spec.Name, Cron: spec.Cron, Timezone: tzOrUTC(spec.Timezone),
				Kind: spec.Kind, Payload: payload, NextRunAt: sched.Next(now), CreatedAt: now,
			})
			if errs.CodeOf(store.Translate(err)) == errs.NotFound { // the WHERE refused: an API schedule
				return fmt.Errorf("jobs.schedules.%s: a schedule of that name was created through the admin API; delete it there or rename this one", spec.Name)
			}
			if err != nil {
				return fmt.Errorf("store schedule %s: %w", spec.Name, err)
			}
			names = append(names, spec.Name)
		}
		if _, err := q.DeleteStaleConfigJobSchedules(ctx, names); err != nil {
			return fmt.Errorf("delete schedules no longer configured: %w", err)
		}
		return nil
	})
}

// Run creates the runs of due schedules every interval until ctx is done.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.ErrorContext(ctx, "schedule tick failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick creates one job for each due schedule (coalescing missed slots) and returns how
// many it created. Each schedule is claimed, run and advanced in a transaction of its
// own, so a replica never waits for another, and a slot another replica has taken is
// never taken again.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	created := 0
	for range maxScheduleRunsPerTick {
		ran, err := s.runOne(ctx)
		if err != nil || !ran {
			return created, err
		}
		created++
	}
	return created, nil
}

// errNoneDue ends runOne's transaction when no schedule is due.
var errNoneDue = errors.New("no schedule due")

// runOne claims one due schedule, creates its run and advances it; false when none is due.
func (s *Scheduler) runOne(ctx context.Context) (bool, error) {
	now := s.now()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.ClaimDueJobSchedule(ctx, now)
		if err != nil {
			if errs.CodeOf(store.Translate(err)) == errs.NotFound {
				return errNoneDue
			}
			return fmt.Errorf("claim due schedule: %w", err)
		}
		slot := row.NextRunAt
		sched, err := ParseCron(row.Cron, row.Timezone)
		if err != nil { // stored schedules were validated; a change of the parser could still refuse one
			s.log.ErrorContext(ctx, "schedule cannot be parsed; paused", "schedule", row.Name, "error", err)
			_, err = q.PauseJobSchedule(ctx, db.PauseJobScheduleParams{Now: now, Name: row.Name})
			return err
		}
		next := sched.Next(now)
		advance := db.AdvanceJobScheduleParams{ID: row.ID, NextRunAt: next, LastRunAt: row.LastRunAt, LastJobID: row.LastJobID, Now: now}
		if _, known := s.reg.Kind(row.Kind); known {
			// The key makes a slot one job even if a schedule's row were ever read twice.
			j, err := s.reg.Enqueue(ctx, q, now, New{
				Kind: row.Kind, Payload: json.RawMessage(row.Payload),
				UniqueKey: "schedule:" + row.ID.String() + ":" + slot.UTC().Format(time.RFC3339),
			})
			if err != nil {
				return fmt.Errorf("create run of schedule %s: %w", row.Name, err)
			}
			advance.LastRunAt, advance.LastJobID = &slot, uuid.NullUUID{UUID: j.ID, Valid: true}
			if missed := slotsBetween(sched, slot, now); missed > 1 {
				s.log.InfoContext(ctx, "missed schedule runs coalesced into one", "schedule", row.Name, "slots", missed, "job_id", j.ID)
			}
		} else { // the kind is gone from this build (an API schedule outlived it): skip the slot, keep the schedule
			s.log.ErrorContext(ctx, "schedule of an unknown job kind skipped a run", "schedule", row.Name, "kind", row.Kind)
		}
		if err := q.AdvanceJobSchedule(ctx, advance); err != nil {
			return fmt.Errorf("advance schedule %s: %w", row.Name, err)
		}
		return nil
	})
	if errors.Is(err, errNoneDue) {
		return false, nil
	}
	return err == nil, err
}

// slotsBetween counts the slots from first to now (first included), up to 1000.
func slotsBetween(sched cron.Schedule, first, now time.Time) int {
	n := 0
	for t := first; !t.After(now) && n < 1000; t = sched.Next(t) {
		n++
	}
	return n
}

// Schedules lists every schedule by name.
func (s *Scheduler) Schedules(ctx context.Context) ([]Schedule, error) {
	rows, err := s.st.ListJobSchedules(ctx)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", store.Translate(err))
	}
	out := make([]Schedule, len(rows))
	for i, r := range rows {
		out[i] = toSchedule(r)
	}
	return out, nil
}

// NextRuns returns the next n slots of sc after its next run (included); none while paused.
func NextRuns(sc Schedule, n int) []time.Time {
	if sc.PausedAt != nil {
		return []time.Time{}
	}
	sched, err := ParseCron(sc.Cron, sc.Timezone)
	if err != nil {
		return []time.Time{}
	}
	out := make([]time.Time, 0, n)
	for t := sc.NextRunAt; len(out) < n; t = sched.Next(t) {
		out = append(out, t.UTC())
	}
	return out
}

// Create adds a schedule on behalf of by; paused creates it paused. Audited as
// job_schedule.create. Errors: invalid_request (name, cron, time zone, kind, payload);
// conflict when the name is taken.
func (s *Scheduler) Create(ctx context.Context, by audit.Actor, spec ScheduleSpec, paused bool) (Schedule, error) {
	sched, payload, err := s.validate(spec)
	if err != nil {
		return Schedule{}, err
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	now := s.now()
	var out Schedule
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		var pausedAt *time.Time
		if paused {
			pausedAt = &now
		}
		row, err := q.CreateJobSchedule(ctx, db.CreateJobScheduleParams{
			ID: uuid.Must(uuid.NewV7()), Name: spec.Name, Source: SourceAPI, Cron: spec.Cron, Timezone: tzOrUTC(spec.Timezone),
			Kind: spec.Kind, Payload: payload, NextRunAt: sched.Next(now), PausedAt: pausedAt,
			CreatedBy: store.NullUUID(by.UserID()), CreatedAt: now,
		})
		if err = store.Translate(err); errs.CodeOf(err) == errs.Conflict {
			return errs.E(errs.Conflict, "A schedule named %s exists already.", spec.Name)
		} else if err != nil {
			return fmt.Errorf("create schedule %s: %w", spec.Name, err)
		}
		out = toSchedule(row)
		return audit.Write(ctx, q, by, event("job_schedule.create", "job_schedule", spec.Name, map[string]any{
			"cron": spec.Cron, "timezone": out.Timezone, "kind": spec.Kind, "paused": paused,
		}))
	})
	return out, err
}

// Pause stops a schedule from creating runs until Resume; pausing a paused schedule
// changes nothing. Audited as job_schedule.pause. Errors: not_found.
func (s *Scheduler) Pause(ctx context.Context, by audit.Actor, name string) (Schedule, error) {
	return s.change(ctx, by, name, "job_schedule.pause", func(q *db.Queries, now time.Time, _ db.JobSchedule) (db.JobSchedule, error) {
		return q.PauseJobSchedule(ctx, db.PauseJobScheduleParams{Now: now, Name: name})
	})
}

// Resume lets a paused schedule run again from its first slot after now. Audited as
// job_schedule.resume. Errors: not_found.
func (s *Scheduler) Resume(ctx context.Context, by audit.Actor, name string) (Schedule, error) {
	return s.change(ctx, by, name, "job_schedule.resume", func(q *db.Queries, now time.Time, cur db.JobSchedule) (db.JobSchedule, error) {
		sched, err := ParseCron(cur.Cron, cur.Timezone)
		if err != nil {
			return db.JobSchedule{}, err
		}
		return q.ResumeJobSchedule(ctx, db.ResumeJobScheduleParams{NextRunAt: sched.Next(now), Now: now, Name: name})
	})
}

// Delete removes a schedule made through the API; jobs it created stay. Audited as
// job_schedule.delete. Errors: not_found; conflict for a schedule from config (remove it
// from the configuration instead, or pause it).
func (s *Scheduler) Delete(ctx context.Context, by audit.Actor, name string) error {
	_, err := s.change(ctx, by, name, "job_schedule.delete", func(q *db.Queries, _ time.Time, cur db.JobSchedule) (db.JobSchedule, error) {
		if cur.Source == SourceConfig {
			return db.JobSchedule{}, errs.E(errs.Conflict, "Schedule %s comes from the configuration (jobs.schedules): remove it there, or pause it.", name)
		}
		return q.DeleteJobSchedule(ctx, name)
	})
	return err
}

// change runs one audited change of the schedule name in a transaction, the schedule
// locked by its read.
func (s *Scheduler) change(ctx context.Context, by audit.Actor, name, action string, fn func(q *db.Queries, now time.Time, cur db.JobSchedule) (db.JobSchedule, error)) (Schedule, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	now := s.now()
	var out Schedule
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		cur, err := q.LockJobSchedule(ctx, name)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errs.E(errs.NotFound, "No schedule %s.", name)
		} else if err != nil {
			return fmt.Errorf("read schedule %s: %w", name, err)
		}
		row, err := fn(q, now, cur)
		if err != nil {
			var e *errs.Error
			if errors.As(err, &e) {
				return err
			}
			return fmt.Errorf("%s %s: %w", action, name, store.Translate(err))
		}
		out = toSchedule(row)
		return audit.Write(ctx, q, by, event(action, "job_schedule", name, map[string]any{"source": cur.Source, "kind": cur.Kind}))
	})
	return out, err
}

func toSchedule(r db.JobSchedule) Schedule {
	return Schedule{
		ID: r.ID, Name: r.Name, Source: r.Source, Cron: r.Cron, Timezone: r.Timezone, Kind: r.Kind,
		Payload: json.RawMessage(r.Payload), NextRunAt: r.NextRunAt.UTC(), PausedAt: r.PausedAt, LastRunAt: r.LastRunAt,
		LastJobID: store.UUIDPtr(r.LastJobID), CreatedBy: store.UUIDPtr(r.CreatedBy), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}
