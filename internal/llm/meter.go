package llm

import (
	"context"
	"sync"

	"github.com/google/uuid"
)

// Meter holds an org's spending to its quota: every model call through the gateway
// reserves the most it can cost before it starts and settles to what it used after, so
// concurrent calls on any replica never spend past the limit. Reserve returns the
// errors that refuse the call (quota_exceeded, payment_required).
type Meter interface {
	Reserve(ctx context.Context, org uuid.UUID, tokens int) (Reservation, error)
}

// Reservation is tokens held for one model call. Settle records what the call used and
// frees the rest; 0 releases it all (the call failed before the upstream answered).
type Reservation interface {
	Settle(ctx context.Context, used int) error
}

// The prompt estimate counts one token per byte of text: every tokenizer Kiln speaks to
// makes at most one token of each byte (BPE merges bytes, never splits them), so the
// estimate is an upper bound and a reservation always covers the call.
const (
	messageOverhead = 8    // role and framing tokens per message
	imageTokens     = 2000 // the most a high-detail image tile set costs at common sizes
)

// PromptBound is an upper bound of the prompt tokens of req: its text in bytes, plus a
// fixed overhead per message, tool and image.
func PromptBound(req *Request) int {
	n := 0
	for _, m := range req.Messages {
		n += messageOverhead + len(m.Name) + len(m.ToolCallID)
		for _, p := range m.Content {
			n += len(p.Text)
			if p.Image != nil {
				n += imageTokens
			}
		}
		for _, c := range m.ToolCalls {
			n += len(c.ID) + len(c.Name) + len(c.Arguments) + messageOverhead
		}
	}
	for _, t := range req.Tools {
		n += len(t.Name) + len(t.Description) + len(t.Parameters) + messageOverhead
	}
	if rf := req.ResponseFormat; rf != nil {
		n += len(rf.Schema) + messageOverhead
	}
	return n
}

// orgOf is the org a call is metered for; uuid.Nil when the caller set none (the
// gateway's own pings).
func orgOf(ctx context.Context) uuid.UUID {
	org, _ := ctx.Value(orgKey{}).(uuid.UUID)
	return org
}

// reserve holds tokens for a call of the org in ctx; a nil Reservation means nothing is
// metered.
func (g *Gateway) reserve(ctx context.Context, tokens int) (Reservation, error) {
	org := orgOf(ctx)
	if g.cfg.Meter == nil || org == uuid.Nil {
		return nil, nil
	}
	return g.cfg.Meter.Reserve(ctx, org, tokens)
}

// settle ends r with used tokens on a context the caller's cancellation does not reach:
// a client that hung up still pays for what the upstream generated.
func settle(ctx context.Context, r Reservation, used int) {
	if r == nil {
		return
	}
	// A failed settle leaves the reservation to lapse at its TTL: the org is held to the
	// larger amount meanwhile, never to less.
	_ = r.Settle(context.WithoutCancel(ctx), used)
}

// maxTokens is what a request may generate: its max tokens, or the gateway's default.
func (g *Gateway) maxTokens(req *Request) int {
	if req.MaxTokens != nil && *req.MaxTokens > 0 {
		return *req.MaxTokens
	}
	return g.cfg.DefaultMaxTokens
}

// meteredStream settles its reservation at Close: to the usage the stream reported, or,
// when it reported none, to the whole reservation (the upstream may have generated it all).
type meteredStream struct {
	Stream
	ctx      context.Context
	res      Reservation
	reserved int
	used     int
	seen     bool
	once     sync.Once
}

func (s *meteredStream) Next() (Event, error) {
	ev, err := s.Stream.Next()
	if err == nil && ev.Type == EventUsage {
		s.used, s.seen = ev.Usage.Total(), true
	}
	return ev, err
}

func (s *meteredStream) Close() error {
	err := s.Stream.Close()
	s.once.Do(func() {
		used := s.reserved
		if s.seen {
			used = s.used
		}
		settle(s.ctx, s.res, used)
	})
	return err
}
