// Package flags stores feature flags and evaluates them for an org or a user.
//
// Evaluation reads an in-memory snapshot of every flag and every active override, so
// [Evaluator.Enabled] never touches the database on the hot path. The snapshot is reloaded
// when it is older than the configured TTL or when any replica changes a flag: writes
// publish on the Redis channel kiln:<env>:flags:v1:invalidate and [Evaluator.Run] listens.
//
// For a subject the result is, first match wins:
//
//  1. an unexpired user override;
//  2. an unexpired org override;
//  3. the flag in the database: off when disabled, else on when the subject's rollout
//     bucket is below rollout_percent;
//  4. the configured default for the key;
//  5. false.
//
// The rollout bucket is fmix64(FNV-1a-64(key ‖ id)) mod 100, where key is the flag key's
// bytes, id the 16 bytes of the subject id chosen by sticky_by (the other id when that one is
// zero), and fmix64 MurmurHash3's 64-bit finaliser, which spreads FNV's weakly mixed last
// bytes over the whole word. Buckets are stable across replicas and releases, and raising
// rollout_percent only adds subjects. Changing the function reshuffles every rollout.
package flags

import (
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
)

// SubjectType names who a flag sticks to or an override applies to.
type SubjectType string

// The subject types.
const (
	SubjectOrg  SubjectType = "org"
	SubjectUser SubjectType = "user"
)

// Flag is a feature flag as stored in the database.
type Flag struct {
	// Key matches ^[a-z0-9][a-z0-9_.-]{0,63}$, e.g. "chat.streaming_v2".
	Key         string
	Description string
	// Enabled switches the flag for everyone without an override.
	Enabled bool
	// RolloutPercent is the share of subjects, 0 to 100, that get the flag while it is enabled.
	RolloutPercent int
	// StickyBy picks the subject id the rollout hashes.
	StickyBy SubjectType
}

// NewFlag returns the flag key with the defaults of a flag set without them: the whole
// rollout, sticky by org, disabled.
func NewFlag(key string) Flag {
	return Flag{Key: key, RolloutPercent: 100, StickyBy: SubjectOrg}
}

// Override forces a flag on or off for one org or one user, until ExpiresAt when set.
type Override struct {
	FlagKey     string
	SubjectType SubjectType
	SubjectID   uuid.UUID
	Enabled     bool
	// ExpiresAt, when set, ends the override; nil means it never expires.
	ExpiresAt *time.Time
}

// Subject is who a flag is evaluated for. Either id may be zero (uuid.Nil).
type Subject struct {
	OrgID  uuid.UUID
	UserID uuid.UUID
}

var keyPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

func (t SubjectType) valid() bool { return t == SubjectOrg || t == SubjectUser }

// validate returns an invalid_request error naming every bad field.
func (f Flag) validate() error {
	var fields []errs.FieldError
	if !keyPattern.MatchString(f.Key) {
		fields = append(fields, errs.FieldError{Pointer: "/key", Message: "must match " + keyPattern.String()})
	}
	if f.RolloutPercent < 0 || f.RolloutPercent > 100 {
		fields = append(fields, errs.FieldError{Pointer: "/rollout_percent", Message: fmt.Sprintf("must be between 0 and 100, got %d", f.RolloutPercent)})
	}
	if !f.StickyBy.valid() {
		fields = append(fields, errs.FieldError{Pointer: "/sticky_by", Message: fmt.Sprintf("must be %q or %q, got %q", SubjectOrg, SubjectUser, f.StickyBy)})
	}
	return errs.InvalidFields("invalid feature flag", fields)
}

// validate returns an invalid_request error naming every bad field; expiry is judged at now.
func (o Override) validate(now time.Time) error {
	var fields []errs.FieldError
	if !keyPattern.MatchString(o.FlagKey) {
		fields = append(fields, errs.FieldError{Pointer: "/flag_key", Message: "must match " + keyPattern.String()})
	}
	if !o.SubjectType.valid() {
		fields = append(fields, errs.FieldError{Pointer: "/subject_type", Message: fmt.Sprintf("must be %q or %q, got %q", SubjectOrg, SubjectUser, o.SubjectType)})
	}
	if o.SubjectID == uuid.Nil {
		fields = append(fields, errs.FieldError{Pointer: "/subject_id", Message: "must not be the nil UUID"})
	}
	if o.ExpiresAt != nil && !o.ExpiresAt.After(now) {
		fields = append(fields, errs.FieldError{Pointer: "/expires_at", Message: "must be in the future"})
	}
	return errs.InvalidFields("invalid feature flag override", fields)
}

func toFlag(r db.FeatureFlag) Flag {
	return Flag{
		Key:            r.Key,
		Description:    r.Description,
		Enabled:        r.Enabled,
		RolloutPercent: int(r.RolloutPercent),
		StickyBy:       SubjectType(r.StickyBy),
	}
}

func toFlags(rows []db.FeatureFlag) []Flag {
	out := make([]Flag, len(rows))
	for i, r := range rows {
		out[i] = toFlag(r)
	}
	return out
}

func toDBFlag(f Flag) db.UpsertFeatureFlagParams {
	return db.UpsertFeatureFlagParams{
		Key:            f.Key,
		Description:    f.Description,
		Enabled:        f.Enabled,
		RolloutPercent: int32(f.RolloutPercent), //nolint:gosec // validated to 0..100
		StickyBy:       string(f.StickyBy),
	}
}

func toOverride(r db.FeatureFlagOverride) Override {
	return Override{
		FlagKey:     r.FlagKey,
		SubjectType: SubjectType(r.SubjectType),
		SubjectID:   r.SubjectID,
		Enabled:     r.Enabled,
		ExpiresAt:   r.ExpiresAt,
	}
}

func toDBOverride(o Override) db.UpsertFeatureFlagOverrideParams {
	return db.UpsertFeatureFlagOverrideParams{
		FlagKey:     o.FlagKey,
		SubjectType: string(o.SubjectType),
		SubjectID:   o.SubjectID,
		Enabled:     o.Enabled,
		ExpiresAt:   o.ExpiresAt,
	}
}
