// Package store is the PostgreSQL adapter: it opens the pool, runs the embedded migrations,
// runs transactions and translates driver errors into domain errors.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxvec "github.com/pgvector/pgvector-go/pgx"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
)

// Store holds the pool and the generated queries bound to it.
type Store struct {
	Pool *pgxpool.Pool
	*db.Queries
}

// New wraps an open pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{Pool: pool, Queries: db.New(pool)}
}

// Option changes how Open configures the pool.
type Option func(*pgxpool.Config)

// WithTracing makes a client span of every query run inside a traced request or job
// (otelpgx; queries outside one make none). The SQL text is recorded, its arguments never.
func WithTracing(tp trace.TracerProvider) Option {
	return func(cfg *pgxpool.Config) {
		cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTracerProvider(tp), otelpgx.WithDisableAcquireTracer())
	}
}

// Open connects a pool to url with at most maxConns connections and checks it answers.
// Connections read and write uuid.UUID in binary (registerUUID), and the vector type is
// registered on them once the extension exists.
func Open(ctx context.Context, url string, maxConns int32, opts ...Option) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = maxConns
	for _, o := range opts {
		o(cfg)
	}
	cfg.ConnConfig.DialFunc = reportingClose(cfg.ConnConfig.DialFunc)
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		registerUUID(conn.TypeMap())
		var hasVector bool
		err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'vector')").Scan(&hasVector)
		if err != nil || !hasVector {
			return err // no vector type before the first migration: nothing to register
		}
		return pgxvec.RegisterTypes(ctx, conn)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return pool, nil
}

// InTx runs fn in a transaction, committing when it returns nil and rolling back otherwise.
func (s *Store) InTx(ctx context.Context, fn func(q *db.Queries) error) error {
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error { return fn(s.WithTx(tx)) })
}

// Translate turns driver errors into domain errors: no rows → not_found, unique and
// exclusion violations → conflict, check and foreign-key violations → invalid_request.
func Translate(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return errs.E(errs.NotFound, "not found")
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "23505", "23P01":
			return &errs.Error{Code: errs.Conflict, Message: "already exists"}
		case "23514", "23503", "22P02", "22001":
			return &errs.Error{Code: errs.Invalid, Message: "violates a constraint: " + pgErr.ConstraintName}
		}
	}
	return err
}

// UTC is a nullable timestamp column's value in UTC: nil when NULL.
func UTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// UUIDPtr is a nullable column value as a pointer: nil when NULL.
func UUIDPtr(id uuid.NullUUID) *uuid.UUID {
	if !id.Valid {
		return nil
	}
	return &id.UUID
}

// NullUUID is id as a nullable column value: NULL when id is nil.
func NullUUID(id *uuid.UUID) uuid.NullUUID {
	if id == nil {
		return uuid.NullUUID{}
	}
	return uuid.NullUUID{UUID: *id, Valid: true}
}

// Text is s as a nullable text column value: NULL when s is empty.
func Text(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }

// PurgeBatch is how many rows one statement of a purge deletes.
const PurgeBatch = 1000

// PurgeInBatches runs purge (a DELETE of at most limit rows) until it deletes fewer than
// PurgeBatch, so a large purge is many short transactions, and returns the rows deleted.
func PurgeInBatches(ctx context.Context, purge func(ctx context.Context, limit int32) (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := purge(ctx, PurgeBatch)
		total += n
		if err != nil || n < PurgeBatch {
			return total, err
		}
	}
}
