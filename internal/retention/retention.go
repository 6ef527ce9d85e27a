// Package retention keeps each org's retention settings: how many days deleted prompts
// and conversations stay restorable, ended jobs are kept, and usage rows are kept. An org
// that sets nothing takes the deployment's defaults (config retention.*). The purges read
// the settings in SQL (one query per table, joined with the settings and COALESCE'd to the
// defaults), so no purge loops over orgs.
//
// Usage rows are billing data: they are never soft-deleted one by one; the usage retention
// only deletes, for good, rows older than it, and it is never below MinUsageDays.
package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// The bounds of a setting, in days (the API's, the config's and the table's checks).
const (
	MinDays      = 1
	MaxDays      = 365
	MinUsageDays = 400 // a year of invoices and the time to dispute them
	MaxUsageDays = 3650
)

// Days is a retention per kind of item, in days. Usage 0 keeps usage rows for good.
type Days struct {
	DeletedPrompts       int
	DeletedConversations int
	FinishedJobs         int // succeeded and cancelled jobs, from their end
	FailedJobs           int
	Usage                int
}

// Builtin are the defaults of a deployment that configures none.
var Builtin = Days{DeletedPrompts: 30, DeletedConversations: 7, FinishedJobs: 7, FailedJobs: 30}

// Check names each value out of its bounds, under prefix (a JSON Pointer or a config
// path, with sep between it and the field name); a zero Usage is allowed when allowKeep.
func (d Days) Check(prefix, sep string, allowKeep bool) []errs.FieldError {
	var out []errs.FieldError
	check := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			out = append(out, errs.FieldError{Pointer: prefix + sep + name, Message: fmt.Sprintf("must be between %d and %d days, got %d", lo, hi, v)})
		}
	}
	check("deleted_prompts_days", d.DeletedPrompts, MinDays, MaxDays)
	check("deleted_conversations_days", d.DeletedConversations, MinDays, MaxDays)
	check("finished_jobs_days", d.FinishedJobs, MinDays, MaxDays)
	check("failed_jobs_days", d.FailedJobs, MinDays, MaxDays)
	if !allowKeep || d.Usage != 0 {
		check("usage_days", d.Usage, MinUsageDays, MaxUsageDays)
	}
	return out
}

// Settings are what an org set; nil takes the default.
type Settings struct {
	DeletedPrompts       *int
	DeletedConversations *int
	FinishedJobs         *int
	FailedJobs           *int
	Usage                *int
}

// Org is an org's retention: its settings, what applies, and when it last set them (nil:
// never).
type Org struct {
	Settings  Settings
	Effective Days
	UpdatedAt *time.Time
}

// Service keeps the orgs' retention settings and purges usage rows past them.
type Service struct {
	st       *store.Store
	defaults Days
	now      func() time.Time
}

// New returns a Service over st with the deployment's defaults (Builtin when not
// configured); now is the clock.
func New(st *store.Store, defaults Days, now func() time.Time) *Service {
	return &Service{st: st, defaults: defaults, now: now}
}

// Get returns the org's retention.
func (s *Service) Get(ctx context.Context, org uuid.UUID) (Org, error) {
	row, err := s.st.GetOrgRetention(ctx, org)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return s.toOrg(Settings{}, nil), nil
	}
	if err != nil {
		return Org{}, fmt.Errorf("get org retention: %w", err)
	}
	return s.toOrg(fromRow(row), &row.UpdatedAt), nil
}

// Set replaces the org's settings, audited (org.retention_update) by by. A value out of
// its bounds is invalid_request naming /<field>.
func (s *Service) Set(ctx context.Context, org uuid.UUID, set Settings, by audit.Actor) (Org, error) {
	// Only the values set are checked: a nil takes a default the config checked.
	probe := s.toOrg(set, nil).Effective
	if s.defaults.Usage == 0 && set.Usage == nil {
		probe.Usage = MinUsageDays
	}
	if err := errs.InvalidFields("invalid retention settings", probe.Check("", "/", false)); err != nil {
		return Org{}, err
	}
	var out Org
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.UpsertOrgRetention(ctx, db.UpsertOrgRetentionParams{
			OrgID: org, DeletedPromptsDays: int4(set.DeletedPrompts), DeletedConversationsDays: int4(set.DeletedConversations),
			FinishedJobsDays: int4(set.FinishedJobs), FailedJobsDays: int4(set.FailedJobs), UsageDays: int4(set.Usage),
			UpdatedAt: s.now().UTC(), UpdatedBy: store.NullUUID(by.UserID()),
		})
		if err != nil {
			return store.Translate(err)
		}
		out = s.toOrg(fromRow(row), &row.UpdatedAt)
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "org.retention_update", TargetType: "org", TargetID: org.String(),
			Data: map[string]any{
				"deleted_prompts_days": set.DeletedPrompts, "deleted_conversations_days": set.DeletedConversations,
				"finished_jobs_days": set.FinishedJobs, "failed_jobs_days": set.FailedJobs, "usage_days": set.Usage,
			}})
	})
	if err != nil {
		return Org{}, fmt.Errorf("set org retention: %w", err)
	}
	return out, nil
}

// PurgeUsage deletes for good the usage rows older than their org's usage retention, in
// batches, and says how many it deleted.
func (s *Service) PurgeUsage(ctx context.Context) (int64, error) {
	now := s.now()
	var def pgtype.Int4
	if s.defaults.Usage > 0 {
		def = pgtype.Int4{Int32: int32(s.defaults.Usage), Valid: true} //nolint:gosec // bounded by Check
	}
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return s.st.PurgeOldUsage(ctx, db.PurgeOldUsageParams{Now: now, DefaultDays: def, MaxRows: limit})
	})
}

func (s *Service) toOrg(set Settings, updated *time.Time) Org {
	or := func(v *int, def int) int {
		if v != nil {
			return *v
		}
		return def
	}
	return Org{Settings: set, UpdatedAt: store.UTC(updated), Effective: Days{
		DeletedPrompts:       or(set.DeletedPrompts, s.defaults.DeletedPrompts),
		DeletedConversations: or(set.DeletedConversations, s.defaults.DeletedConversations),
		FinishedJobs:         or(set.FinishedJobs, s.defaults.FinishedJobs),
		FailedJobs:           or(set.FailedJobs, s.defaults.FailedJobs),
		Usage:                or(set.Usage, s.defaults.Usage),
	}}
}

func fromRow(r db.OrgRetention) Settings {
	return Settings{
		DeletedPrompts: intOf(r.DeletedPromptsDays), DeletedConversations: intOf(r.DeletedConversationsDays),
		FinishedJobs: intOf(r.FinishedJobsDays), FailedJobs: intOf(r.FailedJobsDays), Usage: intOf(r.UsageDays),
	}
}

func intOf(v pgtype.Int4) *int {
	if !v.Valid {
		return nil
	}
	n := int(v.Int32)
	return &n
}

func int4(v *int) pgtype.Int4 {
	if v == nil {
		return pgtype.Int4{}
	}
	return pgtype.Int4{Int32: int32(*v), Valid: true} //nolint:gosec // bounded by Check
}
