package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestScheduledKeyRotation runs the server with auth.signing_key_rotation at 1h and the
// rotation check every second: a signing key made two hours ago is replaced once, audited,
// and kiln keys status shows both keys with their states.
func TestScheduledKeyRotation(t *testing.T) {
	t.Parallel()
	cfgFile := filepath.Join(t.TempDir(), "kiln.yaml")
	cfg := "auth:\n  signing_key_rotation: 1h\njobs:\n  schedules:\n    signing_key_rotation:\n      cron: \"@every 1s\"\n      kind: auth.rotate_signing_key\n"
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServeWithEnv(t, []string{"KILN_CONFIG=" + cfgFile})
	pool := storetest.Pool(t, s.dbURL)
	ctx := t.Context()
	var firstKid string
	if err := pool.QueryRow(ctx, `UPDATE signing_keys SET created_at = now() - interval '2 hours' RETURNING kid`).Scan(&firstKid); err != nil {
		t.Fatalf("age the signing key made at start: %v", err)
	}

	countKeys := func() (all, signing int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE superseded_at IS NULL) FROM signing_keys`).Scan(&all, &signing); err != nil {
			t.Fatal(err)
		}
		return all, signing
	}
	deadline := time.Now().Add(30 * time.Second)
	for all, _ := countKeys(); all < 2; all, _ = countKeys() {
		if time.Now().After(deadline) {
			t.Fatalf("the key made two hours ago was not rotated within 30 s\n%s", s.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The check keeps running every second; the new key is young, so nothing more rotates.
	time.Sleep(3 * time.Second)
	if all, signing := countKeys(); all != 2 || signing != 1 {
		t.Fatalf("after the rotation: %d keys, %d signing; want 2 and 1", all, signing)
	}
	var audits int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM audit_events WHERE action = 'token.key_rotate' AND actor_type = 'system' AND data->>'scheduled_after' = '1h0m0s'`).Scan(&audits); err != nil {
		t.Fatal(err)
	}
	if audits != 1 {
		t.Errorf("token.key_rotate audit events = %d, want 1", audits)
	}
	s.stop(t)

	env := baseEnv("DATABASE_URL="+s.dbURL, "KILN_CONFIG="+cfgFile)
	out := mustRun(t, env, "keys", "status").stdout
	var lines []string // without the log lines (JSON) the command also writes to stdout
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 4 {
		t.Fatalf("keys status printed %d lines, want a header, 2 keys and the schedule:\n%s", len(lines), out)
	}
	for i, re := range []string{
		`^KID\s+STATE\s+AGE\s+CREATED\s+VERIFIES UNTIL$`,
		`^\S+\s+signing\s+0m\s+\S+Z\s+-$`,
		`^` + regexp.QuoteMeta(firstKid) + `\s+verifying\s+2h0m\s+\S+Z\s+\S+Z$`,
		`^scheduled rotation: every 1h0m0s; next due \S+Z$`,
	} {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("keys status line %d = %q, want %s", i, lines[i], re)
		}
	}
	off := mustRun(t, append(env, "KILN_AUTH_SIGNING_KEY_ROTATION=0"), "keys", "status").stdout
	if !strings.Contains(off, "scheduled rotation: off") {
		t.Errorf("keys status with rotation 0:\n%s", off)
	}
}
