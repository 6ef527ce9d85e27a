package kiln_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// The same databases as the server's own tests (internal/store/storetest).
const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/kiln_test?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
)

// TestE2E builds the real kiln binary, migrates the test database, serves on a free port
// and talks to it through the generated client.
func TestE2E(t *testing.T) {
	baseURL := startKiln(t)
	client, err := kiln.NewClientWithResponses(baseURL)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("HealthOK", func(t *testing.T) {
		resp, err := kiln.CheckResponse(client.GetHealthWithResponse(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil || resp.JSON200.Status != kiln.HealthStatusOk {
			t.Fatalf("GET /health = %d %s, want 200 {status: ok}", resp.StatusCode(), resp.Body)
		}
	})

	t.Run("ReadyOK", func(t *testing.T) {
		resp, err := kiln.CheckResponse(client.GetReadyWithResponse(t.Context()))
		if err != nil {
			if resp != nil && resp.ApplicationproblemJSON503 != nil {
				t.Fatalf("%v; checks: %+v", err, resp.ApplicationproblemJSON503.Checks)
			}
			t.Fatal(err)
		}
		ready := resp.JSON200
		if ready == nil || ready.Status != kiln.Ready || len(ready.Checks) == 0 {
			t.Fatalf("GET /ready = %d %s, want 200 ready with checks", resp.StatusCode(), resp.Body)
		}
		for _, c := range ready.Checks {
			if c.Name == "" || c.Status != kiln.CheckStatusOk {
				t.Errorf("check %+v, want a named check with status ok", c)
			}
		}
	})

	t.Run("ErrNotFound", func(t *testing.T) {
		// A route outside the spec, through the HTTP client the generated client uses.
		const requestID = "sdk-go-e2e-not-found"
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, baseURL+"/nope", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(kiln.RequestIDHeader, requestID)
		resp, err := client.ClientInterface.(*kiln.Client).Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		problem := requireProblem(t, kiln.AsProblem(resp, body), kiln.NotFound, http.StatusNotFound, resp.Header)
		if problem.RequestId != requestID {
			t.Errorf("request_id = %q, want the one sent, %q", problem.RequestId, requestID)
		}
	})

	t.Run("ErrMethodNotAllowed", func(t *testing.T) {
		// A generated operation sent with the wrong method.
		post := func(_ context.Context, req *http.Request) error {
			req.Method = http.MethodPost
			return nil
		}
		resp, err := kiln.CheckResponse(client.GetHealthWithResponse(t.Context(), post))
		if resp == nil {
			t.Fatal(err)
		}
		problem := requireProblem(t, err, kiln.MethodNotAllowed, http.StatusMethodNotAllowed, resp.HTTPResponse.Header)
		if typed := resp.ApplicationproblemJSONDefault; typed == nil || typed.RequestId != problem.RequestId {
			t.Errorf("ApplicationproblemJSONDefault = %+v, want the problem %+v", typed, problem.Problem)
		}
	})
}

// TestE2EAuthFlow signs a new user up against the real server and goes through the
// identity endpoints: login, the caller, API keys and their scopes, refresh-token rotation
// and reuse, AuthSession's refresh on a 401, and logout-all.
func TestE2EAuthFlow(t *testing.T) {
	baseURL := startKiln(t)
	client, err := kiln.NewClientWithResponses(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// kiln_test is shared across runs: a new account each time.
	email := fmt.Sprintf("sdk-go-%d-%s@example.com", time.Now().UnixNano(), strings.ToLower(rand.Text()[:8]))
	const password = "correct horse battery staple 9"

	signup, err := kiln.CheckResponse(client.SignUpWithResponse(ctx,
		kiln.SignUpRequest{Email: email, Password: password, Name: "SDK Go"}))
	if err != nil {
		t.Fatal(err)
	}
	first := signup.JSON201
	if signup.StatusCode() != http.StatusCreated || first == nil || first.TokenType != kiln.Bearer ||
		first.AccessToken == "" || first.RefreshToken == "" || first.ExpiresIn <= 0 {
		t.Fatalf("sign-up = %d %s, want 201 with a bearer token pair", signup.StatusCode(), signup.Body)
	}

	login, err := kiln.CheckResponse(client.LoginWithResponse(ctx, kiln.LoginRequest{Email: email, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	if login.JSON200 == nil || login.JSON200.AccessToken == "" {
		t.Fatalf("login = %d %s, want 200 with a token pair", login.StatusCode(), login.Body)
	}
	pair := *login.JSON200
	asUser := kiln.WithBearer(pair.AccessToken)

	meResp, err := kiln.CheckResponse(client.GetMeWithResponse(ctx, asUser))
	if err != nil {
		t.Fatal(err)
	}
	me := meResp.JSON200
	if me == nil || me.Email != email || me.Name != "SDK Go" {
		t.Fatalf("GET /v1/me = %d %s, want %s, SDK Go", meResp.StatusCode(), meResp.Body, email)
	}
	if !slices.ContainsFunc(me.Orgs, func(o kiln.OrgMembership) bool {
		return o.Id == me.PersonalOrgId && o.Personal && o.Role == kiln.RoleOwner
	}) {
		t.Errorf("orgs = %+v, want the personal org %s with role owner", me.Orgs, me.PersonalOrgId)
	}

	t.Run("APIKeyScopes", func(t *testing.T) {
		admin := createKey(t, client, asUser, kiln.ScopeAdmin)
		list, err := kiln.CheckResponse(client.ListAPIKeysWithResponse(ctx, nil, kiln.WithBearer(admin.Key)))
		if err != nil {
			t.Fatal(err)
		}
		if list.JSON200 == nil || !slices.ContainsFunc(list.JSON200.Data, func(k kiln.APIKey) bool {
			return k.Id == admin.Id && slices.Equal(k.Scopes, []kiln.Scope{kiln.ScopeAdmin})
		}) {
			t.Errorf("GET /v1/api-keys with the admin key = %d %s, want the key %s listed", list.StatusCode(), list.Body, admin.Id)
		}

		chat := createKey(t, client, asUser, kiln.ScopeChat)
		resp, err := kiln.CheckResponse(client.ListAPIKeysWithResponse(ctx, nil, kiln.WithBearer(chat.Key)))
		if resp == nil {
			t.Fatal(err)
		}
		_ = requireProblem(t, err, kiln.PermissionDenied, http.StatusForbidden, resp.HTTPResponse.Header)
	})

	t.Run("RefreshRotatesAndReuseRevokes", func(t *testing.T) {
		refreshed, err := kiln.CheckResponse(client.RefreshTokensWithResponse(ctx, kiln.RefreshRequest{RefreshToken: first.RefreshToken}))
		if err != nil {
			t.Fatal(err)
		}
		next := refreshed.JSON200
		if next == nil || next.AccessToken == first.AccessToken || next.RefreshToken == first.RefreshToken {
			t.Fatalf("refresh = %d %s, want a new pair", refreshed.StatusCode(), refreshed.Body)
		}
		if _, err := kiln.CheckResponse(client.GetMeWithResponse(ctx, kiln.WithBearer(next.AccessToken))); err != nil {
			t.Fatalf("GET /v1/me with the refreshed access token: %v", err)
		}

		// The spent token again (the test server's reuse grace is 1ms): refused, and the
		// whole session is revoked, the tokens it just issued too.
		reuse, err := kiln.CheckResponse(client.RefreshTokensWithResponse(ctx, kiln.RefreshRequest{RefreshToken: first.RefreshToken}))
		if reuse == nil {
			t.Fatal(err)
		}
		_ = requireProblem(t, err, kiln.Unauthenticated, http.StatusUnauthorized, reuse.HTTPResponse.Header)
		again, err := kiln.CheckResponse(client.GetMeWithResponse(ctx, kiln.WithBearer(next.AccessToken)))
		if again == nil {
			t.Fatal(err)
		}
		_ = requireProblem(t, err, kiln.Unauthenticated, http.StatusUnauthorized, again.HTTPResponse.Header)
	})

	t.Run("AuthSessionRefreshesThenLogoutAll", func(t *testing.T) {
		// A refused access token stands in for an expired one: the server answers every bad
		// credential with the same 401.
		const stale = "stale-access-token"
		session, err := kiln.NewAuthSession(baseURL, kiln.TokenPair{AccessToken: stale, RefreshToken: pair.RefreshToken})
		if err != nil {
			t.Fatal(err)
		}
		sessionClient, err := kiln.NewClientWithResponses(baseURL, kiln.WithHTTPClient(session))
		if err != nil {
			t.Fatal(err)
		}
		got, err := kiln.CheckResponse(sessionClient.GetMeWithResponse(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if got.JSON200 == nil || got.JSON200.Id != me.Id {
			t.Fatalf("GET /v1/me through the session = %d %s, want user %s", got.StatusCode(), got.Body, me.Id)
		}
		tokens := session.Tokens()
		if tokens.AccessToken == stale || tokens.RefreshToken == pair.RefreshToken {
			t.Fatalf("session tokens unchanged after the refresh: %+v", tokens)
		}

		if _, err := kiln.CheckResponse(sessionClient.LogoutAllWithResponse(ctx)); err != nil {
			t.Fatal(err)
		}
		// Every session is over: the access tokens fail, and so does the session's refresh.
		for _, token := range []string{tokens.AccessToken, pair.AccessToken} {
			resp, err := kiln.CheckResponse(client.GetMeWithResponse(ctx, kiln.WithBearer(token)))
			if resp == nil {
				t.Fatal(err)
			}
			_ = requireProblem(t, err, kiln.Unauthenticated, http.StatusUnauthorized, resp.HTTPResponse.Header)
		}
		resp, err := kiln.CheckResponse(sessionClient.GetMeWithResponse(ctx))
		if resp == nil {
			t.Fatal(err)
		}
		_ = requireProblem(t, err, kiln.Unauthenticated, http.StatusUnauthorized, resp.HTTPResponse.Header)
	})
}

// createKey creates an API key with one scope as the user of auth and returns it, with
// its secret.
func createKey(t *testing.T, client *kiln.ClientWithResponses, auth kiln.RequestEditorFn, scope kiln.Scope) *kiln.APIKeyWithSecret {
	t.Helper()
	resp, err := kiln.CheckResponse(client.CreateAPIKeyWithResponse(t.Context(), nil,
		kiln.CreateAPIKeyRequest{Name: "sdk-go " + string(scope), Scopes: []kiln.Scope{scope}}, auth))
	if err != nil {
		t.Fatal(err)
	}
	key := resp.JSON201
	if resp.StatusCode() != http.StatusCreated || key == nil || !strings.HasPrefix(key.Key, "kiln_") ||
		!slices.Equal(key.Scopes, []kiln.Scope{scope}) {
		t.Fatalf("create %s key = %d %s, want 201 with a kiln_ secret", scope, resp.StatusCode(), resp.Body)
	}
	return key
}

// requireProblem asserts that err is a *ProblemError with the code and status, whose
// request id is the X-Request-Id response header, and returns it.
func requireProblem(t *testing.T, err error, code kiln.ErrorCode, status int, header http.Header) *kiln.ProblemError {
	t.Helper()
	var problem *kiln.ProblemError
	if !errors.As(err, &problem) {
		t.Fatalf("error = %v (%T), want *kiln.ProblemError", err, err)
	}
	if problem.Code != code || problem.Status != status {
		t.Errorf("problem = %s (%d), want %s (%d): %v", problem.Code, problem.Status, code, status, err)
	}
	if problem.RequestId == "" || problem.RequestId != header.Get(kiln.RequestIDHeader) {
		t.Errorf("request_id = %q, want non-empty and equal to %s %q",
			problem.RequestId, kiln.RequestIDHeader, header.Get(kiln.RequestIDHeader))
	}
	return problem
}

// startKiln builds cmd/kiln from the repository, applies migrations, starts `kiln serve`
// on a free loopback port and returns its base URL. At cleanup it stops the server with
// SIGTERM and fails the test unless it exits 0.
func startKiln(t *testing.T) string {
	t.Helper()
	k, err := launchKiln()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k.stop(); err != nil {
			t.Error(err)
		}
	})
	return k.baseURL
}

// kilnBin is the binary the tests run: KILN_BIN (make test-sdk builds bin/kiln), else one
// built from the repository once per test binary (removed by TestMain).
var kilnBin = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("KILN_BIN"); bin != "" {
		return filepath.Abs(bin)
	}
	// go test runs in the package directory, sdk/go.
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "kiln")); err != nil {
		return "", fmt.Errorf("repository root not found from the test directory: %w", err)
	}
	dir, err := os.MkdirTemp("", "kiln-sdk-go-")
	if err != nil {
		return "", err
	}
	builtDir = dir
	bin := filepath.Join(dir, "kiln")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kiln")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kiln: %w\n%s", err, out)
	}
	return bin, nil
})

// builtDir holds the binary kilnBin built, if it built one.
var builtDir string

// kilnProcess is a running `kiln serve`.
type kilnProcess struct {
	baseURL string
	serve   *exec.Cmd
	stdout  *serverLog
	stderr  *bytes.Buffer
	exited  chan error
}

// launchKiln migrates the test database and starts `kiln serve` on a free port, returning
// once it listens.
func launchKiln() (*kilnProcess, error) {
	bin, err := kilnBin()
	if err != nil {
		return nil, err
	}
	env := serverEnv()
	migrate := exec.Command(bin, "migrate", "up")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("kiln migrate up: %w\n%s", err, out)
	}

	// Not CommandContext: stop sends SIGTERM rather than have the process killed.
	k := &kilnProcess{serve: exec.Command(bin, "serve"), stdout: &serverLog{addr: make(chan string, 1)}, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	k.serve.Env = env
	k.serve.Stdout, k.serve.Stderr = k.stdout, k.stderr
	if err := k.serve.Start(); err != nil {
		return nil, fmt.Errorf("start kiln serve: %w", err)
	}
	go func() { k.exited <- k.serve.Wait() }()

	select {
	case addr := <-k.stdout.addr:
		k.baseURL = "http://" + addr
		return k, nil
	case err := <-k.exited:
		return nil, fmt.Errorf("kiln serve exited before listening: %w\nstdout:\n%s\nstderr:\n%s", err, k.stdout, k.stderr)
	case <-time.After(60 * time.Second):
		_ = k.serve.Process.Kill()
		return nil, fmt.Errorf("kiln serve logged no listening line within 60s\nstdout:\n%s\nstderr:\n%s", k.stdout, k.stderr)
	}
}

// stop sends SIGTERM and reports an exit other than 0, or one that took over 30 s.
func (k *kilnProcess) stop() error {
	// Fails only when the process has exited already; exited then says how.
	_ = k.serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-k.exited:
		if err != nil {
			return fmt.Errorf("kiln serve exited with %w after SIGTERM, want 0\nstdout:\n%s\nstderr:\n%s", err, k.stdout, k.stderr)
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = k.serve.Process.Kill()
		return fmt.Errorf("kiln serve still running 30s after SIGTERM; killed (%w)\nstdout:\n%s", <-k.exited, k.stdout)
	}
}

// serverEnv is this process's environment without Kiln's own settings, plus the test
// configuration: TEST_DATABASE_URL and TEST_REDIS_URL when set, the local servers
// otherwise.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "KILN_") || name == "DATABASE_URL" || name == "REDIS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"KILN_ENV=sdktest",
		"KILN_HTTP_ADDR=127.0.0.1:0",
		"DATABASE_URL="+envOr("TEST_DATABASE_URL", defaultDatabaseURL),
		"REDIS_URL="+envOr("TEST_REDIS_URL", defaultRedisURL),
		// Cheap password hashes, a spent refresh token refused at once, and no abuse limits:
		// their counts live in the shared Redis, and every run signs up from 127.0.0.1.
		"KILN_AUTH_ARGON2_MEMORY_KIB=8192",
		"KILN_AUTH_ARGON2_TIME=1",
		"KILN_AUTH_REFRESH_REUSE_GRACE=1ms",
		"KILN_AUTH_LIMIT_ABUSE=false",
	)
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// serverLog keeps a kiln process's stdout and sends the address of its first
// "listening" log line on addr.
type serverLog struct {
	addr chan string

	mu      sync.Mutex
	all     bytes.Buffer
	pending []byte
	found   bool
}

func (l *serverLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	if l.found {
		return len(p), nil
	}
	l.pending = append(l.pending, p...)
	for {
		line, rest, ok := bytes.Cut(l.pending, []byte("\n"))
		if !ok {
			break
		}
		l.pending = rest
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "listening" && rec.Addr != "" {
			l.found, l.pending = true, nil
			l.addr <- rec.Addr
			break
		}
	}
	return len(p), nil
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all.String()
}
