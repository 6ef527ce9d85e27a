package usage

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
)

// DefaultWindow is how far back a report reaches when the caller names no start.
const DefaultWindow = 30 * 24 * time.Hour

// MaxWindow bounds a report's window: a report aggregates every call in it, so an
// unbounded one would read all of an org's usage in one request.
const MaxWindow = 366 * 24 * time.Hour

// Query is a usage report as a caller asks for it; the zero values take the defaults.
type Query struct {
	From, To *time.Time // nil: DefaultWindow before To; now
	Alias    string     // empty: every alias
	APIKeyID uuid.UUID  // zero: every caller
	GroupBy  string     // day (the default) or model
	// OwnKey is the caller's API key when it lacks billing:read: such a key sees only its
	// own calls.
	OwnKey *uuid.UUID
}

// Result is a report with the filter it was made with (the window as resolved).
type Result struct {
	Filter  Filter
	Buckets []Bucket
	Total   Bucket
}

// Query reports org's usage as q asks. Errors: invalid_request naming /query/from when the
// window is empty or longer than MaxWindow; permission_denied when q.OwnKey asks for another key's calls.
func (r *Recorder) Query(ctx context.Context, org uuid.UUID, q Query) (Result, error) {
	f, err := q.filter(org, time.Now().UTC())
	if err != nil {
		return Result{}, err
	}
	buckets, total, err := r.Report(ctx, f)
	if err != nil {
		return Result{}, err
	}
	return Result{Filter: f, Buckets: buckets, Total: total}, nil
}

// filter resolves q for org at now.
func (q Query) filter(org uuid.UUID, now time.Time) (Filter, error) {
	f := Filter{OrgID: org, From: now.Add(-DefaultWindow), To: now, Alias: q.Alias, APIKeyID: q.APIKeyID, GroupBy: q.GroupBy}
	if q.From != nil {
		f.From = q.From.UTC()
	}
	if q.To != nil {
		f.To = q.To.UTC()
	}
	if f.GroupBy == "" {
		f.GroupBy = "day"
	}
	if !f.From.Before(f.To) {
		return Filter{}, errs.InvalidFields("invalid window", []errs.FieldError{{Pointer: "/query/from", Message: "must be before to"}})
	}
	if f.To.Sub(f.From) > MaxWindow {
		return Filter{}, errs.InvalidFields("invalid window", []errs.FieldError{{Pointer: "/query/from", Message: "must be at most 366 days before to"}})
	}
	if q.OwnKey != nil {
		if f.APIKeyID != uuid.Nil && f.APIKeyID != *q.OwnKey {
			return Filter{}, errs.E(errs.PermissionDenied, "A key without the billing:read scope sees only its own usage.")
		}
		f.APIKeyID = *q.OwnKey
	}
	return f, nil
}
