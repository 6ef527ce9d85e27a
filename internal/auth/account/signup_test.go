package account_test

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
)

// TestSignUp shares one database; each case counts the rows it adds.
func TestSignUp(t *testing.T) {
	b := setup(t)
	tables := []string{"orgs", "users", "org_members", "sessions", "refresh_tokens"}
	counts := func(t *testing.T) map[string]int {
		t.Helper()
		m := map[string]int{}
		for _, table := range tables {
			m[table] = b.count(t, table)
		}
		return m
	}

	t.Run("OK", func(t *testing.T) {
		before := counts(t)
		u, s, token, err := b.svc.SignUp(t.Context(), "  Ada.Lovelace@Example.COM ", goodPassword, " Ada ", account.Client{UserAgent: chrome, IP: "192.0.2.1"})
		if err != nil {
			t.Fatalf("SignUp: %v", err)
		}
		if u.Email != "ada.lovelace@example.com" || u.Name != "Ada" || u.EmailVerified || u.PlatformAdmin || u.Disabled {
			t.Errorf("user = %+v", u)
		}
		if u.ID.Version() != 7 || s.ID.Version() != 7 || u.PersonalOrgID.Version() != 7 {
			t.Errorf("ids %s, %s, %s are not UUIDv7", u.ID, s.ID, u.PersonalOrgID)
		}
		if !u.CreatedAt.Equal(b.clock.Now()) {
			t.Errorf("CreatedAt = %s, want %s", u.CreatedAt, b.clock.Now())
		}
		want := account.Session{
			ID: s.ID, UserID: u.ID, Name: "Chrome on macOS", UserAgent: chrome, IP: "192.0.2.1",
			CreatedAt: b.clock.Now(), LastSeenAt: b.clock.Now(), ExpiresAt: b.clock.Now().Add(testConfig().SessionTTL),
		}
		if s != want {
			t.Errorf("session = %+v, want %+v", s, want)
		}
		if !strings.HasPrefix(token, account.RefreshTokenPrefix) || len(token) != len(account.RefreshTokenPrefix)+43 {
			t.Errorf("refresh token %q is not kiln_rt_ and 43 base64url characters", token)
		}
		ms, err := b.svc.Memberships(t.Context(), u.ID)
		if err != nil {
			t.Fatalf("Memberships: %v", err)
		}
		if len(ms) != 1 || ms[0].Org.ID != u.PersonalOrgID || ms[0].Org.Name != "Ada's org" || !ms[0].Org.Personal || ms[0].Role != account.RoleOwner {
			t.Errorf("memberships = %+v, want the personal org %q owned", ms, "Ada's org")
		}
		after := counts(t)
		for _, table := range tables {
			if after[table] != before[table]+1 {
				t.Errorf("sign-up added %d rows to %s, want 1", after[table]-before[table], table)
			}
		}
	})
	t.Run("OKNoNameOrgNamedAfterEmail", func(t *testing.T) {
		u, _, _ := b.signUp(t, "grace@example.com")
		ms, err := b.svc.Memberships(t.Context(), u.ID)
		if err != nil {
			t.Fatalf("Memberships: %v", err)
		}
		if len(ms) != 1 || ms[0].Org.Name != "grace@example.com" {
			t.Errorf("memberships = %+v, want one org named after the email", ms)
		}
	})
	t.Run("OKLongNameOrgNameCut", func(t *testing.T) {
		name := strings.Repeat("é", 100)
		u, _, _, err := b.svc.SignUp(t.Context(), "long@example.com", goodPassword, name, account.Client{})
		if err != nil {
			t.Fatalf("SignUp: %v", err)
		}
		ms, err := b.svc.Memberships(t.Context(), u.ID)
		if err != nil {
			t.Fatalf("Memberships: %v", err)
		}
		if want := strings.Repeat("é", 94) + "'s org"; len(ms) != 1 || ms[0].Org.Name != want {
			t.Errorf("memberships = %+v, want one org named %q", ms, want)
		}
	})
	t.Run("ErrConflictNothingWritten", func(t *testing.T) {
		b.signUp(t, "conflict@example.com")
		before := counts(t)
		// The personal org is inserted before the user: the rollback must take it back.
		_, _, _, err := b.svc.SignUp(t.Context(), " CONFLICT@example.com", goodPassword+"!", "Other", account.Client{})
		if errs.CodeOf(err) != errs.Conflict || !strings.Contains(err.Error(), "an account with this email exists") {
			t.Fatalf("SignUp error = %v, want conflict", err)
		}
		if after := counts(t); !maps.Equal(after, before) {
			t.Errorf("rows after the failed sign-up: %v, want %v", after, before)
		}
	})
}

func TestSignUpValidation(t *testing.T) {
	b := setup(t)
	longest := strings.Repeat("tuvx", 32)[:127] + "y" // 128 characters, not a repeated pattern
	tests := []struct {
		name     string
		email    string
		password string
		userName string
		pointers []string // nil: valid
	}{
		{"OK", "ok1@example.com", goodPassword, "Ada", nil},
		{"OKMinimumLength", "ok2@example.com", "vU7#kq2Lzx", "", nil},
		{"OKMaximumLength", "ok3@example.com", longest, "", nil},
		{"OKUnicode", "ok4@example.com", "ünïcödé-wörds", "Ådå", nil},
		{"OKSubdomain", "ok5@mail.example.co.uk", goodPassword, "", nil},
		{"ErrPasswordTooShort", "a@example.com", "vU7#kq2Lz", "", []string{"/password"}},
		{"ErrPasswordTooShortInCharacters", "a@example.com", "äöüßäöüx", "", []string{"/password"}}, // 16 bytes, 8 runes
		{"ErrPasswordTooLong", "a@example.com", longest + "z", "", []string{"/password"}},
		{"ErrPasswordCommon", "a@example.com", "qwertyuiop", "", []string{"/password"}},
		{"ErrPasswordCommonCaseInsensitive", "a@example.com", "QwErTyUiOp", "", []string{"/password"}},
		{"ErrPasswordCommonWithDigits", "a@example.com", "Password2024!", "", []string{"/password"}},
		{"ErrPasswordCommonLeet", "a@example.com", "P@ssw0rd123", "", []string{"/password"}},
		{"ErrPasswordCommonLeetOne", "a@example.com", "1loveyou!!", "", []string{"/password"}},
		{"ErrPasswordCommonNameAndYear", "a@example.com", "Michael1987!", "", []string{"/password"}},
		{"ErrPasswordCommonKeyboardWalk", "a@example.com", "1qaz2wsx3edc", "", []string{"/password"}},
		{"ErrPasswordCommonWordAndYear", "a@example.com", "Summer1999!", "", []string{"/password"}},
		{"ErrPasswordCommonLeetBeforeDigits", "a@example.com", "@dmin2024!", "", []string{"/password"}},
		{"ErrPasswordOneCharacter", "a@example.com", "zzzzzzzzzzzz", "", []string{"/password"}},
		{"ErrPasswordRepeatedPattern", "a@example.com", "xk9xk9xk9xk9", "", []string{"/password"}},
		{"ErrPasswordRepeatedPartialUnit", "a@example.com", "1999199919", "", []string{"/password"}},
		{"ErrPasswordSequence", "a@example.com", "cdefghijklmn", "", []string{"/password"}},
		{"ErrPasswordSequenceDescending", "a@example.com", "zyxwvutsrqp", "", []string{"/password"}},
		{"ErrPasswordContainsEmail", "ada.lovelace@example.com", "Ada.Lovelace-analytical", "", []string{"/password"}},
		{"ErrEmailMissingAt", "ada.example.com", goodPassword, "", []string{"/email"}},
		{"ErrEmailTwoAts", "ada@b@example.com", goodPassword, "", []string{"/email"}},
		{"ErrEmailEmptyLocalPart", "@example.com", goodPassword, "", []string{"/email"}},
		{"ErrEmailNoDotInDomain", "ada@localhost", goodPassword, "", []string{"/email"}},
		{"ErrEmailEmptyLabel", "ada@example..com", goodPassword, "", []string{"/email"}},
		{"ErrEmailSpace", "ada lovelace@example.com", goodPassword, "", []string{"/email"}},
		{"ErrEmailTooLong", "ada@" + strings.Repeat("a", 250) + ".com", goodPassword, "", []string{"/email"}},
		{"ErrEmailLocalPartTooLong", strings.Repeat("a", 65) + "@example.com", goodPassword, "", []string{"/email"}},
		{"ErrNameTooLong", "a@example.com", goodPassword, strings.Repeat("n", 101), []string{"/name"}},
		{"ErrNameControlCharacter", "a@example.com", goodPassword, "Ada\x00", []string{"/name"}},
		{"ErrEveryField", "nope", "123456", "\x07", []string{"/email", "/password", "/name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := b.svc.SignUp(t.Context(), tt.email, tt.password, tt.userName, account.Client{})
			if tt.pointers == nil {
				if err != nil {
					t.Fatalf("SignUp: %v", err)
				}
				return
			}
			checkInvalid(t, err, tt.pointers)
		})
	}
}

// TestPasswordStorage checks what the database holds: a PHC argon2id string, and neither
// the password nor the refresh token anywhere.
func TestPasswordStorage(t *testing.T) {
	b := setup(t)
	const password = "Unguessable-Plaintext-42"
	u, _, token, err := b.svc.SignUp(t.Context(), "ada@example.com", password, "Ada", account.Client{UserAgent: chrome})
	if err != nil {
		t.Fatalf("SignUp: %v", err)
	}
	if _, _, _, err := b.svc.Login(t.Context(), "ada@example.com", password, account.Client{}); err != nil {
		t.Fatalf("Login: %v", err)
	}

	var phc string
	if err := b.st.Pool.QueryRow(t.Context(), "SELECT password_hash FROM users WHERE id = $1", u.ID).Scan(&phc); err != nil {
		t.Fatalf("read hash: %v", err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=8192,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(phc) {
		t.Errorf("stored hash %q is not a PHC argon2id string with the configured parameters", phc)
	}
	if ok, current, err := account.VerifyPassword(testConfig(), password, phc); !ok || !current || err != nil {
		t.Errorf("VerifyPassword(stored) = %v, %v, %v; want true, true, nil", ok, current, err)
	}

	rows, err := b.st.Pool.Query(t.Context(), "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
	if err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("scan table name: %v", err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("list tables: %v", err)
	}
	var dump strings.Builder
	for _, table := range tables {
		rows, err := b.st.Pool.Query(t.Context(), "SELECT t::text FROM "+table+" t")
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatalf("dump %s: %v", table, err)
			}
			dump.WriteString(line + "\n")
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
	}
	if !strings.Contains(dump.String(), "ada@example.com") {
		t.Fatalf("the dump of %v misses the user; the search below would prove nothing", tables)
	}
	for what, secret := range map[string]string{
		"password":              password,
		"password (lower-case)": strings.ToLower(password),
		"refresh token":         token,
		"refresh token secret":  strings.TrimPrefix(token, account.RefreshTokenPrefix),
	} {
		if strings.Contains(strings.ToLower(dump.String()), strings.ToLower(secret)) {
			t.Errorf("the %s is stored in the database", what)
		}
	}
}
