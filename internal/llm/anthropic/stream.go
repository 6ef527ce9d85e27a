package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

// streamEvent is every event's data, decoded into one reused value: content_block_delta and
// message_delta share delta, and message_start's usage sits under message.
type streamEvent struct {
	Type    string `json:"type"`
	Index   int    `json:"index"`
	Message struct {
		Usage usage `json:"usage"`
	} `json:"message"`
	ContentBlock struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Name string `json:"name"`
		Text string `json:"text"`
	} `json:"content_block"`
	Delta struct {
		Type        string `json:"type"`
		Text        string `json:"text"`
		PartialJSON string `json:"partial_json"`
		StopReason  string `json:"stop_reason"`
	} `json:"delta"`
	Usage usage     `json:"usage"`
	Error errorBody `json:"error"`
}

type blockKind uint8

const (
	blockOther blockKind = iota // thinking, server tools: not part of Kiln's reply
	blockText
	blockTool // a call for the caller
	blockJSON // the structured-output tool: its input is the reply's text
)

// openBlock is a content block between its start and stop events.
type openBlock struct {
	index   int // Anthropic's content block index
	kind    blockKind
	ordinal int // blockTool: the call's index among the reply's tool calls
	id      string
	name    string
	args    []byte
	wrote   bool // blockJSON: some text was emitted
}

// stream turns Anthropic's named SSE events into llm events. Calls are assembled per block
// rather than in an llm.ToolCallBuffer: Anthropic marks each block's end, so a call is
// complete at its content_block_stop and nothing needs sorting at the end.
type stream struct {
	ctx      context.Context
	provider string
	body     io.ReadCloser
	r        *sse.Reader
	jsonTool string

	ev     streamEvent
	queue  []llm.Event
	next   int
	blocks []openBlock
	calls  int // tool calls seen, the next call's ordinal
	tok    tokens
	stop   string
	err    error // terminal: io.EOF after message_stop, or the failure

	closeOnce sync.Once
	closeErr  error
}

func newStream(ctx context.Context, provider string, body io.ReadCloser, jsonTool string) *stream {
	return &stream{
		ctx:      ctx,
		provider: provider,
		body:     body,
		r:        sse.NewReader(body),
		jsonTool: jsonTool,
		queue:    make([]llm.Event, 0, 4),
	}
}

// Next returns the next event; io.EOF after message_stop.
func (s *stream) Next() (llm.Event, error) {
	for {
		if s.next < len(s.queue) {
			ev := s.queue[s.next]
			s.next++
			return ev, nil
		}
		if s.err != nil {
			return llm.Event{}, s.err
		}
		s.queue, s.next = s.queue[:0], 0
		s.err = s.read()
	}
}

// Close releases the connection; it may be called any number of times.
func (s *stream) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.body.Close() })
	return s.closeErr
}

// read handles one SSE event, queueing what it yields; a non-nil result ends the stream.
func (s *stream) read() error {
	raw, err := s.r.Next()
	if err != nil {
		return s.readError(err)
	}
	s.ev = streamEvent{}
	if err := json.Unmarshal(raw.Data, &s.ev); err != nil {
		return llm.ProtocolError(s.provider, "decode %s event: %v", raw.Event, err)
	}
	typ := s.ev.Type
	if typ == "" {
		typ = raw.Event
	}
	switch typ {
	case "message_start":
		s.tok.merge(&s.ev.Message.Usage)
	case "content_block_start":
		s.blockStart()
	case "content_block_delta":
		s.blockDelta()
	case "content_block_stop":
		if i := s.find(s.ev.Index); i >= 0 {
			s.finishBlock(&s.blocks[i])
			s.blocks = append(s.blocks[:i], s.blocks[i+1:]...)
		}
	case "message_delta":
		if s.ev.Delta.StopReason != "" {
			s.stop = s.ev.Delta.StopReason
		}
		s.tok.merge(&s.ev.Usage)
	case "message_stop":
		for i := range s.blocks { // blocks never stopped still owe their complete call
			s.finishBlock(&s.blocks[i])
		}
		s.blocks = s.blocks[:0]
		s.emit(llm.Event{Type: llm.EventUsage, Usage: s.tok.usage()})
		s.emit(llm.Event{Type: llm.EventFinish, FinishReason: finishReason(s.stop, s.calls > 0)})
		return io.EOF
	case "error":
		msg := s.ev.Error.Message
		if msg == "" {
			msg = "the upstream reported an error mid-stream"
		}
		return &llm.Error{Provider: s.provider, Kind: kindForType(s.ev.Error.Type), Type: s.ev.Error.Type, Message: msg}
	}
	// ping, and event types added after this adapter, carry nothing for Kiln
	return nil
}

func (s *stream) readError(err error) error {
	switch {
	case s.ctx.Err() != nil:
		return llm.TransportError(s.ctx, s.provider, s.ctx.Err())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		// Err is never io.EOF itself: errors.Is(err, io.EOF) must not mistake a cut for the end.
		return &llm.Error{Provider: s.provider, Kind: llm.KindConnection, Message: "the stream ended before message_stop", Err: io.ErrUnexpectedEOF}
	case errors.Is(err, sse.ErrTooLarge):
		return llm.ProtocolError(s.provider, "stream event larger than %d bytes", sse.MaxEventBytes)
	}
	return llm.TransportError(s.ctx, s.provider, err)
}

func (s *stream) blockStart() {
	cb := &s.ev.ContentBlock
	if i := s.find(s.ev.Index); i >= 0 { // a repeated start replaces the block
		s.blocks = append(s.blocks[:i], s.blocks[i+1:]...)
	}
	b := openBlock{index: s.ev.Index}
	switch {
	case cb.Type == "text":
		b.kind = blockText
		if cb.Text != "" {
			s.emit(llm.Event{Type: llm.EventText, Text: cb.Text})
		}
	case cb.Type == "tool_use" && s.jsonTool != "" && cb.Name == s.jsonTool:
		b.kind = blockJSON
	case cb.Type == "tool_use":
		b.kind, b.ordinal, b.id, b.name = blockTool, s.calls, cb.ID, cb.Name
		s.calls++
		s.emit(llm.Event{Type: llm.EventToolCallDelta, Index: b.ordinal, ToolCall: llm.ToolCall{ID: cb.ID, Name: cb.Name}})
	}
	s.blocks = append(s.blocks, b)
}

func (s *stream) blockDelta() {
	d := &s.ev.Delta
	i := s.find(s.ev.Index)
	switch d.Type {
	case "text_delta":
		if d.Text != "" && (i < 0 || s.blocks[i].kind == blockText) {
			s.emit(llm.Event{Type: llm.EventText, Text: d.Text})
		}
	case "input_json_delta":
		if i < 0 || d.PartialJSON == "" {
			return
		}
		b := &s.blocks[i]
		switch b.kind {
		case blockTool:
			b.args = append(b.args, d.PartialJSON...)
			s.emit(llm.Event{Type: llm.EventToolCallDelta, Index: b.ordinal, ToolCall: llm.ToolCall{Arguments: d.PartialJSON}})
		case blockJSON:
			b.wrote = true
			s.emit(llm.Event{Type: llm.EventText, Text: d.PartialJSON})
		}
	}
	// thinking_delta, signature_delta, citations_delta: not part of Kiln's reply
}

// finishBlock emits what a completed block owes: a tool call in full, or, for an answer
// tool that streamed nothing, the empty object its input was.
func (s *stream) finishBlock(b *openBlock) {
	switch b.kind {
	case blockTool:
		args := "{}"
		if len(b.args) > 0 {
			args = string(b.args)
		}
		s.emit(llm.Event{Type: llm.EventToolCall, Index: b.ordinal, ToolCall: llm.ToolCall{ID: b.id, Name: b.name, Arguments: args}})
	case blockJSON:
		if !b.wrote {
			s.emit(llm.Event{Type: llm.EventText, Text: "{}"})
		}
	}
}

func (s *stream) find(index int) int {
	for i := range s.blocks {
		if s.blocks[i].index == index {
			return i
		}
	}
	return -1
}

func (s *stream) emit(ev llm.Event) { s.queue = append(s.queue, ev) }
