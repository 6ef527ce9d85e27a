package ollama

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

// The wire types mirror Ollama's native API (docs/api.md, docs.ollama.com/api/chat):
// only the fields Kiln sends or reads; unknown response fields are ignored.

type chatRequest struct {
	Model    string          `json:"model"`
	Messages []message       `json:"messages"`
	Tools    []tool          `json:"tools,omitempty"`
	Format   json.RawMessage `json:"format,omitempty"`
	Options  *options        `json:"options,omitempty"`
	Stream   bool            `json:"stream"`
}

type message struct {
	Role      string     `json:"role"`
	Content   string     `json:"content"`
	Images    []string   `json:"images,omitempty"`
	ToolCalls []toolCall `json:"tool_calls,omitempty"`
	ToolName  string     `json:"tool_name,omitempty"`
}

type toolCall struct {
	ID       string       `json:"id,omitempty"`
	Function toolFunction `json:"function"`
}

type toolFunction struct {
	Name string `json:"name"`
	// Arguments is a JSON object on the wire, not a string as in OpenAI's format.
	Arguments json.RawMessage `json:"arguments"`
}

type tool struct {
	Type     string         `json:"type"`
	Function toolDefinition `json:"function"`
}

type toolDefinition struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
}

// options holds the Modelfile parameters Kiln maps; pointers so that an explicit zero
// (temperature 0) is sent and an unset value leaves the model's default.
type options struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	NumPredict  *int     `json:"num_predict,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *int64   `json:"seed,omitempty"`
}

// chatResponse is both the blocking reply and one line of a stream. Error is set on
// the line Ollama writes when generation fails after the status line was sent.
type chatResponse struct {
	Model   string `json:"model"`
	Message struct {
		Content string `json:"content"`
		// Thinking (reasoning models) is not part of Kiln's unified reply; not decoded.
		ToolCalls []toolCall `json:"tool_calls"`
	} `json:"message"`
	Done            bool            `json:"done"`
	DoneReason      string          `json:"done_reason"`
	PromptEvalCount int             `json:"prompt_eval_count"`
	EvalCount       int             `json:"eval_count"`
	Error           json.RawMessage `json:"error"`
}

type embedRequest struct {
	Model      string   `json:"model"`
	Input      []string `json:"input"`
	Dimensions *int     `json:"dimensions,omitempty"`
}

type embedResponse struct {
	Model           string      `json:"model"`
	Embeddings      [][]float32 `json:"embeddings"`
	PromptEvalCount int         `json:"prompt_eval_count"`
}

type tagsResponse struct {
	Models []struct {
		Name string `json:"name"`
	} `json:"models"`
}

var (
	formatJSON      = json.RawMessage(`"json"`)
	emptyObject     = json.RawMessage(`{}`)
	emptyParameters = json.RawMessage(`{"type":"object","properties":{}}`)
)

// toChatRequest maps a unified request to Ollama's; a request Ollama cannot express
// (an image by URL, malformed tool arguments, an unknown role) is an *llm.Error of
// KindInvalid, so the Gateway does not retry it elsewhere in vain.
func (p *Provider) toChatRequest(req *llm.Request, stream bool) (*chatRequest, error) {
	out := &chatRequest{Model: req.Model, Stream: stream, Messages: make([]message, 0, len(req.Messages))}
	for i := range req.Messages {
		m, err := p.toMessage(req.Messages, i)
		if err != nil {
			return nil, err
		}
		out.Messages = append(out.Messages, m)
	}

	// Ollama has no tool_choice: "none" is honoured by sending no tools; "required" and
	// a named tool cannot be enforced, so the model decides as with "auto".
	if len(req.Tools) > 0 && (req.ToolChoice == nil || req.ToolChoice.Mode != llm.ToolChoiceNone) {
		out.Tools = make([]tool, len(req.Tools))
		for i, t := range req.Tools {
			params := t.Parameters
			if len(bytes.TrimSpace(params)) == 0 {
				params = emptyParameters
			}
			out.Tools[i] = tool{Type: "function", Function: toolDefinition{Name: t.Name, Description: t.Description, Parameters: params}}
		}
	}

	if rf := req.ResponseFormat; rf != nil {
		switch rf.Type {
		case "json_object":
			out.Format = formatJSON
		case "json_schema":
			if len(bytes.TrimSpace(rf.Schema)) == 0 {
				out.Format = formatJSON
			} else {
				out.Format = rf.Schema
			}
		}
	}

	// User has no Ollama counterpart and is dropped; keep_alive is left to the server.
	if req.Temperature != nil || req.TopP != nil || req.MaxTokens != nil || len(req.Stop) > 0 || req.Seed != nil {
		out.Options = &options{Temperature: req.Temperature, TopP: req.TopP, NumPredict: req.MaxTokens, Stop: req.Stop, Seed: req.Seed}
	}
	return out, nil
}

func (p *Provider) toMessage(msgs []llm.Message, i int) (message, error) {
	m := &msgs[i]
	switch m.Role {
	case llm.RoleSystem, llm.RoleUser, llm.RoleAssistant, llm.RoleTool:
	default:
		return message{}, p.invalid("message %d: unknown role %q", i, m.Role)
	}
	out := message{Role: string(m.Role)}

	var text strings.Builder
	texts := 0
	for j := range m.Content {
		part := &m.Content[j]
		switch part.Type {
		case llm.PartText:
			// One text part is the common case: no builder copy.
			if texts == 0 {
				out.Content = part.Text
			} else {
				if texts == 1 {
					text.WriteString(out.Content)
				}
				text.WriteString(part.Text)
			}
			texts++
		case llm.PartImage:
			img, err := p.toImage(part.Image, i)
			if err != nil {
				return message{}, err
			}
			out.Images = append(out.Images, img)
		default:
			return message{}, p.invalid("message %d: unsupported content part type %q", i, part.Type)
		}
	}
	if texts > 1 {
		out.Content = text.String()
	}

	if len(m.ToolCalls) > 0 {
		out.ToolCalls = make([]toolCall, len(m.ToolCalls))
		for j, tc := range m.ToolCalls {
			args := json.RawMessage(strings.TrimSpace(tc.Arguments))
			if len(args) == 0 {
				args = emptyObject
			} else if args[0] != '{' || !json.Valid(args) {
				return message{}, p.invalid("message %d: tool call %q: arguments must be a JSON object", i, tc.Name)
			}
			out.ToolCalls[j] = toolCall{Function: toolFunction{Name: tc.Name, Arguments: args}}
		}
	}

	if m.Role == llm.RoleTool {
		out.ToolName = m.Name
		if out.ToolName == "" {
			out.ToolName = toolNameFor(msgs[:i], m.ToolCallID)
		}
	}
	return out, nil
}

// toolNameFor finds the function a tool result answers when the caller gave only the
// call id: Ollama matches results by tool_name.
func toolNameFor(earlier []llm.Message, id string) string {
	if id == "" {
		return ""
	}
	for i := len(earlier) - 1; i >= 0; i-- {
		for _, tc := range earlier[i].ToolCalls {
			if tc.ID == id {
				return tc.Name
			}
		}
	}
	return ""
}

// toImage returns the base64 payload Ollama's images field takes. Ollama cannot fetch
// URLs and Kiln does not fetch them on its behalf; a data: URL already carries the bytes.
func (p *Provider) toImage(img *llm.Image, msg int) (string, error) {
	if img == nil {
		return "", p.invalid("message %d: image part without an image", msg)
	}
	if len(img.Data) > 0 {
		return base64.StdEncoding.EncodeToString(img.Data), nil
	}
	if rest, ok := strings.CutPrefix(img.URL, "data:"); ok {
		if meta, payload, ok := strings.Cut(rest, ","); ok && strings.HasSuffix(meta, ";base64") && payload != "" {
			return payload, nil
		}
		return "", p.invalid("message %d: image data URL must be base64-encoded", msg)
	}
	if img.URL != "" {
		return "", p.invalid("message %d: Ollama does not accept image URLs; send the image inline as bytes", msg)
	}
	return "", p.invalid("message %d: image part has neither data nor URL", msg)
}

// toolCallFrom converts a call as Ollama sends it, whole; Ollama usually sends no id,
// so one is synthesised from the call's index in the reply.
func toolCallFrom(tc *toolCall, index int) llm.ToolCall {
	id := tc.ID
	if id == "" {
		id = "call_" + strconv.Itoa(index)
	}
	return llm.ToolCall{ID: id, Name: tc.Function.Name, Arguments: argumentsText(tc.Function.Arguments)}
}

// argumentsText turns Ollama's arguments object into the JSON text Kiln carries. A
// string (as some proxies in front of Ollama send) is taken as the JSON text itself.
func argumentsText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "{}"
	case raw[0] == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil && strings.TrimSpace(s) != "" {
			return s
		}
		return "{}"
	}
	return string(raw)
}

// finishReason normalises done_reason; a reply that called tools finished to let the
// caller run them, even though Ollama reports "stop".
func finishReason(doneReason string, calledTools bool) llm.FinishReason {
	switch {
	case doneReason == "length":
		return llm.FinishLength
	case calledTools:
		return llm.FinishToolCalls
	}
	return llm.FinishStop
}

// errorMessage reads an error value: Ollama sends a string; OpenAI-style proxies in
// front of it may send {"message", "type"}.
func errorMessage(raw json.RawMessage) (typ, msg string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", ""
	}
	if raw[0] == '"' {
		_ = json.Unmarshal(raw, &msg)
		return "", msg
	}
	var obj struct {
		Type    string `json:"type"`
		Code    any    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		typ = obj.Type
		if typ == "" && obj.Code != nil {
			typ = fmt.Sprint(obj.Code)
		}
		return typ, obj.Message
	}
	return "", string(raw)
}

// decodeError extracts the message from an error response body for llm.StatusError.
func decodeError(body []byte) (typ, msg string) {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return errorMessage(e.Error)
}
