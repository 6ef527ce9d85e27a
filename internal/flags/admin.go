package flags

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// List returns every flag, ordered by key, read from the database.
func (e *Evaluator) List(ctx context.Context) ([]Flag, error) {
	rows, err := e.st.ListFeatureFlags(ctx)
	if err != nil {
		return nil, fmt.Errorf("list feature flags: %w", store.Translate(err))
	}
	return toFlags(rows), nil
}

// Get returns the flag with key, read from the database; not_found when there is none.
func (e *Evaluator) Get(ctx context.Context, key string) (Flag, error) {
	row, err := e.st.GetFeatureFlag(ctx, key)
	if err != nil {
		if err = store.Translate(err); errs.CodeOf(err) == errs.NotFound {
			return Flag{}, errs.E(errs.NotFound, "feature flag %q not found", key)
		}
		return Flag{}, fmt.Errorf("get feature flag %q: %w", key, err)
	}
	return toFlag(row), nil
}

// Set creates or replaces the flag with f.Key and returns it as stored, then invalidates
// every replica's snapshot. It returns invalid_request, naming each bad field, when the key
// does not match ^[a-z0-9][a-z0-9_.-]{0,63}$, RolloutPercent is outside 0..100 or StickyBy is
// neither "org" nor "user". The change is audited (admin.flag_put, with the flag before and
// after) by by.
func (e *Evaluator) Set(ctx context.Context, f Flag, by audit.Actor) (Flag, error) {
	if err := f.validate(); err != nil {
		return Flag{}, err
	}
	var row db.FeatureFlag
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := e.st.InTx(ctx, func(q *db.Queries) error {
		before, err := storedFlag(ctx, q, f.Key)
		if err != nil {
			return err
		}
		if row, err = q.UpsertFeatureFlag(ctx, toDBFlag(f)); err != nil {
			return store.Translate(err)
		}
		return audit.Write(ctx, q, by, audit.Event{Action: "admin.flag_put", TargetType: "feature_flag", TargetID: f.Key,
			Data: map[string]any{"before": before, "after": toFlag(row).auditData()}})
	})
	if err != nil {
		return Flag{}, fmt.Errorf("set feature flag %q: %w", f.Key, err)
	}
	e.changed(ctx, f.Key)
	return toFlag(row), nil
}

// Delete removes the flag with key and its overrides, then invalidates every replica's
// snapshot; evaluation falls back to the configured default. It returns not_found when
// there is no such flag. The deletion is audited (admin.flag_delete, with the flag before)
// by by.
func (e *Evaluator) Delete(ctx context.Context, key string, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := e.st.InTx(ctx, func(q *db.Queries) error {
		before, err := storedFlag(ctx, q, key)
		if err != nil {
			return err
		}
		n, err := q.DeleteFeatureFlag(ctx, key)
		if err != nil {
			return fmt.Errorf("delete feature flag %q: %w", key, store.Translate(err))
		}
		if n == 0 {
			return errs.E(errs.NotFound, "feature flag %q not found", key)
		}
		return audit.Write(ctx, q, by, audit.Event{Action: "admin.flag_delete", TargetType: "feature_flag", TargetID: key,
			Data: map[string]any{"before": before}})
	})
	if err != nil {
		return err
	}
	e.changed(ctx, key)
	return nil
}

// storedFlag returns the flag with key as the audit log shows it, or nil when there is none.
func storedFlag(ctx context.Context, q *db.Queries, key string) (map[string]any, error) {
	row, err := q.GetFeatureFlag(ctx, key)
	if err = store.Translate(err); errs.CodeOf(err) == errs.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get feature flag %q: %w", key, err)
	}
	return toFlag(row).auditData(), nil
}

// auditData is f in the audit log, in the API's field names.
func (f Flag) auditData() map[string]any {
	return map[string]any{"key": f.Key, "description": f.Description, "enabled": f.Enabled,
		"rollout_percent": f.RolloutPercent, "sticky_by": string(f.StickyBy)}
}

// SetOverride creates or replaces the override of o.FlagKey for one subject and returns it
// as stored, then invalidates every replica's snapshot. It returns invalid_request, naming
// each bad field, for a malformed flag key, a subject type other than "org" or "user", a nil
// subject id or an expiry not in the future, and not_found when the flag does not exist.
func (e *Evaluator) SetOverride(ctx context.Context, o Override) (Override, error) {
	if err := o.validate(e.now()); err != nil {
		return Override{}, err
	}
	// Checked first for a clear not_found; the foreign key still guards a concurrent delete.
	if _, err := e.Get(ctx, o.FlagKey); err != nil {
		return Override{}, err
	}
	row, err := e.st.UpsertFeatureFlagOverride(ctx, toDBOverride(o))
	if err != nil {
		return Override{}, fmt.Errorf("set feature flag override %q %s %s: %w", o.FlagKey, o.SubjectType, o.SubjectID, store.Translate(err))
	}
	e.changed(ctx, o.FlagKey)
	return toOverride(row), nil
}

// DeleteOverride removes the override of flag key for one subject, then invalidates every
// replica's snapshot. It returns not_found when there is no such override.
func (e *Evaluator) DeleteOverride(ctx context.Context, key string, subjectType SubjectType, subjectID uuid.UUID) error {
	n, err := e.st.DeleteFeatureFlagOverride(ctx, db.DeleteFeatureFlagOverrideParams{
		FlagKey:     key,
		SubjectType: string(subjectType),
		SubjectID:   subjectID,
	})
	if err != nil {
		return fmt.Errorf("delete feature flag override %q %s: %w", key, subjectType, store.Translate(err))
	}
	if n == 0 {
		return errs.E(errs.NotFound, "no %s override of feature flag %q for %s", subjectType, key, subjectID)
	}
	e.changed(ctx, key)
	return nil
}

// PurgeExpiredOverrides deletes the overrides whose expiry has passed and returns how many
// it deleted; the housekeeping task calls it. Evaluation already ignores expired overrides,
// so this only keeps the table small.
func (e *Evaluator) PurgeExpiredOverrides(ctx context.Context) (int64, error) {
	now := e.now()
	n, err := e.st.PurgeExpiredFeatureFlagOverrides(ctx, &now)
	if err != nil {
		return 0, fmt.Errorf("purge expired feature flag overrides: %w", store.Translate(err))
	}
	if n > 0 {
		e.changed(ctx, "")
	}
	return n, nil
}

// Overrides returns the overrides in force (not expired), ordered by flag key, subject
// type and subject id, read from the database.
func (e *Evaluator) Overrides(ctx context.Context) ([]Override, error) {
	rows, err := e.st.ListActiveFeatureFlagOverrides(ctx)
	if err != nil {
		return nil, fmt.Errorf("list feature flag overrides: %w", store.Translate(err))
	}
	out := make([]Override, len(rows))
	for i, r := range rows {
		out[i] = toOverride(r)
	}
	return out, nil
}
