package errs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

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
