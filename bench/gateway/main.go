// Command gateway is Kiln's whole-system gateway benchmark: it starts a mock
// OpenAI-compatible upstream (bench/mockllm) and Kiln in front of it, then measures in one
// run the same closed-loop load sent straight to the mock and through Kiln's
// POST /openai/v1/chat/completions (API-key auth and usage accounting on), scenario by
// scenario, direct and Kiln back to back. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kilnhq/kiln/bench/mockllm"
)

// The mock's credential and model name; Kiln's config names them too.
const (
	mockKey   = "bench"
	mockModel = "mock-model"
	kilnAlias = "default"
)

// config is the command line.
type config struct {
	kilnBin           string
	directOnly        bool
	duration          time.Duration
	warmup            time.Duration
	concurrency       []int
	streamConcurrency int
	latency           time.Duration
	frames            int
	frameInterval     time.Duration
	out               string
	args              []string // as given, for the report
}

func parseFlags(args []string) (config, error) {
	cfg := config{args: args}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&cfg.kilnBin, "kiln", "bin/kiln", "the Kiln binary (`make build` makes bin/kiln)")
	fs.BoolVar(&cfg.directOnly, "direct-only", false, "measure the mock alone; do not start Kiln")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "measured time of each run")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured load before each run")
	conc := fs.String("concurrency", "1,10,64", "comma-separated concurrencies of the non-streaming runs")
	fs.IntVar(&cfg.streamConcurrency, "stream-concurrency", 10, "concurrency of the streaming run")
	fs.DurationVar(&cfg.latency, "latency", 0, "mock: delay before the first byte of every reply")
	fs.IntVar(&cfg.frames, "frames", 20, "mock: content frames per stream (tokens per reply)")
	fs.DurationVar(&cfg.frameInterval, "frame-interval", 2*time.Millisecond, "mock: pause before each content frame")
	fs.StringVar(&cfg.out, "out", "", "also write the report (markdown) to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	for f := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-concurrency: %q is not a positive integer", f)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}
	switch {
	case cfg.duration <= 0:
		return cfg, errors.New("-duration must be positive")
	case cfg.warmup < 0:
		return cfg, errors.New("-warmup must not be negative")
	case cfg.streamConcurrency < 1:
		return cfg, errors.New("-stream-concurrency must be positive")
	case cfg.frames < 1:
		return cfg, errors.New("-frames must be positive")
	case cfg.latency < 0 || cfg.frameInterval < 0:
		return cfg, errors.New("-latency and -frame-interval must not be negative")
	}
	return cfg, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

// run starts the mock (and Kiln), measures every scenario and prints the report to stdout;
// progress goes to log. Everything it started is stopped before it returns.
func run(ctx context.Context, cfg config, stdout, log io.Writer) (err error) {
	mock := mockllm.New(mockllm.Options{Latency: cfg.latency, Frames: cfg.frames, FrameInterval: cfg.frameInterval, APIKey: mockKey})
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the mock: %w", err)
	}
	mockSrv := &http.Server{Handler: mock, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = mockSrv.Serve(ln) }()
	defer mockSrv.Close()
	mockBase := "http://" + ln.Addr().String() + "/v1"

	client := newClient()
	targets := []target{{name: "direct", url: mockBase + "/chat/completions", key: mockKey, model: mockModel}}
	rep := &report{cfg: cfg}

	var k *kiln
	if !cfg.directOnly {
		dir, tmpErr := os.MkdirTemp("", "kiln-bench-")
		if tmpErr != nil {
			return fmt.Errorf("temp dir: %w", tmpErr)
		}
		defer os.RemoveAll(dir)
		rep.kilnVersion = kilnVersion(ctx, cfg.kilnBin)
		fmt.Fprintf(log, "starting %s serve, upstream %s\n", cfg.kilnBin, mockBase)
		if k, err = startKiln(ctx, cfg.kilnBin, dir, mockBase, mockKey, mockModel); err != nil {
			return err
		}
		defer func() {
			if stopErr := k.Stop(); stopErr != nil && err == nil {
				err = stopErr
			}
		}()
		// Kiln dying mid-run ends the run with its output, not with minutes of refused connections.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-k.exited:
				cancel(fmt.Errorf("kiln exited mid-run: %w; its output:\n%s", k.exitError(), k.output))
			case <-ctx.Done():
			}
		}()
		key, keyErr := signUpAndCreateKey(ctx, client, k.URL())
		if keyErr != nil {
			return keyErr
		}
		targets = append(targets, target{name: "kiln", url: k.URL() + "/openai/v1/chat/completions", key: key, model: kilnAlias})
	}
	for _, t := range targets {
		if err := preflight(ctx, client, t); err != nil {
			return err
		}
	}

	// Direct and Kiln back to back per scenario, so machine noise hits both alike.
	for _, c := range cfg.concurrency {
		row := map[string]*result{}
		for _, t := range targets {
			r, err := measureCPU(ctx, log, k, &load{client: client, target: t, concurrency: c, warmup: cfg.warmup, duration: cfg.duration}, mock)
			if err != nil {
				return err
			}
			row[t.name] = r
		}
		rep.nonStream = append(rep.nonStream, row)
	}
	rep.stream = map[string]*result{}
	for _, t := range targets {
		r, err := measureCPU(ctx, log, k, &load{client: client, target: t, stream: true, concurrency: cfg.streamConcurrency, warmup: cfg.warmup, duration: cfg.duration}, mock)
		if err != nil {
			return err
		}
		rep.stream[t.name] = r
	}
	if k != nil {
		if rep.peakRSS, err = k.PeakRSS(); err != nil {
			return err
		}
		// Every call through Kiln, the two preflight ones included, must reach the usage
		// report; rows are written in batches, so wait for the last one.
		rep.usageSent = 2
		for _, row := range append(rep.nonStream, rep.stream) {
			rep.usageSent += row["kiln"].sent.Requests + row["kiln"].errors
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if rep.usageStored, err = UsageRequests(ctx, client, k.URL(), targets[1].key); err != nil {
				return err
			}
			if rep.usageStored >= rep.usageSent || time.Now().After(deadline) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}

	rep.date = time.Now()
	text := rep.markdown()
	fmt.Fprint(stdout, text)
	if cfg.out != "" {
		if err := writeFile(cfg.out, text); err != nil {
			return err
		}
	}
	if !rep.correct() {
		return errors.New("requests failed or frames were lost (see the report)")
	}
	return nil
}

// measureCPU is measure, and for the Kiln target also the CPU time the Kiln process used
// during the run, warm-up included, as is the count of requests it served.
func measureCPU(ctx context.Context, log io.Writer, k *kiln, l *load, mock *mockllm.Server) (*result, error) {
	if k == nil || l.target.name != "kiln" {
		return measure(ctx, log, l, mock)
	}
	before, err := k.CPUTime()
	if err != nil {
		return nil, err
	}
	r, err := measure(ctx, log, l, mock)
	if err != nil {
		return nil, err
	}
	after, err := k.CPUTime()
	if err != nil {
		return nil, err
	}
	r.cpu = after - before
	return r, nil
}

// measure runs l and logs a one-line summary.
func measure(ctx context.Context, log io.Writer, l *load, mock *mockllm.Server) (*result, error) {
	kind := "c=" + strconv.Itoa(l.concurrency)
	if l.stream {
		kind = "stream " + kind
	}
	r, err := l.run(ctx, mock)
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return nil, fmt.Errorf("%s %s: %w", l.target.name, kind, err)
	}
	fmt.Fprintf(log, "%-6s %-12s %9.0f req/s  p50 %s  p99 %s  errors %d\n",
		l.target.name, kind, r.perSecond(), ms(percentile(r.latencies, 50)), ms(percentile(r.latencies, 99)), r.errors)
	if r.firstError != "" {
		fmt.Fprintf(log, "       first error: %s\n", r.firstError)
	}
	return r, nil
}

// preflight sends one blocking and one streamed request, so a missing endpoint or a bad
// configuration fails in a second with its reason instead of as a report full of errors.
func preflight(ctx context.Context, client *http.Client, t target) error {
	for _, stream := range []bool{false, true} {
		l := &load{client: client, target: t, stream: stream}
		body, err := requestBody(t.model, stream)
		if err != nil {
			return err
		}
		if _, err := l.do(ctx, body, time.Now()); err != nil {
			hint := ""
			if t.name == "kiln" {
				hint = " (does Kiln serve POST /openai/v1/chat/completions yet? -direct-only measures the mock alone)"
			}
			return fmt.Errorf("first request to %s %s (stream=%t): %w%s", t.name, t.url, stream, err, hint)
		}
	}
	return nil
}

// kilnVersion returns the first line of `kiln version`, or "unknown".
func kilnVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output() //nolint:gosec // the binary is the operator's -kiln flag
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func writeFile(path, text string) error {
	f, err := os.Create(path) //nolint:gosec // the path is the operator's -out flag
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
