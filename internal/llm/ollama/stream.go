package ollama

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/kilnhq/kiln/internal/llm"
)

// MaxLineBytes bounds one NDJSON line of a stream; a longer line is a protocol error,
// not a memory spike.
const MaxLineBytes = 4 << 20

var errLineTooLong = errors.New("stream line too long")

// stream reads Ollama's NDJSON chat stream: one JSON object a line, the last with
// "done": true. Not safe for concurrent Next calls; Close may come from any goroutine.
type stream struct {
	ctx      context.Context
	provider string
	body     io.ReadCloser
	br       *bufio.Reader
	line     []byte       // a line longer than br's buffer, assembled
	chunk    chatResponse // reused for every line

	events []llm.Event // decoded from the last line, not yet returned
	next   int
	calls  int // tool calls seen so far: the index of the next one
	done   bool
	eof    bool
	err    error // sticky: returned by every later Next

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newStream(ctx context.Context, provider string, body io.ReadCloser) *stream {
	return &stream{
		ctx:      ctx,
		provider: provider,
		body:     body,
		br:       bufio.NewReaderSize(body, 32<<10),
		events:   make([]llm.Event, 0, 4),
	}
}

// Next returns the next event, io.EOF after the finish event, or an error: an
// *llm.Error of KindConnection when the body ends before the done line, KindProtocol for
// a line that cannot be decoded or exceeds MaxLineBytes, the classified error of an
// {"error": ...} line, or ctx's cancellation.
func (s *stream) Next() (llm.Event, error) {
	if s.closed.Load() && s.err == nil {
		// Buffered lines must not outlive Close: the caller has given up on the reply.
		s.err = &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream was closed", Err: http.ErrBodyReadAfterClose}
		s.events, s.next = s.events[:0], 0
	}
	for {
		if s.next < len(s.events) {
			ev := s.events[s.next]
			s.next++
			return ev, nil
		}
		if s.err != nil {
			return llm.Event{}, s.err
		}
		s.events, s.next = s.events[:0], 0
		if s.done {
			s.err = io.EOF
			continue
		}
		s.err = s.readEvents()
	}
}

// readEvents reads lines until one yields events (or the stream ends) and queues them.
func (s *stream) readEvents() error {
	for len(s.events) == 0 {
		if s.eof {
			return &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream ended before its final message", Err: io.ErrUnexpectedEOF}
		}
		line, terminated, err := s.readLine()
		switch {
		case errors.Is(err, errLineTooLong):
			return llm.ProtocolError(s.provider, "a stream line exceeds %d bytes", MaxLineBytes)
		case errors.Is(err, io.EOF):
			s.eof = true
		case err != nil:
			// A partial line before a read error is incomplete: drop it.
			return llm.TransportError(s.ctx, s.provider, err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		s.chunk = chatResponse{}
		if err := json.Unmarshal(line, &s.chunk); err != nil {
			if !terminated {
				return &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream was cut in the middle of a message", Err: io.ErrUnexpectedEOF}
			}
			return llm.ProtocolError(s.provider, "undecodable stream line: %v", err)
		}
		if err := s.queue(&s.chunk); err != nil {
			return err
		}
	}
	return nil
}

// queue turns one decoded line into events. Ollama sends each tool call whole, so a
// call yields its one delta (ID, Name and all Arguments) and at once the complete call.
func (s *stream) queue(c *chatResponse) error {
	if _, msg := errorMessage(c.Error); msg != "" {
		return replyError(s.provider, msg)
	}
	if c.Message.Content != "" {
		s.events = append(s.events, llm.Event{Type: llm.EventText, Text: c.Message.Content})
	}
	for i := range c.Message.ToolCalls {
		call := toolCallFrom(&c.Message.ToolCalls[i], s.calls)
		s.events = append(s.events,
			llm.Event{Type: llm.EventToolCallDelta, Index: s.calls, ToolCall: call},
			llm.Event{Type: llm.EventToolCall, Index: s.calls, ToolCall: call})
		s.calls++
	}
	if c.Done {
		s.done = true
		s.events = append(s.events,
			llm.Event{Type: llm.EventUsage, Usage: llm.Usage{PromptTokens: c.PromptEvalCount, CompletionTokens: c.EvalCount}},
			llm.Event{Type: llm.EventFinish, FinishReason: finishReason(c.DoneReason, s.calls > 0)})
	}
	return nil
}

// readLine returns the next line without its newline, valid until the next call, and
// whether it was terminated by one (an unterminated last line marks a cut stream).
func (s *stream) readLine() (line []byte, terminated bool, err error) {
	s.line = s.line[:0]
	for {
		frag, err := s.br.ReadSlice('\n')
		switch {
		case err == nil:
			if len(s.line) == 0 {
				return frag[:len(frag)-1], true, nil
			}
			s.line = append(s.line, frag[:len(frag)-1]...)
			if len(s.line) > MaxLineBytes {
				return nil, false, errLineTooLong
			}
			return s.line, true, nil
		case errors.Is(err, bufio.ErrBufferFull):
			s.line = append(s.line, frag...)
			if len(s.line) > MaxLineBytes {
				return nil, false, errLineTooLong
			}
		default:
			s.line = append(s.line, frag...)
			if len(s.line) > MaxLineBytes {
				return nil, false, errLineTooLong
			}
			return s.line, false, err
		}
	}
}

// Close releases the connection; safe to call more than once and concurrently with Next.
func (s *stream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.body.Close()
	})
	return s.closeErr
}
