package gemini

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

// stream turns streamGenerateContent's SSE events, each a whole GenerateContentResponse,
// into unified events. Gemini sends no end marker: a chunk with a finishReason (or a
// blocked prompt) completes the reply, a body that ends cleanly after at least one chunk
// is taken as complete too, and one that ends inside an event is a cut stream.
type stream struct {
	ctx      context.Context
	provider string
	body     io.ReadCloser
	events   *sse.Reader
	once     sync.Once

	chunk   generateResponse // reused for every event
	queue   []llm.Event      // events decoded but not yet returned
	head    int
	usage   *llm.Usage
	calls   int  // function calls seen so far; the next one's index
	chunks  int  // chunks decoded
	content bool // some chunk had a candidate
	done    bool // the finish event is queued
	err     error
}

func newStream(ctx context.Context, provider string, body io.ReadCloser) *stream {
	return &stream{ctx: ctx, provider: provider, body: body, events: sse.NewReader(body), queue: make([]llm.Event, 0, 4)}
}

// Next returns the next event, io.EOF after the finish event, or the *llm.Error that
// ended the stream (ctx's own cancellation is returned as is).
func (s *stream) Next() (llm.Event, error) {
	for {
		if s.head < len(s.queue) {
			ev := s.queue[s.head]
			s.head++
			return ev, nil
		}
		if s.err != nil {
			return llm.Event{}, s.err
		}
		if s.done {
			return llm.Event{}, io.EOF
		}
		s.queue, s.head = s.queue[:0], 0
		if err := s.read(); err != nil {
			s.err = err
			s.Close()
		}
	}
}

// Close releases the connection; it is safe to call more than once and while Next runs.
func (s *stream) Close() error {
	var err error
	s.once.Do(func() { err = s.body.Close() })
	return err
}

// read decodes one SSE event into queued events.
func (s *stream) read() error {
	ev, err := s.events.Next()
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		if s.chunks == 0 {
			return &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream ended before any chunk"}
		}
		s.finish("")
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream was cut mid-event", Err: err}
	case errors.Is(err, sse.ErrTooLarge):
		return llm.ProtocolError(s.provider, "stream event over %d bytes", sse.MaxEventBytes)
	default:
		return llm.TransportError(s.ctx, s.provider, err)
	}

	s.chunk = generateResponse{}
	if err := json.Unmarshal(ev.Data, &s.chunk); err != nil {
		return llm.ProtocolError(s.provider, "decode stream chunk: %v", err)
	}
	s.chunks++
	if e := s.chunk.Error; e != nil {
		kind := kindForStatus(e.Status)
		if e.Code != 0 {
			kind = llm.KindForStatus(e.Code)
		}
		return &llm.Error{Provider: s.provider, Kind: kind, Status: e.Code, Type: e.Status, Message: e.Message, RetryAfter: e.retryDelay()}
	}
	if u := s.chunk.UsageMetadata; u != nil {
		usage := u.usage() // each chunk carries the running totals; the last one wins
		s.usage = &usage
	}
	if pf := s.chunk.PromptFeedback; pf != nil && pf.BlockReason != "" {
		s.content = false
		s.finish("")
		return nil
	}
	if len(s.chunk.Candidates) == 0 {
		return nil
	}
	s.content = true
	c := &s.chunk.Candidates[0]
	for i := range c.Content.Parts {
		pt := &c.Content.Parts[i]
		switch {
		case pt.Thought:
		case pt.FunctionCall != nil:
			// Gemini sends each call whole: its first piece is also its last.
			call := toolCall(pt, s.calls)
			s.queue = append(s.queue,
				llm.Event{Type: llm.EventToolCallDelta, Index: s.calls, ToolCall: call},
				llm.Event{Type: llm.EventToolCall, Index: s.calls, ToolCall: call})
			s.calls++
		case pt.Text != "":
			s.queue = append(s.queue, llm.Event{Type: llm.EventText, Text: pt.Text})
		}
	}
	if c.FinishReason != "" {
		s.finish(c.FinishReason)
	}
	return nil
}

// finish queues the usage and finish events. A stream that never had a candidate was
// blocked (or answered nothing), which Kiln reports as content_filter.
func (s *stream) finish(reason string) {
	if s.usage != nil {
		s.queue = append(s.queue, llm.Event{Type: llm.EventUsage, Usage: *s.usage})
	}
	fr := llm.FinishContentFilter
	if s.content {
		fr = finishReason(reason, s.calls > 0)
	}
	s.queue = append(s.queue, llm.Event{Type: llm.EventFinish, FinishReason: fr})
	s.done = true
}
