package anthropic

import (
	"encoding/json"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

type messageResponse struct {
	ID         string          `json:"id"`
	Model      string          `json:"model"`
	Content    []responseBlock `json:"content"`
	StopReason string          `json:"stop_reason"`
	Usage      usage           `json:"usage"`
}

// responseBlock is an output content block; only text and tool_use are read, the others
// (thinking, server tool blocks) are not part of Kiln's reply.
type responseBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// usage is the Message's usage object and, with every field optional, message_delta's.
type usage struct {
	InputTokens              *int `json:"input_tokens"`
	OutputTokens             *int `json:"output_tokens"`
	CacheCreationInputTokens *int `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     *int `json:"cache_read_input_tokens"`
}

// tokens holds the counts seen so far in a stream.
type tokens struct {
	input, output, cacheCreation, cacheRead int
}

// merge takes the counts u carries; message_delta's are cumulative, so they replace.
func (t *tokens) merge(u *usage) {
	if u.InputTokens != nil {
		t.input = *u.InputTokens
	}
	if u.OutputTokens != nil {
		t.output = *u.OutputTokens
	}
	if u.CacheCreationInputTokens != nil {
		t.cacheCreation = *u.CacheCreationInputTokens
	}
	if u.CacheReadInputTokens != nil {
		t.cacheRead = *u.CacheReadInputTokens
	}
}

// usage converts to Kiln's counts. Anthropic's input_tokens excludes the prompt tokens
// written to and read from the cache, so the prompt is the sum of all three; the cache
// reads are the cached part.
func (t tokens) usage() llm.Usage {
	return llm.Usage{
		PromptTokens:     t.input + t.cacheCreation + t.cacheRead,
		CompletionTokens: t.output,
		CachedTokens:     t.cacheRead,
	}
}

func (m *messageResponse) toResponse(jsonTool string) *llm.Response {
	res := &llm.Response{ID: m.ID, Model: m.Model, Message: llm.Message{Role: llm.RoleAssistant}}
	var text strings.Builder
	for i := range m.Content {
		b := &m.Content[i]
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
		case "tool_use":
			args := string(b.Input)
			if strings.TrimSpace(args) == "" || args == "null" {
				args = "{}"
			}
			if jsonTool != "" && b.Name == jsonTool {
				text.WriteString(args)
				continue
			}
			res.Message.ToolCalls = append(res.Message.ToolCalls, llm.ToolCall{ID: b.ID, Name: b.Name, Arguments: args})
		}
	}
	if text.Len() > 0 {
		res.Message.Content = []llm.Part{{Type: llm.PartText, Text: text.String()}}
	}
	res.FinishReason = finishReason(m.StopReason, len(res.Message.ToolCalls) > 0)
	var t tokens
	t.merge(&m.Usage)
	res.Usage = t.usage()
	return res
}

// finishReason normalises a stop_reason. tool_use with no call of the caller's means the
// model answered through the structured-output tool, which is a plain stop to the caller.
func finishReason(stop string, toolCalls bool) llm.FinishReason {
	switch stop {
	case "max_tokens", "model_context_window_exceeded":
		return llm.FinishLength
	case "tool_use":
		if toolCalls {
			return llm.FinishToolCalls
		}
		return llm.FinishStop
	case "refusal":
		return llm.FinishContentFilter
	default: // end_turn, stop_sequence, pause_turn
		return llm.FinishStop
	}
}
