package members_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/errs"
)

const (
	owner  = account.RoleOwner
	admin  = account.RoleAdmin
	member = account.RoleMember
)

// ok is the code of no error in the tables below.
const ok errs.Code = ""

func codeOf(err error) errs.Code {
	if err == nil {
		return ok
	}
	return errs.CodeOf(err)
}

func TestCheckRoleChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		actor, from    string
		to             string
		owners         int64
		want           errs.Code
		detailMentions string
	}{
		{"OKOwnerPromotesMemberToAdmin", owner, member, admin, 1, ok, ""},
		{"OKOwnerMakesAnOwner", owner, admin, owner, 1, ok, ""},
		{"OKOwnerUnmakesAnotherOwner", owner, owner, member, 2, ok, ""},
		{"OKAdminPromotesMember", admin, member, admin, 1, ok, ""},
		{"OKAdminDemotesAdmin", admin, admin, member, 1, ok, ""},
		{"OKSameRole", admin, member, member, 1, ok, ""},
		{"ErrPermissionDeniedMember", member, member, admin, 1, errs.PermissionDenied, "owner or admin role"},
		{"ErrPermissionDeniedMemberSameRole", member, member, member, 1, errs.PermissionDenied, "owner or admin role"},
		{"ErrPermissionDeniedAdminMakesOwner", admin, member, owner, 1, errs.PermissionDenied, "owner role"},
		{"ErrPermissionDeniedAdminUnmakesOwner", admin, owner, admin, 3, errs.PermissionDenied, "owner role"},
		{"ErrPermissionDeniedAdminTouchesOwner", admin, owner, owner, 3, errs.PermissionDenied, "owner role"},
		{"ErrConflictLastOwnerDemoted", owner, owner, admin, 1, errs.Conflict, "last owner"},
		{"ErrInvalidRole", owner, member, "superuser", 1, errs.Invalid, "superuser"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := members.CheckRoleChange(tt.actor, tt.from, tt.to, tt.owners)
			if codeOf(err) != tt.want || (err != nil && !strings.Contains(err.Error(), tt.detailMentions)) {
				t.Fatalf("CheckRoleChange(%s, %s→%s, %d owners) = %v, want %q mentioning %q", tt.actor, tt.from, tt.to, tt.owners, err, tt.want, tt.detailMentions)
			}
		})
	}
}

func TestCheckRemoval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		actor, target string
		self          bool
		owners        int64
		want          errs.Code
	}{
		{"OKMemberLeaves", member, member, true, 1, ok},
		{"OKAdminLeaves", admin, admin, true, 1, ok},
		{"OKOwnerLeavesAnotherOwnerStays", owner, owner, true, 2, ok},
		{"OKOwnerRemovesOwner", owner, owner, false, 2, ok},
		{"OKOwnerRemovesAdmin", owner, admin, false, 1, ok},
		{"OKAdminRemovesAdmin", admin, admin, false, 1, ok},
		{"OKAdminRemovesMember", admin, member, false, 1, ok},
		{"ErrPermissionDeniedMemberRemovesMember", member, member, false, 1, errs.PermissionDenied},
		{"ErrPermissionDeniedMemberRemovesOwner", member, owner, false, 2, errs.PermissionDenied},
		{"ErrPermissionDeniedAdminRemovesOwner", admin, owner, false, 2, errs.PermissionDenied},
		{"ErrPermissionDeniedAdminRemovesLastOwner", admin, owner, false, 1, errs.PermissionDenied},
		{"ErrConflictLastOwnerLeaves", owner, owner, true, 1, errs.Conflict},
		{"ErrConflictLastOwnerRemoved", owner, owner, false, 1, errs.Conflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := codeOf(members.CheckRemoval(tt.actor, tt.target, tt.self, tt.owners)); got != tt.want {
				t.Fatalf("CheckRemoval(%s removes %s, self %v, %d owners) = %q, want %q", tt.actor, tt.target, tt.self, tt.owners, got, tt.want)
			}
		})
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	token, hash := members.NewToken()
	t.Run("OKFormat", func(t *testing.T) {
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, members.TokenPrefix))
		if !strings.HasPrefix(token, "kiln_inv_") || err != nil || len(raw) != 32 {
			t.Fatalf("token %q: %v, %d bytes", token, err, len(raw))
		}
		if want := sha256.Sum256([]byte(token)); !bytes.Equal(hash, want[:]) {
			t.Fatalf("hash %x, want SHA-256 of the token", hash)
		}
	})
	t.Run("OKParse", func(t *testing.T) {
		if got, ok := members.ParseToken(token); !ok || !bytes.Equal(got, hash) {
			t.Fatalf("ParseToken = %x, %v", got, ok)
		}
	})
	t.Run("OKFresh", func(t *testing.T) {
		if again, _ := members.NewToken(); again == token {
			t.Fatal("two tokens alike")
		}
	})
	for name, bad := range map[string]string{
		"Empty":        "",
		"NoPrefix":     strings.TrimPrefix(token, members.TokenPrefix),
		"OtherPrefix":  "kiln_rt_" + strings.TrimPrefix(token, members.TokenPrefix) + "x",
		"Short":        token[:len(token)-1],
		"Long":         token + "A",
		"Padded":       token[:len(token)-1] + "=",
		"NotBase64URL": token[:len(token)-1] + "+",
		// The last character carries 2 spare bits: a token with them set is not one issued.
		"NonCanonical": nonCanonical(token),
	} {
		t.Run("Err"+name, func(t *testing.T) {
			if _, ok := members.ParseToken(bad); ok {
				t.Fatalf("ParseToken(%q) accepted", bad)
			}
		})
	}
}

// nonCanonical flips the unused low bits of the token's last base64 character.
func nonCanonical(token string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, token[len(token)-1])
	return token[:len(token)-1] + string(alphabet[i^1])
}

func FuzzParseToken(f *testing.F) {
	token, _ := members.NewToken()
	for _, s := range []string{token, "", members.TokenPrefix, token + "=", strings.ToUpper(token), "kiln_inv_" + strings.Repeat("_", 43)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hash, ok := members.ParseToken(s)
		if !ok {
			return
		}
		want := sha256.Sum256([]byte(s))
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, members.TokenPrefix))
		if !bytes.Equal(hash, want[:]) || err != nil || members.TokenPrefix+base64.RawURLEncoding.EncodeToString(raw) != s {
			t.Fatalf("ParseToken(%q) accepted a token it would not issue", s)
		}
	})
}
