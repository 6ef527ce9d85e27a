package account_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

func TestResolveExternal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	t.Run("CreatesUserWithVerifiedEmail", func(t *testing.T) {
		u, id, link, err := b.svc.ResolveExternal(ctx, account.External{
			Provider: "corp", Subject: "s-1", Email: " New@Example.com", EmailVerified: true, Name: "New Person",
		}, account.Client{})
		if err != nil || link != account.LinkCreated {
			t.Fatalf("link %q, err %v", link, err)
		}
		if u.Email != "new@example.com" || !u.EmailVerified || u.Name != "New Person" || id.UserID != u.ID || id.Email != "new@example.com" {
			t.Errorf("user %+v identity %+v", u, id)
		}
		again, _, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "s-1"}, account.Client{})
		if err != nil || link != account.LinkExisting || again.ID != u.ID {
			t.Errorf("second sign-in: %v %q %v", again.ID, link, err)
		}
		if _, _, _, err := b.svc.Login(ctx, "new@example.com", goodPassword, account.Client{}); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("password login to an external-only account: %v", err)
		}
	})

	t.Run("PlaceholderWithoutVerifiedEmail", func(t *testing.T) {
		owner, _, _ := b.signUp(t, "taken@example.com")
		u, _, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "s-2", Email: "taken@example.com"}, account.Client{})
		if err != nil || link != account.LinkCreated || u.ID == owner.ID {
			t.Fatalf("unverified email linked: %v %q %v", u.ID, link, err)
		}
		if !strings.HasSuffix(u.Email, "@"+account.PlaceholderEmailDomain) || u.EmailVerified {
			t.Errorf("email %q verified %v", u.Email, u.EmailVerified)
		}
	})

	t.Run("LinksVerifiedEmail", func(t *testing.T) {
		owner, _, _ := b.signUp(t, "owner@example.com")
		u, _, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "gh", Subject: "42", Email: "OWNER@example.com", EmailVerified: true}, account.Client{})
		if err != nil || link != account.LinkEmail || u.ID != owner.ID || !u.EmailVerified {
			t.Fatalf("%+v %q %v", u, link, err)
		}
	})

	t.Run("LinksFullWidthVerifiedEmail", func(t *testing.T) {
		owner, _, _ := b.signUp(t, "wide@example.com")
		u, _, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "gh", Subject: "43", Email: "ｗｉｄｅ@example.com", EmailVerified: true}, account.Client{})
		if err != nil || link != account.LinkEmail || u.ID != owner.ID {
			t.Fatalf("%+v %q %v", u, link, err)
		}
	})

	t.Run("LookalikeVerifiedEmailLinksNobody", func(t *testing.T) {
		// A provider that verified a look-alike of an account's address (Cyrillic а, or
		// a bidi control) must not sign in as that account, nor store the address.
		owner, _, _ := b.signUp(t, "victim@example.com")
		for i, email := range []string{"victim@ex\u0430mple.com", "victim\u202e@example.com"} {
			u, id, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "gh", Subject: fmt.Sprintf("lookalike-%d", i), Email: email, EmailVerified: true}, account.Client{})
			if err != nil || link != account.LinkCreated || u.ID == owner.ID {
				t.Fatalf("%q: linked %v %q %v", email, u.ID, link, err)
			}
			if !strings.HasSuffix(u.Email, "@"+account.PlaceholderEmailDomain) || u.EmailVerified || id.Email != "" {
				t.Errorf("%q: user email %q verified %v, identity email %q", email, u.Email, u.EmailVerified, id.Email)
			}
		}
	})

	t.Run("LinksUnionID", func(t *testing.T) {
		first, _, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "wechat-web", Subject: "openid-a", UnionID: "u-1"}, account.Client{})
		if err != nil {
			t.Fatal(err)
		}
		second, _, link, err := b.svc.ResolveExternal(ctx, account.External{Provider: "wechat-mp", Subject: "openid-b", UnionID: "u-1"}, account.Client{})
		if err != nil || link != account.LinkUnionID || second.ID != first.ID {
			t.Errorf("%v %q %v", second.ID, link, err)
		}
	})

	t.Run("ErrDisabled", func(t *testing.T) {
		u, _, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "s-disabled"}, account.Client{})
		if err != nil {
			t.Fatal(err)
		}
		b.disable(t, u.ID)
		if _, _, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "s-disabled"}, account.Client{}); errs.CodeOf(err) != errs.PermissionDenied {
			t.Errorf("disabled: %v", err)
		}
		if _, _, _, err := b.svc.StartSession(ctx, u.ID, "corp", account.Client{}); errs.CodeOf(err) != errs.Unauthenticated {
			t.Errorf("session for disabled: %v", err)
		}
	})

	t.Run("ErrNoSubject", func(t *testing.T) {
		if _, _, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp"}, account.Client{}); errs.CodeOf(err) != errs.Invalid {
			t.Errorf("err %v", err)
		}
	})

	t.Run("ConcurrentFirstSignIn", func(t *testing.T) {
		var wg sync.WaitGroup
		ids := make([]account.User, 8)
		for i := range ids {
			wg.Go(func() {
				u, _, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "race", Email: "race@example.com", EmailVerified: true}, account.Client{})
				if err != nil {
					t.Error(err)
				}
				ids[i] = u
			})
		}
		wg.Wait()
		for _, u := range ids[1:] {
			if u.ID != ids[0].ID {
				t.Fatalf("two users for one identity: %v %v", u.ID, ids[0].ID)
			}
		}
	})
}

func TestUnlinkIdentity(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	u, id, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "only"}, account.Client{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.svc.UnlinkIdentity(ctx, u.ID, id.ID, audit.Actor{}); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("unlink only way in: %v", err)
	}
	other, _, _ := b.signUp(t, "other@example.com")
	if err := b.svc.UnlinkIdentity(ctx, other.ID, id.ID, audit.Actor{}); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("unlink another's: %v", err)
	}
	_, second, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "wechat", Subject: "o", UnionID: "x"}, account.Client{})
	if err != nil {
		t.Fatal(err)
	}
	// Link the second identity to u by hand: UnionIDs are the way in practice.
	if _, err := b.st.Pool.Exec(ctx, "UPDATE identities SET user_id = $1 WHERE id = $2", u.ID, second.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.svc.UnlinkIdentity(ctx, u.ID, id.ID, audit.Actor{}); err != nil {
		t.Fatalf("unlink with another identity left: %v", err)
	}
	list, err := b.svc.Identities(ctx, u.ID)
	if err != nil || len(list) != 1 || list[0].ID != second.ID {
		t.Errorf("identities %+v %v", list, err)
	}

	// A password account (with a proven address) may drop all its identities.
	withPassword, _, _ := b.signUp(t, "pw@example.com")
	if _, err := b.st.Pool.Exec(ctx, "UPDATE users SET email_verified_at = now() WHERE id = $1", withPassword.ID); err != nil {
		t.Fatal(err)
	}
	_, pwID, _, err := b.svc.ResolveExternal(ctx, account.External{Provider: "corp", Subject: "pw", Email: "pw@example.com", EmailVerified: true}, account.Client{})
	if err != nil || pwID.UserID != withPassword.ID {
		t.Fatalf("%v %v", pwID, err)
	}
	if err := b.svc.UnlinkIdentity(ctx, withPassword.ID, pwID.ID, audit.Actor{}); err != nil {
		t.Errorf("unlink from password account: %v", err)
	}
}
