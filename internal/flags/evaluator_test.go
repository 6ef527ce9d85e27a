package flags_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/flags"
)

func TestRolloutDistribution(t *testing.T) {
	t.Parallel()
	const subjects, percent = 10_000, 30
	for _, tt := range []struct {
		name   string
		sticky flags.SubjectType
	}{
		{"StickyByOrgWithinTwoPoints", flags.SubjectOrg},
		{"StickyByUserWithinTwoPoints", flags.SubjectUser},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			e1, e2 := b.evaluator(t, nil), b.evaluator(t, nil)
			mustSet(t, e1, flags.Flag{Key: "chat.rollout", Enabled: true, RolloutPercent: percent, StickyBy: tt.sticky})
			on := 0
			for range subjects {
				// UUIDv7, as Kiln generates them: time-ordered, so close ids share a prefix.
				s := flags.Subject{OrgID: uuid.Must(uuid.NewV7()), UserID: uuid.Must(uuid.NewV7())}
				got := e1.Enabled(t.Context(), "chat.rollout", s)
				if again, other := e1.Enabled(t.Context(), "chat.rollout", s), e2.Enabled(t.Context(), "chat.rollout", s); again != got || other != got {
					t.Fatalf("subject %+v: got %v, then %v, and %v on another replica", s, got, again, other)
				}
				if got {
					on++
				}
			}
			if lo, hi := subjects*(percent-2)/100, subjects*(percent+2)/100; on < lo || on > hi {
				t.Errorf("%d of %d subjects enabled, want %d..%d", on, subjects, lo, hi)
			}
			t.Logf("%d of %d subjects enabled at %d %%", on, subjects, percent)
		})
	}
}

func TestRolloutSubject(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := b.evaluator(t, nil)
	mustSet(t, e, flags.Flag{Key: "by-org", Enabled: true, RolloutPercent: 50, StickyBy: flags.SubjectOrg})
	mustSet(t, e, flags.Flag{Key: "by-user", Enabled: true, RolloutPercent: 50, StickyBy: flags.SubjectUser})
	// Each case maps one id to two subjects that must always get the same answer.
	tests := []struct {
		name string
		key  string
		a, b func(id uuid.UUID) flags.Subject
	}{
		{"SameForEveryUserOfAnOrg", "by-org",
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: id, UserID: uuid.New()} },
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: id, UserID: uuid.New()} }},
		{"SameForAUserInEveryOrg", "by-user",
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: uuid.New(), UserID: id} },
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: uuid.New(), UserID: id} }},
		{"ByOrgFallsBackToUser", "by-org",
			func(id uuid.UUID) flags.Subject { return flags.Subject{UserID: id} },
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: id} }},
		{"ByUserFallsBackToOrg", "by-user",
			func(id uuid.UUID) flags.Subject { return flags.Subject{OrgID: id} },
			func(id uuid.UUID) flags.Subject { return flags.Subject{UserID: id} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const n = 1000
			on := 0
			for range n {
				id := uuid.New()
				got := e.Enabled(t.Context(), tt.key, tt.a(id))
				if other := e.Enabled(t.Context(), tt.key, tt.b(id)); other != got {
					t.Fatalf("id %s: %v for %+v but %v for %+v", id, got, tt.a(id), other, tt.b(id))
				}
				if got {
					on++
				}
			}
			if on == 0 || on == n { // the comparison above would pass trivially
				t.Errorf("%d of %d enabled at 50 %%", on, n)
			}
		})
	}
}

func TestInvalidationAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, c := b.evaluator(t, map[string]bool{"chat.v2": true}), b.evaluator(t, map[string]bool{"chat.v2": true})
	run(t, a)
	run(t, c)
	waitSubscribers(t, b, 2)
	s := flags.Subject{OrgID: uuid.New(), UserID: uuid.New()}

	steps := []struct {
		name   string
		writer *flags.Evaluator
		write  func(ctx context.Context, e *flags.Evaluator) error
		reader *flags.Evaluator
		want   bool
	}{
		{"SetVisibleOnOtherReplica", a, func(ctx context.Context, e *flags.Evaluator) error {
			_, err := e.Set(ctx, flags.Flag{Key: "chat.v2", Enabled: false, RolloutPercent: 100, StickyBy: flags.SubjectOrg}, audit.Actor{})
			return err
		}, c, false},
		{"SetOverrideVisibleOnOtherReplica", c, func(ctx context.Context, e *flags.Evaluator) error {
			_, err := e.SetOverride(ctx, flags.Override{FlagKey: "chat.v2", SubjectType: flags.SubjectUser, SubjectID: s.UserID, Enabled: true})
			return err
		}, a, true},
		{"DeleteOverrideVisibleOnOtherReplica", a, func(ctx context.Context, e *flags.Evaluator) error {
			return e.DeleteOverride(ctx, "chat.v2", flags.SubjectUser, s.UserID)
		}, c, false},
		{"DeleteVisibleOnOtherReplica", c, func(ctx context.Context, e *flags.Evaluator) error {
			return e.Delete(ctx, "chat.v2", audit.Actor{})
		}, a, true},
	}
	// Both replicas hold a warm snapshot before each write; only the invalidation can
	// change the reader's answer, since the TTL is a day and the clock stands still.
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if got := st.reader.Enabled(t.Context(), "chat.v2", s); got == st.want {
				t.Fatalf("Enabled = %v before the write; the step proves nothing", got)
			}
			st.writer.Enabled(t.Context(), "chat.v2", s)
			start := time.Now()
			if err := st.write(t.Context(), st.writer); err != nil {
				t.Fatalf("write: %v", err)
			}
			if got := st.writer.Enabled(t.Context(), "chat.v2", s); got != st.want {
				t.Fatalf("writer's Enabled = %v right after its own write, want %v", got, st.want)
			}
			for st.reader.Enabled(t.Context(), "chat.v2", s) != st.want {
				if time.Since(start) > time.Second {
					t.Fatalf("other replica still answers %v after 1s", !st.want)
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("visible on the other replica after %s", time.Since(start))
		})
	}
}

// waitSubscribers waits until n replicas listen for invalidations.
func waitSubscribers(t *testing.T, b *bundle, n int64) {
	t.Helper()
	channel := b.ks.Key("flags", 1, "invalidate")
	deadline := time.Now().Add(5 * time.Second)
	for {
		subs, err := b.rdb.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		if subs[channel] == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers on %s, want %d", subs[channel], channel, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoadFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var logs bytes.Buffer
	newEvaluator := func() *flags.Evaluator {
		return flags.New(b.st, b.rdb, b.ks, map[string]bool{"f": false, "g": true}, time.Minute, slog.New(slog.NewJSONHandler(&logs, nil)), b.clock.Now)
	}
	e := newEvaluator()
	mustSet(t, e, flags.Flag{Key: "f", Enabled: true, RolloutPercent: 100, StickyBy: flags.SubjectOrg})
	s := flags.Subject{OrgID: uuid.New()}
	if !e.Enabled(t.Context(), "f", s) {
		t.Fatal("Enabled = false for an enabled flag")
	}
	b.st.Pool.Close() // every later load fails

	t.Run("KeepsLastSnapshotAndLogs", func(t *testing.T) {
		b.clock.Advance(2 * time.Minute) // past the TTL
		if !e.Enabled(t.Context(), "f", s) {
			t.Error("Enabled = false after a failed reload, want the last snapshot's true")
		}
		if got := strings.Count(logs.String(), "load feature flags"); got != 1 {
			t.Errorf("%d load failures logged, want 1:\n%s", got, logs.String())
		}
	})
	t.Run("RetriesAfterDelayNotEveryCall", func(t *testing.T) {
		logs.Reset()
		for range 100 {
			e.Enabled(t.Context(), "f", s)
		}
		if got := strings.Count(logs.String(), "load feature flags"); got != 0 {
			t.Errorf("%d load failures logged within the retry delay, want 0", got)
		}
		b.clock.Advance(time.Second)
		e.Enabled(t.Context(), "f", s)
		if got := strings.Count(logs.String(), "load feature flags"); got != 1 {
			t.Errorf("%d load failures logged after the retry delay, want 1", got)
		}
	})
	t.Run("DefaultsWithoutSnapshot", func(t *testing.T) {
		fresh := newEvaluator()
		if fresh.Enabled(t.Context(), "f", s) || !fresh.Enabled(t.Context(), "g", s) || fresh.Enabled(t.Context(), "h", s) {
			t.Error("a replica that never loaded must answer from the configured defaults")
		}
	})
}

func BenchmarkEnabled(b *testing.B) {
	bb := setup(b)
	e := flags.New(bb.st, bb.rdb, bb.ks, map[string]bool{"cfg.only": true}, ttl, slog.New(slog.DiscardHandler), time.Now)
	org, user := uuid.New(), uuid.New()
	// A realistic snapshot: 50 flags, each with a few overrides.
	for i := range 50 {
		key := fmt.Sprintf("bench.flag_%02d", i)
		mustSet(b, e, flags.Flag{Key: key, Enabled: true, RolloutPercent: 30, StickyBy: flags.SubjectOrg})
		for range 4 {
			mustSetOverride(b, e, flags.Override{FlagKey: key, SubjectType: flags.SubjectUser, SubjectID: uuid.New(), Enabled: true})
		}
	}
	mustSetOverride(b, e, flags.Override{FlagKey: "bench.flag_00", SubjectType: flags.SubjectUser, SubjectID: user, Enabled: true})
	s := flags.Subject{OrgID: org, UserID: user}
	ctx := context.Background()
	e.Enabled(ctx, "bench.flag_00", s) // warm the snapshot

	for _, bc := range []struct{ name, key string }{
		{"UserOverride", "bench.flag_00"},
		{"Rollout", "bench.flag_01"},
		{"ConfigDefault", "cfg.only"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Enabled(ctx, bc.key, s)
			}
		})
	}
	b.Run("RolloutParallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.Enabled(ctx, "bench.flag_01", s)
			}
		})
	})
}
