package store_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/migrations"
)

// migration is one embedded migration file.
type migration struct {
	version int64
	file    string
}

// embeddedMigrations lists the migration files in version order, read independently of goose.
func embeddedMigrations(t *testing.T) []migration {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil {
		t.Fatalf("list migrations: %v", err)
	}
	var ms []migration
	for _, name := range names { // fs.Glob sorts; zero-padded versions sort numerically
		prefix, _, _ := strings.Cut(name, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			t.Fatalf("migration %s has no numeric version: %v", name, err)
		}
		ms = append(ms, migration{version: v, file: name})
	}
	if len(ms) == 0 {
		t.Fatal("no embedded migrations")
	}
	return ms
}

// migrateSetup is the test bundle of a migrator on an empty database of the test's own.
type migrateSetup struct {
	ctx  context.Context
	pool *pgxpool.Pool
	m    *store.Migrator
	log  *bytes.Buffer // what the migrator logged
}

func setupMigrator(t *testing.T) migrateSetup {
	t.Helper()
	pool := storetest.Pool(t, storetest.NewDatabase(t, ""))
	m, err := store.NewMigrator(pool)
	if err != nil {
		t.Fatalf("NewMigrator: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("close migrator: %v", err)
		}
	})
	return migrateSetup{ctx: t.Context(), pool: pool, m: m, log: &bytes.Buffer{}}
}

func (s migrateSetup) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s.log, nil))
}

func (s migrateSetup) requireVersions(t *testing.T, wantCurrent, wantLatest int64) {
	t.Helper()
	current, latest, err := s.m.Versions(s.ctx)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	if current != wantCurrent || latest != wantLatest {
		t.Fatalf("Versions = (%d, %d), want (%d, %d)", current, latest, wantCurrent, wantLatest)
	}
}

func (s migrateSetup) exists(t *testing.T, query string, args ...any) bool {
	t.Helper()
	var ok bool
	if err := s.pool.QueryRow(s.ctx, query, args...).Scan(&ok); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return ok
}

func (s migrateSetup) hasTable(t *testing.T, name string) bool {
	t.Helper()
	return s.exists(t, "SELECT to_regclass($1) IS NOT NULL", "public."+name)
}

func (s migrateSetup) hasVector(t *testing.T) bool {
	t.Helper()
	return s.exists(t, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")
}

// requireSchema checks the schema is fully migrated (up) or fully rolled back (!up).
func (s migrateSetup) requireSchema(t *testing.T, up bool) {
	t.Helper()
	for _, table := range []string{"feature_flags", "feature_flag_overrides"} {
		if got := s.hasTable(t, table); got != up {
			t.Errorf("table %s exists = %t, want %t", table, got, up)
		}
	}
	if got := s.hasVector(t); got != up {
		t.Errorf("vector extension exists = %t, want %t", got, up)
	}
}

func TestMigrator(t *testing.T) {
	t.Parallel()
	ms := embeddedMigrations(t)
	latest := ms[len(ms)-1].version

	t.Run("UpResetUp", func(t *testing.T) {
		t.Parallel()
		s := setupMigrator(t)
		s.requireVersions(t, 0, latest)
		s.requireSchema(t, false)

		if err := s.m.Up(s.ctx, s.logger()); err != nil {
			t.Fatalf("Up: %v", err)
		}
		s.requireVersions(t, latest, latest)
		s.requireSchema(t, true)
		for _, mg := range ms {
			if !strings.Contains(s.log.String(), mg.file) {
				t.Errorf("Up did not log %s:\n%s", mg.file, s.log)
			}
		}

		if err := s.m.Up(s.ctx, s.logger()); err != nil {
			t.Fatalf("second Up (nothing pending): %v", err)
		}
		s.requireVersions(t, latest, latest)

		if err := s.m.Reset(s.ctx); err != nil {
			t.Fatalf("Reset: %v", err)
		}
		s.requireVersions(t, 0, latest)
		s.requireSchema(t, false)

		if err := s.m.Up(s.ctx, s.logger()); err != nil {
			t.Fatalf("Up after Reset: %v", err)
		}
		s.requireVersions(t, latest, latest)
		s.requireSchema(t, true)
	})

	t.Run("DownOneAtATime", func(t *testing.T) {
		t.Parallel()
		s := setupMigrator(t)
		if err := s.m.Up(s.ctx, s.logger()); err != nil {
			t.Fatalf("Up: %v", err)
		}
		for i := len(ms) - 1; i >= 0; i-- {
			s.log.Reset()
			if err := s.m.Down(s.ctx, s.logger()); err != nil {
				t.Fatalf("Down from %d: %v", ms[i].version, err)
			}
			if !strings.Contains(s.log.String(), ms[i].file) {
				t.Errorf("Down did not log rolling back %s:\n%s", ms[i].file, s.log)
			}
			want := int64(0)
			if i > 0 {
				want = ms[i-1].version
			}
			s.requireVersions(t, want, latest)
		}
		s.requireSchema(t, false)

		if err := s.m.Down(s.ctx, s.logger()); err == nil {
			t.Error("Down with nothing applied succeeded, want an error")
		}

		if err := s.m.Up(s.ctx, s.logger()); err != nil {
			t.Fatalf("Up after Down: %v", err)
		}
		s.requireVersions(t, latest, latest)
		s.requireSchema(t, true)
	})

	t.Run("PrintStatusListsEveryMigration", func(t *testing.T) {
		t.Parallel()
		s := setupMigrator(t)

		status := func(wantState string) {
			t.Helper()
			var out bytes.Buffer
			if err := s.m.PrintStatus(s.ctx, &out); err != nil {
				t.Fatalf("PrintStatus: %v", err)
			}
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(got) != len(ms) {
				t.Fatalf("PrintStatus wrote %d lines, want %d:\n%s", len(got), len(ms), out.String())
			}
			for i, mg := range ms {
				line := got[i]
				if !strings.Contains(line, path.Base(mg.file)) || !strings.HasPrefix(line, strconv.FormatInt(100000+mg.version, 10)[1:]) {
					t.Errorf("line %d = %q, want version %05d and file %s", i, line, mg.version, mg.file)
				}
				if !strings.Contains(line, wantState) {
					t.Errorf("line %d = %q, want state %q", i, line, wantState)
				}
			}
		}

		status("pending")
		if err := s.m.Up(s.ctx, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatalf("Up: %v", err)
		}
		status("applied 20") // applied <RFC 3339 UTC time>
	})
}
