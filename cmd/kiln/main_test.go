package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"sigs.k8s.io/yaml"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// kilnBin is the real binary, built once for the whole run.
var kilnBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kiln-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	kilnBin = filepath.Join(dir, "kiln")
	build := exec.Command("go", "build", "-o", kilnBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kiln:", err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// baseEnv is the environment every run gets: the test Redis, and nothing inherited, so a
// KILN_* variable of the developer's shell cannot change the outcome.
func baseEnv(extra ...string) []string {
	return append([]string{"KILN_REDIS_URL=" + storetest.RedisURL()}, extra...)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the binary to completion.
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kilnBin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	if exitErr, ok := errors.AsType[*exec.ExitError](err); ok {
		res.code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("run kiln %v: %v", args, err)
	}
	return res
}

// mustRun runs the binary and fails the test unless it exits 0.
func mustRun(t *testing.T, env []string, args ...string) result {
	t.Helper()
	res := run(t, env, args...)
	if res.code != 0 {
		t.Fatalf("kiln %v exited %d\nstdout:\n%s\nstderr:\n%s", args, res.code, res.stdout, res.stderr)
	}
	return res
}

func TestVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
	}{
		{"OK", baseEnv()},
		{"OKDespiteBadConfig", baseEnv("KILN_NOPE=1", "KILN_LOG_LEVEL=loud")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := mustRun(t, tt.env, "version")
			var info struct {
				Version   string `json:"version"`
				Commit    string `json:"commit"`
				Date      string `json:"date"`
				GoVersion string `json:"go_version"`
			}
			if err := json.Unmarshal([]byte(res.stdout), &info); err != nil {
				t.Fatalf("version output is not JSON: %v\n%s", err, res.stdout)
			}
			if info.Version == "" || info.Commit == "" || info.Date == "" || !strings.HasPrefix(info.GoVersion, "go") {
				t.Errorf("version info incomplete: %+v", info)
			}
		})
	}
}

func TestConfigPrint(t *testing.T) {
	t.Parallel()
	const password = "Plant3d-db-Secret"
	cfgFile := filepath.Join(t.TempDir(), "kiln.yaml")
	if err := os.WriteFile(cfgFile, []byte("env: from-file\nhttp:\n  addr: \":9999\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		env     []string
		args    []string
		wantEnv string
		wantDB  string
	}{
		{
			name:    "MasksDatabaseURLPassword",
			env:     baseEnv("DATABASE_URL=postgres://kiln:" + password + "@db.internal:5432/kiln"),
			wantEnv: "development",
			wantDB:  "postgres://kiln:****@db.internal:5432/kiln",
		},
		{
			name:    "ReadsConfigFlag",
			env:     baseEnv("DATABASE_URL=postgres://kiln:" + password + "@db/kiln"),
			args:    []string{"--config", cfgFile},
			wantEnv: "from-file",
			wantDB:  "postgres://kiln:****@db/kiln",
		},
		{
			name:    "ReadsKILNConfig",
			env:     baseEnv("KILN_CONFIG="+cfgFile, "KILN_ENV=from-env"),
			wantEnv: "from-env",
			wantDB:  "postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := mustRun(t, tt.env, append(tt.args, "config", "print")...)
			if strings.Contains(res.stdout+res.stderr, password) {
				t.Fatalf("config print leaks the password:\n%s", res.stdout)
			}
			var printed struct {
				Env      string `json:"env"`
				Database struct {
					URL string `json:"url"`
				} `json:"database"`
				Redis struct {
					URL string `json:"url"`
				} `json:"redis"`
			}
			if err := yaml.Unmarshal([]byte(res.stdout), &printed); err != nil {
				t.Fatalf("config print is not YAML: %v\n%s", err, res.stdout)
			}
			if printed.Env != tt.wantEnv {
				t.Errorf("env = %q, want %q", printed.Env, tt.wantEnv)
			}
			if printed.Database.URL != tt.wantDB {
				t.Errorf("database.url = %q, want %q", printed.Database.URL, tt.wantDB)
			}
			if printed.Redis.URL != storetest.RedisURL() {
				t.Errorf("redis.url = %q, want %q from KILN_REDIS_URL", printed.Redis.URL, storetest.RedisURL())
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      []string
		args     []string
		wantKeys []string
	}{
		{
			name:     "ErrEveryBadEnvKeyNamed",
			env:      baseEnv("KILN_LOG_LEVEL=loud", "KILN_NOPE=1"),
			args:     []string{"serve"},
			wantKeys: []string{"log.level", "KILN_NOPE"},
		},
		{
			name:     "ErrMissingConfigFile",
			env:      baseEnv(),
			args:     []string{"--config", "/nonexistent/kiln.yaml", "config", "print"},
			wantKeys: []string{"/nonexistent/kiln.yaml"},
		},
		{
			name:     "ErrUnknownCommand",
			env:      baseEnv(),
			args:     []string{"frobnicate"},
			wantKeys: []string{"frobnicate"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := run(t, tt.env, tt.args...)
			if res.code == 0 {
				t.Fatalf("kiln %v exited 0, want failure\nstdout:\n%s", tt.args, res.stdout)
			}
			for _, key := range tt.wantKeys {
				if !strings.Contains(res.stderr, key) {
					t.Errorf("stderr does not name %q:\n%s", key, res.stderr)
				}
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	env := baseEnv("DATABASE_URL=" + storetest.NewDatabase(t, ""))

	before := mustRun(t, env, "migrate", "status").stdout
	files := migrationFiles(t)
	requireStatus(t, before, files, "pending")

	up := mustRun(t, env, "migrate", "up").stdout
	for _, f := range files {
		if !strings.Contains(up, `"msg":"migration applied"`) || !strings.Contains(up, f) {
			t.Errorf("migrate up did not log applying %s:\n%s", f, up)
		}
	}
	requireStatus(t, mustRun(t, env, "migrate", "status").stdout, files, "applied")

	mustRun(t, env, "migrate", "down")
	after := mustRun(t, env, "migrate", "status").stdout
	requireStatus(t, after, files[:len(files)-1], "applied")
	requireStatus(t, after, files[len(files)-1:], "pending")
}

// migrationFiles lists the embedded migration files, as the repository holds them.
func migrationFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("list migrations: %v (%d files)", err, len(files))
	}
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// requireStatus checks each file has a status line in the given state.
func requireStatus(t *testing.T, status string, files []string, state string) {
	t.Helper()
	for _, f := range files {
		found := false
		for line := range strings.SplitSeq(status, "\n") {
			if strings.Contains(line, f) {
				found = true
				if !strings.Contains(line, state) {
					t.Errorf("migration %s is %q, want %s", f, line, state)
				}
			}
		}
		if !found {
			t.Errorf("status does not list %s:\n%s", f, status)
		}
	}
}

// server is a running `kiln serve`.
type server struct {
	cmd     *exec.Cmd
	addr    string
	dbURL   string
	exited  chan struct{} // closed once the process is reaped
	waitErr error         // Wait's result, set before exited is closed

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	lines  chan map[string]any // every JSON log line of stdout
}

func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stdout.String() + s.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startServe runs `kiln serve args...` on a fresh, migrated database and a Redis env of the
// test's own, and waits for its "listening" line.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	return startServeWithEnv(t, nil, args...)
}

// startServeWithEnv is startServe with extra environment variables.
func startServeWithEnv(t *testing.T, extraEnv []string, args ...string) *server {
	t.Helper()
	dbURL := storetest.NewDatabase(t, "")
	rdb, ks := storetest.Redis(t)
	// Asynq's keys are outside Kiln's key space; drop the env's queue when done.
	t.Cleanup(func() {
		_ = asynq.NewInspectorFromRedisClient(rdb).DeleteQueue(ks.Env+".default", true)
	})
	env := baseEnv(
		"DATABASE_URL="+dbURL,
		"KILN_ENV="+ks.Env,
		"KILN_HTTP_ADDR=127.0.0.1:0",
		"KILN_HTTP_SHUTDOWN_TIMEOUT=5s",
	)
	env = append(env, extraEnv...)
	mustRun(t, env, "migrate", "up")

	s := &server{cmd: exec.Command(kilnBin, append([]string{"serve"}, args...)...), dbURL: dbURL, exited: make(chan struct{}), lines: make(chan map[string]any, 256)}
	s.cmd.Env = env
	s.cmd.Stderr = lockedWriter{&s.mu, &s.stderr}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start kiln serve: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.stdout.Write(sc.Bytes())
			s.stdout.WriteByte('\n')
			s.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case s.lines <- line:
				default: // nobody is waiting for lines any more
				}
			}
		}
		close(s.lines)
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})

	timeout := time.After(20 * time.Second)
	for s.addr == "" {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("kiln serve exited before listening:\n%s", s.output())
			}
			if line["msg"] == "listening" {
				s.addr, _ = line["addr"].(string)
			}
		case <-timeout:
			t.Fatalf("kiln serve did not log listening within 20s:\n%s", s.output())
		}
	}
	return s
}

// stop sends SIGTERM and checks the process exits 0 within a few seconds.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	for range s.lines { // drain so the reader reaches EOF
	}
	select {
	case <-s.exited:
		if s.waitErr != nil {
			t.Fatalf("kiln serve exited with %v after SIGTERM:\n%s", s.waitErr, s.output())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("kiln serve still running 15s after SIGTERM:\n%s", s.output())
	}
}

func (s *server) get(t *testing.T, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestServe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantWorker bool
	}{
		{"OKWithWorker", nil, true},
		{"OKNoWorker", []string{"--no-worker"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServe(t, tt.args...)
			for _, path := range []string{"/health", "/ready"} {
				if code, body := s.get(t, path); code != http.StatusOK {
					t.Errorf("GET %s = %d, want 200: %s", path, code, body)
				}
			}

			began := time.Now()
			s.stop(t)
			if elapsed := time.Since(began); elapsed > 10*time.Second {
				t.Errorf("shutdown took %s, want a few seconds", elapsed)
			}
			out := s.output()
			for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %s:\n%s", want, out)
				}
			}
			if got := strings.Contains(out, `"msg":"jobs started"`); got != tt.wantWorker {
				t.Errorf("jobs started logged = %t, want %t:\n%s", got, tt.wantWorker, out)
			}
			if strings.Contains(out, `"level":"ERROR"`) {
				t.Errorf("a clean start and stop logged an error:\n%s", out)
			}
		})
	}
}

func TestAdminGrantRevoke(t *testing.T) {
	t.Parallel()
	dbURL := storetest.NewDatabase(t, "")
	env := baseEnv("DATABASE_URL=" + dbURL)
	mustRun(t, env, "migrate", "up")
	pool := storetest.Pool(t, dbURL)
	var userID string
	err := pool.QueryRow(t.Context(), `
		WITH org AS (INSERT INTO orgs (id, name, personal) VALUES (gen_random_uuid(), 'Ada''s org', true) RETURNING id)
		INSERT INTO users (id, email, personal_org_id) SELECT gen_random_uuid(), 'ada@example.com', id FROM org
		RETURNING id::text`).Scan(&userID)
	if err != nil {
		t.Fatalf("create user: %v", err)
	}
	platformAdmin := func() bool {
		t.Helper()
		var on bool
		if err := pool.QueryRow(t.Context(), "SELECT platform_admin FROM users WHERE id = $1", userID).Scan(&on); err != nil {
			t.Fatal(err)
		}
		return on
	}

	if out := mustRun(t, env, "admin", "grant", " ADA@example.com").stdout; !strings.Contains(out, "ada@example.com ("+userID+"): platform admin true") {
		t.Errorf("grant printed %q", out)
	}
	if !platformAdmin() {
		t.Fatal("grant did not set platform_admin")
	}
	mustRun(t, env, "admin", "revoke", "ada@example.com")
	if platformAdmin() {
		t.Fatal("revoke did not clear platform_admin")
	}
	var actions []string
	rows, err := pool.Query(t.Context(), "SELECT action || ':' || actor_type FROM audit_events WHERE target_id = $1 ORDER BY id", userID)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, a)
	}
	if got := strings.Join(actions, " "); got != "admin.grant:system admin.revoke:system" {
		t.Errorf("audit events %q", got)
	}

	res := run(t, env, "admin", "grant", "nobody@example.com")
	if res.code == 0 || !strings.Contains(res.stderr, "No user nobody@example.com.") {
		t.Errorf("grant of an unknown email: exit %d, stderr %q", res.code, res.stderr)
	}
	if res := run(t, env, "admin", "grant"); res.code == 0 {
		t.Error("grant without an email exited 0")
	}
}
