package errs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	domain := errs.E(errs.NotFound, "no such prompt")
	tests := []struct {
		name    string
		err     error
		code    errs.Code
		message string
		known   bool
	}{
		{"Domain", fmt.Errorf("get prompt: %w", domain), errs.NotFound, "no such prompt", true},
		{"Upstream", fmt.Errorf("chat: %w", &llm.Error{Provider: "openai", Kind: llm.KindRateLimited, Status: 429, Message: "slow down"}),
			errs.UpstreamRateLimited, "The provider openai answered HTTP 429: slow down", true},
		{"UpstreamAuthHidesText", &llm.Error{Provider: "openai", Kind: llm.KindAuth, Status: 401, Message: "bad key sk-123"},
			errs.UpstreamError, "The provider openai refused Kiln's credentials (HTTP 401); the operator must fix its key.", true},
		{"NoTarget", fmt.Errorf("model %q: %w", "default", llm.ErrNoTarget), errs.ModelUnavailable,
			"Every target of the model is unavailable right now (circuit open or at its concurrency limit); retry shortly.", true},
		{"Deadline", fmt.Errorf("store reply: %w", context.DeadlineExceeded), errs.Timeout, "The request did not complete within its deadline.", true},
		{"Cancelled", fmt.Errorf("store reply: %w", context.Canceled), errs.Timeout, "The request was cancelled.", true},
		{"UntranslatableCharacter", fmt.Errorf("store title: %w", &pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"}),
			errs.Invalid, "A text holds a character that cannot be stored (U+0000 or invalid UTF-8).", true},
		{"ValueTooLong", &pgconn.PgError{Code: "22001", Message: "value too long for type character varying(64)"},
			errs.Invalid, "A value is longer than the field allows.", true},
		{"DatabaseShuttingDown", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"},
			errs.Unavailable, errs.UnavailableMessage, true},
		{"ConnectionRefused", fmt.Errorf("acquire: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}),
			errs.Unavailable, errs.UnavailableMessage, true},
		{"OtherSQLState", &pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, errs.Internal,
			"An internal error occurred; quote the request id when reporting it.", false},
		{"Unknown", errors.New("pq: connection reset with secret detail"), errs.Internal,
			"An internal error occurred; quote the request id when reporting it.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, known := errs.Classify(tt.err)
			if e.Code != tt.code || e.Message != tt.message || known != tt.known {
				t.Fatalf("Classify = (%s, %q, %v), want (%s, %q, %v)", e.Code, e.Message, known, tt.code, tt.message, tt.known)
			}
		})
	}
}

// TestClassifyDatabaseRefusals sends PostgreSQL the texts it refuses, over a real
// connection: whatever the store's callers forget to check, the error is the client's 400,
// never a 500.
func TestClassifyDatabaseRefusals(t *testing.T) {
	t.Parallel()
	pool := storetest.Pool(t, storetest.BaseURL())
	for name, q := range map[string]struct {
		sql string
		arg any
	}{
		"NULInText":     {"SELECT $1::text", "a\x00b"},
		"InvalidUTF8":   {"SELECT $1::text", "a\xffb"},
		"NULInJSONB":    {"SELECT $1::jsonb", `{"k":"a\u0000b"}`},
		"OutOfRange":    {"SELECT $1::text::smallint", "99999"},
		"MalformedUUID": {"SELECT $1::text::uuid", "not-a-uuid"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out any
			err := pool.QueryRow(context.Background(), q.sql, q.arg).Scan(&out)
			if err == nil {
				t.Fatalf("PostgreSQL accepted %q", q.arg)
			}
			if e, known := errs.Classify(fmt.Errorf("store: %w", err)); e.Code != errs.Invalid || !known {
				t.Fatalf("Classify(%v) = %s, %v; want invalid_request", err, e.Code, known)
			}
		})
	}
}

// TestClassifyDriverErrors makes the real drivers fail as an outage makes them fail and
// requires each failure to be Unavailable (a 503 with Retry-After), never Internal.
func TestClassifyDriverErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	silent := silentListener(t) // accepts connections and never answers
	for name, fail := range map[string]func(t *testing.T) error{
		"PostgresRefused": func(t *testing.T) error {
			_, err := pgconn.Connect(ctx, "postgres://postgres@"+closedAddr(t)+"/kiln?sslmode=disable")
			return err
		},
		"PostgresConnectTimeout": func(t *testing.T) error {
			cfg, err := pgconn.ParseConfig("postgres://postgres@" + silent + "/kiln?sslmode=disable")
			if err != nil {
				t.Fatal(err)
			}
			cfg.ConnectTimeout = 100 * time.Millisecond
			_, err = pgconn.ConnectConfig(ctx, cfg)
			return err
		},
		"PostgresConnectionEnded": func(t *testing.T) error {
			p := storetest.NewProxy(t, storetest.PostgresAddr())
			u, _ := url.Parse(storetest.BaseURL())
			u.Host = p.Addr()
			pool := storetest.Pool(t, u.String()) // store.Open's pool
			var one int
			if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatal(err)
			}
			p.Cut()
			return pool.QueryRow(ctx, "SELECT 1").Scan(&one)
		},
		"RedisRefused": func(t *testing.T) error {
			c := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1})
			t.Cleanup(func() { _ = c.Close() })
			return c.Ping(ctx).Err()
		},
		"RedisPoolTimeout": func(t *testing.T) error {
			u, _ := url.Parse(storetest.RedisURL())
			c := redis.NewClient(&redis.Options{Addr: u.Host, PoolSize: 1, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1})
			t.Cleanup(func() { _ = c.Close() })
			held := make(chan struct{})
			go func() { // holds the only connection for a second
				close(held)
				c.BLPop(ctx, time.Second, "kiln:test:errs:v1:never-pushed-"+t.Name())
			}()
			<-held
			time.Sleep(20 * time.Millisecond)
			return c.Ping(ctx).Err()
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := fail(t)
			if err == nil {
				t.Fatal("no error")
			}
			if e, known := errs.Classify(fmt.Errorf("store: %w", err)); e.Code != errs.Unavailable || !known {
				t.Fatalf("Classify(%v) = %s, %v; want unavailable", err, e.Code, known)
			}
		})
	}
	t.Run("CancelledIsNotAnOutage", func(t *testing.T) {
		t.Parallel()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := pgconn.Connect(cctx, storetest.BaseURL())
		if e, _ := errs.Classify(err); e.Code != errs.Timeout {
			t.Fatalf("Classify(%v) = %s; want timeout (cancelled)", err, e.Code)
		}
	})
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// silentListener accepts connections and never answers, as a server hanging in a
// partition does.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() })
		}
	}()
	return ln.Addr().String()
}
