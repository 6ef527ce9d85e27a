package account_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

func TestOrgs(t *testing.T) {
	b := setup(t)
	ada, _, _ := b.signUp(t, "ada@example.com")
	bob, _, _ := b.signUp(t, "bob@example.com")

	var acme account.Org
	t.Run("OKCreateOrg", func(t *testing.T) {
		b.clock.Advance(time.Second)
		var err error
		acme, err = b.svc.CreateOrg(t.Context(), ada.ID, "  Acme  ", audit.Actor{})
		if err != nil {
			t.Fatalf("CreateOrg: %v", err)
		}
		if acme.Name != "Acme" || acme.Personal || acme.ID.Version() != 7 || !acme.CreatedAt.Equal(b.clock.Now()) {
			t.Errorf("CreateOrg = %+v", acme)
		}
	})
	t.Run("OKMemberships", func(t *testing.T) {
		got, err := b.svc.Memberships(t.Context(), ada.ID)
		if err != nil {
			t.Fatalf("Memberships: %v", err)
		}
		if len(got) != 2 || got[0].Org.ID != ada.PersonalOrgID || !got[0].Org.Personal || got[0].Role != account.RoleOwner ||
			got[1] != (account.Membership{Org: acme, Role: account.RoleOwner}) {
			t.Errorf("Memberships = %+v, want the personal org then Acme, both owned", got)
		}
		got, err = b.svc.Memberships(t.Context(), bob.ID)
		if err != nil || len(got) != 1 || got[0].Org.ID != bob.PersonalOrgID {
			t.Errorf("bob's Memberships = %+v, %v; want only his personal org", got, err)
		}
	})
	t.Run("OKNoMemberships", func(t *testing.T) {
		got, err := b.svc.Memberships(t.Context(), uuid.New())
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("Memberships(unknown) = %#v, %v; want an empty list", got, err)
		}
	})

	roles := []struct {
		name     string
		user     uuid.UUID
		org      uuid.UUID
		wantRole string
	}{
		{"OKOwnerOfPersonal", ada.ID, ada.PersonalOrgID, account.RoleOwner},
		{"OKOwnerOfCreated", ada.ID, acme.ID, account.RoleOwner},
		{"ErrNotFoundOtherUsersOrg", bob.ID, acme.ID, ""},
		{"ErrNotFoundOtherUsersPersonalOrg", bob.ID, ada.PersonalOrgID, ""},
		{"ErrNotFoundUnknownOrg", ada.ID, uuid.New(), ""},
	}
	for _, tt := range roles {
		t.Run("Role"+tt.name, func(t *testing.T) {
			role, err := b.svc.Role(t.Context(), tt.user, tt.org)
			if tt.wantRole == "" {
				if errs.CodeOf(err) != errs.NotFound || err.Error() != "not_found: org not found" {
					t.Fatalf("Role error = %v, want the not_found of an absent org", err)
				}
				return
			}
			if err != nil || role != tt.wantRole {
				t.Fatalf("Role = %q, %v; want %q", role, err, tt.wantRole)
			}
		})
	}
}

func TestCreateOrgValidation(t *testing.T) {
	b := setup(t)
	ada, _, _ := b.signUp(t, "ada@example.com")
	tests := []struct {
		name     string
		user     uuid.UUID
		orgName  string
		code     errs.Code // "": valid
		pointers []string
	}{
		{"OK", ada.ID, "Analytical Engines", "", nil},
		{"OKOneCharacter", ada.ID, "A", "", nil},
		{"OKHundredCharacters", ada.ID, strings.Repeat("ø", 100), "", nil},
		{"ErrInvalidEmpty", ada.ID, "", errs.Invalid, []string{"/name"}},
		{"ErrInvalidBlank", ada.ID, " \t ", errs.Invalid, []string{"/name"}},
		{"ErrInvalidTooLong", ada.ID, strings.Repeat("ø", 101), errs.Invalid, []string{"/name"}},
		{"ErrInvalidControlCharacter", ada.ID, "Acme\nInc", errs.Invalid, []string{"/name"}},
		{"ErrNotFoundUser", uuid.New(), "Acme", errs.NotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orgs := b.count(t, "orgs")
			org, err := b.svc.CreateOrg(t.Context(), tt.user, tt.orgName, audit.Actor{})
			switch tt.code {
			case "":
				if err != nil {
					t.Fatalf("CreateOrg: %v", err)
				}
				if org.Name != tt.orgName {
					t.Errorf("name = %q, want %q", org.Name, tt.orgName)
				}
				if role, err := b.svc.Role(t.Context(), tt.user, org.ID); err != nil || role != account.RoleOwner {
					t.Errorf("creator's Role = %q, %v; want owner", role, err)
				}
				return
			case errs.Invalid:
				checkInvalid(t, err, tt.pointers)
			default:
				if errs.CodeOf(err) != tt.code {
					t.Fatalf("CreateOrg error = %v, want code %s", err, tt.code)
				}
			}
			if n := b.count(t, "orgs"); n != orgs {
				t.Errorf("a refused CreateOrg left %d orgs, want %d", n, orgs)
			}
		})
	}
}
