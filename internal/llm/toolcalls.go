package llm

import (
	"slices"
	"strings"
)

// ToolCallBuffer assembles tool calls from streamed pieces, keyed by the call's index in
// the reply. The zero value is ready to use.
type ToolCallBuffer struct {
	calls map[int]*toolCallParts
}

type toolCallParts struct {
	id, name string
	args     strings.Builder
}

// Add appends a piece: a non-empty ID or Name sets it, Arguments is appended.
func (b *ToolCallBuffer) Add(index int, piece ToolCall) {
	p := b.at(index)
	if piece.ID != "" {
		p.id = piece.ID
	}
	if piece.Name != "" {
		p.name = piece.Name
	}
	p.args.WriteString(piece.Arguments)
}

// Set replaces the call at index with a complete one.
func (b *ToolCallBuffer) Set(index int, call ToolCall) {
	p := b.at(index)
	p.id, p.name = call.ID, call.Name
	p.args.Reset()
	p.args.WriteString(call.Arguments)
}

func (b *ToolCallBuffer) at(index int) *toolCallParts {
	if b.calls == nil {
		b.calls = map[int]*toolCallParts{}
	}
	p, ok := b.calls[index]
	if !ok {
		p = &toolCallParts{}
		b.calls[index] = p
	}
	return p
}

// Len is the number of calls seen.
func (b *ToolCallBuffer) Len() int { return len(b.calls) }

// Calls returns the assembled calls in index order; empty arguments become "{}".
func (b *ToolCallBuffer) Calls() []ToolCall {
	if len(b.calls) == 0 {
		return nil
	}
	idx := make([]int, 0, len(b.calls))
	for i := range b.calls {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]ToolCall, len(idx))
	for n, i := range idx {
		p := b.calls[i]
		args := p.args.String()
		if strings.TrimSpace(args) == "" {
			args = "{}"
		}
		out[n] = ToolCall{ID: p.id, Name: p.name, Arguments: args}
	}
	return out
}

// Indexes returns the indexes of the calls seen, in order.
func (b *ToolCallBuffer) Indexes() []int {
	idx := make([]int, 0, len(b.calls))
	for i := range b.calls {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return idx
}
