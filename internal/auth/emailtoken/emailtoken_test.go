package emailtoken_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/auth/emailtoken"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// bundle is one test's database and clock.
type bundle struct {
	st  *store.Store
	now time.Time
}

func setup(t testing.TB) *bundle {
	t.Helper()
	return &bundle{st: storetest.New(t), now: time.Now().UTC().Truncate(time.Microsecond)}
}

// user creates a user with email and returns its id.
func (b *bundle) user(t testing.TB, email string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	org, err := b.st.CreateOrg(ctx, db.CreateOrgParams{ID: uuid.Must(uuid.NewV7()), Name: email, Personal: true, Now: b.now})
	if err != nil {
		t.Fatalf("create org: %v", err)
	}
	u, err := b.st.CreateUser(ctx, db.CreateUserParams{
		ID: uuid.Must(uuid.NewV7()), Email: email, PasswordHash: pgtype.Text{}, PersonalOrgID: org.ID, Now: b.now,
	})
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	return u.ID
}

// issue issues a token at b.now in its own transaction.
func (b *bundle) issue(t testing.TB, p emailtoken.Purpose, userID uuid.UUID, email string) (string, emailtoken.Token) {
	t.Helper()
	var (
		token string
		tok   emailtoken.Token
	)
	err := b.st.InTx(context.Background(), func(q *db.Queries) error {
		var err error
		token, tok, err = emailtoken.Issue(context.Background(), q, p, userID, email, b.now)
		return err
	})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return token, tok
}

// consume spends token at now in its own transaction.
func (b *bundle) consume(p emailtoken.Purpose, token string, now time.Time) (emailtoken.Token, error) {
	var tok emailtoken.Token
	err := b.st.InTx(context.Background(), func(q *db.Queries) error {
		var err error
		tok, err = emailtoken.Consume(context.Background(), q, p, token, now)
		return err
	})
	return tok, err
}

// checkInvalid asserts err is exactly the one invalid-token error.
func checkInvalid(t *testing.T, err error) {
	t.Helper()
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || !reflect.DeepEqual(e, emailtoken.Invalid()) {
		t.Fatalf("error = %v, want %v", err, emailtoken.Invalid())
	}
}

func TestIssue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.user(t, "ada@example.com")
	for _, tt := range []struct {
		purpose emailtoken.Purpose
		prefix  string
		ttl     time.Duration
	}{
		{emailtoken.VerifyEmail, "kiln_ve_", 48 * time.Hour},
		{emailtoken.ResetPassword, "kiln_pr_", time.Hour},
	} {
		t.Run(string(tt.purpose), func(t *testing.T) {
			token, tok := b.issue(t, tt.purpose, ada, "ada@example.com")
			raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimPrefix(token, tt.prefix))
			if !strings.HasPrefix(token, tt.prefix) || err != nil || len(raw) != 32 || !emailtoken.WellFormed(tt.purpose, token) {
				t.Fatalf("token %q: want %s and 32 bytes of base64url (%v)", token, tt.prefix, err)
			}
			if tok.UserID != ada || tok.Purpose != tt.purpose || tok.Email != "ada@example.com" || tok.UsedAt != nil ||
				!tok.CreatedAt.Equal(b.now) || !tok.ExpiresAt.Equal(b.now.Add(tt.ttl)) {
				t.Errorf("Token = %+v, want %s for ada, created %v, expiring after %v", tok, tt.purpose, b.now, tt.ttl)
			}
			// Only the SHA-256 is stored: no column of the row holds the token or its random part.
			var dump string
			var hash []byte
			err = b.st.Pool.QueryRow(t.Context(), "SELECT t::text, token_hash FROM email_tokens t WHERE id = $1", tok.ID).Scan(&dump, &hash)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(token))
			if !bytes.Equal(hash, sum[:]) {
				t.Errorf("token_hash = %x, want SHA-256 of the token %x", hash, sum)
			}
			if strings.Contains(dump, token[len(tt.prefix):]) {
				t.Errorf("the row holds the token in plain text: %s", dump)
			}
		})
	}
	t.Run("ErrUnknownPurpose", func(t *testing.T) {
		err := b.st.InTx(t.Context(), func(q *db.Queries) error {
			_, _, err := emailtoken.Issue(t.Context(), q, "magic_link", ada, "ada@example.com", b.now)
			return err
		})
		if err == nil {
			t.Fatal("Issue with an unknown purpose succeeded")
		}
	})
}

// TestIssueReplaces checks that a new token kills the user's earlier ones of its purpose,
// and only those.
func TestIssueReplaces(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada, bob := b.user(t, "ada@example.com"), b.user(t, "bob@example.com")
	first, _ := b.issue(t, emailtoken.ResetPassword, ada, "ada@example.com")
	verify, _ := b.issue(t, emailtoken.VerifyEmail, ada, "ada@example.com")
	bobs, _ := b.issue(t, emailtoken.ResetPassword, bob, "bob@example.com")
	second, _ := b.issue(t, emailtoken.ResetPassword, ada, "ada@example.com")

	_, err := b.consume(emailtoken.ResetPassword, first, b.now)
	checkInvalid(t, err)
	for name, tt := range map[string]struct {
		purpose emailtoken.Purpose
		token   string
	}{
		"NewestReset":  {emailtoken.ResetPassword, second},
		"OtherPurpose": {emailtoken.VerifyEmail, verify},
		"OtherUser":    {emailtoken.ResetPassword, bobs},
	} {
		if _, err := b.consume(tt.purpose, tt.token, b.now); err != nil {
			t.Errorf("%s: Consume: %v", name, err)
		}
	}
}

// TestIssueConcurrent issues tokens for one user from many transactions at once: exactly
// one of them is left.
func TestIssueConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.user(t, "ada@example.com")
	const n = 8
	tokens := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			err := b.st.InTx(t.Context(), func(q *db.Queries) error {
				var err error
				tokens[i], _, err = emailtoken.Issue(t.Context(), q, emailtoken.ResetPassword, ada, "ada@example.com", b.now)
				return err
			})
			if err != nil {
				t.Errorf("Issue: %v", err)
			}
		})
	}
	wg.Wait()
	var valid int
	for _, token := range tokens {
		if _, err := b.consume(emailtoken.ResetPassword, token, b.now); err == nil {
			valid++
		}
	}
	if valid != 1 {
		t.Fatalf("%d of %d concurrently issued tokens work, want 1", valid, n)
	}
}

func TestConsume(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.user(t, "ada@example.com")
	ttl := emailtoken.ResetPassword.TTL()

	t.Run("OK", func(t *testing.T) {
		token, issued := b.issue(t, emailtoken.ResetPassword, ada, "ada@example.com")
		at := b.now.Add(ttl - time.Microsecond)
		tok, err := b.consume(emailtoken.ResetPassword, token, at)
		if err != nil {
			t.Fatalf("Consume: %v", err)
		}
		if tok.ID != issued.ID || tok.UserID != ada || tok.Email != "ada@example.com" || tok.UsedAt == nil || !tok.UsedAt.Equal(at) {
			t.Errorf("Consume = %+v, want the issued token used at %v", tok, at)
		}
		t.Run("ErrUsed", func(t *testing.T) {
			_, err := b.consume(emailtoken.ResetPassword, token, at)
			checkInvalid(t, err)
		})
	})

	valid := func(t *testing.T) string {
		t.Helper()
		token, _ := b.issue(t, emailtoken.ResetPassword, ada, "ada@example.com")
		return token
	}
	tests := []struct {
		name    string
		purpose emailtoken.Purpose
		token   func(t *testing.T) string
		at      time.Duration // after issue
	}{
		{"ErrExpired", emailtoken.ResetPassword, valid, ttl},
		{"ErrLongExpired", emailtoken.ResetPassword, valid, 30 * 24 * time.Hour},
		{"ErrOtherPurpose", emailtoken.VerifyEmail, valid, 0},
		{"ErrOtherPurposeSamePrefix", emailtoken.VerifyEmail, func(t *testing.T) string {
			return "kiln_ve_" + strings.TrimPrefix(valid(t), "kiln_pr_")
		}, 0},
		{"ErrUnknown", emailtoken.ResetPassword, func(*testing.T) string {
			return "kiln_pr_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
		}, 0},
		{"ErrTampered", emailtoken.ResetPassword, func(t *testing.T) string {
			token := []byte(valid(t))
			token[10] ^= 'A' ^ 'B'
			return string(token)
		}, 0},
		{"ErrTruncated", emailtoken.ResetPassword, func(t *testing.T) string { return valid(t)[:20] }, 0},
		{"ErrEmpty", emailtoken.ResetPassword, func(*testing.T) string { return "" }, 0},
		{"ErrGarbage", emailtoken.ResetPassword, func(*testing.T) string { return "'; DROP TABLE email_tokens; --" }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.consume(tt.purpose, tt.token(t), b.now.Add(tt.at))
			checkInvalid(t, err)
		})
	}
}

// TestConsumeRollback checks that a token spent in a transaction that fails stays unspent.
func TestConsumeRollback(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.user(t, "ada@example.com")
	token, _ := b.issue(t, emailtoken.VerifyEmail, ada, "ada@example.com")
	failed := errors.New("the action failed")
	err := b.st.InTx(t.Context(), func(q *db.Queries) error {
		if _, err := emailtoken.Consume(t.Context(), q, emailtoken.VerifyEmail, token, b.now); err != nil {
			return err
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("InTx = %v, want the action's error", err)
	}
	if _, err := b.consume(emailtoken.VerifyEmail, token, b.now); err != nil {
		t.Fatalf("Consume after a rolled-back use: %v", err)
	}
}

// TestConsumeConcurrent spends one token from many transactions at once: exactly one wins.
func TestConsumeConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.user(t, "ada@example.com")
	token, _ := b.issue(t, emailtoken.ResetPassword, ada, "ada@example.com")

	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for range n {
		wg.Go(func() {
			_, err := b.consume(emailtoken.ResetPassword, token, b.now)
			if err != nil && errs.CodeOf(err) != errs.Invalid {
				t.Errorf("Consume: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d of %d concurrent uses succeeded, want 1", wins, n)
	}
}

func TestPurpose(t *testing.T) {
	t.Parallel()
	if p := emailtoken.Purpose("magic_link"); p.Prefix() != "" || p.TTL() != 0 || emailtoken.WellFormed(p, "kiln_ml_x") {
		t.Errorf("unknown purpose: prefix %q, TTL %v", p.Prefix(), p.TTL())
	}
}

// FuzzWellFormed checks that WellFormed never panics and accepts exactly a known prefix
// followed by 32 bytes in canonical unpadded base64url.
func FuzzWellFormed(f *testing.F) {
	for _, s := range []string{
		"kiln_ve_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"kiln_pr_" + base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)),
		"kiln_pr_", "kiln_rt_AAAA", "", "kiln_ve_" + strings.Repeat("=", 43),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range []emailtoken.Purpose{emailtoken.VerifyEmail, emailtoken.ResetPassword} {
			if !emailtoken.WellFormed(p, s) {
				continue
			}
			raw, err := base64.RawURLEncoding.Strict().DecodeString(strings.TrimPrefix(s, p.Prefix()))
			if !strings.HasPrefix(s, p.Prefix()) || err != nil || len(raw) != 32 ||
				p.Prefix()+base64.RawURLEncoding.EncodeToString(raw) != s {
				t.Fatalf("WellFormed(%s, %q) = true for a token that is not one", p, s)
			}
		}
	})
}
