package account_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/argon2"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// goodPassword passes every sign-up rule.
const goodPassword = "correct horse battery staple"

// chrome is a desktop Chrome user agent.
const chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"

// testConfig hashes cheaply (8 MiB, one pass) so that tests stay fast.
func testConfig() account.Config {
	return account.Config{
		PasswordMinLength: 10,
		Argon2Memory:      8 * 1024,
		Argon2Time:        1,
		Argon2Threads:     1,
		SessionTTL:        24 * time.Hour,
		RefreshReuseGrace: 10 * time.Second,
	}
}

// bundle is one test's database, clock, log and service; hashes counts argon2id runs.
type bundle struct {
	st     *store.Store
	clock  *storetest.Clock
	logs   *logtest.Buffer
	svc    *account.Service
	hashes *atomic.Int64
}

func setup(t testing.TB) *bundle {
	t.Helper()
	b := &bundle{st: storetest.New(t), clock: storetest.NewClock(), logs: &logtest.Buffer{}, hashes: &atomic.Int64{}}
	b.svc = b.service(testConfig())
	return b
}

// service returns another Service on the bundle's database, clock and log.
func (b *bundle) service(cfg account.Config) *account.Service {
	svc := account.New(b.st, cfg, slog.New(slog.NewJSONHandler(b.logs, nil)), b.clock.Now)
	svc.SetKDF(func(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
		b.hashes.Add(1)
		return argon2.IDKey(password, salt, time, memory, threads, keyLen)
	})
	return svc
}

// signUp creates a user with goodPassword from a desktop Chrome.
func (b *bundle) signUp(t testing.TB, email string) (account.User, account.Session, string) {
	t.Helper()
	u, s, token, err := b.svc.SignUp(context.Background(), email, goodPassword, "", account.Client{UserAgent: chrome, IP: "192.0.2.1"})
	if err != nil {
		t.Fatalf("SignUp(%s): %v", email, err)
	}
	return u, s, token
}

// emailFor returns an address of the (sub)test's own, for tests that share a database.
func emailFor(t testing.TB) string {
	name := t.Name()
	return strings.ToLower(name[strings.LastIndex(name, "/")+1:]) + "@example.com"
}

// login starts another session for email.
func (b *bundle) login(t testing.TB, email string) (account.Session, string) {
	t.Helper()
	_, s, token, err := b.svc.Login(context.Background(), email, goodPassword, account.Client{})
	if err != nil {
		t.Fatalf("Login(%s): %v", email, err)
	}
	return s, token
}

// count returns the number of rows in table.
func (b *bundle) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := b.st.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// disable marks the user disabled, as a platform admin would.
func (b *bundle) disable(t testing.TB, id uuid.UUID) {
	t.Helper()
	if _, err := b.st.Pool.Exec(context.Background(), "UPDATE users SET disabled_at = now() WHERE id = $1", id); err != nil {
		t.Fatalf("disable user: %v", err)
	}
}

// active reports SessionActive, failing the test on error.
func (b *bundle) active(t testing.TB, id uuid.UUID) bool {
	t.Helper()
	ok, err := b.svc.SessionActive(context.Background(), id)
	if err != nil {
		t.Fatalf("SessionActive: %v", err)
	}
	return ok
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

// checkSame asserts err is exactly want: same code, same message, same text, no fields.
func checkSame(t *testing.T, err error, want *errs.Error) {
	t.Helper()
	e, ok := errors.AsType[*errs.Error](err)
	if !ok {
		t.Fatalf("error = %v, want %v", err, want)
	}
	if !reflect.DeepEqual(e, want) || err.Error() != want.Error() {
		t.Fatalf("error = %#v (%q), want %#v (%q)", e, err.Error(), want, want.Error())
	}
}

func TestUser(t *testing.T) {
	b := setup(t)
	u, _, _ := b.signUp(t, "ada@example.com")

	t.Run("OK", func(t *testing.T) {
		got, err := b.svc.User(t.Context(), u.ID)
		if err != nil {
			t.Fatalf("User: %v", err)
		}
		if got != u {
			t.Errorf("User = %+v, want %+v", got, u)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, err := b.svc.User(t.Context(), uuid.New()); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("User error = %v, want not_found", err)
		}
	})
}
