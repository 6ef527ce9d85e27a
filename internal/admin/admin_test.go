package admin_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging/logtest"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// bundle is one test's database and the services on it.
type bundle struct {
	st       *store.Store
	svc      *admin.Service
	accounts *account.Service
	audit    *audit.Log
}

func setup(t testing.TB) *bundle {
	t.Helper()
	st := storetest.New(t)
	return &bundle{
		st:  st,
		svc: admin.New(st, time.Now),
		accounts: account.New(st, account.Config{Argon2Memory: 8 * 1024, Argon2Time: 1, Argon2Threads: 1},
			slog.New(slog.NewJSONHandler(&logtest.Buffer{}, nil)), time.Now),
		audit: audit.New(st),
	}
}

// signUp creates a user named name.
func (b *bundle) signUp(t testing.TB, email, name string) account.User {
	t.Helper()
	u, _, _, err := b.accounts.SignUp(context.Background(), email, "correct horse battery staple", name, account.Client{})
	if err != nil {
		t.Fatalf("SignUp(%s): %v", email, err)
	}
	return u
}

func emails(users []account.User) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Email
	}
	return out
}

func TestUsers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Created oldest first; the list is newest first.
	for _, u := range []struct{ email, name string }{
		{"grace@navy.example", "Grace Hopper"},
		{"ada@example.com", "Ada Lovelace"},
		{"percent@example.com", "Rate 100%"},
		{"under@example.com", "snake_case"},
		{"slash@example.com", `back\slash`},
	} {
		b.signUp(t, u.email, u.name)
	}

	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"OKAll", "", []string{"slash@example.com", "under@example.com", "percent@example.com", "ada@example.com", "grace@navy.example"}},
		{"OKBlankIsAll", "  ", []string{"slash@example.com", "under@example.com", "percent@example.com", "ada@example.com", "grace@navy.example"}},
		{"OKEmail", "NAVY", []string{"grace@navy.example"}},
		{"OKName", "lovelace", []string{"ada@example.com"}},
		{"OKPercentIsLiteral", "%", []string{"percent@example.com"}},
		{"OKUnderscoreIsLiteral", "_", []string{"under@example.com"}},
		{"OKBackslashIsLiteral", `\`, []string{"slash@example.com"}},
		{"OKNone", "nobody", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.svc.Users(t.Context(), tt.query, 100, nil)
			if err != nil {
				t.Fatalf("Users: %v", err)
			}
			if !slices.Equal(emails(got), tt.want) {
				t.Errorf("Users(%q) = %v, want %v", tt.query, emails(got), tt.want)
			}
		})
	}

	t.Run("OKPages", func(t *testing.T) {
		var seen []string
		var after *uuid.UUID
		for range 3 {
			page, err := b.svc.Users(t.Context(), "example.com", 2, after)
			if err != nil {
				t.Fatalf("Users: %v", err)
			}
			seen = append(seen, emails(page)...)
			if len(page) < 2 {
				break
			}
			after = &page[len(page)-1].ID
		}
		want := []string{"slash@example.com", "under@example.com", "percent@example.com", "ada@example.com"}
		if !slices.Equal(seen, want) {
			t.Errorf("pages = %v, want %v", seen, want)
		}
	})
}

func TestOrgs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ada := b.signUp(t, "ada@example.com", "Ada")
	acme, err := b.accounts.CreateOrg(t.Context(), ada.ID, "Acme_Rockets", audit.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	b.signUp(t, "bob@example.com", "Bob")

	all, err := b.svc.Orgs(t.Context(), "", 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range all {
		names = append(names, o.Name)
	}
	if want := []string{"Bob's org", "Acme_Rockets", "Ada's org"}; !slices.Equal(names, want) {
		t.Fatalf("Orgs = %v, want %v", names, want)
	}
	found, err := b.svc.Orgs(t.Context(), "e_r", 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].ID != acme.ID || found[0].Personal {
		t.Errorf("Orgs(e_r) = %+v, want only Acme_Rockets", found)
	}
	rest, err := b.svc.Orgs(t.Context(), "", 10, &all[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0].ID != acme.ID {
		t.Errorf("Orgs after the newest = %+v", rest)
	}
}

func TestDisableEnable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root := b.signUp(t, "root@example.com", "Root")
	ada := b.signUp(t, "ada@example.com", "Ada")

	t.Run("ErrSelf", func(t *testing.T) {
		if _, err := b.svc.Disable(t.Context(), audit.Actor{}.As(root.ID), root.ID); errs.CodeOf(err) != errs.Conflict {
			t.Fatalf("Disable(self) error = %v, want conflict", err)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		if _, err := b.svc.Disable(t.Context(), audit.Actor{}.As(root.ID), uuid.New()); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("Disable error = %v, want not_found", err)
		}
		if _, err := b.svc.Enable(t.Context(), audit.Actor{}, uuid.New()); errs.CodeOf(err) != errs.NotFound {
			t.Fatalf("Enable error = %v, want not_found", err)
		}
	})
	t.Run("OK", func(t *testing.T) {
		u, err := b.svc.Disable(t.Context(), audit.Actor{}.As(root.ID), ada.ID)
		if err != nil || !u.Disabled {
			t.Fatalf("Disable = %+v, %v", u, err)
		}
		var first time.Time
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT disabled_at FROM users WHERE id = $1", ada.ID).Scan(&first); err != nil {
			t.Fatal(err)
		}
		if _, err := b.svc.Disable(t.Context(), audit.Actor{}.As(root.ID), ada.ID); err != nil {
			t.Fatalf("Disable again: %v", err)
		}
		var again time.Time
		if err := b.st.Pool.QueryRow(t.Context(), "SELECT disabled_at FROM users WHERE id = $1", ada.ID).Scan(&again); err != nil {
			t.Fatal(err)
		}
		if !again.Equal(first) {
			t.Errorf("disabling again moved disabled_at from %s to %s", first, again)
		}
		if _, _, _, err := b.accounts.Login(t.Context(), "ada@example.com", "correct horse battery staple", account.Client{}); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("Login of a disabled user error = %v, want unauthenticated", err)
		}
		if u, err := b.svc.Enable(t.Context(), audit.Actor{}, ada.ID); err != nil || u.Disabled {
			t.Fatalf("Enable = %+v, %v", u, err)
		}
		if _, _, _, err := b.accounts.Login(t.Context(), "ada@example.com", "correct horse battery staple", account.Client{}); err != nil {
			t.Errorf("Login after Enable: %v", err)
		}
	})
}

func TestGrantRevokeAuthorize(t *testing.T) {
	t.Parallel()
	b := setup(t)
	root := b.signUp(t, "root@example.com", "Root")
	other := b.signUp(t, "other@example.com", "Other")

	authorized := func(t *testing.T, id uuid.UUID) bool {
		t.Helper()
		err := b.svc.Authorize(t.Context(), id)
		if err != nil && errs.CodeOf(err) != errs.PermissionDenied {
			t.Fatalf("Authorize error = %v, want nil or permission_denied", err)
		}
		return err == nil
	}
	if authorized(t, root.ID) {
		t.Fatal("a new user is a platform admin")
	}
	if u, err := b.svc.Grant(t.Context(), " ROOT@example.com "); err != nil || !u.PlatformAdmin || u.ID != root.ID {
		t.Fatalf("Grant = %+v, %v", u, err)
	}
	if !authorized(t, root.ID) {
		t.Fatal("granted admin refused")
	}
	if _, err := b.svc.Grant(t.Context(), "other@example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.svc.Disable(t.Context(), audit.Actor{}.As(root.ID), other.ID); err != nil {
		t.Fatal(err)
	}
	if authorized(t, other.ID) {
		t.Error("a disabled admin is authorized")
	}
	if authorized(t, uuid.New()) {
		t.Error("an unknown user is authorized")
	}
	if u, err := b.svc.Revoke(t.Context(), "root@example.com"); err != nil || u.PlatformAdmin {
		t.Fatalf("Revoke = %+v, %v", u, err)
	}
	if authorized(t, root.ID) {
		t.Error("revoked admin authorized")
	}
	if _, err := b.svc.Grant(t.Context(), "nobody@example.com"); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("Grant(unknown) error = %v, want not_found", err)
	}
}

func TestAuditEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	orgA, orgB, actor := uuid.New(), uuid.New(), uuid.New()
	record := func(org *uuid.UUID, actorID *uuid.UUID, action string) {
		t.Helper()
		actorType := audit.ActorSystem
		if actorID != nil {
			actorType = audit.ActorUser
		}
		err := b.audit.Record(t.Context(), audit.Actor{}, audit.Event{OrgID: org, ActorType: actorType, ActorID: actorID,
			Action: action, TargetType: "thing", TargetID: action, Data: map[string]any{"n": 1}})
		if err != nil {
			t.Fatal(err)
		}
	}
	record(&orgA, &actor, "a.one")
	record(&orgB, nil, "b.one")
	record(nil, &actor, "a.two")
	record(&orgA, nil, "a.one")

	tests := []struct {
		name   string
		filter admin.EventFilter
		want   []string
	}{
		{"OKAll", admin.EventFilter{}, []string{"a.one", "a.two", "b.one", "a.one"}},
		{"OKOrg", admin.EventFilter{OrgID: &orgA}, []string{"a.one", "a.one"}},
		{"OKActor", admin.EventFilter{ActorID: &actor}, []string{"a.two", "a.one"}},
		{"OKAction", admin.EventFilter{Action: "a.one"}, []string{"a.one", "a.one"}},
		{"OKEveryFilter", admin.EventFilter{OrgID: &orgA, ActorID: &actor, Action: "a.one"}, []string{"a.one"}},
		{"OKNone", admin.EventFilter{OrgID: &orgB, Action: "a.one"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, err := b.svc.AuditEvents(t.Context(), tt.filter, 10, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, e := range events {
				got = append(got, e.Action)
				if e.Data["n"] != float64(1) || e.TargetID != e.Action {
					t.Errorf("event %+v", e)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("actions = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("OKBefore", func(t *testing.T) {
		all, err := b.svc.AuditEvents(t.Context(), admin.EventFilter{}, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		rest, err := b.svc.AuditEvents(t.Context(), admin.EventFilter{}, 10, &all[1].ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) != 2 || rest[0].ID != all[2].ID || rest[1].ID != all[3].ID {
			t.Errorf("events before the second = %+v", rest)
		}
	})
}
