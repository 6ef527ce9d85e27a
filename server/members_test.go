package server

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// person is a signed-up user the members tests act as.
type person struct {
	id          uuid.UUID
	email       string
	token       string // access token
	personalOrg uuid.UUID
}

// person signs email up and marks the address verified, as the verification email would
// (accepting an invitation needs a verified address; verification is tested elsewhere).
func (b *bundle) person(t testing.TB, email string) person {
	t.Helper()
	p := b.unverifiedPerson(t, email)
	b.verify(t, p)
	return p
}

func (b *bundle) unverifiedPerson(t testing.TB, email string) person {
	t.Helper()
	pair := b.signUp(t, email)
	var me api.Me
	if res := b.call(t, "GET", "/v1/me", pair.AccessToken, nil, &me); res.StatusCode != 200 {
		t.Fatalf("me: %d", res.StatusCode)
	}
	return person{id: me.Id, email: me.Email, token: pair.AccessToken, personalOrg: me.PersonalOrgId}
}

func (b *bundle) verify(t testing.TB, p person) {
	t.Helper()
	if _, err := b.pool.Exec(context.Background(), "UPDATE users SET email_verified_at = now() WHERE id = $1", p.id); err != nil {
		t.Fatal(err)
	}
}

// org creates an org owned by owner.
func (b *bundle) org(t testing.TB, owner person, name string) uuid.UUID {
	t.Helper()
	var org api.OrgMembership
	if res := b.call(t, "POST", "/v1/orgs", owner.token, map[string]string{"name": name}, &org); res.StatusCode != 201 {
		t.Fatalf("create org: %d %s", res.StatusCode, readAll(res))
	}
	return org.Id
}

// invite invites email to org as role on behalf of by and returns the invitation and the
// token from the email it sent.
func (b *bundle) invite(t testing.TB, by person, org uuid.UUID, email, role string) (api.Invitation, string) {
	t.Helper()
	var inv api.Invitation
	res := b.call(t, "POST", orgPath(org, "invitations"), by.token, map[string]string{"email": email, "role": role}, &inv)
	if res.StatusCode != 201 {
		t.Fatalf("invite %s: %d %s", email, res.StatusCode, readAll(res))
	}
	return inv, b.invitationToken(t, strings.ToLower(email))
}

var invitationLink = regexp.MustCompile(`https://app\.example\.com/accept-invitation\?token=(kiln_inv_[A-Za-z0-9_-]{43})\n`)

// invitationToken is the token of the latest invitation emailed to addr.
func (b *bundle) invitationToken(t testing.TB, addr string) string {
	t.Helper()
	sent := b.mail.To(addr)
	if len(sent) == 0 {
		t.Fatalf("no email to %s", addr)
	}
	m := invitationLink.FindStringSubmatch(sent[len(sent)-1].Text)
	if m == nil {
		t.Fatalf("no invitation link in the email to %s:\n%s", addr, sent[len(sent)-1].Text)
	}
	return m[1]
}

func (b *bundle) accept(t testing.TB, p person, token string) *http.Response {
	t.Helper()
	return b.call(t, "POST", "/v1/invitations/accept", p.token, map[string]string{"token": token}, nil)
}

// join makes p a member of org as role through an invitation from by.
func (b *bundle) join(t testing.TB, by person, org uuid.UUID, p person, role string) {
	t.Helper()
	_, token := b.invite(t, by, org, p.email, role)
	if res := b.accept(t, p, token); res.StatusCode != 200 {
		t.Fatalf("accept: %d %s", res.StatusCode, readAll(res))
	}
}

func (b *bundle) members(t testing.TB, p person, org uuid.UUID) map[uuid.UUID]api.Role {
	t.Helper()
	var list api.MemberList
	if res := b.call(t, "GET", orgPath(org, "members"), p.token, nil, &list); res.StatusCode != 200 {
		t.Fatalf("list members: %d %s", res.StatusCode, readAll(res))
	}
	roles := map[uuid.UUID]api.Role{}
	for _, m := range list.Data {
		roles[m.UserId] = m.Role
	}
	return roles
}

func (b *bundle) setRole(t testing.TB, by person, org uuid.UUID, of person, role string) *http.Response {
	t.Helper()
	return b.call(t, "PATCH", orgPath(org, "members", of.id.String()), by.token, map[string]string{"role": role}, nil)
}

func (b *bundle) remove(t testing.TB, by person, org uuid.UUID, of person) *http.Response {
	t.Helper()
	return b.call(t, "DELETE", orgPath(org, "members", of.id.String()), by.token, nil, nil)
}

func orgPath(org uuid.UUID, parts ...string) string {
	return "/v1/orgs/" + org.String() + "/" + strings.Join(parts, "/")
}

// wantProblem fails unless res is a problem with status and code whose detail mentions
// each of details; it returns the problem with its per-request fields blanked, as JSON.
func wantProblem(t testing.TB, res *http.Response, status int, code errs.Code, details ...string) string {
	t.Helper()
	p := decodeProblem(t, res)
	if p.Status != status || p.Code != api.ErrorCode(code) {
		t.Fatalf("problem %d %s (%v), want %d %s", p.Status, p.Code, deref(p.Detail), status, code)
	}
	for _, d := range details {
		if !strings.Contains(deref(p.Detail), d) {
			t.Errorf("detail %q does not mention %q", deref(p.Detail), d)
		}
	}
	p.RequestId, p.Instance = "", nil
	raw, _ := json.Marshal(p)
	return string(raw)
}

// auditActions returns the org's audit events by action.
func (b *bundle) auditActions(t testing.TB, p person, org uuid.UUID) map[string][]api.AuditEvent {
	t.Helper()
	var events api.AuditEventList
	if res := b.call(t, "GET", orgPath(org, "audit-events")+"?limit=100", p.token, nil, &events); res.StatusCode != 200 {
		t.Fatalf("audit events: %d %s", res.StatusCode, readAll(res))
	}
	out := map[string][]api.AuditEvent{}
	for _, e := range events.Data {
		out[e.Action] = append(out[e.Action], e)
	}
	return out
}

func actorOf(e api.AuditEvent) uuid.UUID {
	if e.ActorId == nil {
		return uuid.Nil
	}
	return *e.ActorId
}

func TestInvitationAccepted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	acme := b.org(t, alice, "Acme")

	res := b.call(t, "POST", orgPath(acme, "invitations"), alice.token, map[string]string{"email": "  Bob@Example.COM ", "role": "admin"}, nil)
	body := readAll(res)
	if res.StatusCode != 201 {
		t.Fatalf("invite: %d %s", res.StatusCode, body)
	}
	var inv api.Invitation
	if err := json.Unmarshal([]byte(body), &inv); err != nil {
		t.Fatal(err)
	}
	if inv.Email != "bob@example.com" || inv.Role != api.RoleAdmin || inv.OrgId != acme || inv.InvitedBy != alice.id ||
		inv.ExpiresAt.Sub(inv.CreatedAt) != 7*24*time.Hour || time.Since(inv.CreatedAt) > time.Minute {
		t.Fatalf("invitation %+v", inv)
	}
	if strings.Contains(body, "kiln_inv_") {
		t.Fatalf("the invitation response carries the token: %s", body)
	}
	sent := b.mail.To("bob@example.com")
	if len(sent) != 1 || !strings.Contains(sent[0].Subject, "Acme") || !strings.Contains(sent[0].Text, "Ada") {
		t.Fatalf("emails to bob: %+v", sent)
	}
	token := b.invitationToken(t, "bob@example.com")

	var pending api.InvitationList
	res = b.call(t, "GET", orgPath(acme, "invitations"), alice.token, nil, nil)
	body = readAll(res)
	if err := json.Unmarshal([]byte(body), &pending); err != nil || res.StatusCode != 200 {
		t.Fatalf("list invitations: %d %s", res.StatusCode, body)
	}
	if len(pending.Data) != 1 || pending.Data[0].Id != inv.Id || pending.NextCursor != nil || strings.Contains(body, "kiln_inv_") {
		t.Fatalf("pending invitations %s", body)
	}

	bob := b.person(t, "bob@example.com")
	var joined api.OrgMembership
	if res := b.call(t, "POST", "/v1/invitations/accept", bob.token, map[string]string{"token": token}, &joined); res.StatusCode != 200 {
		t.Fatalf("accept: %d %s", res.StatusCode, readAll(res))
	}
	if joined.Id != acme || joined.Name != "Acme" || joined.Role != api.RoleAdmin || joined.Personal {
		t.Fatalf("joined %+v", joined)
	}

	t.Run("OKMemberListed", func(t *testing.T) {
		var list api.MemberList
		if res := b.call(t, "GET", orgPath(acme, "members"), bob.token, nil, &list); res.StatusCode != 200 {
			t.Fatalf("list: %d", res.StatusCode)
		}
		if len(list.Data) != 2 || list.Data[0].UserId != alice.id || list.Data[0].Role != api.RoleOwner ||
			list.Data[1].UserId != bob.id || list.Data[1].Role != api.RoleAdmin || list.Data[1].Email != "bob@example.com" {
			t.Fatalf("members %+v", list.Data)
		}
	})
	t.Run("OKOrgInBobsMe", func(t *testing.T) {
		var me api.Me
		b.call(t, "GET", "/v1/me", bob.token, nil, &me)
		if len(me.Orgs) != 2 || me.Orgs[1].Id != acme || me.Orgs[1].Role != api.RoleAdmin {
			t.Fatalf("bob's orgs %+v", me.Orgs)
		}
	})
	t.Run("OKNoLongerPending", func(t *testing.T) {
		var list api.InvitationList
		b.call(t, "GET", orgPath(acme, "invitations"), alice.token, nil, &list)
		if len(list.Data) != 0 {
			t.Fatalf("pending %+v", list.Data)
		}
	})
	t.Run("ErrTokenReused", func(t *testing.T) {
		wantProblem(t, b.accept(t, bob, token), 404, errs.NotFound, "invitation not found")
	})
	t.Run("OKAudited", func(t *testing.T) {
		events := b.auditActions(t, alice, acme)
		if e := events["member.invite"]; len(e) != 1 || e[0].TargetId != inv.Id.String() || actorOf(e[0]) != alice.id ||
			e[0].Data["email"] != "bob@example.com" || e[0].Data["role"] != "admin" {
			t.Errorf("member.invite %+v", e)
		}
		if e := events["member.join"]; len(e) != 1 || e[0].TargetId != bob.id.String() || actorOf(e[0]) != bob.id || e[0].Data["role"] != "admin" {
			t.Errorf("member.join %+v", e)
		}
	})
}

// TestInvitationRefusals: every token that cannot be accepted gets the same answer, and
// a refusal does not spend the invitation.
func TestInvitationRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	bob := b.person(t, "bob@example.com")
	carol := b.person(t, "carol@example.com")
	acme := b.org(t, alice, "Acme")
	_, bobs := b.invite(t, alice, acme, "bob@example.com", "member")

	refusal := wantProblem(t, b.accept(t, carol, "kiln_inv_not-a-token"), 404, errs.NotFound, "invitation not found")
	same := func(t *testing.T, res *http.Response) {
		t.Helper()
		if got := wantProblem(t, res, 404, errs.NotFound); got != refusal {
			t.Fatalf("refusal %s\nwant the same as for a malformed token: %s", got, refusal)
		}
	}

	t.Run("ErrUnknownToken", func(t *testing.T) {
		same(t, b.accept(t, carol, "kiln_inv_"+strings.Repeat("A", 43)))
	})
	t.Run("ErrWrongUser", func(t *testing.T) {
		same(t, b.accept(t, carol, bobs))
		if roles := b.members(t, alice, acme); len(roles) != 1 {
			t.Fatalf("members %v", roles)
		}
	})
	t.Run("ErrExpired", func(t *testing.T) {
		_, dans := b.invite(t, alice, acme, "dan@example.com", "member")
		dan := b.person(t, "dan@example.com")
		if _, err := b.pool.Exec(context.Background(), "UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = $1", dan.email); err != nil {
			t.Fatal(err)
		}
		same(t, b.accept(t, dan, dans))
		var list api.InvitationList
		b.call(t, "GET", orgPath(acme, "invitations"), alice.token, nil, &list)
		for _, inv := range list.Data {
			if inv.Email == dan.email {
				t.Errorf("an expired invitation is listed as pending: %+v", inv)
			}
		}
	})
	t.Run("ErrWithdrawn", func(t *testing.T) {
		inv, erins := b.invite(t, alice, acme, "erin@example.com", "member")
		erin := b.person(t, "erin@example.com")
		if res := b.call(t, "DELETE", orgPath(acme, "invitations", inv.Id.String()), alice.token, nil, nil); res.StatusCode != 204 {
			t.Fatalf("withdraw: %d %s", res.StatusCode, readAll(res))
		}
		same(t, b.accept(t, erin, erins))
		wantProblem(t, b.call(t, "DELETE", orgPath(acme, "invitations", inv.Id.String()), alice.token, nil, nil), 404, errs.NotFound)
		if e := b.auditActions(t, alice, acme)["member.invitation_revoke"]; len(e) != 1 || e[0].TargetId != inv.Id.String() {
			t.Errorf("member.invitation_revoke %+v", e)
		}
	})
	t.Run("ErrReplacedByANewerInvitation", func(t *testing.T) {
		_, first := b.invite(t, alice, acme, "fay@example.com", "admin")
		second, latest := b.invite(t, alice, acme, "FAY@example.com", "member")
		fay := b.person(t, "fay@example.com")
		var list api.InvitationList
		b.call(t, "GET", orgPath(acme, "invitations"), alice.token, nil, &list)
		n := 0
		for _, inv := range list.Data {
			if inv.Email == fay.email {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d pending invitations for fay, want 1: %+v", n, list.Data)
		}
		same(t, b.accept(t, fay, first))
		var joined api.OrgMembership
		if res := b.call(t, "POST", "/v1/invitations/accept", fay.token, map[string]string{"token": latest}, &joined); res.StatusCode != 200 || joined.Role != second.Role {
			t.Fatalf("accept the newer invitation: %d %+v", res.StatusCode, joined)
		}
	})
	t.Run("OKAddresseeAcceptsAfterRefusals", func(t *testing.T) {
		if res := b.accept(t, bob, bobs); res.StatusCode != 200 {
			t.Fatalf("accept: %d %s", res.StatusCode, readAll(res))
		}
		same(t, b.accept(t, bob, bobs))
	})
	t.Run("ErrAlreadyAMember", func(t *testing.T) {
		wantProblem(t, b.call(t, "POST", orgPath(acme, "invitations"), alice.token, map[string]string{"email": "Bob@example.com", "role": "admin"}, nil),
			409, errs.Conflict, "already a member")
		_, gus := b.invite(t, alice, acme, "gus@example.com", "admin")
		g := b.person(t, "gus@example.com")
		if _, err := b.pool.Exec(context.Background(), "INSERT INTO org_members (org_id, user_id, role) VALUES ($1, $2, 'member')", acme, g.id); err != nil {
			t.Fatal(err)
		}
		wantProblem(t, b.accept(t, g, gus), 409, errs.Conflict, "already a member")
		if roles := b.members(t, alice, acme); roles[g.id] != api.RoleMember {
			t.Fatalf("gus's role %q, want member (unchanged)", roles[g.id])
		}
	})
	t.Run("ErrUnverifiedEmail", func(t *testing.T) {
		_, hals := b.invite(t, alice, acme, "hal@example.com", "member")
		hal := b.unverifiedPerson(t, "hal@example.com")
		wantProblem(t, b.accept(t, hal, hals), 403, errs.PermissionDenied, "verified email")
		b.verify(t, hal)
		if res := b.accept(t, hal, hals); res.StatusCode != 200 {
			t.Fatalf("accept once verified: %d %s", res.StatusCode, readAll(res))
		}
	})
	t.Run("ErrAPIKey", func(t *testing.T) {
		key := b.createKey(t, carol.token, []string{"admin"})
		wantProblem(t, b.call(t, "POST", "/v1/invitations/accept", key.Key, map[string]string{"token": bobs}, nil), 403, errs.PermissionDenied)
		wantProblem(t, b.call(t, "GET", orgPath(carol.personalOrg, "members"), key.Key, nil, nil), 403, errs.PermissionDenied)
	})
	t.Run("ErrPersonalOrg", func(t *testing.T) {
		wantProblem(t, b.call(t, "POST", orgPath(alice.personalOrg, "invitations"), alice.token, map[string]string{"email": "ivy@example.com", "role": "member"}, nil),
			409, errs.Conflict, "personal org")
		if sent := b.mail.To("ivy@example.com"); len(sent) != 0 {
			t.Fatalf("emails for a refused invitation: %+v", sent)
		}
	})
}

// TestMemberPermissions: members read, owners and admins manage, and only owners touch
// owners.
func TestMemberPermissions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.person(t, "owner@example.com")
	admin := b.person(t, "admin@example.com")
	member := b.person(t, "member@example.com")
	other := b.person(t, "other@example.com")
	acme := b.org(t, owner, "Acme")
	b.join(t, owner, acme, admin, "admin")
	b.join(t, admin, acme, member, "member")
	b.join(t, owner, acme, other, "member")
	pending, _ := b.invite(t, owner, acme, "zed@example.com", "member")

	t.Run("OKMemberLists", func(t *testing.T) {
		if roles := b.members(t, member, acme); len(roles) != 4 || roles[owner.id] != api.RoleOwner || roles[admin.id] != api.RoleAdmin || roles[member.id] != api.RoleMember {
			t.Fatalf("members %v", roles)
		}
	})
	t.Run("ErrMemberCannotManage", func(t *testing.T) {
		for name, res := range map[string]*http.Response{
			"invite":           b.call(t, "POST", orgPath(acme, "invitations"), member.token, map[string]string{"email": "x@example.com", "role": "member"}, nil),
			"list invitations": b.call(t, "GET", orgPath(acme, "invitations"), member.token, nil, nil),
			"withdraw":         b.call(t, "DELETE", orgPath(acme, "invitations", pending.Id.String()), member.token, nil, nil),
			"change a role":    b.setRole(t, member, acme, other, "admin"),
			"promote self":     b.setRole(t, member, acme, member, "admin"),
			"remove another":   b.remove(t, member, acme, other),
			"transfer":         b.call(t, "POST", orgPath(acme, "transfer-ownership"), member.token, map[string]string{"user_id": member.id.String()}, nil),
		} {
			t.Run(name, func(t *testing.T) { wantProblem(t, res, 403, errs.PermissionDenied, "owner") })
		}
		if roles := b.members(t, owner, acme); len(roles) != 4 || roles[other.id] != api.RoleMember || roles[member.id] != api.RoleMember {
			t.Fatalf("members changed: %v", roles)
		}
	})
	t.Run("OKAdminManagesMembers", func(t *testing.T) {
		keys := func() int {
			return b.call(t, "GET", "/v1/api-keys", other.token, nil, nil, "Kiln-Org", acme.String()).StatusCode
		}
		if code := keys(); code != 403 {
			t.Fatalf("a member lists API keys: %d", code)
		}
		var m api.Member
		if res := b.call(t, "PATCH", orgPath(acme, "members", other.id.String()), admin.token, map[string]string{"role": "admin"}, &m); res.StatusCode != 200 ||
			m.Role != api.RoleAdmin || m.UserId != other.id || m.Email != other.email {
			t.Fatalf("promote: %d %+v", res.StatusCode, m)
		}
		if code := keys(); code != 200 {
			t.Fatalf("right after the promotion, API keys: %d (a stale cached role?)", code)
		}
		if res := b.setRole(t, admin, acme, other, "member"); res.StatusCode != 200 {
			t.Fatalf("demote: %d %s", res.StatusCode, readAll(res))
		}
		changes := b.auditActions(t, owner, acme)["member.role_change"]
		if len(changes) != 2 || changes[0].Data["from"] != "admin" || changes[0].Data["to"] != "member" ||
			changes[1].Data["from"] != "member" || changes[1].Data["to"] != "admin" || changes[0].TargetId != other.id.String() {
			t.Fatalf("member.role_change events %+v", changes)
		}
	})
	t.Run("OKSameRoleIsNoChange", func(t *testing.T) {
		if res := b.setRole(t, admin, acme, other, "member"); res.StatusCode != 200 {
			t.Fatalf("%d", res.StatusCode)
		}
		if n := len(b.auditActions(t, owner, acme)["member.role_change"]); n != 2 {
			t.Fatalf("%d role changes audited, want 2", n)
		}
	})
	t.Run("ErrAdminCannotMakeAnOwner", func(t *testing.T) {
		wantProblem(t, b.setRole(t, admin, acme, other, "owner"), 403, errs.PermissionDenied, "owner role")
		wantProblem(t, b.setRole(t, admin, acme, admin, "owner"), 403, errs.PermissionDenied, "owner role")
	})
	t.Run("ErrAdminCannotUnmakeOrRemoveAnOwner", func(t *testing.T) {
		wantProblem(t, b.setRole(t, admin, acme, owner, "member"), 403, errs.PermissionDenied, "owner role")
		wantProblem(t, b.remove(t, admin, acme, owner), 403, errs.PermissionDenied, "owner role")
	})
	t.Run("ErrLastOwner", func(t *testing.T) {
		wantProblem(t, b.setRole(t, owner, acme, owner, "admin"), 409, errs.Conflict, "last owner")
		wantProblem(t, b.remove(t, owner, acme, owner), 409, errs.Conflict, "last owner")
		wantProblem(t, b.remove(t, owner, owner.personalOrg, owner), 409, errs.Conflict, "last owner")
		wantProblem(t, b.setRole(t, owner, owner.personalOrg, owner, "member"), 409, errs.Conflict, "last owner")
		if roles := b.members(t, owner, acme); roles[owner.id] != api.RoleOwner {
			t.Fatalf("owner's role %q", roles[owner.id])
		}
	})
	t.Run("OKOwnerMakesAndUnmakesOwners", func(t *testing.T) {
		if res := b.setRole(t, owner, acme, admin, "owner"); res.StatusCode != 200 {
			t.Fatalf("make owner: %d %s", res.StatusCode, readAll(res))
		}
		if res := b.setRole(t, owner, acme, owner, "admin"); res.StatusCode != 200 {
			t.Fatalf("step down with another owner: %d %s", res.StatusCode, readAll(res))
		}
		if res := b.setRole(t, admin, acme, owner, "owner"); res.StatusCode != 200 {
			t.Fatalf("restore: %d %s", res.StatusCode, readAll(res))
		}
		if res := b.setRole(t, owner, acme, admin, "admin"); res.StatusCode != 200 {
			t.Fatalf("unmake owner: %d %s", res.StatusCode, readAll(res))
		}
	})
	t.Run("OKAdminRemovesAMember", func(t *testing.T) {
		b.call(t, "GET", "/v1/api-keys", other.token, nil, nil, "Kiln-Org", acme.String()) // caches other's roles
		if res := b.remove(t, admin, acme, other); res.StatusCode != 204 {
			t.Fatalf("remove: %d %s", res.StatusCode, readAll(res))
		}
		wantProblem(t, b.call(t, "GET", orgPath(acme, "members"), other.token, nil, nil), 404, errs.NotFound)
		// Not a cached role either: the org is gone for the removed member at once.
		wantProblem(t, b.call(t, "GET", "/v1/api-keys", other.token, nil, nil, "Kiln-Org", acme.String()), 404, errs.NotFound)
		var me api.Me
		b.call(t, "GET", "/v1/me", other.token, nil, &me)
		if len(me.Orgs) != 1 {
			t.Fatalf("removed member's orgs %+v", me.Orgs)
		}
		wantProblem(t, b.remove(t, admin, acme, other), 404, errs.NotFound, "member not found")
		if e := b.auditActions(t, owner, acme)["member.remove"]; len(e) != 1 || e[0].TargetId != other.id.String() || actorOf(e[0]) != admin.id {
			t.Fatalf("member.remove %+v", e)
		}
	})
	t.Run("OKMemberLeaves", func(t *testing.T) {
		if res := b.remove(t, member, acme, member); res.StatusCode != 204 {
			t.Fatalf("leave: %d %s", res.StatusCode, readAll(res))
		}
		if roles := b.members(t, owner, acme); len(roles) != 2 {
			t.Fatalf("members %v", roles)
		}
		if e := b.auditActions(t, owner, acme)["member.leave"]; len(e) != 1 || e[0].TargetId != member.id.String() || e[0].Data["role"] != "member" {
			t.Fatalf("member.leave %+v", e)
		}
	})
}

func TestOwnershipTransfer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	bob := b.person(t, "bob@example.com")
	stranger := b.person(t, "stranger@example.com")
	acme := b.org(t, alice, "Acme")
	b.join(t, alice, acme, bob, "admin")
	transfer := func(by, to person) *http.Response {
		return b.call(t, "POST", orgPath(acme, "transfer-ownership"), by.token, map[string]string{"user_id": to.id.String()}, nil)
	}

	t.Run("ErrAdminCannotTransfer", func(t *testing.T) {
		wantProblem(t, transfer(bob, bob), 403, errs.PermissionDenied, "owner role")
	})
	t.Run("ErrToANonMember", func(t *testing.T) {
		wantProblem(t, transfer(alice, stranger), 404, errs.NotFound, "member not found")
	})
	t.Run("ErrToSelf", func(t *testing.T) {
		wantProblem(t, transfer(alice, alice), 400, errs.Invalid)
	})
	t.Run("OK", func(t *testing.T) {
		if res := transfer(alice, bob); res.StatusCode != 204 {
			t.Fatalf("transfer: %d %s", res.StatusCode, readAll(res))
		}
		if roles := b.members(t, bob, acme); roles[bob.id] != api.RoleOwner || roles[alice.id] != api.RoleAdmin {
			t.Fatalf("roles after transfer %v", roles)
		}
		var me api.Me
		b.call(t, "GET", "/v1/me", alice.token, nil, &me)
		if me.Orgs[1].Id != acme || me.Orgs[1].Role != api.RoleAdmin {
			t.Fatalf("alice's orgs right after the transfer %+v", me.Orgs)
		}
		e := b.auditActions(t, bob, acme)["org.ownership_transfer"]
		if len(e) != 1 || actorOf(e[0]) != alice.id || e[0].Data["from"] != alice.id.String() || e[0].Data["to"] != bob.id.String() {
			t.Fatalf("org.ownership_transfer %+v", e)
		}
	})
	t.Run("ErrFormerOwnerCannotTransferAgain", func(t *testing.T) {
		wantProblem(t, transfer(alice, alice), 403, errs.PermissionDenied, "owner role")
	})
	t.Run("OKFormerOwnerLeavesButNotTheLastOwner", func(t *testing.T) {
		if res := b.remove(t, alice, acme, alice); res.StatusCode != 204 {
			t.Fatalf("alice leaves: %d %s", res.StatusCode, readAll(res))
		}
		wantProblem(t, b.remove(t, bob, acme, bob), 409, errs.Conflict, "last owner")
	})
}

// TestMembersOfAnotherOrgAreNotFound: an org the caller is not in looks like one that
// does not exist, for every members operation.
func TestMembersOfAnotherOrgAreNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	bob := b.person(t, "bob@example.com")
	mallory := b.person(t, "mallory@example.com")
	acme := b.org(t, alice, "Acme")
	b.join(t, alice, acme, bob, "member")
	inv, _ := b.invite(t, alice, acme, "carol@example.com", "member")
	evil := b.org(t, mallory, "Evil")
	evilInv, _ := b.invite(t, mallory, evil, "dan@example.com", "member")

	for _, org := range []struct {
		name string
		id   uuid.UUID
	}{{"OtherOrg", acme}, {"OtherPersonalOrg", alice.personalOrg}, {"NoSuchOrg", uuid.Must(uuid.NewV7())}} {
		t.Run("Err"+org.name, func(t *testing.T) {
			for name, res := range map[string]*http.Response{
				"list members":     b.call(t, "GET", orgPath(org.id, "members"), mallory.token, nil, nil),
				"change a role":    b.setRole(t, mallory, org.id, bob, "admin"),
				"remove":           b.remove(t, mallory, org.id, bob),
				"leave":            b.remove(t, mallory, org.id, mallory),
				"transfer":         b.call(t, "POST", orgPath(org.id, "transfer-ownership"), mallory.token, map[string]string{"user_id": mallory.id.String()}, nil),
				"list invitations": b.call(t, "GET", orgPath(org.id, "invitations"), mallory.token, nil, nil),
				"invite":           b.call(t, "POST", orgPath(org.id, "invitations"), mallory.token, map[string]string{"email": "x@example.com", "role": "member"}, nil),
				"withdraw":         b.call(t, "DELETE", orgPath(org.id, "invitations", inv.Id.String()), mallory.token, nil, nil),
			} {
				t.Run(name, func(t *testing.T) { wantProblem(t, res, 404, errs.NotFound, "org not found") })
			}
		})
	}
	t.Run("ErrInvitationOfAnotherOrg", func(t *testing.T) {
		wantProblem(t, b.call(t, "DELETE", orgPath(acme, "invitations", evilInv.Id.String()), alice.token, nil, nil), 404, errs.NotFound, "invitation not found")
		var list api.InvitationList
		b.call(t, "GET", orgPath(evil, "invitations"), mallory.token, nil, &list)
		if len(list.Data) != 1 || list.Data[0].Id != evilInv.Id {
			t.Fatalf("mallory's invitations %+v", list.Data)
		}
	})
	t.Run("OKNothingChanged", func(t *testing.T) {
		if roles := b.members(t, alice, acme); len(roles) != 2 || roles[bob.id] != api.RoleMember {
			t.Fatalf("members %v", roles)
		}
		if n := len(b.mail.To("x@example.com")); n != 0 {
			t.Fatalf("%d emails to x@example.com", n)
		}
	})
}

// TestInvitationTokenNotStored: the token is in the email only: not in the database, any
// response or the logs.
func TestInvitationTokenNotStored(t *testing.T) {
	t.Parallel()
	b := setup(t)
	alice := b.person(t, "alice@example.com")
	acme := b.org(t, alice, "Acme")
	inv, token := b.invite(t, alice, acme, "bob@example.com", "member")

	var dump strings.Builder
	rows, err := b.pool.Query(context.Background(), `
		SELECT row_to_json(t)::text FROM (SELECT * FROM invitations) t
		UNION ALL SELECT row_to_json(t)::text FROM (SELECT * FROM audit_events) t`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		dump.WriteString(s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(token, "kiln_inv_")
	if !strings.Contains(dump.String(), inv.Id.String()) || strings.Contains(dump.String(), secret) {
		t.Fatalf("the dump lacks the invitation or holds its token:\n%s", dump.String())
	}
	if strings.Contains(b.logs.String(), secret) {
		t.Fatal("the invitation token is in the logs")
	}
	var hash []byte
	if err := b.pool.QueryRow(context.Background(), "SELECT token_hash FROM invitations WHERE id = $1", inv.Id).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte(token)); string(hash) != string(want[:]) {
		t.Fatalf("token_hash %x, want SHA-256 of the token", hash)
	}
}
