package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kilnhq/kiln/bench/mockllm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

// requestTimeout bounds one request, so a stuck server ends a run instead of hanging it.
const requestTimeout = 30 * time.Second

// target is one way to reach the mock: straight, or through Kiln.
type target struct {
	name  string // "direct" or "kiln"
	url   string // the chat completions URL
	key   string // bearer credential
	model string
}

// newClient returns the one HTTP client of the load generator: keep-alive connections,
// enough idle ones per host that c=64 never redials, no compression.
func newClient() *http.Client {
	return &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
	}
}

// load is one closed-loop run: concurrency workers each send a request as soon as their
// previous one returned, for warmup then duration; a worker starts no request after the
// window ends but finishes the one in flight, so every frame the mock sent is read.
type load struct {
	client      *http.Client
	target      target
	stream      bool
	concurrency int
	warmup      time.Duration
	duration    time.Duration
}

// outcome is what one request produced.
type outcome struct {
	ttft   time.Duration // to the first content frame; streams only
	frames int64         // content frames read; streams only
	done   bool          // the stream ended with [DONE]
}

// result summarises a run. Latencies and TTFTs are those of the requests that completed
// inside the measured window, sorted; the counters cover the whole run, warm-up included.
type result struct {
	latencies   []time.Duration
	ttfts       []time.Duration
	window      time.Duration
	errors      int64
	firstError  string
	streams     int64 // streams that ended with [DONE]
	framesRecv  int64
	sent        mockllm.Stats // what the mock counted during the run
	concurrency int
	cpu         time.Duration // Kiln's CPU time during the run; Kiln target only
}

// cpuPerRequest returns the Kiln CPU time per request served during the run, warm-up
// included (both are counted over the whole run), or 0 when nothing was served.
func (r *result) cpuPerRequest() time.Duration {
	if r.sent.Requests <= 0 {
		return 0
	}
	return r.cpu / time.Duration(r.sent.Requests)
}

// perSecond returns the requests completed in the window per second.
func (r *result) perSecond() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(len(r.latencies)) / r.window.Seconds()
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted, 0 when empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// run drives the load and returns its result; mock is read before and after to count what
// it sent. It returns early only when ctx ends.
func (l *load) run(ctx context.Context, mock *mockllm.Server) (*result, error) {
	body, err := requestBody(l.target.model, l.stream)
	if err != nil {
		return nil, err
	}
	before := mock.Stats()
	start := time.Now()
	from, to := start.Add(l.warmup), start.Add(l.warmup+l.duration)

	type worker struct {
		latencies, ttfts []time.Duration
		errors, streams  int64
		frames           int64
		firstError       error
	}
	workers := make([]worker, l.concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(to) {
				t0 := time.Now()
				out, err := l.do(ctx, body, t0)
				t1 := time.Now()
				w.frames += out.frames
				if out.done {
					w.streams++
				}
				if err != nil {
					w.errors++
					if w.firstError == nil {
						w.firstError = err
					}
					continue
				}
				if t1.Before(from) || !t1.Before(to) {
					continue
				}
				w.latencies = append(w.latencies, t1.Sub(t0))
				if l.stream {
					w.ttfts = append(w.ttfts, out.ttft)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &result{window: l.duration, sent: mock.Stats().Sub(before), concurrency: l.concurrency}
	for _, w := range workers {
		r.latencies = append(r.latencies, w.latencies...)
		r.ttfts = append(r.ttfts, w.ttfts...)
		r.errors += w.errors
		r.streams += w.streams
		r.framesRecv += w.frames
		if w.firstError != nil && r.firstError == "" {
			r.firstError = w.firstError.Error()
		}
	}
	slices.Sort(r.latencies)
	slices.Sort(r.ttfts)
	return r, nil
}

func requestBody(model string, stream bool) ([]byte, error) {
	type message struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type streamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	}
	req := struct {
		Model         string         `json:"model"`
		Messages      []message      `json:"messages"`
		Stream        bool           `json:"stream,omitempty"`
		StreamOptions *streamOptions `json:"stream_options,omitempty"`
	}{
		Model:    model,
		Messages: []message{{Role: "user", Content: "Write a short poem about a kiln."}},
		Stream:   stream,
	}
	if stream {
		req.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// do sends one request and reads the whole reply.
func (l *load) do(ctx context.Context, body []byte, t0 time.Time) (outcome, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.target.url, bytes.NewReader(body))
	if err != nil {
		return outcome{}, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.target.key)
	if l.stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return outcome{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, resp.Body)
		return outcome{}, fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
	}
	if !l.stream {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return outcome{}, fmt.Errorf("read reply: %w", err)
		}
		return outcome{}, nil
	}
	out, err := readStream(resp.Body, t0)
	_, _ = io.Copy(io.Discard, resp.Body) // to EOF, so the connection is reused
	return out, err
}

// streamChunk is the part of a chat.completion.chunk that tells a content frame.
type streamChunk struct {
	Choices []struct {
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
}

// readStream counts the content frames of an OpenAI stream (chunks whose first choice
// carries text; role, finish and usage chunks are not content) until [DONE].
func readStream(body io.Reader, t0 time.Time) (outcome, error) {
	var out outcome
	r := sse.NewReader(body)
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out, errors.New("stream ended without [DONE]")
		}
		if err != nil {
			return out, fmt.Errorf("read stream: %w", err)
		}
		if string(ev.Data) == "[DONE]" {
			out.done = true
			return out, nil
		}
		var c streamChunk // fresh: json reuses slice elements without zeroing them
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			return out, fmt.Errorf("decode chunk: %w", err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			if out.frames == 0 {
				out.ttft = time.Since(t0)
			}
			out.frames++
		}
	}
}
