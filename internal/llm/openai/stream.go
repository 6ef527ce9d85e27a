package openai

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"

	json "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

var doneMarker = []byte("[DONE]")

// chatChunk is one streamed chat.completion.chunk. Fields Kiln does not use (Azure's
// prompt_filter_results and content_filter_results, reasoning_content, logprobs) are left
// undeclared so the decoder skips them.
type chatChunk struct {
	Choices []chunkChoice `json:"choices"`
	Usage   *wireUsage    `json:"usage"`
	Error   *wireError    `json:"error"`
}

type chunkChoice struct {
	Index int `json:"index"`
	Delta struct {
		Content   string          `json:"content"`
		Refusal   string          `json:"refusal"`
		ToolCalls []chunkToolCall `json:"tool_calls"`
	} `json:"delta"`
	FinishReason string `json:"finish_reason"`
}

type chunkToolCall struct {
	Index    *int         `json:"index"` // absent at some compatible servers
	ID       string       `json:"id"`
	Function wireFunction `json:"function"`
}

// stream turns the SSE body into llm events. Only choice 0 is read: Kiln never asks for
// n > 1.
type stream struct {
	ctx      context.Context
	provider string
	body     io.ReadCloser
	events   *sse.Reader
	chunk    chatChunk // reused across events

	queue []llm.Event
	head  int
	err   error // sticky: every Next after a failure returns it
	done  bool

	calls     llm.ToolCallBuffer
	announced []int // call indexes whose ID and name were already sent
	lastCall  int   // index of the call the latest delta belonged to; -1 before any
	lastID    string
	maxCall   int
	dirty     []int // call indexes changed since they were last sent as EventToolCall

	sawChoice bool
	finish    string
	usage     *llm.Usage

	closeOnce sync.Once
	closeErr  error
}

func newStream(ctx context.Context, provider string, body io.ReadCloser) *stream {
	return &stream{
		ctx:      ctx,
		provider: provider,
		body:     body,
		events:   sse.NewReader(body),
		queue:    make([]llm.Event, 0, 4),
		lastCall: -1,
		maxCall:  -1,
	}
}

// Next returns the next event, io.EOF after data: [DONE] has been handled, or an error:
// KindConnection for a body cut before [DONE], KindProtocol for an undecodable chunk, the
// upstream's kind for an error chunk, ctx's error after cancellation.
func (s *stream) Next() (llm.Event, error) {
	for {
		if s.head < len(s.queue) {
			ev := s.queue[s.head]
			s.head++
			return ev, nil
		}
		s.queue, s.head = s.queue[:0], 0
		if s.err != nil {
			return llm.Event{}, s.err
		}
		if s.done {
			return llm.Event{}, io.EOF
		}
		if err := s.ctx.Err(); err != nil {
			s.fail(llm.TransportError(s.ctx, s.provider, err))
			continue
		}
		ev, err := s.events.Next()
		if err != nil {
			s.fail(readError(s.ctx, s.provider, err))
			continue
		}
		if err := s.handle(ev.Data); err != nil {
			s.fail(err)
		}
	}
}

// Close releases the upstream connection; it may be called at any time, more than once.
func (s *stream) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.body.Close() })
	return s.closeErr
}

// fail records a terminal error and lets the connection go at once.
func (s *stream) fail(err error) {
	s.err = err
	_ = s.Close()
}

func (s *stream) handle(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil
	}
	if bytes.Equal(data, doneMarker) {
		return s.end()
	}
	// Reset without dropping the choices' backing array; clearing the elements matters
	// because the decoder reuses them and would keep stale fields.
	choices := s.chunk.Choices[:cap(s.chunk.Choices)]
	clear(choices)
	s.chunk = chatChunk{Choices: choices[:0]}
	if err := json.Unmarshal(data, &s.chunk); err != nil {
		return llm.ProtocolError(s.provider, "decode stream chunk: %v", err)
	}
	if s.chunk.Error != nil {
		return bodyError(s.provider, s.chunk.Error)
	}
	if u := s.chunk.Usage; u != nil {
		// Some servers repeat a running total on every chunk: the last one wins.
		usage := u.toUsage()
		s.usage = &usage
	}
	for i := range s.chunk.Choices {
		c := &s.chunk.Choices[i]
		if c.Index != 0 {
			continue
		}
		s.sawChoice = true
		if c.Delta.Content != "" {
			s.queue = append(s.queue, llm.Event{Type: llm.EventText, Text: c.Delta.Content})
		}
		if c.Delta.Refusal != "" {
			s.queue = append(s.queue, llm.Event{Type: llm.EventText, Text: c.Delta.Refusal})
		}
		for j := range c.Delta.ToolCalls {
			s.toolCallDelta(&c.Delta.ToolCalls[j])
		}
		// Handled after the delta: several servers put the last content and the
		// finish_reason in one chunk.
		if c.FinishReason != "" {
			s.finish = c.FinishReason
			s.flushCalls()
		}
	}
	return nil
}

func (s *stream) toolCallDelta(tc *chunkToolCall) {
	var i int
	switch {
	case tc.Index != nil:
		i = *tc.Index
	case s.lastCall < 0:
		i = 0
	case tc.ID != "" && tc.ID != s.lastID:
		i = s.maxCall + 1 // a new call from a server that does not number them
	default:
		i = s.lastCall
	}
	s.lastCall, s.maxCall = i, max(s.maxCall, i)
	if tc.ID != "" {
		s.lastID = tc.ID
	}
	piece := llm.ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: string(tc.Function.Arguments)}
	if piece.ID == "" && piece.Name == "" && piece.Arguments == "" {
		return
	}
	s.calls.Add(i, piece)
	if !slices.Contains(s.dirty, i) {
		s.dirty = append(s.dirty, i)
	}
	// ID and name go out once per call even where the server repeats them, so clients
	// that concatenate pieces are not fooled.
	if slices.Contains(s.announced, i) {
		piece.ID, piece.Name = "", ""
		if piece.Arguments == "" {
			return
		}
	} else if piece.ID != "" || piece.Name != "" {
		s.announced = append(s.announced, i)
	}
	s.queue = append(s.queue, llm.Event{Type: llm.EventToolCallDelta, Index: i, ToolCall: piece})
}

// flushCalls sends the calls changed since the last flush as complete, in index order.
// Normally that is every call, once, at the finish; a server that sends more pieces after
// its finish_reason gets the changed calls again at [DONE].
func (s *stream) flushCalls() {
	if len(s.dirty) == 0 {
		return
	}
	idx := s.calls.Indexes()
	for n, c := range s.calls.Calls() {
		if slices.Contains(s.dirty, idx[n]) {
			s.queue = append(s.queue, llm.Event{Type: llm.EventToolCall, Index: idx[n], ToolCall: c})
		}
	}
	s.dirty = s.dirty[:0]
}

// end handles data: [DONE]: the last calls, the usage (OpenAI sends it in a choiceless
// chunk after the finish) and one finish event.
func (s *stream) end() error {
	if !s.sawChoice {
		return llm.ProtocolError(s.provider, "the stream ended without any choice")
	}
	s.flushCalls()
	if s.usage != nil {
		s.queue = append(s.queue, llm.Event{Type: llm.EventUsage, Usage: *s.usage})
	}
	s.queue = append(s.queue, llm.Event{Type: llm.EventFinish, FinishReason: finishReason(s.finish, s.calls.Len() > 0)})
	s.done = true
	return nil
}
