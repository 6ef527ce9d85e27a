// Package storetest gives each test its own migrated PostgreSQL database, cloned from a
// template database migrated once per run, and each test its own Redis key space.
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/migrations"
)

// BaseURL is the database tests connect to for administration: TEST_DATABASE_URL, or
// kiln_test on the local server.
func BaseURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"
}

// RedisURL is the Redis tests use: TEST_REDIS_URL, or database 0 of the local server.
func RedisURL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// NewDatabase creates an empty database for the test, dropped at cleanup, and returns its URL.
func NewDatabase(t testing.TB, template string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, BaseURL())
	if err != nil {
		t.Fatalf("connect to test postgres (run scripts/dev-deps.sh): %v", err)
	}
	defer admin.Close(ctx)
	name := "kiln_t_" + randomHex(6)
	stmt := "CREATE DATABASE " + name
	if template != "" {
		stmt += " TEMPLATE " + template
	}
	if _, err := admin.Exec(ctx, stmt); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), BaseURL())
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return withDatabase(BaseURL(), name)
}

// New returns a Store on a fresh, fully migrated database of the test's own.
func New(t testing.TB) *store.Store {
	t.Helper()
	ensureTemplate(t)
	pool := Pool(t, NewDatabase(t, templateName))
	return store.New(pool)
}

// Pool opens a pool on url, closed at cleanup.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := store.Open(context.Background(), url, 8)
	if err != nil {
		t.Fatalf("open pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// ensureTemplate (re)builds the migrated template database once per test binary. A
// Postgres advisory lock serialises test binaries running at the same time.
func ensureTemplate(t testing.TB) {
	t.Helper()
	templateOnce.Do(func() { templateName, templateErr = buildTemplate() })
	if templateErr != nil {
		t.Fatalf("build template database: %v", templateErr)
	}
}

// buildTemplate makes sure a template database migrated with exactly the embedded
// migrations exists; its name carries their hash, so it is built once per schema change.
// It is built under another name and renamed when complete, so no test ever clones a
// half-migrated template.
func buildTemplate() (string, error) {
	name, err := templateFor(migrations.FS)
	if err != nil {
		return "", err
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, BaseURL())
	if err != nil {
		return "", fmt.Errorf("connect to test postgres (run scripts/dev-deps.sh): %w", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(7243001)"); err != nil {
		return "", err
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock(7243001)") //nolint:errcheck // the session ends anyway
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
		return name, err
	}
	building := name + "_building"
	for _, stmt := range []string{"DROP DATABASE IF EXISTS " + building + " WITH (FORCE)", "CREATE DATABASE " + building} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			return "", err
		}
	}
	if err := migrate(ctx, withDatabase(BaseURL(), building)); err != nil {
		return "", err
	}
	_, err = admin.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name)
	return name, err
}

func migrate(ctx context.Context, url string) error {
	pool, err := store.Open(ctx, url, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := store.NewMigrator(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// templateFor names the template after a hash of every migration file.
func templateFor(fsys fs.FS) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return "kiln_test_tpl_" + hex.EncodeToString(h.Sum(nil))[:12], err
}

// Redis returns a client on the test Redis and a key space (a unique env) of the test's
// own; every key under it is deleted at cleanup.
func Redis(t testing.TB) (redis.UniversalClient, redisclient.Keyspace) {
	t.Helper()
	ctx := context.Background()
	c, err := redisclient.Open(ctx, RedisURL(), 0)
	if err != nil {
		t.Fatalf("connect to test redis (run scripts/dev-deps.sh): %v", err)
	}
	ks := redisclient.Keyspace{Env: "test" + randomHex(6)}
	t.Cleanup(func() {
		iter := c.Scan(ctx, 0, "kiln:"+ks.Env+":*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		_ = c.Close()
	})
	return c, ks
}

func withDatabase(raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(fmt.Sprintf("bad TEST_DATABASE_URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
