package kiln

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// MaxChatEventBytes bounds one line, and one event, of a chat stream: a longer one ends
// the stream with ErrChatEventTooLarge rather than growing a buffer without limit.
const MaxChatEventBytes = 8 << 20

// maxProblemBytes bounds how much of a non-2xx answer to a stream request is read.
const maxProblemBytes = 1 << 20

var (
	// ErrChatEventTooLarge ends a stream whose line or event is over MaxChatEventBytes.
	ErrChatEventTooLarge = errors.New("kiln: chat stream event too large")
	// ErrStreamShutdown ends a stream that the server cut because it is shutting down
	// (its `shutdown` event); the reply is incomplete, and the request may be sent again.
	ErrStreamShutdown = errors.New("kiln: the server shut the stream down")
)

// ChatEvent is one event of a chat stream. Type names it, and the field of that type
// holds its data: Citations for citations (a reply grounded in knowledge bases, before its
// first delta), Delta for message.delta, ToolCallDelta for tool_call.delta, ToolCall,
// ToolResult, Usage and Done; the others are nil. An event of a type this package does
// not know carries only ID, Type and Data. `error` and `shutdown` events are not
// delivered: they end the stream with an error (see ChatStream.Err).
type ChatEvent struct {
	// ID is the event's `id:`, 1, 2, … within the stream.
	ID int
	// Type is the event's `event:`.
	Type ChatEventType
	// Data is the event's JSON data, as sent.
	Data json.RawMessage

	Citations     *CitationsEvent
	Delta         *ChatDeltaEvent
	ToolCallDelta *ToolCallDeltaEvent
	ToolCall      *ToolCallEvent
	ToolResult    *ToolResultEvent
	Usage         *ChatUsage
	Done          *ChatDoneEvent
}

// ChatStream reads the events of a streamed chat reply (POST /v1/chat/completions with
// stream: true), in the style of bufio.Scanner:
//
//	stream, err := client.StreamChatCompletion(ctx, nil, kiln.ChatRequest{Messages: msgs})
//	if err != nil { ... } // a *ProblemError when the request was refused
//	defer stream.Close()
//	for stream.Next() {
//		if ev := stream.Event(); ev.Delta != nil {
//			fmt.Print(ev.Delta.Text)
//		}
//	}
//	if err := stream.Err(); err != nil { ... }
//
// Next returns false after the `done` event, which is the last one, or on an error: an
// `error` event (a *ProblemError), a `shutdown` (ErrStreamShutdown), a stream cut before
// `done` (io.ErrUnexpectedEOF), the context's end (its error) or a read error. Heartbeat
// comments are skipped. The end of the request's context closes the response body.
// A ChatStream is not safe for concurrent use, except for Close.
type ChatStream struct {
	ctx    context.Context
	resp   *http.Response
	lines  *lineReader
	data   bytes.Buffer
	lastID int
	stop   func() bool // unregisters the context.AfterFunc that closes the body

	ev      ChatEvent
	started bool // a line was read (the first may start with a byte order mark)
	ended   bool // Next returns false from now on
	done    bool // the done event was read
	err     error

	closeOnce sync.Once
	closed    atomic.Bool // Close was called: Next returns false, whatever is still buffered
}

// StreamChatCompletion sends body to POST /v1/chat/completions with stream set to true and
// returns the stream of the reply's events; Close it when done. A refused request (any
// non-2xx answer, such as an unknown model or a missing scope) is returned as a
// *ProblemError. params and reqEditors are those of CreateChatCompletion.
func (c *Client) StreamChatCompletion(ctx context.Context, params *CreateChatCompletionParams, body ChatRequest, reqEditors ...RequestEditorFn) (*ChatStream, error) {
	return streamChatCompletion(ctx, c, params, body, reqEditors)
}

// StreamChatCompletion is Client.StreamChatCompletion through the client c wraps.
func (c *ClientWithResponses) StreamChatCompletion(ctx context.Context, params *CreateChatCompletionParams, body ChatRequest, reqEditors ...RequestEditorFn) (*ChatStream, error) {
	return streamChatCompletion(ctx, c.ClientInterface, params, body, reqEditors)
}

func streamChatCompletion(ctx context.Context, c ClientInterface, params *CreateChatCompletionParams, body ChatRequest, reqEditors []RequestEditorFn) (*ChatStream, error) {
	stream := true
	body.Stream = &stream
	resp, err := c.CreateChatCompletion(ctx, params, body, append([]RequestEditorFn{acceptEventStream}, reqEditors...)...)
	if err != nil {
		return nil, err
	}
	return newChatStream(ctx, resp)
}

// acceptEventStream asks for the text/event-stream answer of an operation that has two.
func acceptEventStream(_ context.Context, req *http.Request) error {
	req.Header.Set("Accept", "text/event-stream")
	return nil
}

// newChatStream reads the events of resp, the answer to a stream request, or returns its
// error and closes it.
func newChatStream(ctx context.Context, resp *http.Response) (*ChatStream, error) {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
		if err != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, AsProblem(resp, body)
	}
	if mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mediaType != "text/event-stream" {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("kiln: chat stream answered %d with Content-Type %q, want text/event-stream",
			resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &ChatStream{ctx: ctx, resp: resp, lines: newLineReader(resp.Body, MaxChatEventBytes)}
	s.stop = context.AfterFunc(ctx, func() { _ = resp.Body.Close() })
	return s, nil
}

// Header returns the headers of the stream's response: Kiln-Provider and
// Kiln-Provider-Model name the target that serves the reply.
func (s *ChatStream) Header() http.Header { return s.resp.Header }

// Event returns the event the last successful Next read.
func (s *ChatStream) Event() ChatEvent { return s.ev }

// Err returns the error that ended the stream: nil after the done event (or while the
// stream runs), a *ProblemError for an `error` event, ErrStreamShutdown,
// io.ErrUnexpectedEOF, the context's error or a read or decoding error.
func (s *ChatStream) Err() error { return s.err }

// Close closes the response body, which cancels the reply on the server when it is still
// running. It is safe to call more than once, and concurrently with Next.
func (s *ChatStream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stop()
		_ = s.resp.Body.Close()
	})
	return nil
}

// Next reads the next event, which Event then returns. It returns false at the end of the
// stream, after which Err says why.
func (s *ChatStream) Next() bool {
	if s.ended || s.closed.Load() {
		return false
	}
	if s.done {
		// Lets the connection be reused: the server ends the body after done.
		_, _ = io.Copy(io.Discard, io.LimitReader(s.resp.Body, 4<<10))
		return s.end(nil)
	}
	if err := s.ctx.Err(); err != nil {
		return s.end(err)
	}
	ev, err := s.read()
	if err != nil {
		if ctxErr := s.ctx.Err(); ctxErr != nil {
			err = ctxErr // the body was closed by the context's end
		}
		return s.end(err)
	}
	switch ev.Type {
	case "shutdown":
		var shutdown StreamShutdownEvent
		_ = json.Unmarshal(ev.Data, &shutdown)
		return s.end(fmt.Errorf("%w: %s", ErrStreamShutdown, shutdown.Reason))
	case ChatEventTypeError:
		return s.end(s.problem(ev.Data))
	}
	if err := decodeChatEvent(&ev); err != nil {
		return s.end(err)
	}
	s.ev = ev
	s.done = ev.Type == ChatEventTypeDone
	return true
}

// end ends the stream with err and closes it.
func (s *ChatStream) end(err error) bool {
	s.ended, s.err, s.ev = true, err, ChatEvent{}
	_ = s.Close()
	return false
}

// read returns the next event of the stream with data; heartbeats and other comments,
// and events without data, are skipped. A stream that ends before the done event, even
// between two events, ends with io.ErrUnexpectedEOF.
func (s *ChatStream) read() (ChatEvent, error) {
	var ev ChatEvent
	s.data.Reset()
	hasData := false
	for {
		line, err := s.lines.readLine()
		if errors.Is(err, io.EOF) {
			return ChatEvent{}, fmt.Errorf("kiln: chat stream ended before its done event: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return ChatEvent{}, err
		}
		if !s.started {
			s.started = true
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		if len(line) == 0 { // the end of an event
			if hasData {
				ev.ID = s.lastID
				ev.Data = bytes.Clone(s.data.Bytes())
				return ev, nil
			}
			ev = ChatEvent{}
			continue
		}
		if line[0] == ':' {
			continue // a comment: `: heartbeat`
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(field) {
		case "data":
			if hasData {
				s.data.WriteByte('\n')
			}
			if s.data.Len()+len(value) > MaxChatEventBytes {
				return ChatEvent{}, ErrChatEventTooLarge
			}
			s.data.Write(value)
			hasData = true
		case "event":
			ev.Type = ChatEventType(value)
		case "id":
			id, err := strconv.Atoi(string(value))
			if err != nil {
				return ChatEvent{}, fmt.Errorf("kiln: chat stream: bad event id %q", value)
			}
			s.lastID = id
		}
	}
}

// problem returns the *ProblemError of an `error` event's data.
func (s *ChatStream) problem(data []byte) error {
	pe := &ProblemError{}
	if json.Unmarshal(data, &pe.Problem) != nil || pe.Code == "" {
		pe.Problem = Problem{Type: "about:blank", Title: "Stream error"}
		if detail := fallbackDetail(data); detail != "" {
			pe.Detail = &detail
		}
	}
	if pe.RequestId == "" {
		pe.RequestId = s.resp.Header.Get(RequestIDHeader)
	}
	return pe
}

// decodeChatEvent sets the typed field of ev from its data.
func decodeChatEvent(ev *ChatEvent) error {
	var v any
	switch ev.Type {
	case ChatEventTypeCitations:
		ev.Citations = new(CitationsEvent)
		v = ev.Citations
	case ChatEventTypeMessageDelta:
		ev.Delta = new(ChatDeltaEvent)
		v = ev.Delta
	case ChatEventTypeToolCallDelta:
		ev.ToolCallDelta = new(ToolCallDeltaEvent)
		v = ev.ToolCallDelta
	case ChatEventTypeToolCall:
		ev.ToolCall = new(ToolCallEvent)
		v = ev.ToolCall
	case ChatEventTypeToolResult:
		ev.ToolResult = new(ToolResultEvent)
		v = ev.ToolResult
	case ChatEventTypeUsage:
		ev.Usage = new(ChatUsage)
		v = ev.Usage
	case ChatEventTypeDone:
		ev.Done = new(ChatDoneEvent)
		v = ev.Done
	default:
		return nil // a newer event type: Data only
	}
	if err := json.Unmarshal(ev.Data, v); err != nil {
		return fmt.Errorf("kiln: chat stream: decode %s event %d: %w", ev.Type, ev.ID, err)
	}
	return nil
}

// lineReader reads the lines of an event stream, ended by \n, \r\n or a lone \r, as the
// format allows; a line longer than max is ErrChatEventTooLarge. Each byte is looked at
// once however the input is split, and a line is returned as soon as its end arrives.
type lineReader struct {
	r       io.Reader
	buf     []byte
	start   int  // the current line starts at buf[start]
	scanned int  // buf[start:scanned] has no line end
	end     int  // buf[:end] was read
	skipLF  bool // the last line ended with a \r at the end of the data: skip a \n next
	max     int
	readErr error
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: r, buf: make([]byte, 4<<10), max: max}
}

// readLine returns the next line without its end, valid until the next call, or io.EOF
// after the last one. A last line without an end is returned too.
func (l *lineReader) readLine() ([]byte, error) {
	for {
		if l.skipLF && l.start < l.end {
			l.skipLF = false
			if l.buf[l.start] == '\n' {
				l.start++
				l.scanned = l.start
			}
		}
		if i := bytes.IndexAny(l.buf[l.scanned:l.end], "\r\n"); i >= 0 {
			i += l.scanned
			line := l.buf[l.start:i]
			next := i + 1
			if l.buf[i] == '\r' {
				if next < l.end {
					if l.buf[next] == '\n' {
						next++
					}
				} else {
					l.skipLF = true
				}
			}
			l.start, l.scanned = next, next
			if len(line) > l.max {
				return nil, ErrChatEventTooLarge
			}
			return line, nil
		}
		l.scanned = l.end
		if l.end-l.start > l.max {
			return nil, ErrChatEventTooLarge
		}
		if l.readErr != nil {
			if l.start < l.end {
				line := l.buf[l.start:l.end]
				l.start, l.scanned = l.end, l.end
				return line, nil
			}
			return nil, l.readErr
		}
		l.fill()
	}
}

// fill reads more input, first making room in buf.
func (l *lineReader) fill() {
	if l.start > 0 { // move the current line to the front
		n := copy(l.buf, l.buf[l.start:l.end])
		l.scanned -= l.start
		l.start, l.end = 0, n
	}
	if l.end == len(l.buf) {
		l.buf = append(l.buf, make([]byte, len(l.buf))...)
	}
	n, err := l.r.Read(l.buf[l.end:])
	l.end += n
	if err != nil {
		l.readErr = err
	}
}

// ChatStreamResult is what a chat stream's events add up to.
type ChatStreamResult struct {
	// Citations are the citations event's sources, by number: nil unless the request was
	// grounded in knowledge bases (empty when none was retrieved).
	Citations []Citation
	// Text joins the text of every message.delta event.
	Text string
	// ToolCalls are the tool_call events, in order: the server's (Executor
	// ToolExecutorServer), answered by ToolResults, and the client's, which end the reply
	// with finish_reason tool_calls for the caller to run them.
	ToolCalls []ToolCallEvent
	// ToolResults are the results of the server's tool calls.
	ToolResults []ToolResultEvent
	// Usage is the usage event: the tokens and cost of the whole reply.
	Usage *ChatUsage
	// Done is the done event: the reply's id, the target that served it and its finish
	// reason. It is nil until the stream completed.
	Done *ChatDoneEvent

	text strings.Builder
}

// Add adds one event to r, for callers that read the events themselves:
//
//	var result kiln.ChatStreamResult
//	for stream.Next() {
//		result.Add(stream.Event())
//	}
func (r *ChatStreamResult) Add(ev ChatEvent) {
	switch {
	case ev.Citations != nil:
		r.Citations = ev.Citations.Citations
	case ev.Delta != nil:
		r.text.WriteString(ev.Delta.Text)
		r.Text = r.text.String()
	case ev.ToolCall != nil:
		r.ToolCalls = append(r.ToolCalls, *ev.ToolCall)
	case ev.ToolResult != nil:
		r.ToolResults = append(r.ToolResults, *ev.ToolResult)
	case ev.Usage != nil:
		r.Usage = ev.Usage
	case ev.Done != nil:
		r.Done = ev.Done
	}
}

// Message returns the reply as the assistant message to append to the conversation: its
// text and the client's tool calls (those to answer with `tool` messages).
func (r *ChatStreamResult) Message() ChatMessage {
	m := ChatMessage{Role: ChatRoleAssistant}
	if r.Text != "" {
		text := r.Text
		m.Content = &text
	}
	var calls []ToolCall
	for _, c := range r.ToolCalls {
		if c.Executor == ToolExecutorClient {
			calls = append(calls, ToolCall{Id: c.Id, Name: c.Name, Arguments: c.Arguments})
		}
	}
	if len(calls) > 0 {
		m.ToolCalls = &calls
	}
	return m
}

// Collect reads the rest of the stream, closes it and returns what its events add up
// to. The error is Err's; the result holds the events read before it.
func (s *ChatStream) Collect() (*ChatStreamResult, error) {
	defer s.Close()
	r := &ChatStreamResult{}
	for s.Next() {
		r.Add(s.Event())
	}
	return r, s.Err()
}
