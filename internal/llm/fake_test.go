package llm

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// answer is one scripted answer of a fakeProvider: after delay (cut short by the call's
// context), an error, or a reply (Chat, Embed) or stream of events (ChatStream). The zero
// answer replies with the provider's name.
type answer struct {
	delay  time.Duration
	err    error
	events []fakeEvent // nil: one text event with the provider's name, then finish
	// gate, when set, is waited on (or the call's context) before answering.
	gate <-chan struct{}
}

// fakeEvent is one scripted stream item: after delay, an event or an error.
type fakeEvent struct {
	delay time.Duration
	ev    Event
	err   error
}

// fakeProvider is an in-process Provider playing a script: call n gets script[n], the last
// answer repeating. It records the requests it saw and how many calls were in flight.
type fakeProvider struct {
	name string

	mu          sync.Mutex
	script      []answer
	calls       int
	models      []string    // Request.Model (or EmbedRequest.Model) of every call
	times       []time.Time // start of every call
	inflight    int
	maxInflight int
	closed      int // streams closed
	open        int // streams returned and not yet closed
	maxOpen     int
}

var _ Provider = (*fakeProvider)(nil)

func newFake(name string, script ...answer) *fakeProvider {
	return &fakeProvider{name: name, script: script}
}

// begin records a call and returns its answer and a func to call when it is over.
func (p *fakeProvider) begin(model string) (answer, func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var a answer
	if len(p.script) > 0 {
		a = p.script[min(p.calls, len(p.script)-1)]
	}
	p.calls++
	p.models = append(p.models, model)
	p.times = append(p.times, time.Now())
	p.inflight++
	p.maxInflight = max(p.maxInflight, p.inflight)
	return a, func() {
		p.mu.Lock()
		p.inflight--
		p.mu.Unlock()
	}
}

func (p *fakeProvider) Calls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func (p *fakeProvider) MaxInflight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxInflight
}

// Open is the number of streams returned and not yet closed.
func (p *fakeProvider) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *fakeProvider) MaxOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxOpen
}

func (p *fakeProvider) Closed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *fakeProvider) SeenModels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.models...)
}

func (p *fakeProvider) Times() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.times...)
}

// wait sleeps for d or until gate is closed, whichever the answer asks for, unless ctx
// ends first.
func (a answer) wait(ctx context.Context) error {
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return sleep(ctx, a.delay)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *fakeProvider) Chat(ctx context.Context, req *Request) (*Response, error) {
	a, done := p.begin(req.Model)
	defer done()
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	if a.err != nil {
		return nil, a.err
	}
	return &Response{Model: req.Model, Message: TextMessage(RoleAssistant, p.name), FinishReason: FinishStop}, nil
}

func (p *fakeProvider) ChatStream(ctx context.Context, req *Request) (Stream, error) {
	a, done := p.begin(req.Model)
	defer done()
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	if a.err != nil {
		return nil, a.err
	}
	events := a.events
	if events == nil {
		events = []fakeEvent{{ev: Event{Type: EventText, Text: p.name}}, {ev: Event{Type: EventFinish, FinishReason: FinishStop}}}
	}
	p.mu.Lock()
	p.open++
	p.maxOpen = max(p.maxOpen, p.open)
	p.mu.Unlock()
	return &fakeStream{ctx: ctx, p: p, events: events}, nil
}

func (p *fakeProvider) Embed(ctx context.Context, req *EmbedRequest) (*EmbedResponse, error) {
	a, done := p.begin(req.Model)
	defer done()
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	if a.err != nil {
		return nil, a.err
	}
	return &EmbedResponse{Model: req.Model, Vectors: make([][]float32, len(req.Input))}, nil
}

func (p *fakeProvider) Models(context.Context) ([]Model, error) { return []Model{{ID: p.name}}, nil }

// fakeStream plays scripted events, honouring its context like a real connection would.
type fakeStream struct {
	ctx    context.Context
	p      *fakeProvider
	events []fakeEvent
	next   int
	once   sync.Once
}

func (s *fakeStream) Next() (Event, error) {
	if s.next >= len(s.events) {
		return Event{}, io.EOF
	}
	e := s.events[s.next]
	s.next++
	if err := sleep(s.ctx, e.delay); err != nil {
		return Event{}, err
	}
	if e.err != nil {
		return Event{}, e.err
	}
	return e.ev, nil
}

func (s *fakeStream) Close() error {
	s.once.Do(func() {
		s.p.mu.Lock()
		s.p.closed++
		s.p.open--
		s.p.mu.Unlock()
	})
	return nil
}

// upstream is an upstream failure of kind.
func upstream(kind ErrorKind) *Error {
	return &Error{Provider: "fake", Kind: kind, Message: "scripted " + string(kind)}
}

// newTestGateway builds a gateway over providers with test-sized timings (tiny backoff,
// one-second attempts) unless cfg sets them, and its metrics on a registry of its own.
func newTestGateway(t *testing.T, cfg GatewayConfig) *Gateway {
	t.Helper()
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Microsecond
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	g, err := NewGateway(cfg)
	if err != nil {
		t.Fatalf("NewGateway: %v", err)
	}
	return g
}

// kindOf returns the kind of err's *Error, or "" when it has none.
func kindOf(err error) ErrorKind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return ""
}
