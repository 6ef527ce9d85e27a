package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/bench/mockllm"
)

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	for _, tt := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"Empty", nil, 50, 0},
		{"One", ms(7), 99, 7 * time.Millisecond},
		{"MedianOdd", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"MedianEvenIsLowerMiddle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"P99OfHundred", ms(hundred...), 99, 99 * time.Millisecond},
		{"P100IsMax", ms(hundred...), 100, 100 * time.Millisecond},
		{"TinyPIsMin", ms(hundred...), 0.001, time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Fatalf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags([]string{"-direct-only", "-concurrency", "2, 8", "-frames", "3"})
	if err != nil || !cfg.directOnly || len(cfg.concurrency) != 2 || cfg.concurrency[1] != 8 || cfg.frames != 3 || cfg.kilnBin != "bin/kiln" {
		t.Fatalf("%+v %v", cfg, err)
	}
	if _, err := parseFlags([]string{"-concurrency", "1,x"}); err == nil {
		t.Fatal("a malformed -concurrency was accepted")
	}
}

// TestLoadSmoke drives the load generator against the mock for a moment: the counts must
// agree whatever the machine's speed, so nothing here depends on timing.
func TestLoadSmoke(t *testing.T) {
	t.Parallel()
	for _, stream := range []bool{false, true} {
		name := "Completion"
		if stream {
			name = "Stream"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mock := mockllm.New(mockllm.Options{Frames: 3, APIKey: mockKey})
			srv := httptest.NewServer(mock)
			t.Cleanup(srv.Close)
			tgt := target{name: "direct", url: srv.URL + "/v1/chat/completions", key: mockKey, model: mockModel}
			l := &load{client: newClient(), target: tgt, stream: stream, concurrency: 4, warmup: 10 * time.Millisecond, duration: 100 * time.Millisecond}
			r, err := l.run(context.Background(), mock)
			if err != nil {
				t.Fatal(err)
			}
			if r.errors != 0 {
				t.Fatalf("%d errors, first: %s", r.errors, r.firstError)
			}
			if r.sent.Requests == 0 || int64(len(r.latencies)) > r.sent.Requests {
				t.Fatalf("%d measured of %d sent", len(r.latencies), r.sent.Requests)
			}
			if stream {
				if r.framesRecv != r.sent.Frames || r.framesRecv != 3*r.sent.Streams || r.streams != r.sent.Streams {
					t.Fatalf("frames %d received, %d sent; streams %d done, %d sent", r.framesRecv, r.sent.Frames, r.streams, r.sent.Streams)
				}
				if len(r.ttfts) != len(r.latencies) {
					t.Fatalf("%d TTFTs for %d streams", len(r.ttfts), len(r.latencies))
				}
			} else if r.framesRecv != 0 || r.sent.Streams != 0 {
				t.Fatalf("a blocking run streamed: %+v", r.sent)
			}
		})
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	d := func(n int) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = time.Millisecond
		}
		return s
	}
	res := func(c int, lat time.Duration, n int) *result {
		r := &result{concurrency: c, window: time.Second, latencies: d(n), ttfts: d(n)}
		for i := range r.latencies {
			r.latencies[i], r.ttfts[i] = lat, 2*lat
		}
		r.framesRecv, r.sent.Frames = 40, 40
		return r
	}
	kiln := res(10, 1500*time.Microsecond, 50)
	kiln.sent.Requests, kiln.cpu = 60, 4800*time.Microsecond
	rep := &report{
		cfg:         config{concurrency: []int{10}, streamConcurrency: 10, frames: 20},
		nonStream:   []map[string]*result{{"direct": res(10, time.Millisecond, 100), "kiln": kiln}},
		stream:      map[string]*result{"direct": res(10, time.Millisecond, 10), "kiln": res(10, 1100*time.Microsecond, 10)},
		peakRSS:     40e6,
		usageSent:   72,
		usageStored: 72,
	}
	text := rep.markdown()
	for _, want := range []string{
		"| c=10 p50 | 1.000 ms | 1.500 ms | +0.500 ms |",
		"| c=10 Kiln CPU per request | — | 0.080 ms |  |",
		"| peak req/s | 100 (c=10) | 50 (c=10) | 50 % |",
		"| stream c=10 TTFT p50 | 2.000 ms | 2.200 ms | 1.10× (+0.200 ms) |",
		"PASS  added p50 at c=10 ≤ 0.6 ms: +0.500 ms",
		"PASS  Kiln CPU per blocking request at c=10 ≤ 0.1 ms: 0.080 ms",
		"PASS  TTFT p50 added by Kiln ≤ 0.25 ms: +0.200 ms",
		"PASS  peak req/s through Kiln ≥ 35 % of direct: 50 %",
		"PASS  Kiln peak RSS ≤ 45 MB: 40.0 MB",
		"PASS  every call's usage record stored: 72 of 72",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if !rep.correct() {
		t.Error("a clean run is reported incorrect")
	}
	rep.usageStored--
	if !strings.Contains(rep.markdown(), "MISS  every call's usage record stored: 71 of 72") {
		t.Error("a lost usage record is not reported")
	}
	rep.stream["kiln"].framesRecv--
	if rep.correct() || !strings.Contains(rep.markdown(), "MISS  frames received = frames sent (kiln): 39 / 40") {
		t.Error("a lost frame is not reported")
	}
}
