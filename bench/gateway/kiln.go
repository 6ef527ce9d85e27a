package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kilnConfig is the YAML layer Kiln runs with: one OpenAI-compatible provider, the mock,
// behind the alias "default". The benchmark's org is on the free plan, whose 60 requests a
// minute and million tokens the load would pass in a second: the plan (replaced whole)
// keeps its token quota, reserved and settled on every call as in production, with a limit
// the load cannot reach, and has no requests_per_minute, like the API's own rate limits
// (off below): each is one more Redis script per request, measured apart in
// docs/performance.md ("API rate limits: the cost per request").
const kilnConfig = `llm:
  providers:
    - name: mock
      type: openai_compatible
      base_url: %s
      api_key: %s
  models:
    default:
      targets: [{provider: mock, model: %s, weight: 1}]
billing:
  plans:
    free:
      name: Free
      limits:
        tokens: {value: 1000000000000, overage: block}
        seats: {value: 3, overage: block}
`

// kiln is a running `kiln serve`.
type kiln struct {
	cmd     *exec.Cmd
	addr    string // host:port
	output  *tail
	exited  chan struct{}
	waitErr error
	cancel  context.CancelFunc
}

// startKiln migrates the database, then starts `kiln serve` with a config pointing at the
// mock and waits until GET /ready is 200. The process gets SIGTERM when ctx ends or Stop is
// called.
func startKiln(ctx context.Context, bin, dir, mockURL, mockKey, mockModel string) (*kiln, error) {
	cfgPath := filepath.Join(dir, "kiln.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, kilnConfig, mockURL, mockKey, mockModel), 0o600); err != nil {
		return nil, fmt.Errorf("write kiln config: %w", err)
	}
	addr, err := freeAddr(ctx)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), // later entries win
		"KILN_HTTP_ADDR="+addr,
		"KILN_LOG_LEVEL=warn",
		"KILN_AUTH_LIMIT_ABUSE=false",
		// The load comes from one key of one org: the API limits would measure themselves.
		"KILN_RATELIMIT_API_PER_KEY_RATE=0", "KILN_RATELIMIT_API_PER_USER_RATE=0", "KILN_RATELIMIT_API_PER_ORG_RATE=0",
		// The one sign-up's argon2id hash would take 64 MiB at the default cost and
		// dominate the peak RSS of a gateway benchmark; 8 MiB is the smallest allowed.
		"KILN_AUTH_ARGON2_MEMORY_KIB=8192",
	)

	migrate := exec.CommandContext(ctx, bin, "--config", cfgPath, "migrate", "up") //nolint:gosec // the binary is the operator's -kiln flag
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s migrate up: %w\n%s", bin, err, out)
	}

	procCtx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(procCtx, bin, "--config", cfgPath, "serve") //nolint:gosec // as above
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	k := &kiln{cmd: cmd, addr: addr, output: &tail{max: 16 << 10}, exited: make(chan struct{}), cancel: cancel}
	cmd.Stdout, cmd.Stderr = k.output, k.output
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start %s serve: %w", bin, err)
	}
	go func() {
		k.waitErr = cmd.Wait()
		close(k.exited)
	}()
	if err := k.waitReady(ctx, 60*time.Second); err != nil {
		_ = k.Stop() // its output is in err already
		return nil, err
	}
	return k, nil
}

// URL returns Kiln's base URL.
func (k *kiln) URL() string { return "http://" + k.addr }

// waitReady polls GET /ready until it answers 200.
func (k *kiln) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.URL()+"/ready", nil)
		if err != nil {
			return fmt.Errorf("build ready request: %w", err)
		}
		if resp, err := client.Do(req); err != nil {
			last = err.Error()
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
		}
		select {
		case <-k.exited:
			return fmt.Errorf("kiln exited before it was ready: %w; its output:\n%s", k.exitError(), k.output)
		case <-ctx.Done():
			return fmt.Errorf("kiln not ready after %s (last: %s); its output:\n%s", limit, last, k.output)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// exitError returns why the process ended; call it once exited is closed.
func (k *kiln) exitError() error {
	if k.waitErr == nil {
		return errors.New("exit status 0")
	}
	return k.waitErr
}

// PeakRSS returns the process's peak resident set size in bytes (VmHWM).
func (k *kiln) PeakRSS() (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(k.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read kiln status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/<kiln>/status")
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat: 100 on every Linux
// architecture Kiln runs on.
const clockTicks = 100

// CPUTime returns the CPU time (user + system) the process has used so far, to the
// resolution of a clock tick (10 ms).
func (k *kiln) CPUTime() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(k.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read kiln stat: %w", err)
	}
	// The command name, field 2, is in parentheses and may hold spaces: count from after it.
	i := bytes.LastIndexByte(b, ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 13 {
		return 0, errors.New("parse /proc/<kiln>/stat: too few fields")
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime and stime, fields 14 and 15
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/<kiln>/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// UsageRequests returns the number of calls in the usage report of key's org (the key
// sees its own calls), as stored so far.
func UsageRequests(ctx context.Context, client *http.Client, base, key string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/usage?group_by=model", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("usage report: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		return 0, fmt.Errorf("usage report: %d %s", res.StatusCode, bytes.TrimSpace(b))
	}
	var report struct {
		Total struct {
			Requests int64 `json:"requests"`
		} `json:"total"`
	}
	if err := json.NewDecoder(res.Body).Decode(&report); err != nil {
		return 0, fmt.Errorf("usage report: %w", err)
	}
	return report.Total.Requests, nil
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after a grace period). It returns the
// process's error when it did not exit cleanly, with its output.
func (k *kiln) Stop() error {
	k.cancel()
	<-k.exited
	// A clean exit after our SIGTERM is reported by Wait as the context's error.
	if k.waitErr != nil && !errors.Is(k.waitErr, context.Canceled) {
		return fmt.Errorf("kiln exit: %w; its output:\n%s", k.waitErr, k.output)
	}
	return nil
}

// signUpAndCreateKey creates a fresh account and returns the secret of a new API key with
// the chat scope.
func signUpAndCreateKey(ctx context.Context, client *http.Client, base string) (string, error) {
	suffix := make([]byte, 8)
	_, _ = rand.Read(suffix)
	password := make([]byte, 18)
	_, _ = rand.Read(password)
	signUp := map[string]string{
		"email":    "bench-" + hex.EncodeToString(suffix) + "@bench.test",
		"password": "Bench-" + hex.EncodeToString(password),
		"name":     "Kiln bench",
	}
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	if err := postJSON(ctx, client, base+"/v1/auth/signup", "", signUp, http.StatusCreated, &tokens); err != nil {
		return "", fmt.Errorf("sign up: %w", err)
	}
	createKey := map[string]any{"name": "bench", "scopes": []string{"chat"}}
	var key struct {
		Key string `json:"key"`
	}
	if err := postJSON(ctx, client, base+"/v1/api-keys", tokens.AccessToken, createKey, http.StatusCreated, &key); err != nil {
		return "", fmt.Errorf("create API key: %w", err)
	}
	if key.Key == "" {
		return "", errors.New("create API key: no key in the reply")
	}
	return key.Key, nil
}

func postJSON(ctx context.Context, client *http.Client, url, bearer string, in any, status int, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return json.Unmarshal(body, out)
}

// freeAddr returns a loopback address no one listens on right now.
func freeAddr(ctx context.Context) (string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// tail keeps the last max bytes written to it: Kiln's output, shown when it fails.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
