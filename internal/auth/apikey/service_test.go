package apikey_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// env is the key env the test deployment issues and accepts.
const env = "test"

// bundle is one test's database, Redis key space, clock and I/O counters; every Service
// made from it plays one replica of the same deployment.
type bundle struct {
	st    *store.Store
	rdb   redis.UniversalClient
	ks    redisclient.Keyspace
	clock *storetest.Clock
	// sql records every statement the services send to Postgres.
	sql *queryLog
	// redisCmds counts commands sent on rdb (subscriptions included).
	redisCmds *redisCounter
	// orgA and orgB are two tenants; user belongs to orgA.
	orgA, orgB, user uuid.UUID
}

func setup(t testing.TB) *bundle {
	t.Helper()
	base := storetest.New(t)
	cfg, err := pgxpool.ParseConfig(base.Pool.Config().ConnString())
	if err != nil {
		t.Fatalf("parse pool config: %v", err)
	}
	ql := &queryLog{}
	cfg.ConnConfig.Tracer = ql
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open traced pool: %v", err)
	}
	t.Cleanup(pool.Close)
	rdb, ks := storetest.Redis(t)
	rc := &redisCounter{}
	rdb.AddHook(rc)
	b := &bundle{
		st: store.New(pool), rdb: rdb, ks: ks, clock: storetest.NewClock(), sql: ql, redisCmds: rc,
		orgA: uuid.Must(uuid.NewV7()), orgB: uuid.Must(uuid.NewV7()), user: uuid.Must(uuid.NewV7()),
	}
	b.exec(t, "INSERT INTO orgs (id, name) VALUES ($1, 'A'), ($2, 'B')", b.orgA, b.orgB)
	b.exec(t, "INSERT INTO users (id, email, personal_org_id) VALUES ($1, 'a@example.com', $2)", b.user, b.orgA)
	ql.reset()
	return b
}

// exec runs SQL that is test set-up, not service I/O, on the untraced pool's database.
func (b *bundle) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := b.st.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// service returns a new replica with a long cache TTL and flush interval, so that only
// invalidations, clock moves and Run's end trigger reloads and flushes; change adjusts cfg.
func (b *bundle) service(t testing.TB, change ...func(*apikey.Config)) *apikey.Service {
	t.Helper()
	cfg := apikey.Config{Env: env, CacheTTL: time.Hour, LastUsedFlushInterval: time.Hour}
	for _, c := range change {
		c(&cfg)
	}
	return apikey.New(b.st, b.rdb, b.ks, cfg, slog.New(slog.NewTextHandler(t.Output(), nil)), b.clock.Now)
}

// run starts s.Run and returns a function that stops it and waits; the test's cleanup
// stops it too, and checks that it stopped cleanly.
func run(t *testing.T, s *apikey.Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitSubscribers waits until n replicas listen for invalidations.
func waitSubscribers(t *testing.T, b *bundle, n int64) {
	t.Helper()
	channel := b.ks.Key("apikeys", 1, "invalidate")
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

// create makes a key in org with the given scopes (chat when none) and returns it with its secret.
func create(t testing.TB, s *apikey.Service, org uuid.UUID, expiresAt *time.Time, scopes ...string) (apikey.Key, string) {
	t.Helper()
	if len(scopes) == 0 {
		scopes = []string{apikey.ScopeChat}
	}
	k, secret, err := s.Create(context.Background(), org, audit.Actor{}, "ci", scopes, expiresAt, nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return k, secret
}

// queryLog is a pgx tracer that records every statement sent.
type queryLog struct {
	mu  sync.Mutex
	sql []string
}

func (l *queryLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sql = append(l.sql, d.SQL)
	return ctx
}

func (l *queryLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// count returns how many statements sent so far contain s ("" counts every statement).
func (l *queryLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, q := range l.sql {
		if strings.Contains(q, s) {
			n++
		}
	}
	return n
}

func (l *queryLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sql = nil
}

// redisCounter is a go-redis hook that counts commands.
type redisCounter struct {
	mu sync.Mutex
	n  int
}

func (c *redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.mu.Lock()
		c.n += len(cmds)
		c.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (c *redisCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func ptr[T any](v T) *T { return &v }

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if got := errs.CodeOf(err); err == nil || got != code {
		t.Fatalf("err = %v (%s), want %s", err, got, code)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	now := b.clock.Now()

	t.Run("OKStoresOnlyHashAndDisplay", func(t *testing.T) {
		t.Parallel()
		exp := now.Add(30 * 24 * time.Hour)
		k, secret, err := s.Create(t.Context(), b.orgA, audit.Actor{}.As(b.user), "deploy bot", []string{"kb:read", "chat"}, &exp, nil)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		p, ok := apikey.Parse(secret)
		if !ok || p.Env != env {
			t.Fatalf("secret %q does not parse as a %s key", secret, env)
		}
		want := apikey.Key{
			ID: k.ID, OrgID: b.orgA, Name: "deploy bot", Display: apikey.Display(secret),
			Scopes: []string{"kb:read", "chat"}, CreatedBy: &b.user, CreatedAt: now, ExpiresAt: &exp,
		}
		if !equalKeys(k, want) {
			t.Errorf("Create = %+v, want %+v", k, want)
		}
		if k.ID.Version() != 7 {
			t.Errorf("id %s is UUID version %d, want 7", k.ID, k.ID.Version())
		}
		if got, err := s.Get(t.Context(), b.orgA, k.ID); err != nil || !equalKeys(got, k) {
			t.Errorf("Get = %+v, %v; want %+v", got, err, k)
		}
		var stored []byte
		var row string
		err = b.st.Pool.QueryRow(t.Context(), "SELECT secret_hash, t::text FROM api_keys t WHERE id = $1", k.ID).Scan(&stored, &row)
		if err != nil {
			t.Fatal(err)
		}
		if string(stored) != string(apikey.Hash(secret)) {
			t.Errorf("secret_hash = %x, want SHA-256 of the secret %x", stored, apikey.Hash(secret))
		}
		if strings.Contains(row, secret) || strings.Contains(row, p.Random) || strings.Contains(row, p.Random[6:16]) {
			t.Errorf("the row holds the secret: %s", row)
		}
	})
	t.Run("OKWithoutCreatorOrExpiry", func(t *testing.T) {
		t.Parallel()
		k, _, err := s.Create(t.Context(), b.orgA, audit.Actor{}, strings.Repeat("é", 100), apikey.Scopes, nil, nil)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if k.CreatedBy != nil || k.ExpiresAt != nil || k.RevokedAt != nil || k.LastUsedAt != nil || k.RotatedTo != nil {
			t.Errorf("Create = %+v, want no creator, expiry, revocation, use or rotation", k)
		}
	})

	for _, tt := range []struct {
		name     string
		keyName  string
		scopes   []string
		expires  time.Duration // 0: no expiry
		pointers []string
	}{
		{"ErrInvalidBlankName", "  ", []string{"chat"}, 0, []string{"/name"}},
		{"ErrInvalidNameTooLong", strings.Repeat("n", 101), []string{"chat"}, 0, []string{"/name"}},
		{"ErrInvalidControlCharacterInName", "a\x00b", []string{"chat"}, 0, []string{"/name"}},
		{"ErrInvalidNoScopes", "ci", nil, 0, []string{"/scopes"}},
		{"ErrInvalidUnknownScope", "ci", []string{"chat", "root"}, 0, []string{"/scopes/1"}},
		{"ErrInvalidDuplicateScope", "ci", []string{"chat", "jobs", "chat"}, 0, []string{"/scopes/2"}},
		{"ErrInvalidExpiryNow", "ci", []string{"chat"}, -1, []string{"/expires_at"}},
		{"ErrInvalidExpiryPast", "ci", []string{"chat"}, -time.Hour, []string{"/expires_at"}},
		{"ErrInvalidEveryField", "", []string{"x"}, -time.Hour, []string{"/name", "/scopes/0", "/expires_at"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var exp *time.Time
			switch {
			case tt.expires == -1:
				exp = &now
			case tt.expires != 0:
				exp = ptr(now.Add(tt.expires))
			}
			before := b.sql.count("INSERT INTO api_keys")
			_, secret, err := s.Create(t.Context(), b.orgA, audit.Actor{}, tt.keyName, tt.scopes, exp, nil)
			checkFields(t, err, tt.pointers)
			if secret != "" {
				t.Errorf("Create returned secret %q with an error", secret)
			}
			if after := b.sql.count("INSERT INTO api_keys"); after != before {
				t.Errorf("an invalid key reached the database")
			}
		})
	}
	t.Run("ErrInvalidUnknownOrg", func(t *testing.T) {
		t.Parallel()
		_, _, err := s.Create(t.Context(), uuid.New(), audit.Actor{}, "ci", []string{"chat"}, nil, nil)
		wantCode(t, err, errs.Invalid)
	})
}

// equalKeys compares keys field by field, times by instant.
func equalKeys(a, b apikey.Key) bool {
	eqTime := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	eqID := func(x, y *uuid.UUID) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return a.ID == b.ID && a.OrgID == b.OrgID && a.Name == b.Name && a.Display == b.Display &&
		slices.Equal(a.Scopes, b.Scopes) && eqID(a.CreatedBy, b.CreatedBy) && a.CreatedAt.Equal(b.CreatedAt) &&
		eqTime(a.ExpiresAt, b.ExpiresAt) && eqTime(a.RevokedAt, b.RevokedAt) && eqTime(a.LastUsedAt, b.LastUsedAt) &&
		eqID(a.RotatedTo, b.RotatedTo)
}

func TestOtherOrgsKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	k, secret := create(t, s, b.orgA, nil)
	for _, tt := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetErrNotFound", func(ctx context.Context) error { _, err := s.Get(ctx, b.orgB, k.ID); return err }},
		{"RevokeErrNotFound", func(ctx context.Context) error { return s.Revoke(ctx, b.orgB, k.ID, audit.Actor{}) }},
		{"RotateErrNotFound", func(ctx context.Context) error {
			_, _, err := s.Rotate(ctx, b.orgB, k.ID, time.Hour, audit.Actor{})
			return err
		}},
		{"GetUnknownErrNotFound", func(ctx context.Context) error { _, err := s.Get(ctx, b.orgA, uuid.New()); return err }},
		{"RevokeUnknownErrNotFound", func(ctx context.Context) error { return s.Revoke(ctx, b.orgA, uuid.New(), audit.Actor{}) }},
		{"RotateUnknownErrNotFound", func(ctx context.Context) error {
			_, _, err := s.Rotate(ctx, b.orgA, uuid.New(), time.Hour, audit.Actor{})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(t.Context()), errs.NotFound)
		})
	}
	t.Run("ListShowsNone", func(t *testing.T) {
		keys, err := s.List(t.Context(), b.orgB, 10, nil)
		if err != nil || len(keys) != 0 {
			t.Errorf("List(org B) = %+v, %v; want none", keys, err)
		}
	})
	t.Run("KeyUntouched", func(t *testing.T) {
		got, err := s.Get(t.Context(), b.orgA, k.ID)
		if err != nil || got.RevokedAt != nil || got.RotatedTo != nil || got.ExpiresAt != nil {
			t.Errorf("Get = %+v, %v; want the key unrevoked and unrotated", got, err)
		}
		if _, err := s.Authenticate(t.Context(), secret); err != nil {
			t.Errorf("Authenticate: %v", err)
		}
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	var want []uuid.UUID
	for range 7 {
		k, _ := create(t, s, b.orgA, nil)
		want = append(want, k.ID)
	}
	create(t, s, b.orgB, nil)
	slices.Reverse(want) // newest first

	t.Run("OKPagesNewestFirst", func(t *testing.T) {
		var got []uuid.UUID
		var after *uuid.UUID
		for page := 0; ; page++ {
			keys, err := s.List(t.Context(), b.orgA, 3, after)
			if err != nil {
				t.Fatalf("List page %d: %v", page, err)
			}
			if len(keys) > 3 {
				t.Fatalf("page %d has %d keys, limit 3", page, len(keys))
			}
			if len(keys) == 0 {
				break
			}
			for _, k := range keys {
				if k.OrgID != b.orgA {
					t.Errorf("List(org A) returned %s of org %s", k.ID, k.OrgID)
				}
				got = append(got, k.ID)
			}
			after = &keys[len(keys)-1].ID
		}
		if !slices.Equal(got, want) {
			t.Errorf("paged ids = %v, want %v", got, want)
		}
	})
	t.Run("OKLimitAboveRows", func(t *testing.T) {
		keys, err := s.List(t.Context(), b.orgA, apikey.MaxListLimit, nil)
		if err != nil || len(keys) != 7 {
			t.Errorf("List = %d keys, %v; want 7", len(keys), err)
		}
	})
	for _, limit := range []int{0, -1, apikey.MaxListLimit + 1} {
		t.Run(fmt.Sprintf("ErrInvalidLimit%d", limit), func(t *testing.T) {
			_, err := s.List(t.Context(), b.orgA, limit, nil)
			checkFields(t, err, []string{"/limit"})
		})
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	k, secret := create(t, s, b.orgA, nil)
	if _, err := s.Authenticate(t.Context(), secret); err != nil {
		t.Fatalf("Authenticate before revoking: %v", err)
	}
	revokedAt := b.clock.Now()
	wantRevokedAt := func(t *testing.T) {
		t.Helper()
		got, err := s.Get(t.Context(), b.orgA, k.ID)
		if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(revokedAt) {
			t.Errorf("Get = %+v, %v; want revoked at %s", got, err, revokedAt)
		}
	}
	t.Run("OK", func(t *testing.T) {
		if err := s.Revoke(t.Context(), b.orgA, k.ID, audit.Actor{}); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		wantRevokedAt(t)
		_, err := s.Authenticate(t.Context(), secret)
		wantInvalidCredentials(t, err)
	})
	t.Run("OKAlreadyRevokedKeepsFirstTime", func(t *testing.T) {
		b.clock.Advance(time.Minute)
		if err := s.Revoke(t.Context(), b.orgA, k.ID, audit.Actor{}); err != nil {
			t.Fatalf("second Revoke: %v", err)
		}
		wantRevokedAt(t)
	})
}

func TestRotate(t *testing.T) {
	t.Parallel()
	const grace = time.Hour
	t.Run("OKOldKeyWorksDuringGraceOnly", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.service(t)
		exp := b.clock.Now().Add(90 * 24 * time.Hour)
		old, oldSecret, err := s.Create(t.Context(), b.orgA, audit.Actor{}, "prod", []string{"chat", "jobs"}, &exp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Authenticate(t.Context(), oldSecret); err != nil { // warm the cache
			t.Fatal(err)
		}
		next, secret, err := s.Rotate(t.Context(), b.orgA, old.ID, grace, audit.Actor{}.As(b.user))
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		want := apikey.Key{ID: next.ID, OrgID: b.orgA, Name: "prod", Display: apikey.Display(secret),
			Scopes: []string{"chat", "jobs"}, CreatedBy: &b.user, CreatedAt: b.clock.Now(), ExpiresAt: &exp}
		if next.ID == old.ID || secret == oldSecret || !equalKeys(next, want) {
			t.Errorf("Rotate = %+v, want %+v", next, want)
		}
		gotOld, _ := s.Get(t.Context(), b.orgA, old.ID)
		if gotOld.RotatedTo == nil || *gotOld.RotatedTo != next.ID || gotOld.ExpiresAt == nil ||
			!gotOld.ExpiresAt.Equal(b.clock.Now().Add(grace)) || gotOld.RevokedAt != nil {
			t.Errorf("old key after Rotate = %+v, want rotated to %s, expiring in %s", gotOld, next.ID, grace)
		}
		for _, sec := range []string{oldSecret, secret} {
			if _, err := s.Authenticate(t.Context(), sec); err != nil {
				t.Errorf("Authenticate during the grace: %v", err)
			}
		}
		b.clock.Advance(grace)
		if _, err := s.Authenticate(t.Context(), oldSecret); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("Authenticate(old) after the grace: %v, want unauthenticated", err)
		}
		if k, err := s.Authenticate(t.Context(), secret); err != nil || k.ID != next.ID {
			t.Errorf("Authenticate(new) after the grace = %s, %v", k.ID, err)
		}
	})
	t.Run("OKZeroGraceRevokesAtOnce", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.service(t)
		old, oldSecret := create(t, s, b.orgA, nil)
		if _, err := s.Authenticate(t.Context(), oldSecret); err != nil {
			t.Fatal(err)
		}
		next, secret, err := s.Rotate(t.Context(), b.orgA, old.ID, 0, audit.Actor{})
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if _, err := s.Authenticate(t.Context(), oldSecret); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("Authenticate(old): %v, want unauthenticated", err)
		}
		if k, err := s.Authenticate(t.Context(), secret); err != nil || k.ID != next.ID {
			t.Errorf("Authenticate(new) = %s, %v", k.ID, err)
		}
		if gotOld, _ := s.Get(t.Context(), b.orgA, old.ID); gotOld.RevokedAt == nil || gotOld.RotatedTo == nil {
			t.Errorf("old key = %+v, want revoked and rotated", gotOld)
		}
	})
	t.Run("OKGraceNeverExtendsExpiry", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.service(t)
		exp := b.clock.Now().Add(10 * time.Minute)
		old, _ := create(t, s, b.orgA, &exp)
		next, _, err := s.Rotate(t.Context(), b.orgA, old.ID, grace, audit.Actor{})
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		gotOld, _ := s.Get(t.Context(), b.orgA, old.ID)
		if gotOld.ExpiresAt == nil || !gotOld.ExpiresAt.Equal(exp) || next.ExpiresAt == nil || !next.ExpiresAt.Equal(exp) {
			t.Errorf("expiry of old %v and new %v, want both %v", gotOld.ExpiresAt, next.ExpiresAt, exp)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		s := b.service(t)
		rotated, _ := create(t, s, b.orgA, nil)
		if _, _, err := s.Rotate(t.Context(), b.orgA, rotated.ID, grace, audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		revoked, _ := create(t, s, b.orgA, nil)
		if err := s.Revoke(t.Context(), b.orgA, revoked.ID, audit.Actor{}); err != nil {
			t.Fatal(err)
		}
		expired, _ := create(t, s, b.orgA, ptr(b.clock.Now().Add(time.Minute)))
		active, _ := create(t, s, b.orgA, nil)
		for _, tt := range []struct {
			name  string
			id    uuid.UUID
			grace time.Duration
			code  errs.Code
		}{
			{"ErrConflictAlreadyRotated", rotated.ID, grace, errs.Conflict},
			{"ErrConflictRevoked", revoked.ID, grace, errs.Conflict},
			{"ErrConflictExpired", expired.ID, grace, errs.Conflict},
			{"ErrInvalidNegativeGrace", active.ID, -time.Second, errs.Invalid},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if tt.name == "ErrConflictExpired" {
					b.clock.Advance(2 * time.Minute)
				}
				k, secret, err := s.Rotate(t.Context(), b.orgA, tt.id, tt.grace, audit.Actor{})
				wantCode(t, err, tt.code)
				if secret != "" || k.ID != uuid.Nil {
					t.Errorf("Rotate returned %+v, %q with an error", k, secret)
				}
			})
		}
		if keys, _ := s.List(t.Context(), b.orgA, 100, nil); len(keys) != 5 {
			t.Errorf("%d keys after refused rotations, want 5 (4 created, 1 rotated)", len(keys))
		}
	})
}

func TestRotateIsOneTransaction(t *testing.T) {
	t.Parallel()
	b := setup(t)
	s := b.service(t)
	old, secret := create(t, s, b.orgA, nil)
	// A concurrent rotation of the same key must lose, not leave two successors.
	var wg sync.WaitGroup
	rotateErrs := make([]error, 8)
	for i := range rotateErrs {
		wg.Go(func() { _, _, rotateErrs[i] = s.Rotate(context.Background(), b.orgA, old.ID, time.Hour, audit.Actor{}) })
	}
	wg.Wait()
	ok := 0
	for _, err := range rotateErrs {
		switch {
		case err == nil:
			ok++
		case errs.CodeOf(err) != errs.Conflict:
			t.Errorf("concurrent Rotate: %v, want conflict", err)
		}
	}
	if keys, _ := s.List(t.Context(), b.orgA, 100, nil); ok != 1 || len(keys) != 2 {
		t.Errorf("%d rotations succeeded leaving %d keys, want 1 and 2", ok, len(keys))
	}
	if _, err := s.Authenticate(t.Context(), secret); err != nil {
		t.Errorf("old key during its grace: %v", err)
	}
}
