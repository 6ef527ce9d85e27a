// Package llm is Kiln's one interface over language-model providers: a unified chat request
// (messages with text and image parts, tools, structured output, sampling parameters), a
// unified stream of typed events, embeddings and model listing. Adapters in subpackages
// speak each provider's wire format; the Gateway routes aliases to targets with failover.
package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
)

// Provider is one configured upstream. Implementations must be safe for concurrent use,
// honour ctx cancellation (closing the upstream connection), and return *Error for every
// failure the upstream reports.
type Provider interface {
	// Chat runs a request and returns the whole reply.
	Chat(ctx context.Context, req *Request) (*Response, error)
	// ChatStream runs a request and returns its events as they arrive. An error before
	// the stream starts (bad status, refused connection) is returned here; later errors
	// come from Stream.Next.
	ChatStream(ctx context.Context, req *Request) (Stream, error)
	// Embed returns one vector per input. Providers without embeddings return an
	// *Error with Kind Unsupported.
	Embed(ctx context.Context, req *EmbedRequest) (*EmbedResponse, error)
	// Models lists the models the upstream offers.
	Models(ctx context.Context) ([]Model, error)
}

// Stream is a reply arriving in events. Next returns io.EOF after the last event; Close
// releases the upstream connection and may be called at any time, more than once.
type Stream interface {
	Next() (Event, error)
	Close() error
}

// Role is the author of a message.
type Role string

// The roles of a conversation.
const (
	RoleSystem    Role = "system"
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
	RoleTool      Role = "tool" // a tool's result, answering the assistant's ToolCalls
)

// Message is one turn of a conversation.
type Message struct {
	Role    Role
	Content []Part
	// ToolCalls are the calls an assistant message asks for.
	ToolCalls []ToolCall
	// ToolCallID and Name identify the call a tool message answers (Gemini matches results
	// by function name, the others by id).
	ToolCallID string
	Name       string
}

// Text returns the concatenated text parts of m.
func (m Message) Text() string {
	if len(m.Content) == 1 {
		return m.Content[0].Text
	}
	var b strings.Builder
	for _, p := range m.Content {
		b.WriteString(p.Text)
	}
	return b.String()
}

// TextMessage is a message with a single text part.
func TextMessage(role Role, text string) Message {
	return Message{Role: role, Content: []Part{{Type: PartText, Text: text}}}
}

// PartType is the kind of a content part.
type PartType string

// The kinds of content part.
const (
	PartText  PartType = "text"
	PartImage PartType = "image"
)

// Part is one piece of message content: text, or an image given by URL or inline bytes.
type Part struct {
	Type  PartType
	Text  string
	Image *Image
}

// Image is an image input: either URL (http(s)) or Data with its MediaType.
type Image struct {
	URL       string
	MediaType string // e.g. image/png, for Data
	Data      []byte
	Detail    string // OpenAI's low, high or auto; empty: provider default
}

// Tool is a function the model may call; Parameters is its arguments' JSON Schema.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage
}

// ToolChoiceMode says whether and how the model must call tools.
type ToolChoiceMode string

// The tool choice modes.
const (
	ToolChoiceAuto     ToolChoiceMode = "auto"
	ToolChoiceNone     ToolChoiceMode = "none"
	ToolChoiceRequired ToolChoiceMode = "required" // some tool
	ToolChoiceTool     ToolChoiceMode = "tool"     // the tool named Name
)

// ToolChoice constrains tool use.
type ToolChoice struct {
	Mode ToolChoiceMode
	Name string
}

// ResponseFormat asks for structured output.
type ResponseFormat struct {
	Type   string // "text", "json_object" or "json_schema"
	Name   string // json_schema: the schema's name
	Schema json.RawMessage
	Strict bool
}

// Request is a provider-neutral chat request. Model is the upstream's own model name (the
// Gateway fills it in from the target); nil pointers leave the provider's default.
type Request struct {
	Model          string
	Messages       []Message
	Tools          []Tool
	ToolChoice     *ToolChoice
	ResponseFormat *ResponseFormat
	Temperature    *float64
	TopP           *float64
	MaxTokens      *int
	Stop           []string
	Seed           *int64
	User           string
}

// ToolCall is a call the model asks for. Arguments is a JSON object as text.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string
}

// Usage counts tokens. CachedTokens are the part of PromptTokens served from the
// provider's prompt cache.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
	CachedTokens     int
}

// Total is prompt plus completion tokens.
func (u Usage) Total() int { return u.PromptTokens + u.CompletionTokens }

// Add sums two usages.
func (u Usage) Add(v Usage) Usage {
	return Usage{u.PromptTokens + v.PromptTokens, u.CompletionTokens + v.CompletionTokens, u.CachedTokens + v.CachedTokens}
}

// FinishReason says why the model stopped.
type FinishReason string

// The finish reasons, normalised across providers.
const (
	FinishStop          FinishReason = "stop"
	FinishLength        FinishReason = "length"
	FinishToolCalls     FinishReason = "tool_calls"
	FinishContentFilter FinishReason = "content_filter"
	// FinishCancelled is Kiln's own: the caller stopped the reply.
	FinishCancelled FinishReason = "cancelled"
)

// Response is a whole reply: one assistant message.
type Response struct {
	ID           string
	Model        string // as reported by the upstream
	Message      Message
	FinishReason FinishReason
	Usage        Usage
}

// EventType is the kind of a stream event.
type EventType int

// The stream events. A stream yields any number of EventText and EventToolCallDelta, an
// EventToolCall for each complete call, at most one EventUsage and one EventFinish (usage
// may come after finish: OpenAI sends it in a last chunk of its own).
const (
	EventText          EventType = iota + 1 // Text holds the next piece of the reply
	EventToolCallDelta                      // Index, and a piece of ToolCall (ID and Name on the first piece, then Arguments pieces)
	EventToolCall                           // Index, and the complete ToolCall
	EventUsage                              // Usage of the whole request
	EventFinish                             // FinishReason
)

// Event is one item of a Stream.
type Event struct {
	Type         EventType
	Text         string
	Index        int
	ToolCall     ToolCall
	Usage        Usage
	FinishReason FinishReason
}

// EmbedRequest asks for embeddings of Input.
type EmbedRequest struct {
	Model      string
	Input      []string
	Dimensions *int
	User       string
}

// EmbedResponse holds one vector per input, in input order.
type EmbedResponse struct {
	Model   string
	Vectors [][]float32
	Usage   Usage
}

// Model is a model an upstream offers.
type Model struct {
	ID      string
	OwnedBy string
}

// Collect reads s to the end and assembles the reply, closing s.
func Collect(s Stream) (*Response, error) {
	defer s.Close()
	res := &Response{Message: Message{Role: RoleAssistant}}
	var text strings.Builder
	var calls ToolCallBuffer
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch ev.Type {
		case EventText:
			text.WriteString(ev.Text)
		case EventToolCallDelta:
			calls.Add(ev.Index, ev.ToolCall)
		case EventToolCall:
			calls.Set(ev.Index, ev.ToolCall)
		case EventUsage:
			res.Usage = ev.Usage
		case EventFinish:
			res.FinishReason = ev.FinishReason
		}
	}
	if text.Len() > 0 {
		res.Message.Content = []Part{{Type: PartText, Text: text.String()}}
	}
	res.Message.ToolCalls = calls.Calls()
	return res, nil
}
