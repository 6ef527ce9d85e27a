package apikey_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
)

// lookupSQL is in the one statement Authenticate sends.
const lookupSQL = "FROM api_keys WHERE secret_hash"

// flushSQL is in the one statement a last-used flush sends.
const flushSQL = "UPDATE api_keys SET last_used_at"

// warm authenticates secret on s until a call is answered without a query, so that a
// late (re)subscription, which empties the cache, cannot undo the warming.
func warm(t testing.TB, b *bundle, s *apikey.Service, secret string) {
	t.Helper()
	for range 50 {
		before := b.sql.count(lookupSQL)
		if _, err := s.Authenticate(context.Background(), secret); err != nil {
			t.Fatalf("Authenticate while warming: %v", err)
		}
		if b.sql.count(lookupSQL) == before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the key never came from the cache")
}

// wantInvalidCredentials fails unless err is exactly the one error every unusable key gets.
func wantInvalidCredentials(t *testing.T, err error) {
	t.Helper()
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || e.Code != errs.Unauthenticated || e.Message != "invalid credentials" || e.Fields != nil ||
		err.Error() != "unauthenticated: invalid credentials" {
		t.Fatalf("err = %#v, want exactly unauthenticated: invalid credentials", err)
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	key, secret := create(t, s, b.orgA, nil, "chat", "kb:read")
	revoked, revokedSecret := create(t, s, b.orgA, nil)
	if err := s.Revoke(t.Context(), b.orgA, revoked.ID, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	_, expiredSecret := create(t, s, b.orgA, ptr(b.clock.Now().Add(time.Minute)))
	if _, err := s.Authenticate(t.Context(), expiredSecret); err != nil { // cached while valid
		t.Fatalf("Authenticate before expiry: %v", err)
	}
	b.clock.Advance(time.Minute)

	t.Run("OK", func(t *testing.T) {
		got, err := s.Authenticate(t.Context(), secret)
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if !equalKeys(got, key) {
			t.Errorf("Authenticate = %+v, want %+v", got, key)
		}
	})
	for _, tt := range []struct {
		name   string
		secret string
		// noIO: refused before the cache, the database or Redis is consulted.
		noIO bool
	}{
		{"ErrMalformedEmpty", "", true},
		{"ErrMalformedGarbage", "hunter2", true},
		{"ErrMalformedJWT", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxIn0.c2ln", true},
		{"ErrMalformedOtherVendorKey", "sk-proj-0123456789abcdefghijklmnopqrstuvwxyz", true},
		{"ErrMalformedTruncated", secret[:len(secret)-1], true},
		{"ErrMalformedBadChecksum", withChar(secret, len(secret)-1, flip(secret[len(secret)-1])), true},
		{"ErrMalformedTypo", withChar(secret, 12, flip(secret[12])), true},
		{"ErrOtherEnv", mustGenerate(t, "live"), true},
		{"ErrUnknown", mustGenerate(t, env), false},
		{"ErrRevoked", revokedSecret, false},
		{"ErrExpired", expiredSecret, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sqlBefore, redisBefore := b.sql.count(""), b.redisCmds.count()
			k, err := s.Authenticate(t.Context(), tt.secret)
			wantInvalidCredentials(t, err)
			if k.ID != uuid.Nil {
				t.Errorf("Authenticate returned key %s with an error", k.ID)
			}
			if tt.noIO {
				if n := b.sql.count("") - sqlBefore; n != 0 {
					t.Errorf("%d database statements for a malformed key, want none", n)
				}
				if n := b.redisCmds.count() - redisBefore; n != 0 {
					t.Errorf("%d Redis commands for a malformed key, want none", n)
				}
			}
		})
	}
}

func TestAuthenticateWarmKeyDoesNoIO(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	key, secret, err := s.Create(t.Context(), b.orgA, audit.Actor{}.As(b.user), "ci", []string{"chat"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(t.Context(), secret); err != nil {
		t.Fatalf("Authenticate (cold): %v", err)
	}
	if n := b.sql.count(lookupSQL); n != 1 {
		t.Fatalf("%d lookups for the first use, want 1", n)
	}
	sqlBefore, redisBefore := b.sql.count(""), b.redisCmds.count()
	for range 1000 {
		if _, err := s.Authenticate(t.Context(), secret); err != nil {
			t.Fatalf("Authenticate (warm): %v", err)
		}
	}
	if n := b.sql.count("") - sqlBefore; n != 0 {
		t.Errorf("%d database statements for 1000 warm authentications, want none", n)
	}
	if n := b.redisCmds.count() - redisBefore; n != 0 {
		t.Errorf("%d Redis commands for 1000 warm authentications, want none", n)
	}

	t.Run("OKWithTheDatabaseGone", func(t *testing.T) {
		b.st.Pool.Close()
		if k, err := s.Authenticate(t.Context(), secret); err != nil || k.ID != key.ID {
			t.Errorf("Authenticate with the pool closed = %s, %v; want the cached key", k.ID, err)
		}
	})
	t.Run("OKReturnsACopy", func(t *testing.T) {
		k, _ := s.Authenticate(t.Context(), secret)
		k.Scopes[0] = apikey.ScopeAdmin
		*k.CreatedBy = uuid.New()
		if again, _ := s.Authenticate(t.Context(), secret); !slices.Equal(again.Scopes, []string{"chat"}) || *again.CreatedBy != b.user {
			t.Errorf("key = %+v after a caller changed its copy, want scopes [chat] created by %s", again, b.user)
		}
	})
}

func TestAuthenticateUnknownKeyRememberedBriefly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	unknown := mustGenerate(t, env)
	for range 10 {
		_, err := s.Authenticate(t.Context(), unknown)
		wantInvalidCredentials(t, err)
	}
	if n := b.sql.count(lookupSQL); n != 1 {
		t.Errorf("%d lookups for 10 tries of one unknown key, want 1", n)
	}
	b.clock.Advance(5 * time.Second)
	_, err := s.Authenticate(t.Context(), unknown)
	wantInvalidCredentials(t, err)
	if n := b.sql.count(lookupSQL); n != 2 {
		t.Errorf("%d lookups once the miss expired, want 2", n)
	}
}

func TestAuthenticateDatabaseDown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, secret := create(t, b.service(t), b.orgA, nil)
	b.st.Pool.Close()
	_, err := b.service(t).Authenticate(t.Context(), secret)
	if err == nil || errs.CodeOf(err) == errs.Unauthenticated {
		t.Errorf("Authenticate with the database down = %v, want an internal error, not a bad-credentials answer", err)
	}
}

func TestWritesReachOtherReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a, c := b.service(t), b.service(t)
	run(t, a)
	run(t, c)
	waitSubscribers(t, b, 2)
	for _, tt := range []struct {
		name  string
		org   uuid.UUID
		write func(ctx context.Context, k apikey.Key) error
	}{
		{"RevokeRefusedWithinOneSecond", b.orgA, func(ctx context.Context, k apikey.Key) error {
			return a.Revoke(ctx, b.orgA, k.ID, audit.Actor{})
		}},
		{"RotateWithoutGraceRefusedWithinOneSecond", b.orgA, func(ctx context.Context, k apikey.Key) error {
			_, _, err := a.Rotate(ctx, b.orgA, k.ID, 0, audit.Actor{})
			return err
		}},
		{"OrgDeletedThenForgetAllRefusedWithinOneSecond", b.orgB, func(ctx context.Context, k apikey.Key) error {
			if _, err := b.st.Pool.Exec(ctx, "DELETE FROM orgs WHERE id = $1", b.orgB); err != nil {
				return err
			}
			a.ForgetAll(ctx)
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, secret := create(t, a, tt.org, nil)
			warm(t, b, c, secret)
			if err := tt.write(t.Context(), k); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for {
				_, err := c.Authenticate(t.Context(), secret)
				if errs.CodeOf(err) == errs.Unauthenticated {
					t.Logf("refused by the other replica after %s", time.Since(start))
					break
				}
				if time.Since(start) > time.Second {
					t.Fatalf("other replica still accepts the key after %s (err %v)", time.Since(start), err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	t.Run("RotateGraceShortensOnOtherReplica", func(t *testing.T) {
		k, secret := create(t, a, b.orgA, nil)
		warm(t, b, c, secret)
		if _, _, err := a.Rotate(t.Context(), b.orgA, k.ID, time.Minute, audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		// The replica re-reads the key once the invalidation arrives; then the new expiry
		// applies without further I/O.
		before, start := b.sql.count(lookupSQL), time.Now()
		for b.sql.count(lookupSQL) == before {
			if _, err := c.Authenticate(t.Context(), secret); err != nil {
				t.Fatalf("old key refused during its grace: %v", err)
			}
			if time.Since(start) > time.Second {
				t.Fatal("other replica did not re-read the rotated key within 1 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		b.clock.Advance(time.Minute)
		_, err := c.Authenticate(t.Context(), secret)
		wantInvalidCredentials(t, err)
	})
}

func TestLastUsed(t *testing.T) {
	t.Parallel()
	lastUsed := func(t *testing.T, b *bundle, id uuid.UUID) *time.Time {
		t.Helper()
		var at *time.Time
		if err := b.st.Pool.QueryRow(context.Background(), "SELECT last_used_at FROM api_keys WHERE id = $1", id).Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	t.Run("OneUpdateWhenRunStops", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.service(t) // flushes hourly: only the final flush happens
		stop := run(t, s)
		var keys []uuid.UUID
		var secrets []string
		for range 3 {
			k, secret := create(t, s, b.orgA, nil)
			keys, secrets = append(keys, k.ID), append(secrets, secret)
		}
		unused, _ := create(t, s, b.orgA, nil)
		for i := range 100 {
			if _, err := s.Authenticate(t.Context(), secrets[i%3]); err != nil {
				t.Fatal(err)
			}
		}
		if n := b.sql.count(flushSQL); n != 0 || lastUsed(t, b, keys[0]) != nil {
			t.Fatalf("%d last-used writes before any flush, want none", n)
		}
		stop()
		if n := b.sql.count(flushSQL); n != 1 {
			t.Errorf("%d last-used writes for 100 uses of 3 keys, want 1", n)
		}
		for _, id := range keys {
			if at := lastUsed(t, b, id); at == nil || !at.Equal(b.clock.Now()) {
				t.Errorf("key %s last_used_at = %v, want %v", id, at, b.clock.Now())
			}
		}
		if at := lastUsed(t, b, unused.ID); at != nil {
			t.Errorf("unused key's last_used_at = %v, want NULL", at)
		}
	})
	t.Run("OneUpdatePerFlushWithUses", func(t *testing.T) {
		t.Parallel()
		const interval = 50 * time.Millisecond
		b := setup(t)
		s := b.service(t, func(c *apikey.Config) { c.LastUsedFlushInterval = interval })
		run(t, s)
		k1, secret1 := create(t, s, b.orgA, nil)
		k2, secret2 := create(t, s, b.orgA, nil)
		for range 100 {
			if _, err := s.Authenticate(t.Context(), secret1); err != nil {
				t.Fatal(err)
			}
		}
		first := waitLastUsed(t, func() *time.Time { return lastUsed(t, b, k1.ID) })
		time.Sleep(4 * interval) // idle flushes must not write
		// 100 uses take far less than an interval but may straddle one tick.
		if n := b.sql.count(flushSQL); n < 1 || n > 2 {
			t.Errorf("%d last-used writes for 100 uses, want 1 (2 if a tick fell among them)", n)
		}
		b.clock.Advance(time.Minute)
		if _, err := s.Authenticate(t.Context(), secret2); err != nil {
			t.Fatal(err)
		}
		waitLastUsed(t, func() *time.Time { return lastUsed(t, b, k2.ID) })
		if at := lastUsed(t, b, k1.ID); !at.Equal(*first) {
			t.Errorf("unused key 1 last_used_at moved from %v to %v", first, at)
		}
	})
}

// waitLastUsed polls get for up to 2 s until it returns a time.
func waitLastUsed(t *testing.T, get func() *time.Time) *time.Time {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		if at := get(); at != nil {
			return at
		}
		if time.Now().After(deadline) {
			t.Fatal("last_used_at still NULL after 2 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAuthenticateConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	fast := func(c *apikey.Config) { c.LastUsedFlushInterval = 5 * time.Millisecond }
	replicas := []*apikey.Service{b.service(t, fast), b.service(t, fast)}
	for _, r := range replicas {
		run(t, r)
	}
	waitSubscribers(t, b, 2)
	var secrets []string
	var victim apikey.Key
	for i := range 4 {
		k, secret := create(t, replicas[0], b.orgA, nil)
		if i == 0 {
			victim = k
		}
		secrets = append(secrets, secret)
	}
	var calls atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				s, secret := replicas[(g+i)%2], secrets[i%4]
				_, err := s.Authenticate(context.Background(), secret)
				calls.Add(1)
				if err != nil && (secret != secrets[0] || errs.CodeOf(err) != errs.Unauthenticated) {
					t.Errorf("Authenticate: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for calls.Load() < 1000 {
			time.Sleep(time.Millisecond)
		}
		if err := replicas[1].Revoke(context.Background(), b.orgA, victim.ID, audit.Actor{}); err != nil {
			t.Errorf("Revoke: %v", err)
		}
	})
	wg.Wait()
	for i, s := range replicas {
		// The revoking replica refuses at once, the other once the invalidation arrives.
		deadline := time.Now().Add(time.Second)
		for {
			_, err := s.Authenticate(t.Context(), secrets[0])
			if errs.CodeOf(err) == errs.Unauthenticated {
				break
			}
			if i == 1 || time.Now().After(deadline) {
				t.Fatalf("replica %d: Authenticate(revoked) = %v", i, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	bb := setup(b)
	b.Run("warm", func(b *testing.B) {
		s := bb.service(b)
		_, secret := create(b, s, bb.orgA, nil, "chat", "kb:read")
		warm(b, bb, s, secret)
		before := bb.sql.count("")
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Authenticate(context.Background(), secret); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(bb.sql.count("")-before)/float64(b.N), "queries/op")
	})
	b.Run("warm-parallel", func(b *testing.B) {
		s := bb.service(b)
		var secrets []string
		for range 16 {
			_, secret := create(b, s, bb.orgA, nil, "chat")
			warm(b, bb, s, secret)
			secrets = append(secrets, secret)
		}
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			secret := secrets[next.Add(1)%int64(len(secrets))]
			for pb.Next() {
				if _, err := s.Authenticate(context.Background(), secret); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("cold", func(b *testing.B) {
		// Each call sees a clock a cache TTL later, so every call misses and reads Postgres.
		var ticks atomic.Int64
		start := bb.clock.Now()
		now := func() time.Time { return start.Add(time.Duration(ticks.Add(1)) * time.Second) }
		s := apikey.New(bb.st, bb.rdb, bb.ks, apikey.Config{Env: env, CacheTTL: time.Millisecond}, slog.New(slog.DiscardHandler), now)
		_, secret := create(b, s, bb.orgA, nil, "chat")
		before := bb.sql.count(lookupSQL)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Authenticate(context.Background(), secret); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(bb.sql.count(lookupSQL)-before)/float64(b.N), "queries/op")
	})
}
