package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgvector/pgvector-go"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func flagParams(key string) db.UpsertFeatureFlagParams {
	return db.UpsertFeatureFlagParams{Key: key, Description: "test flag", Enabled: true, RolloutPercent: 50, StickyBy: "org"}
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := t.Context()
	if _, err := st.UpsertFeatureFlag(ctx, flagParams("existing")); err != nil {
		t.Fatalf("seed flag: %v", err)
	}

	tests := []struct {
		name     string
		err      func(t *testing.T) error // produces the driver error
		wantCode errs.Code                // "" when the error passes through untouched
	}{
		{
			name: "NotFound",
			err: func(t *testing.T) error {
				_, err := st.GetFeatureFlag(ctx, "missing")
				return err
			},
			wantCode: errs.NotFound,
		},
		{
			name:     "WrappedNoRowsNotFound",
			err:      func(*testing.T) error { return fmt.Errorf("get flag: %w", pgx.ErrNoRows) },
			wantCode: errs.NotFound,
		},
		{
			// Every generated write is an upsert, so the duplicate is a plain INSERT.
			name: "UniqueViolationConflict",
			err: func(t *testing.T) error {
				_, err := st.Pool.Exec(ctx, "INSERT INTO feature_flags (key) VALUES ('existing')")
				return err
			},
			wantCode: errs.Conflict,
		},
		{
			name: "CheckViolationInvalid",
			err: func(t *testing.T) error {
				p := flagParams("too_much")
				p.RolloutPercent = 101
				_, err := st.UpsertFeatureFlag(ctx, p)
				return err
			},
			wantCode: errs.Invalid,
		},
		{
			name: "ForeignKeyViolationInvalid",
			err: func(t *testing.T) error {
				_, err := st.UpsertFeatureFlagOverride(ctx, db.UpsertFeatureFlagOverrideParams{
					FlagKey: "missing", SubjectType: "org", SubjectID: uuid.New(), Enabled: true,
				})
				return err
			},
			wantCode: errs.Invalid,
		},
		{
			name: "SyntaxErrorPassesThrough",
			err: func(t *testing.T) error {
				_, err := st.Pool.Exec(ctx, "SELEKT 1")
				return err
			},
		},
		{
			name: "CanceledPassesThrough",
			err: func(t *testing.T) error {
				canceled, cancel := context.WithCancel(ctx)
				cancel()
				_, err := st.GetFeatureFlag(canceled, "existing")
				return err
			},
		},
		{
			name: "OtherErrorPassesThrough",
			err:  func(*testing.T) error { return errors.New("disk on fire") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			orig := tt.err(t)
			if orig == nil {
				t.Fatal("the operation succeeded, want a driver error")
			}
			got := store.Translate(orig)
			if tt.wantCode == "" {
				if got != orig { //nolint:errorlint // identity: the error must come back unchanged
					t.Errorf("Translate(%v) = %v, want the error unchanged", orig, got)
				}
				return
			}
			var e *errs.Error
			if !errors.As(got, &e) {
				t.Fatalf("Translate(%v) = %#v, want an *errs.Error", orig, got)
			}
			if e.Code != tt.wantCode {
				t.Errorf("Translate(%v) code = %s, want %s", orig, e.Code, tt.wantCode)
			}
		})
	}

	t.Run("NilIsNil", func(t *testing.T) {
		t.Parallel()
		if got := store.Translate(nil); got != nil {
			t.Errorf("Translate(nil) = %v", got)
		}
	})
}

func TestInTx(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")

	tests := []struct {
		name        string
		fn          func(q *db.Queries, key string) error
		wantErr     error
		wantVisible bool
	}{
		{
			name: "CommitsOnNil",
			fn: func(q *db.Queries, key string) error {
				_, err := q.UpsertFeatureFlag(context.Background(), flagParams(key))
				return err
			},
			wantVisible: true,
		},
		{
			name: "RollsBackOnError",
			fn: func(q *db.Queries, key string) error {
				if _, err := q.UpsertFeatureFlag(context.Background(), flagParams(key)); err != nil {
					return err
				}
				// The write is visible inside the transaction before it is rolled back.
				if _, err := q.GetFeatureFlag(context.Background(), key); err != nil {
					return fmt.Errorf("read own write: %w", err)
				}
				return fmt.Errorf("later step: %w", errBoom)
			},
			wantErr: errBoom,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := storetest.New(t)
			const key = "tx_flag"
			err := st.InTx(t.Context(), func(q *db.Queries) error { return tt.fn(q, key) })
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("InTx = %v, want %v", err, tt.wantErr)
			}
			_, err = st.GetFeatureFlag(t.Context(), key)
			if visible := err == nil; visible != tt.wantVisible {
				t.Errorf("row visible after InTx = %t (err %v), want %t", visible, err, tt.wantVisible)
			}
		})
	}

	t.Run("RollsBackOnPanic", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		func() {
			defer func() {
				if recover() == nil {
					t.Error("InTx swallowed the panic")
				}
			}()
			_ = st.InTx(t.Context(), func(q *db.Queries) error {
				if _, err := q.UpsertFeatureFlag(t.Context(), flagParams("panicky")); err != nil {
					return err
				}
				panic("handler bug")
			})
		}()
		if _, err := st.GetFeatureFlag(t.Context(), "panicky"); !errors.Is(err, pgx.ErrNoRows) {
			t.Errorf("row after a panicking InTx: err = %v, want no rows", err)
		}
	})
}

func TestOpen(t *testing.T) {
	t.Parallel()

	t.Run("RegistersVectorOnMigratedDatabase", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		var v pgvector.Vector
		if err := st.Pool.QueryRow(t.Context(), "SELECT '[1,2.5,3]'::vector").Scan(&v); err != nil {
			t.Fatalf("scan a vector: %v", err)
		}
		if got := v.Slice(); len(got) != 3 || got[1] != 2.5 {
			t.Errorf("vector = %v, want [1 2.5 3]", got)
		}
	})

	t.Run("OpensEmptyDatabase", func(t *testing.T) {
		t.Parallel()
		pool, err := store.Open(t.Context(), storetest.NewDatabase(t, ""), 2)
		if err != nil {
			t.Fatalf("Open on a database without the vector type: %v", err)
		}
		pool.Close()
	})

	t.Run("ErrBadURL", func(t *testing.T) {
		t.Parallel()
		if _, err := store.Open(t.Context(), "postgres://%zz", 2); err == nil {
			t.Error("Open with a malformed URL succeeded")
		}
	})

	t.Run("ErrUnreachable", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if _, err := store.Open(ctx, "postgres://postgres@127.0.0.1:1/kiln?sslmode=disable&connect_timeout=2", 2); err == nil {
			t.Error("Open on a closed port succeeded")
		}
	})
}

// TestCancelledContextStopsQuery: a query whose context ends (its client went away, its
// request ran past its deadline) stops in PostgreSQL too, not only in the client (issue
// 12). pgx does it: it drops the connection after a cancel request. This holds it to it.
func TestCancelledContextStopsQuery(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	marker := "kiln-cancel-" + uuid.NewString()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := st.Pool.Exec(ctx, "SELECT pg_sleep(60) /* "+marker+" */")
		done <- err
	}()
	running := func() bool {
		var n int
		err := st.Pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, marker).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for !running() {
		if time.Now().After(deadline) {
			t.Fatal("the query never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the cancelled query succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled query did not return")
	}
	deadline = time.Now().Add(3 * time.Second)
	for running() {
		if time.Now().After(deadline) {
			t.Fatal("PostgreSQL still runs the query its client cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUUIDBinary: ids go to PostgreSQL and come back as its binary uuid, through Kiln's
// plans rather than pgx's driver.Valuer and sql.Scanner ones (a string each way), with
// NULL, arrays and text results as before.
func TestUUIDBinary(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := t.Context()
	id, other := uuid.Must(uuid.NewV7()), uuid.New()

	var back uuid.UUID
	var null, valid uuid.NullUUID
	var text string
	if err := st.Pool.QueryRow(ctx, "SELECT $1::uuid, $2::uuid, $3::uuid, $1::uuid::text", id, uuid.NullUUID{}, uuid.NullUUID{UUID: other, Valid: true}).
		Scan(&back, &null, &valid, &text); err != nil {
		t.Fatal(err)
	}
	if back != id || null.Valid || !valid.Valid || valid.UUID != other || text != id.String() {
		t.Errorf("round trip: %v %v %v %q, want %v, NULL, %v, %q", back, null, valid, text, id, other, id.String())
	}
	var ids []uuid.UUID
	if err := st.Pool.QueryRow(ctx, "SELECT ARRAY[($1::uuid[])[2], ($1::uuid[])[1]]", []uuid.UUID{id, other}).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0] != other || ids[1] != id {
		t.Errorf("array round trip: %v, want [%v %v]", ids, other, id)
	}
	valid = uuid.NullUUID{UUID: id, Valid: true}
	if err := st.Pool.QueryRow(ctx, "SELECT NULL::uuid").Scan(&valid); err != nil || valid.Valid {
		t.Errorf("NULL into a NullUUID: %v, %v", valid, err)
	}

	conn, err := st.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	m := conn.Conn().TypeMap()
	for _, v := range []any{id, uuid.NullUUID{}} {
		if plan := m.PlanEncode(pgtype.UUIDOID, pgtype.BinaryFormatCode, v); plan == nil || strings.Contains(fmt.Sprintf("%T", plan), "DriverValuer") {
			t.Errorf("%T is encoded by %T", v, plan)
		}
	}
	for _, v := range []any{&back, &null} {
		if plan := m.PlanScan(pgtype.UUIDOID, pgtype.BinaryFormatCode, v); strings.Contains(fmt.Sprintf("%T", plan), "SQLScanner") {
			t.Errorf("%T is scanned by %T", v, plan)
		}
	}
}
