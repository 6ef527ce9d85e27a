package main_test

import (
	"crypto/sha256"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestQuickstart runs `kiln quickstart` on a migrated database: one account and one key
// per run, the key alone on stdout, no session left behind, every change audited. The
// README's quick start runs it against a live server (sdk/typescript/test/quickstart.test.mjs).
func TestQuickstart(t *testing.T) {
	t.Parallel()
	dbURL := storetest.NewDatabase(t, "")
	env := baseEnv("DATABASE_URL="+dbURL, "KILN_AUTH_ARGON2_MEMORY_KIB=8192", "KILN_AUTH_ARGON2_TIME=1",
		// A shell that followed the quick start has these; kiln ignores them.
		"KILN_API_KEY=kiln_dev_from_an_earlier_run", "KILN_BASE_URL=http://localhost:8080")
	mustRun(t, env, "migrate", "up")
	pool := storetest.Pool(t, dbURL)
	keyLine := regexp.MustCompile(`^kiln_dev_[A-Za-z0-9]+_[A-Za-z0-9]+\n$`)
	count := func(query string, args ...any) int {
		t.Helper()
		var n int
		if err := pool.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	res := mustRun(t, env, "quickstart", "--email", "Ada@Example.com")
	if !keyLine.MatchString(res.stdout) {
		t.Fatalf("stdout %q, want the API key alone on a line", res.stdout)
	}
	if !strings.Contains(res.stderr, "Created the account ada@example.com with the password ") {
		t.Errorf("stderr %q, want the account and its generated password", res.stderr)
	}
	secret := strings.TrimSpace(res.stdout)
	hash := sha256.Sum256([]byte(secret))
	var scopes, owner, org, personalOrg string
	err := pool.QueryRow(t.Context(), `
		SELECT array_to_string(k.scopes, ','), u.email, k.org_id::text, u.personal_org_id::text
		FROM api_keys k JOIN users u ON u.id = k.created_by
		WHERE k.secret_hash = $1 AND k.name = 'quickstart' AND k.revoked_at IS NULL`, hash[:]).Scan(&scopes, &owner, &org, &personalOrg)
	if err != nil {
		t.Fatalf("the printed key is not a stored key: %v", err)
	}
	if scopes != "chat" || owner != "ada@example.com" || org != personalOrg {
		t.Errorf("key scopes %q, created by %q in org %s, want chat, by ada@example.com, in the personal org %s", scopes, owner, org, personalOrg)
	}
	if n := count("SELECT count(*) FROM sessions WHERE revoked_at IS NULL"); n != 0 {
		t.Errorf("%d sessions left active, want none: the command keeps no login", n)
	}
	if n := count(`SELECT count(*) FROM audit_events WHERE action IN ('auth.signup', 'api_key.create') AND actor_type = 'user' AND user_agent = 'kiln quickstart'`); n != 2 {
		t.Errorf("%d audit events auth.signup and api_key.create by the user from kiln quickstart, want 2", n)
	}

	t.Run("ErrExistingAccountWithoutPassword", func(t *testing.T) {
		res := run(t, env, "quickstart", "--email", "ada@example.com")
		if res.code == 0 || res.stdout != "" || !strings.Contains(res.stderr, "exists: give its --password") {
			t.Errorf("exit %d, stdout %q, stderr %q; want a failure that asks for --password", res.code, res.stdout, res.stderr)
		}
	})

	t.Run("OKExistingAccountWithPassword", func(t *testing.T) {
		const password = "correct horse battery staple 9"
		mustRun(t, env, "quickstart", "--email", "bob@example.com", "--password", password)
		res := mustRun(t, env, "quickstart", "--email", "bob@example.com", "--password", password, "--key-name", "second", "--scope", "chat,jobs")
		if !keyLine.MatchString(res.stdout) || strings.Contains(res.stderr, "Created the account") {
			t.Errorf("stdout %q, stderr %q; want a second key and no new account", res.stdout, res.stderr)
		}
		if n := count(`SELECT count(*) FROM api_keys k JOIN users u ON u.personal_org_id = k.org_id WHERE u.email = 'bob@example.com'`); n != 2 {
			t.Errorf("bob's org has %d keys, want 2", n)
		}
		if res := run(t, env, "quickstart", "--email", "bob@example.com", "--password", "not the password 1"); res.code == 0 || res.stdout != "" {
			t.Errorf("a wrong password: exit %d, stdout %q; want a failure and no key", res.code, res.stdout)
		}
	})

	t.Run("ErrUnknownScope", func(t *testing.T) {
		res := run(t, env, "quickstart", "--email", "carol@example.com", "--scope", "nope")
		if res.code == 0 || !strings.Contains(res.stderr, `unknown scope "nope"`) {
			t.Errorf("exit %d, stderr %q; want the unknown scope named", res.code, res.stderr)
		}
		if n := count("SELECT count(*) FROM users WHERE email = 'carol@example.com'"); n != 0 {
			t.Error("an account was created although its key could not be")
		}
	})
}
