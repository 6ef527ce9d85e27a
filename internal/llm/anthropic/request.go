package anthropic

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

// defaultJSONTool names the answer tool of an emulated json_object or unnamed schema.
const defaultJSONTool = "json_output"

// objectSchema stands in for a missing schema: input_schema is required and must be an object.
var objectSchema = json.RawMessage(`{"type":"object"}`)

type messagesRequest struct {
	Model         string           `json:"model"`
	MaxTokens     int              `json:"max_tokens"`
	System        string           `json:"system,omitempty"`
	Messages      []message        `json:"messages"`
	Tools         []tool           `json:"tools,omitempty"`
	ToolChoice    *toolChoice      `json:"tool_choice,omitempty"`
	OutputConfig  *outputConfig    `json:"output_config,omitempty"`
	Temperature   *float64         `json:"temperature,omitempty"`
	TopP          *float64         `json:"top_p,omitempty"`
	StopSequences []string         `json:"stop_sequences,omitempty"`
	Metadata      *requestMetadata `json:"metadata,omitempty"`
	Stream        bool             `json:"stream,omitempty"`
}

type requestMetadata struct {
	UserID string `json:"user_id"`
}

type message struct {
	Role    string  `json:"role"`
	Content []block `json:"content"`
}

// block is every input content block Kiln sends: text, image, tool_use and tool_result.
type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text,omitempty"`
	Source    *imageSource    `json:"source,omitempty"`
	ID        string          `json:"id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	ToolUseID string          `json:"tool_use_id,omitempty"`
	// Content is a tool_result's: a string, or []block when the result has images.
	Content any `json:"content,omitempty"`
}

type imageSource struct {
	Type      string `json:"type"` // base64 or url
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
}

type toolChoice struct {
	Type string `json:"type"` // auto, any, tool or none
	Name string `json:"name,omitempty"`
}

type outputConfig struct {
	Format outputFormat `json:"format"`
}

type outputFormat struct {
	Type   string          `json:"type"` // json_schema
	Schema json.RawMessage `json:"schema"`
}

// buildRequest maps req to the wire. jsonTool is the name of the tool that stands in for
// structured output ("" when none does): its input is the reply's text.
func (p *Provider) buildRequest(req *llm.Request, stream bool) (body *messagesRequest, jsonTool string, err error) {
	out := &messagesRequest{
		Model:         req.Model,
		MaxTokens:     DefaultMaxTokens,
		Temperature:   req.Temperature,
		TopP:          req.TopP,
		StopSequences: req.Stop,
		Stream:        stream,
		Messages:      make([]message, 0, len(req.Messages)),
	}
	if req.MaxTokens != nil {
		out.MaxTokens = *req.MaxTokens
	}
	if req.User != "" {
		out.Metadata = &requestMetadata{UserID: req.User}
	}
	// req.Seed is dropped: the Messages API has no seed.
	if err := p.mapMessages(out, req.Messages); err != nil {
		return nil, "", err
	}
	if len(req.Tools) > 0 {
		out.Tools = make([]tool, 0, len(req.Tools)+1)
		for _, t := range req.Tools {
			schema := t.Parameters
			if len(schema) == 0 {
				schema = objectSchema
			}
			out.Tools = append(out.Tools, tool{Name: t.Name, Description: t.Description, InputSchema: schema})
		}
		if req.ToolChoice != nil {
			tc, err := p.mapToolChoice(req.ToolChoice)
			if err != nil {
				return nil, "", err
			}
			out.ToolChoice = tc
		}
	}
	jsonTool, err = p.mapResponseFormat(out, req)
	if err != nil {
		return nil, "", err
	}
	return out, jsonTool, nil
}

func (p *Provider) mapToolChoice(tc *llm.ToolChoice) (*toolChoice, error) {
	switch tc.Mode {
	case llm.ToolChoiceAuto, "":
		return &toolChoice{Type: "auto"}, nil
	case llm.ToolChoiceNone:
		return &toolChoice{Type: "none"}, nil
	case llm.ToolChoiceRequired:
		return &toolChoice{Type: "any"}, nil
	case llm.ToolChoiceTool:
		if tc.Name == "" {
			return nil, p.invalid("tool_choice names no tool")
		}
		return &toolChoice{Type: "tool", Name: tc.Name}, nil
	}
	return nil, p.invalid("unknown tool_choice mode " + string(tc.Mode))
}

// mapResponseFormat picks how structured output is asked for. A strict json_schema uses the
// native output_config.format: constrained decoding guarantees the schema, but only on the
// models that offer it (Claude 4.5 and later) and only for the JSON Schema subset Anthropic
// accepts (objects with additionalProperties false, no numeric or length bounds); the
// upstream rejects the rest with a 400. Everything else (json_object, a non-strict
// json_schema) is emulated with a forced tool whose input is the answer, which every tool-
// capable model accepts with any schema.
func (p *Provider) mapResponseFormat(out *messagesRequest, req *llm.Request) (string, error) {
	rf := req.ResponseFormat
	if rf == nil {
		return "", nil
	}
	switch rf.Type {
	case "", "text":
		return "", nil
	case "json_schema":
		if len(rf.Schema) == 0 {
			return "", p.invalid("json_schema response format has no schema")
		}
		if rf.Strict {
			out.OutputConfig = &outputConfig{Format: outputFormat{Type: "json_schema", Schema: rf.Schema}}
			return "", nil
		}
	case "json_object":
	default:
		return "", p.invalid("unsupported response format " + rf.Type)
	}
	name := rf.Name
	if name == "" {
		name = defaultJSONTool
	}
	schema := rf.Schema
	if len(schema) == 0 {
		schema = objectSchema
	}
	out.Tools = append(out.Tools, tool{
		Name:        name,
		Description: "Give your final answer as this tool's input.",
		InputSchema: schema,
	})
	// Forcing the answer tool would forbid the caller's own tools; with tools on offer the
	// model must call some tool: one of the caller's, or the answer tool.
	switch {
	case len(req.Tools) == 0:
		out.ToolChoice = &toolChoice{Type: "tool", Name: name}
	case req.ToolChoice == nil:
		out.ToolChoice = &toolChoice{Type: "any"}
	case req.ToolChoice.Mode == llm.ToolChoiceNone:
		out.ToolChoice = &toolChoice{Type: "tool", Name: name}
	case req.ToolChoice.Mode == llm.ToolChoiceTool:
		// the caller forces its own tool; the answer comes on a later turn
	default:
		out.ToolChoice = &toolChoice{Type: "any"}
	}
	return name, nil
}

// mapMessages hoists system messages into system and merges adjacent turns of one role:
// the API wants user and assistant to alternate, and tool results travel in user turns.
func (p *Provider) mapMessages(out *messagesRequest, msgs []llm.Message) error {
	var system strings.Builder
	for i := range msgs {
		m := &msgs[i]
		var role string
		var blocks []block
		switch m.Role {
		case llm.RoleSystem:
			text := m.Text()
			if text == "" {
				continue
			}
			if system.Len() > 0 {
				system.WriteString("\n\n")
			}
			system.WriteString(text)
			continue
		case llm.RoleUser:
			role = "user"
			var err error
			if blocks, err = p.contentBlocks(nil, m.Content); err != nil {
				return err
			}
		case llm.RoleAssistant:
			role = "assistant"
			var err error
			if blocks, err = p.contentBlocks(nil, m.Content); err != nil {
				return err
			}
			for _, c := range m.ToolCalls {
				input := json.RawMessage(strings.TrimSpace(c.Arguments))
				if len(input) == 0 {
					input = json.RawMessage("{}")
				} else if !json.Valid(input) {
					return p.invalid("arguments of tool call " + c.ID + " are not valid JSON")
				}
				blocks = append(blocks, block{Type: "tool_use", ID: c.ID, Name: c.Name, Input: input})
			}
		case llm.RoleTool:
			role = "user"
			b, err := p.toolResult(m)
			if err != nil {
				return err
			}
			blocks = []block{b}
		default:
			return p.invalid("unknown message role " + string(m.Role))
		}
		if len(blocks) == 0 {
			continue // the API rejects empty turns
		}
		if n := len(out.Messages); n > 0 && out.Messages[n-1].Role == role {
			out.Messages[n-1].Content = append(out.Messages[n-1].Content, blocks...)
			continue
		}
		out.Messages = append(out.Messages, message{Role: role, Content: blocks})
	}
	out.System = system.String()
	return nil
}

func (p *Provider) toolResult(m *llm.Message) (block, error) {
	b := block{Type: "tool_result", ToolUseID: m.ToolCallID}
	textOnly := true
	for _, part := range m.Content {
		if part.Type == llm.PartImage {
			textOnly = false
			break
		}
	}
	if textOnly {
		if text := m.Text(); text != "" {
			b.Content = text
		}
		return b, nil
	}
	content, err := p.contentBlocks(nil, m.Content)
	if err != nil {
		return block{}, err
	}
	b.Content = content
	return b, nil
}

// contentBlocks appends parts as text and image blocks; empty text is dropped because the
// API rejects empty text blocks.
func (p *Provider) contentBlocks(dst []block, parts []llm.Part) ([]block, error) {
	for _, part := range parts {
		switch part.Type {
		case llm.PartText, "":
			if part.Text != "" {
				dst = append(dst, block{Type: "text", Text: part.Text})
			}
		case llm.PartImage:
			src, err := p.imageSource(part.Image)
			if err != nil {
				return nil, err
			}
			dst = append(dst, block{Type: "image", Source: src})
		default:
			return nil, p.invalid("unsupported content part " + string(part.Type))
		}
	}
	return dst, nil
}

func (p *Provider) imageSource(img *llm.Image) (*imageSource, error) {
	switch {
	case img == nil:
		return nil, p.invalid("image part has no image")
	case len(img.Data) > 0:
		if img.MediaType == "" {
			return nil, p.invalid("inline image has no media type")
		}
		return &imageSource{Type: "base64", MediaType: img.MediaType, Data: base64.StdEncoding.EncodeToString(img.Data)}, nil
	case strings.HasPrefix(img.URL, "data:"):
		// A data URL (how OpenAI clients inline images) is passed on as base64 without
		// decoding; the API only fetches http(s) URLs itself.
		meta, data, ok := strings.Cut(img.URL[len("data:"):], ",")
		mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isBase64 || mediaType == "" || data == "" {
			return nil, p.invalid("image data URL is not base64 with a media type")
		}
		return &imageSource{Type: "base64", MediaType: mediaType, Data: data}, nil
	case img.URL != "":
		return &imageSource{Type: "url", URL: img.URL}, nil
	}
	return nil, p.invalid("image part has neither data nor URL")
}

func (p *Provider) invalid(msg string) *llm.Error {
	return &llm.Error{Provider: p.name, Kind: llm.KindInvalid, Message: msg}
}
