package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestSeedDemo applies the demo seed through the real binary: the dry run lists everything
// and changes nothing, the first apply creates it (the API key's secret printed once, the
// documents' ingestion jobs queued), the second changes nothing, and a broken file is
// refused with its file, line and field.
func TestSeedDemo(t *testing.T) {
	t.Parallel()
	dbURL := storetest.NewDatabase(t, "")
	_, ks := storetest.Redis(t)
	env := baseEnv("DATABASE_URL="+dbURL, "KILN_ENV="+ks.Env, "KILN_AUTH_ARGON2_MEMORY_KIB=8192")
	mustRun(t, env, "migrate", "up")
	demo := filepath.Join("..", "..", "deploy", "seed", "demo.yaml")
	count := func(query string) int {
		t.Helper()
		var n int
		if err := storetest.Pool(t, dbURL).QueryRow(t.Context(), query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	dry := mustRun(t, env, "seed", "apply", "--dry-run", demo).stdout
	for _, want := range []string{
		"would create api key \"demo\" of org Demo", "would create plan of org Demo: free",
		"would create knowledge base Kiln handbook of org Demo: 2 documents",
		`would create document "what-kiln-is" of knowledge base Kiln handbook`, "(dry run, nothing changed): 12 to create",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, dry)
		}
	}
	if n := count("SELECT count(*) FROM users"); n != 0 {
		t.Fatalf("the dry run created %d users", n)
	}

	first := mustRun(t, env, "seed", "apply", demo).stdout
	if !strings.Contains(first, "applied: 12 created, 0 updated, 0 unchanged") || !regexp.MustCompile(`kiln_\w+_\S+ +\(the secret is shown once`).MatchString(first) {
		t.Fatalf("first apply:\n%s", first)
	}
	if n := count("SELECT count(*) FROM subscriptions WHERE plan_id = 'free' AND status = 'active'"); n != 1 {
		t.Errorf("%d subscriptions on free, want 1", n)
	}
	if n := count("SELECT count(*) FROM jobs WHERE kind = 'rag.ingest'"); n != 2 {
		t.Errorf("%d ingestion jobs queued, want 2", n)
	}

	second := mustRun(t, env, "seed", "apply", demo).stdout
	if !strings.Contains(second, "applied: 0 created, 0 updated, 12 unchanged") || strings.Contains(second, "secret is shown once") {
		t.Fatalf("second apply changed something:\n%s", second)
	}
	if n := count("SELECT count(*) FROM jobs WHERE kind = 'rag.ingest'"); n != 2 {
		t.Errorf("%d ingestion jobs after the second apply, want 2", n)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("users: [{email: a@example.com, password: long-enough-password}]\norgs:\n  - name: A\n    owner: a@example.com\n    plan: gold\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := run(t, env, "seed", "apply", bad)
	if res.code == 0 || !strings.Contains(res.stderr, bad+":5: orgs[0].plan: ") {
		t.Fatalf("bad file: exit %d\nstderr:\n%s", res.code, res.stderr)
	}
}
