package members_test

import (
	"context"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

func TestAdd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	owner, bob, eve := b.user(t, "owner@example.com"), b.user(t, "bob@example.com"), b.user(t, "eve@example.com")
	org := b.org(t, owner)
	as := func(u account.User) audit.Actor { return audit.Actor{Type: audit.ActorUser, ID: &u.ID} }

	m, err := b.svc.Add(ctx, as(owner), org, bob.ID, account.RoleMember)
	if err != nil || m.UserID != bob.ID || m.Role != account.RoleMember || m.Email != "bob@example.com" {
		t.Fatalf("Add = %+v, %v", m, err)
	}
	for _, tt := range []struct {
		name string
		by   account.User
		user account.User
		role string
		want errs.Code
	}{
		{name: "ErrAlreadyMember", by: owner, user: bob, role: account.RoleAdmin, want: errs.Conflict},
		{name: "ErrMemberMayNotAdd", by: bob, user: eve, role: account.RoleMember, want: errs.PermissionDenied},
		{name: "ErrOwnerRole", by: owner, user: eve, role: account.RoleOwner, want: errs.Invalid},
		{name: "ErrNotInOrg", by: eve, user: eve, role: account.RoleMember, want: errs.NotFound},
	} {
		if _, err := b.svc.Add(ctx, as(tt.by), org, tt.user.ID, tt.role); errs.CodeOf(err) != tt.want {
			t.Errorf("%s: Add = %v, want %s", tt.name, err, tt.want)
		}
	}
	if _, err := b.svc.Add(ctx, as(owner), owner.PersonalOrgID, eve.ID, account.RoleMember); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("Add to a personal org = %v, want conflict", err)
	}
}
