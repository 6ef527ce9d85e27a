package conversations

import (
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

// The token estimate: about four bytes of text per token, a fixed cost per image and per
// message. It errs on the large side for English and code; providers count exactly.
const (
	bytesPerToken = 4
	imageTokens   = 1000
	messageTokens = 4
)

// EstimateTokens is the approximate prompt size of m.
func EstimateTokens(m llm.Message) int {
	n := messageTokens
	for _, p := range m.Content {
		if p.Image != nil {
			n += imageTokens
			continue
		}
		n += (len(p.Text) + bytesPerToken - 1) / bytesPerToken
	}
	for _, c := range m.ToolCalls {
		n += (len(c.Name) + len(c.Arguments) + bytesPerToken - 1) / bytesPerToken
	}
	return n
}

// Window is the context-window policy: the history a reply is generated from, when the
// whole of it does not fit in budget tokens (the model's context window less the reply's
// max tokens and the prompt's own messages). It keeps the newest turns that fit and drops
// the older ones whole, a turn being a user message with everything after it up to the
// next user message, so a tool call is never sent without its result. The last turn
// (the one being answered) is always kept: when it alone is too big the request is
// refused. Replies that ended without content are left out; a cancelled or failed reply
// is sent as the text it had. It returns the messages and how many it dropped.
func Window(history []Message, budget int) ([]llm.Message, int, error) {
	var msgs []llm.Message
	for _, m := range history {
		if sent, ok := windowed(m); ok {
			msgs = append(msgs, sent)
		}
	}
	// Turn starts, newest last.
	var starts []int
	for i, m := range msgs {
		if i == 0 || m.Role == llm.RoleUser {
			starts = append(starts, i)
		}
	}
	used := 0
	keepFrom := len(msgs)
	for t := len(starts) - 1; t >= 0; t-- {
		end := len(msgs)
		if t+1 < len(starts) {
			end = starts[t+1]
		}
		size := 0
		for _, m := range msgs[starts[t]:end] {
			size += EstimateTokens(m)
		}
		if used+size > budget {
			if t == len(starts)-1 {
				return nil, 0, errs.E(errs.Invalid, "The message does not fit the model's context window (about %d tokens, %d available).", size, budget)
			}
			break
		}
		used += size
		keepFrom = starts[t]
	}
	return msgs[keepFrom:], keepFrom, nil
}

// windowed is m as a reply's history sends it, and false for a message it leaves out.
func windowed(m Message) (llm.Message, bool) {
	if m.Role == llm.RoleAssistant && m.Status != Completed {
		if m.Content == "" {
			return llm.Message{}, false
		}
		m.ToolCalls = nil
	}
	return m.LLM(), true
}
