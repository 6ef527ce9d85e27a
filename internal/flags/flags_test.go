package flags_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// ttl is long enough that only invalidations and explicit clock moves trigger reloads.
const ttl = 24 * time.Hour

// bundle is one test's database, Redis key space and clock; every Evaluator made from it
// plays one replica of the same deployment.
type bundle struct {
	st    *store.Store
	rdb   redis.UniversalClient
	ks    redisclient.Keyspace
	clock *storetest.Clock
}

func setup(t testing.TB) *bundle {
	t.Helper()
	rdb, ks := storetest.Redis(t)
	return &bundle{st: storetest.New(t), rdb: rdb, ks: ks, clock: storetest.NewClock()}
}

// evaluator returns a new replica whose logs go to the test output.
func (b *bundle) evaluator(t testing.TB, defaults map[string]bool) *flags.Evaluator {
	t.Helper()
	return flags.New(b.st, b.rdb, b.ks, defaults, ttl, slog.New(slog.NewTextHandler(t.Output(), nil)), b.clock.Now)
}

// run starts e.Run until the test ends, then checks that it stopped cleanly.
func run(t *testing.T, e *flags.Evaluator) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context was cancelled")
		}
	})
}

func mustSet(t testing.TB, e *flags.Evaluator, f flags.Flag) {
	t.Helper()
	if _, err := e.Set(context.Background(), f, audit.Actor{}); err != nil {
		t.Fatalf("Set(%+v): %v", f, err)
	}
}

func mustSetOverride(t testing.TB, e *flags.Evaluator, o flags.Override) {
	t.Helper()
	if _, err := e.SetOverride(context.Background(), o); err != nil {
		t.Fatalf("SetOverride(%+v): %v", o, err)
	}
}

func ptr[T any](v T) *T { return &v }

func TestEnabledOrder(t *testing.T) {
	t.Parallel()
	org, user := uuid.New(), uuid.New()
	subject := flags.Subject{OrgID: org, UserID: user}
	on := func(rollout int) *flags.Flag {
		return &flags.Flag{Key: "f", Enabled: true, RolloutPercent: rollout, StickyBy: flags.SubjectOrg}
	}
	off := &flags.Flag{Key: "f", Enabled: false, RolloutPercent: 100, StickyBy: flags.SubjectOrg}
	// override is permanent when expiresIn is 0.
	type override struct {
		typ       flags.SubjectType
		id        uuid.UUID
		enabled   bool
		expiresIn time.Duration
	}
	tests := []struct {
		name      string
		flag      *flags.Flag // nil: not in the database
		overrides []override
		defaults  map[string]bool
		subject   flags.Subject
		advance   time.Duration // clock move after the snapshot is warm
		want      bool
	}{
		{name: "OnByUserOverrideOverOrgOverride", flag: off, subject: subject, want: true,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: false}, {typ: flags.SubjectUser, id: user, enabled: true}}},
		{name: "OffByUserOverrideOverOrgOverride", flag: on(100), subject: subject, want: false,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: true}, {typ: flags.SubjectUser, id: user, enabled: false}}},
		{name: "OnByOrgOverrideOverDisabledFlag", flag: off, subject: subject, want: true,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: true}}},
		{name: "OffByOrgOverrideOverEnabledFlag", flag: on(100), subject: subject, want: false,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: false}}},
		{name: "OffByFlagWhenOverridesAreForOthers", flag: off, subject: subject, want: false,
			overrides: []override{{typ: flags.SubjectOrg, id: uuid.New(), enabled: true}, {typ: flags.SubjectUser, id: uuid.New(), enabled: true}}},
		{name: "OffByOverrideWithoutUser", flag: on(100), subject: flags.Subject{OrgID: org}, want: false,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: false}, {typ: flags.SubjectUser, id: user, enabled: true}}},
		{name: "OffByDisabledFlagOverDefault", flag: off, defaults: map[string]bool{"f": true}, subject: subject, want: false},
		{name: "OnByEnabledFlagOverDefault", flag: on(100), defaults: map[string]bool{"f": false}, subject: subject, want: true},
		{name: "OffByZeroRollout", flag: on(0), subject: subject, want: false},
		{name: "OnForAnonymousInFullRollout", flag: on(100), subject: flags.Subject{}, want: true},
		{name: "OffForAnonymousInPartialRollout", flag: on(99), subject: flags.Subject{}, want: false},
		{name: "OnByDefaultWhenFlagAbsent", defaults: map[string]bool{"f": true, "g": false}, subject: subject, want: true},
		{name: "OffByDefaultWhenFlagAbsent", defaults: map[string]bool{"f": false, "g": true}, subject: subject, want: false},
		{name: "OffWhenFlagAbsentWithoutDefault", defaults: map[string]bool{"g": true}, subject: subject, want: false},
		{name: "OffByUserOverrideBeforeExpiry", flag: on(100), subject: subject, advance: 59 * time.Minute, want: false,
			overrides: []override{{typ: flags.SubjectUser, id: user, enabled: false, expiresIn: time.Hour}}},
		{name: "OnByFlagWhenUserOverrideExpired", flag: on(100), subject: subject, advance: time.Hour, want: true,
			overrides: []override{{typ: flags.SubjectUser, id: user, enabled: false, expiresIn: time.Hour}}},
		{name: "OnByOrgOverrideWhenUserOverrideExpired", flag: off, subject: subject, advance: 2 * time.Hour, want: true,
			overrides: []override{{typ: flags.SubjectUser, id: user, enabled: false, expiresIn: time.Hour}, {typ: flags.SubjectOrg, id: org, enabled: true}}},
		{name: "OffByFlagWhenOrgOverrideExpired", flag: off, subject: subject, advance: 2 * time.Hour, want: false,
			overrides: []override{{typ: flags.SubjectOrg, id: org, enabled: true, expiresIn: time.Hour}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			e := b.evaluator(t, tt.defaults)
			if tt.flag != nil {
				mustSet(t, e, *tt.flag)
			}
			for _, o := range tt.overrides {
				var exp *time.Time
				if o.expiresIn > 0 {
					exp = ptr(b.clock.Now().Add(o.expiresIn))
				}
				mustSetOverride(t, e, flags.Override{FlagKey: "f", SubjectType: o.typ, SubjectID: o.id, Enabled: o.enabled, ExpiresAt: exp})
			}
			// Warm the snapshot first: expiry must apply to the snapshot already in memory,
			// before any reload or purge.
			e.Enabled(t.Context(), "f", tt.subject)
			b.clock.Advance(tt.advance)
			if got := e.Enabled(t.Context(), "f", tt.subject); got != tt.want {
				t.Errorf("Enabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSetValidation(t *testing.T) {
	t.Parallel()
	e := setup(t).evaluator(t, nil)
	valid := flags.Flag{Key: "chat.streaming_v2", Description: "d", Enabled: true, RolloutPercent: 30, StickyBy: flags.SubjectOrg}
	with := func(change func(*flags.Flag)) flags.Flag {
		f := valid
		change(&f)
		return f
	}
	tests := []struct {
		name     string
		flag     flags.Flag
		pointers []string // nil: valid
	}{
		{"OK", valid, nil},
		{"OKLongestKey", with(func(f *flags.Flag) { f.Key = "a" + strings.Repeat("b", 63) }), nil},
		{"OKZeroRollout", with(func(f *flags.Flag) { f.RolloutPercent = 0 }), nil},
		{"OKFullRolloutStickyByUser", with(func(f *flags.Flag) { f.RolloutPercent, f.StickyBy = 100, flags.SubjectUser }), nil},
		{"ErrInvalidEmptyKey", with(func(f *flags.Flag) { f.Key = "" }), []string{"/key"}},
		{"ErrInvalidUppercaseKey", with(func(f *flags.Flag) { f.Key = "Chat" }), []string{"/key"}},
		{"ErrInvalidKeyStartingWithDot", with(func(f *flags.Flag) { f.Key = ".chat" }), []string{"/key"}},
		{"ErrInvalidKeyTooLong", with(func(f *flags.Flag) { f.Key = "a" + strings.Repeat("b", 64) }), []string{"/key"}},
		{"ErrInvalidNegativeRollout", with(func(f *flags.Flag) { f.RolloutPercent = -1 }), []string{"/rollout_percent"}},
		{"ErrInvalidRolloutOver100", with(func(f *flags.Flag) { f.RolloutPercent = 101 }), []string{"/rollout_percent"}},
		{"ErrInvalidStickyBy", with(func(f *flags.Flag) { f.StickyBy = "team" }), []string{"/sticky_by"}},
		{"ErrInvalidEmptyStickyBy", with(func(f *flags.Flag) { f.StickyBy = "" }), []string{"/sticky_by"}},
		{"ErrInvalidEveryField", flags.Flag{Key: "A B", RolloutPercent: 200, StickyBy: "x"}, []string{"/key", "/rollout_percent", "/sticky_by"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.Set(t.Context(), tt.flag, audit.Actor{})
			if tt.pointers == nil {
				if err != nil {
					t.Fatalf("Set: %v", err)
				}
				if got != tt.flag {
					t.Errorf("Set returned %+v, want %+v", got, tt.flag)
				}
				return
			}
			checkInvalid(t, err, tt.pointers)
		})
	}
}

func TestSetOverrideValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := b.evaluator(t, nil)
	mustSet(t, e, flags.Flag{Key: "f", Enabled: true, RolloutPercent: 100, StickyBy: flags.SubjectOrg})
	valid := flags.Override{FlagKey: "f", SubjectType: flags.SubjectUser, SubjectID: uuid.New(), Enabled: true, ExpiresAt: ptr(b.clock.Now().Add(time.Hour))}
	with := func(change func(*flags.Override)) flags.Override {
		o := valid
		change(&o)
		return o
	}
	tests := []struct {
		name     string
		override flags.Override
		code     errs.Code // "": valid
		pointers []string
	}{
		{"OK", valid, "", nil},
		{"OKPermanent", with(func(o *flags.Override) { o.ExpiresAt, o.SubjectType = nil, flags.SubjectOrg }), "", nil},
		{"ErrInvalidFlagKey", with(func(o *flags.Override) { o.FlagKey = "F" }), errs.Invalid, []string{"/flag_key"}},
		{"ErrInvalidSubjectType", with(func(o *flags.Override) { o.SubjectType = "team" }), errs.Invalid, []string{"/subject_type"}},
		{"ErrInvalidNilSubjectID", with(func(o *flags.Override) { o.SubjectID = uuid.Nil }), errs.Invalid, []string{"/subject_id"}},
		{"ErrInvalidExpiryNow", with(func(o *flags.Override) { o.ExpiresAt = ptr(b.clock.Now()) }), errs.Invalid, []string{"/expires_at"}},
		{"ErrInvalidExpiryPast", with(func(o *flags.Override) { o.ExpiresAt = ptr(b.clock.Now().Add(-time.Minute)) }), errs.Invalid, []string{"/expires_at"}},
		{"ErrNotFoundFlag", with(func(o *flags.Override) { o.FlagKey = "absent" }), errs.NotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.SetOverride(t.Context(), tt.override)
			switch tt.code {
			case "":
				if err != nil {
					t.Fatalf("SetOverride: %v", err)
				}
				if got.FlagKey != tt.override.FlagKey || got.SubjectType != tt.override.SubjectType || got.SubjectID != tt.override.SubjectID ||
					got.Enabled != tt.override.Enabled || !sameTime(got.ExpiresAt, tt.override.ExpiresAt) {
					t.Errorf("SetOverride returned %+v, want %+v", got, tt.override)
				}
			case errs.Invalid:
				checkInvalid(t, err, tt.pointers)
			default:
				if errs.CodeOf(err) != tt.code {
					t.Fatalf("SetOverride error = %v, want code %s", err, tt.code)
				}
			}
		})
	}
}

// checkInvalid asserts err is invalid_request naming exactly pointers, each in the message.
func checkInvalid(t *testing.T, err error, pointers []string) {
	t.Helper()
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || e.Code != errs.Invalid {
		t.Fatalf("error = %v, want invalid_request", err)
	}
	var got []string
	for _, f := range e.Fields {
		got = append(got, f.Pointer)
		if !strings.Contains(e.Message, strings.TrimPrefix(f.Pointer, "/")+" ") {
			t.Errorf("message %q does not name %s", e.Message, f.Pointer)
		}
	}
	if !slices.Equal(got, pointers) {
		t.Errorf("invalid fields = %v, want %v (message %q)", got, pointers, e.Message)
	}
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Sub(*b).Abs() < time.Microsecond // Postgres keeps microseconds
}

func TestGetListDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := b.evaluator(t, map[string]bool{"b": true})
	a := flags.Flag{Key: "a", Description: "first", Enabled: true, RolloutPercent: 10, StickyBy: flags.SubjectUser}
	bf := flags.Flag{Key: "b", Description: "second", Enabled: false, RolloutPercent: 100, StickyBy: flags.SubjectOrg}
	mustSet(t, e, bf)
	mustSet(t, e, a)
	user := uuid.New()
	mustSetOverride(t, e, flags.Override{FlagKey: "b", SubjectType: flags.SubjectUser, SubjectID: user, Enabled: false})

	t.Run("ListOrderedByKey", func(t *testing.T) {
		got, err := e.List(t.Context())
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if want := []flags.Flag{a, bf}; !slices.Equal(got, want) {
			t.Errorf("List = %+v, want %+v", got, want)
		}
	})
	t.Run("GetOK", func(t *testing.T) {
		got, err := e.Get(t.Context(), "a")
		if err != nil || got != a {
			t.Errorf("Get = %+v, %v; want %+v", got, err, a)
		}
	})
	t.Run("GetErrNotFound", func(t *testing.T) {
		if _, err := e.Get(t.Context(), "absent"); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("Get error = %v, want not_found", err)
		}
	})
	t.Run("DeleteErrNotFound", func(t *testing.T) {
		if err := e.Delete(t.Context(), "absent", audit.Actor{}); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("Delete error = %v, want not_found", err)
		}
	})
	t.Run("DeleteOverrideErrNotFound", func(t *testing.T) {
		if err := e.DeleteOverride(t.Context(), "b", flags.SubjectOrg, user); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("DeleteOverride error = %v, want not_found", err)
		}
	})
	t.Run("DeleteOverrideOK", func(t *testing.T) {
		o := flags.Override{FlagKey: "a", SubjectType: flags.SubjectOrg, SubjectID: uuid.New(), Enabled: true}
		mustSetOverride(t, e, o)
		s := flags.Subject{OrgID: o.SubjectID}
		if !e.Enabled(t.Context(), "a", s) {
			t.Fatal("Enabled = false with an org override on")
		}
		if err := e.DeleteOverride(t.Context(), o.FlagKey, o.SubjectType, o.SubjectID); err != nil {
			t.Fatalf("DeleteOverride: %v", err)
		}
		if err := e.DeleteOverride(t.Context(), o.FlagKey, o.SubjectType, o.SubjectID); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("second DeleteOverride error = %v, want not_found", err)
		}
	})
	t.Run("DeleteOKFallsBackToDefault", func(t *testing.T) {
		s := flags.Subject{UserID: uuid.New()}
		if e.Enabled(t.Context(), "b", s) {
			t.Fatal("Enabled = true for a disabled flag in the database")
		}
		if err := e.Delete(t.Context(), "b", audit.Actor{}); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := e.Get(t.Context(), "b"); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("Get after Delete error = %v, want not_found", err)
		}
		if !e.Enabled(t.Context(), "b", s) {
			t.Error("Enabled = false after Delete, want the configured default true")
		}
		// The override went with the flag: the user now gets the default too.
		if !e.Enabled(t.Context(), "b", flags.Subject{UserID: user}) {
			t.Error("Enabled = false for the user whose override was on the deleted flag")
		}
	})
}

func TestPurgeExpiredOverrides(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := b.evaluator(t, nil)
	mustSet(t, e, flags.Flag{Key: "f", Enabled: true, RolloutPercent: 100, StickyBy: flags.SubjectOrg})
	mustSet(t, e, flags.Flag{Key: "g", Enabled: true, RolloutPercent: 100, StickyBy: flags.SubjectUser})
	at := func(d time.Duration) *time.Time { return ptr(b.clock.Now().Add(d)) }
	kept := []flags.Override{
		{FlagKey: "f", SubjectType: flags.SubjectOrg, SubjectID: uuid.New(), Enabled: true},
		{FlagKey: "f", SubjectType: flags.SubjectUser, SubjectID: uuid.New(), Enabled: false, ExpiresAt: at(3 * time.Hour)},
	}
	expired := []flags.Override{
		{FlagKey: "f", SubjectType: flags.SubjectUser, SubjectID: uuid.New(), Enabled: true, ExpiresAt: at(time.Hour)},
		{FlagKey: "g", SubjectType: flags.SubjectOrg, SubjectID: uuid.New(), Enabled: false, ExpiresAt: at(2 * time.Hour)},
	}
	for _, o := range slices.Concat(kept, expired) {
		mustSetOverride(t, e, o)
	}

	t.Run("NoneExpiredYet", func(t *testing.T) {
		if n, err := e.PurgeExpiredOverrides(t.Context()); err != nil || n != 0 {
			t.Errorf("PurgeExpiredOverrides = %d, %v; want 0, nil", n, err)
		}
	})
	t.Run("DeletesOnlyExpired", func(t *testing.T) {
		b.clock.Advance(2 * time.Hour) // the second expiry is exactly now: expired
		n, err := e.PurgeExpiredOverrides(t.Context())
		if err != nil || n != int64(len(expired)) {
			t.Fatalf("PurgeExpiredOverrides = %d, %v; want %d, nil", n, err, len(expired))
		}
		// The database's clock has not moved, so it still calls the purged rows active
		// had they survived: what remains is exactly what was kept.
		rows, err := b.st.ListActiveFeatureFlagOverrides(t.Context())
		if err != nil {
			t.Fatalf("list overrides: %v", err)
		}
		var left []uuid.UUID
		for _, r := range rows {
			left = append(left, r.SubjectID)
		}
		want := []uuid.UUID{kept[0].SubjectID, kept[1].SubjectID}
		if !slices.Equal(left, want) { // ordered by subject_type: org before user
			t.Errorf("overrides left = %v, want %v", left, want)
		}
	})
}
