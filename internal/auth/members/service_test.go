package members_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// bundle is one test's database, clock and services.
type bundle struct {
	st       *store.Store
	clock    *storetest.Clock
	accounts *account.Service
	svc      *members.Service
	// sent holds the emails queued by successful invitations, by address; queueErr, when
	// set, fails the queueing.
	mu       sync.Mutex
	sent     map[string]notify.EmailRequest
	queueErr error
}

func setup(t testing.TB) *bundle {
	t.Helper()
	b := &bundle{st: storetest.New(t), clock: storetest.NewClock(), sent: map[string]notify.EmailRequest{}}
	b.accounts = account.New(b.st, account.Config{Argon2Memory: 8 * 1024, Argon2Time: 1, Argon2Threads: 1},
		slog.New(slog.NewTextHandler(io.Discard, nil)), b.clock.Now)
	b.svc = members.New(b.st, b.clock.Now)
	b.svc.UseEmails(b, "https://app.example.com")
	return b
}

// user signs email up with its address verified.
func (b *bundle) user(t testing.TB, email string) account.User {
	t.Helper()
	u, _, _, err := b.accounts.SignUp(context.Background(), email, "correct horse battery staple", "", account.Client{})
	if err != nil {
		t.Fatalf("SignUp(%s): %v", email, err)
	}
	if _, err := b.st.Pool.Exec(context.Background(), "UPDATE users SET email_verified_at = now() WHERE id = $1", u.ID); err != nil {
		t.Fatal(err)
	}
	return u
}

func (b *bundle) org(t testing.TB, owner account.User) uuid.UUID {
	t.Helper()
	org, err := b.accounts.CreateOrg(context.Background(), owner.ID, "Acme", audit.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return org.ID
}

// QueueEmail keeps the email an invitation queues (the service's account.EmailQueue); the
// server tests queue them on the real notify.Center.
func (b *bundle) QueueEmail(_ context.Context, _ *db.Queries, _ time.Time, r notify.EmailRequest) (uuid.UUID, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queueErr != nil {
		return uuid.Nil, b.queueErr
	}
	b.sent[r.To] = r
	return uuid.New(), nil
}

// invite invites email and returns the invitation's token.
func (b *bundle) invite(t testing.TB, by account.User, org uuid.UUID, email, role string) string {
	t.Helper()
	inv, err := b.svc.Invite(context.Background(), audit.Actor{}.As(by.ID), org, email, role)
	if err != nil {
		t.Fatalf("Invite(%s): %v", email, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	link, err := url.Parse(b.sent[inv.Email].Data["link"])
	if err != nil {
		t.Fatal(err)
	}
	return link.Query().Get("token")
}

// join makes u a member of org as role.
func (b *bundle) join(t testing.TB, by account.User, org uuid.UUID, u account.User, role string) {
	t.Helper()
	if _, _, err := b.svc.Accept(context.Background(), audit.Actor{}.As(u.ID), b.invite(t, by, org, u.Email, role)); err != nil {
		t.Fatalf("Accept: %v", err)
	}
}

func (b *bundle) roles(t testing.TB, as account.User, org uuid.UUID) map[uuid.UUID]string {
	t.Helper()
	list, err := b.svc.List(context.Background(), as.ID, org, 100, nil)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	out := map[uuid.UUID]string{}
	for _, m := range list {
		out[m.UserID] = m.Role
	}
	return out
}

func wantCode(t testing.TB, err error, want errs.Code) {
	t.Helper()
	if errs.CodeOf(err) != want || err == nil {
		t.Fatalf("error %v, want %s", err, want)
	}
}

func TestInvitationLifetime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	alice := b.user(t, "alice@example.com")
	bob := b.user(t, "bob@example.com")
	acme := b.org(t, alice)
	token := b.invite(t, alice, acme, "bob@example.com", account.RoleMember)

	t.Run("OKPendingJustBeforeExpiry", func(t *testing.T) {
		b.clock.Advance(members.InvitationTTL - time.Second)
		list, err := b.svc.Invitations(ctx, alice.ID, acme, 100, nil)
		if err != nil || len(list) != 1 || !list[0].ExpiresAt.Equal(list[0].CreatedAt.Add(members.InvitationTTL)) {
			t.Fatalf("Invitations = %+v, %v", list, err)
		}
	})
	t.Run("ErrNotFoundOnceExpired", func(t *testing.T) {
		b.clock.Advance(time.Second)
		_, _, err := b.svc.Accept(ctx, audit.Actor{}.As(bob.ID), token)
		wantCode(t, err, errs.NotFound)
		list, err := b.svc.Invitations(ctx, alice.ID, acme, 100, nil)
		if err != nil || len(list) != 0 {
			t.Fatalf("Invitations = %+v, %v; want none pending", list, err)
		}
	})
	t.Run("OKReinvited", func(t *testing.T) {
		fresh := b.invite(t, alice, acme, "bob@example.com", account.RoleAdmin)
		m, inv, err := b.svc.Accept(ctx, audit.Actor{}.As(bob.ID), fresh)
		if err != nil || m.Org.ID != acme || m.Role != account.RoleAdmin || inv.Email != "bob@example.com" {
			t.Fatalf("Accept = %+v, %+v, %v", m, inv, err)
		}
	})
}

// TestInviteNotDelivered: an invitation whose email could not be sent is not kept, and the
// earlier one it would have replaced stays valid.
func TestInviteNotDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	alice := b.user(t, "alice@example.com")
	bob := b.user(t, "bob@example.com")
	acme := b.org(t, alice)
	first := b.invite(t, alice, acme, "bob@example.com", account.RoleMember)

	smtpDown := errors.New("smtp: connection refused")
	b.queueErr = smtpDown
	_, err := b.svc.Invite(ctx, audit.Actor{}.As(alice.ID), acme, "bob@example.com", account.RoleAdmin)
	b.queueErr = nil
	if !errors.Is(err, smtpDown) {
		t.Fatalf("Invite = %v, want the delivery error", err)
	}
	list, err := b.svc.Invitations(ctx, alice.ID, acme, 100, nil)
	if err != nil || len(list) != 1 || list[0].Role != account.RoleMember {
		t.Fatalf("Invitations = %+v, %v; want only the first", list, err)
	}
	if m, _, err := b.svc.Accept(ctx, audit.Actor{}.As(bob.ID), first); err != nil || m.Role != account.RoleMember {
		t.Fatalf("Accept(first) = %+v, %v", m, err)
	}
}

func TestInviteInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.user(t, "alice@example.com")
	acme := b.org(t, alice)
	_, err := b.svc.Invite(context.Background(), audit.Actor{}.As(alice.ID), acme, "not an address", account.RoleOwner)
	e, ok := errors.AsType[*errs.Error](err)
	if !ok || e.Code != errs.Invalid || len(e.Fields) != 2 || e.Fields[0].Pointer != "/email" || e.Fields[1].Pointer != "/role" {
		t.Fatalf("Invite = %#v, want invalid_request naming /email and /role", err)
	}
	if len(b.sent) != 0 {
		t.Fatalf("delivered %+v", b.sent)
	}
}

// TestAcceptRefusalKeepsTheInvitation: a refusal rolls the claim back.
func TestAcceptRefusalKeepsTheInvitation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	alice := b.user(t, "alice@example.com")
	bob := b.user(t, "bob@example.com")
	carol := b.user(t, "carol@example.com")
	acme := b.org(t, alice)
	token := b.invite(t, alice, acme, "BOB@example.com ", account.RoleMember)

	_, _, err := b.svc.Accept(ctx, audit.Actor{}.As(carol.ID), token)
	wantCode(t, err, errs.NotFound)
	if _, _, err := b.svc.Accept(ctx, audit.Actor{}.As(bob.ID), token); err != nil {
		t.Fatalf("Accept by the addressee after a refusal: %v", err)
	}
}

// TestConcurrentChanges: the org lock makes concurrent changes run one at a time, so
// the rules hold between them.
func TestConcurrentChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	alice := b.user(t, "alice@example.com")
	bob := b.user(t, "bob@example.com")
	acme := b.org(t, alice)
	b.join(t, alice, acme, bob, account.RoleAdmin)
	if _, _, err := b.svc.ChangeRole(ctx, audit.Actor{}.As(alice.ID), acme, bob.ID, account.RoleOwner); err != nil {
		t.Fatal(err)
	}

	const rounds = 20
	for i := range rounds {
		// Both owners step down at once: one must be refused, or the org has no owner.
		stepDown := make([]error, 2)
		var wg sync.WaitGroup
		for j, u := range []account.User{alice, bob} {
			wg.Go(func() {
				_, _, stepDown[j] = b.svc.ChangeRole(ctx, audit.Actor{}.As(u.ID), acme, u.ID, account.RoleAdmin)
			})
		}
		wg.Wait()
		if (stepDown[0] == nil) == (stepDown[1] == nil) {
			t.Fatalf("round %d: both or neither stepped down: %v, %v", i, stepDown[0], stepDown[1])
		}
		for _, err := range stepDown {
			if err != nil {
				wantCode(t, err, errs.Conflict)
			}
		}
		// Restore two owners for the next round.
		demoted, keeper := alice, bob
		if stepDown[1] == nil {
			demoted, keeper = bob, alice
		}
		if _, _, err := b.svc.ChangeRole(ctx, audit.Actor{}.As(keeper.ID), acme, demoted.ID, account.RoleOwner); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("OneAcceptOfConcurrentOnes", func(t *testing.T) {
		carol := b.user(t, "carol@example.com")
		token := b.invite(t, alice, acme, carol.Email, account.RoleMember)
		results := make([]error, 8)
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() { _, _, results[i] = b.svc.Accept(ctx, audit.Actor{}.As(carol.ID), token) })
		}
		wg.Wait()
		accepted := 0
		for _, err := range results {
			if err == nil {
				accepted++
			} else if errs.CodeOf(err) != errs.NotFound {
				t.Fatalf("Accept: %v", err)
			}
		}
		if accepted != 1 {
			t.Fatalf("%d accepts succeeded, want 1: %v", accepted, results)
		}
	})
	t.Run("OnePendingInvitationOfConcurrentInvites", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := b.svc.Invite(ctx, audit.Actor{}.As(alice.ID), acme, "dan@example.com", account.RoleMember); err != nil {
					t.Errorf("Invite: %v", err)
				}
			})
		}
		wg.Wait()
		list, err := b.svc.Invitations(ctx, alice.ID, acme, 100, nil)
		if err != nil || len(list) != 1 {
			t.Fatalf("Invitations = %+v, %v; want one", list, err)
		}
	})
	if roles := b.roles(t, alice, acme); roles[alice.ID] != account.RoleOwner || roles[bob.ID] != account.RoleOwner {
		t.Fatalf("roles %v", roles)
	}
}

func TestTransferOwnership(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	alice := b.user(t, "alice@example.com")
	bob := b.user(t, "bob@example.com")
	acme := b.org(t, alice)
	b.join(t, alice, acme, bob, account.RoleMember)

	previous, err := b.svc.TransferOwnership(ctx, audit.Actor{}.As(alice.ID), acme, bob.ID)
	if err != nil || previous != account.RoleMember {
		t.Fatalf("TransferOwnership = %q, %v", previous, err)
	}
	if roles := b.roles(t, bob, acme); roles[alice.ID] != account.RoleAdmin || roles[bob.ID] != account.RoleOwner {
		t.Fatalf("roles %v", roles)
	}
	_, err = b.svc.TransferOwnership(ctx, audit.Actor{}.As(alice.ID), acme, bob.ID)
	wantCode(t, err, errs.PermissionDenied)
}
