package openai

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	json "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/llm"
)

// chatRequest is the body of POST /chat/completions.
type chatRequest struct {
	Model               string          `json:"model,omitempty"`
	Messages            []wireMessage   `json:"messages"`
	Tools               []wireTool      `json:"tools,omitempty"`
	ToolChoice          any             `json:"tool_choice,omitempty"` // "auto" | "none" | "required" | wireToolChoice
	ResponseFormat      *responseFormat `json:"response_format,omitempty"`
	Temperature         *float64        `json:"temperature,omitempty"`
	TopP                *float64        `json:"top_p,omitempty"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	Stop                []string        `json:"stop,omitempty"`
	Seed                *int64          `json:"seed,omitempty"`
	User                string          `json:"user,omitempty"`
	Stream              bool            `json:"stream,omitempty"`
	StreamOptions       *streamOptions  `json:"stream_options,omitempty"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// wireMessage is one message. Content is a string, a []wirePart, or nil for an
// assistant message that only calls tools (encoded as null, which the spec allows there).
type wireMessage struct {
	Role       string         `json:"role"`
	Content    any            `json:"content"`
	ToolCalls  []wireToolCall `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

type wirePart struct {
	Type     string        `json:"type"`
	Text     string        `json:"text,omitempty"`
	ImageURL *wireImageURL `json:"image_url,omitempty"`
}

type wireImageURL struct {
	URL    string `json:"url"`
	Detail string `json:"detail,omitempty"`
}

type wireToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function wireFunction `json:"function"`
}

type wireFunction struct {
	Name      string    `json:"name"`
	Arguments arguments `json:"arguments"`
}

// arguments is a tool call's arguments: a JSON-encoded string per the spec, though some
// compatible servers send the object itself.
type arguments string

func (a *arguments) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		err := json.Unmarshal(b, &s)
		*a = arguments(s)
		return err
	case string(b) == "null":
		*a = ""
	default:
		*a = arguments(b)
	}
	return nil
}

type wireTool struct {
	Type     string          `json:"type"`
	Function wireToolDetails `json:"function"`
}

type wireToolDetails struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

type wireToolChoice struct {
	Type     string `json:"type"`
	Function struct {
		Name string `json:"name"`
	} `json:"function"`
}

type responseFormat struct {
	Type       string      `json:"type"`
	JSONSchema *jsonSchema `json:"json_schema,omitempty"`
}

type jsonSchema struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict bool            `json:"strict"`
}

// chatBody converts req to the wire request; a request Kiln can already tell is malformed
// is a KindInvalid error without a round trip.
func (p *Provider) chatBody(req *llm.Request, stream bool) (*chatRequest, error) {
	if req.Model == "" {
		return nil, p.invalid("model is required")
	}
	body := &chatRequest{
		Temperature: req.Temperature,
		TopP:        req.TopP,
		Stop:        req.Stop,
		Seed:        req.Seed,
		User:        req.User,
	}
	if p.typ != typeAzure {
		body.Model = req.Model // Azure takes the deployment from the path
	}
	if p.maxCompletionTokens {
		body.MaxCompletionTokens = req.MaxTokens
	} else {
		body.MaxTokens = req.MaxTokens
	}
	if stream {
		body.Stream = true
		body.StreamOptions = &streamOptions{IncludeUsage: true}
	}

	body.Messages = make([]wireMessage, len(req.Messages))
	for i, m := range req.Messages {
		wm, err := toWireMessage(m)
		if err != nil {
			return nil, p.invalid(fmt.Sprintf("messages[%d]: %v", i, err))
		}
		body.Messages[i] = wm
	}

	if len(req.Tools) > 0 {
		body.Tools = make([]wireTool, len(req.Tools))
		for i, t := range req.Tools {
			body.Tools[i] = wireTool{Type: "function", Function: wireToolDetails{Name: t.Name, Description: t.Description, Parameters: t.Parameters}}
		}
	}
	if tc := req.ToolChoice; tc != nil {
		switch tc.Mode {
		case llm.ToolChoiceAuto, llm.ToolChoiceNone, llm.ToolChoiceRequired:
			body.ToolChoice = string(tc.Mode)
		case llm.ToolChoiceTool:
			if tc.Name == "" {
				return nil, p.invalid("tool_choice: a tool name is required")
			}
			c := wireToolChoice{Type: "function"}
			c.Function.Name = tc.Name
			body.ToolChoice = c
		case "":
		default:
			return nil, p.invalid(fmt.Sprintf("tool_choice: unknown mode %q", tc.Mode))
		}
	}
	if rf := req.ResponseFormat; rf != nil && rf.Type != "" {
		body.ResponseFormat = &responseFormat{Type: rf.Type}
		if rf.Type == "json_schema" {
			name := rf.Name
			if name == "" {
				name = "response" // required upstream; the caller need not care
			}
			body.ResponseFormat.JSONSchema = &jsonSchema{Name: name, Schema: rf.Schema, Strict: rf.Strict}
		}
	}
	return body, nil
}

func toWireMessage(m llm.Message) (wireMessage, error) {
	wm := wireMessage{Role: string(m.Role), ToolCallID: m.ToolCallID}
	switch m.Role {
	case llm.RoleSystem, llm.RoleTool:
		// Text only; a plain string is what every compatible server accepts.
		wm.Content = m.Text()
	case llm.RoleAssistant:
		if text := m.Text(); text != "" || len(m.ToolCalls) == 0 {
			wm.Content = text
		}
		if len(m.ToolCalls) > 0 {
			wm.ToolCalls = make([]wireToolCall, len(m.ToolCalls))
			for i, c := range m.ToolCalls {
				args := c.Arguments
				if args == "" {
					args = "{}"
				}
				wm.ToolCalls[i] = wireToolCall{ID: c.ID, Type: "function", Function: wireFunction{Name: c.Name, Arguments: arguments(args)}}
			}
		}
	default:
		content, err := toWireContent(m.Content)
		if err != nil {
			return wm, err
		}
		wm.Content = content
	}
	return wm, nil
}

// toWireContent keeps the plain string form for a single text part, which older
// compatible servers require, and uses the parts array otherwise.
func toWireContent(parts []llm.Part) (any, error) {
	switch {
	case len(parts) == 0:
		return "", nil
	case len(parts) == 1 && parts[0].Type == llm.PartText:
		return parts[0].Text, nil
	}
	out := make([]wirePart, len(parts))
	for i, part := range parts {
		switch part.Type {
		case llm.PartText:
			out[i] = wirePart{Type: "text", Text: part.Text}
		case llm.PartImage:
			img := part.Image
			if img == nil || (img.URL == "" && len(img.Data) == 0) {
				return nil, fmt.Errorf("content[%d]: an image needs a URL or data", i)
			}
			u := img.URL
			if len(img.Data) > 0 {
				u = dataURL(img.MediaType, img.Data)
			}
			out[i] = wirePart{Type: "image_url", ImageURL: &wireImageURL{URL: u, Detail: img.Detail}}
		default:
			return nil, fmt.Errorf("content[%d]: unknown part type %q", i, part.Type)
		}
	}
	return out, nil
}

func dataURL(mediaType string, data []byte) string {
	if mediaType == "" {
		mediaType = http.DetectContentType(data)
	}
	const prefix, sep = "data:", ";base64,"
	var b strings.Builder
	b.Grow(len(prefix) + len(mediaType) + len(sep) + base64.StdEncoding.EncodedLen(len(data)))
	b.WriteString(prefix)
	b.WriteString(mediaType)
	b.WriteString(sep)
	enc := base64.NewEncoder(base64.StdEncoding, &b)
	_, _ = enc.Write(data)
	_ = enc.Close()
	return b.String()
}

// chatResponse is the body of a blocking completion.
type chatResponse struct {
	ID      string       `json:"id"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *wireUsage   `json:"usage"`
	Error   *wireError   `json:"error"`
}

type chatChoice struct {
	Index   int `json:"index"`
	Message struct {
		Content   string         `json:"content"`
		Refusal   string         `json:"refusal"`
		ToolCalls []wireToolCall `json:"tool_calls"`
	} `json:"message"`
	FinishReason string `json:"finish_reason"`
}

func (p *Provider) toResponse(w *chatResponse) (*llm.Response, error) {
	i := slices.IndexFunc(w.Choices, func(c chatChoice) bool { return c.Index == 0 })
	if i < 0 {
		return nil, llm.ProtocolError(p.name, "the chat completion has no choices")
	}
	c := &w.Choices[i]
	res := &llm.Response{ID: w.ID, Model: w.Model, Message: llm.Message{Role: llm.RoleAssistant}}
	text := c.Message.Content
	if text == "" {
		text = c.Message.Refusal // structured-output refusals replace the content
	}
	if text != "" {
		res.Message.Content = []llm.Part{{Type: llm.PartText, Text: text}}
	}
	if n := len(c.Message.ToolCalls); n > 0 {
		res.Message.ToolCalls = make([]llm.ToolCall, n)
		for j, tc := range c.Message.ToolCalls {
			args := string(tc.Function.Arguments)
			if strings.TrimSpace(args) == "" {
				args = "{}"
			}
			res.Message.ToolCalls[j] = llm.ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: args}
		}
	}
	res.FinishReason = finishReason(c.FinishReason, len(res.Message.ToolCalls) > 0)
	if w.Usage != nil {
		res.Usage = w.Usage.toUsage()
	}
	return res, nil
}

// finishReason normalises the upstream's reason. Some compatible servers report stop for
// a reply that calls tools; an agent loop must still see tool_calls.
func finishReason(reason string, hasToolCalls bool) llm.FinishReason {
	switch reason {
	case "length":
		return llm.FinishLength
	case "tool_calls", "function_call":
		return llm.FinishToolCalls
	case "content_filter":
		return llm.FinishContentFilter
	}
	if hasToolCalls {
		return llm.FinishToolCalls
	}
	return llm.FinishStop
}

type wireUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	// DeepSeek reports its context-cache hits here instead.
	PromptCacheHitTokens int `json:"prompt_cache_hit_tokens"`
}

func (u *wireUsage) toUsage() llm.Usage {
	out := llm.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.PromptCacheHitTokens}
	if u.PromptTokensDetails != nil && u.PromptTokensDetails.CachedTokens > 0 {
		out.CachedTokens = u.PromptTokensDetails.CachedTokens
	}
	return out
}

// wireError is {"error": {...}}'s value. Code is a string at OpenAI and Azure, a number
// at OpenRouter and vLLM; some servers send the error as a bare string.
type wireError struct {
	Message string          `json:"message"`
	Type    string          `json:"type"`
	Code    json.RawMessage `json:"code"`
}

func (e *wireError) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &e.Message)
	}
	type plain wireError
	return json.Unmarshal(b, (*plain)(e))
}

// code returns the error code as text, and as a number when it is one.
func (e *wireError) code() (string, int) {
	c := bytes.TrimSpace(e.Code)
	if len(c) == 0 || string(c) == "null" {
		return "", 0
	}
	if c[0] == '"' {
		var s string
		_ = json.Unmarshal(c, &s)
		n, _ := strconv.Atoi(s) // Azure sends "429" as a string
		return s, n
	}
	n, _ := strconv.Atoi(string(c))
	return string(c), n
}

func (e *wireError) typeAndMessage() (string, string) {
	typ := e.Type
	if typ == "" {
		typ, _ = e.code()
	}
	return typ, e.Message
}

// kind classifies an error that came without an HTTP status (mid-stream or in a 200
// body). A failure during generation is the upstream's, so the default is retryable.
func (e *wireError) kind() llm.ErrorKind {
	code, n := e.code()
	if n >= 400 && n <= 599 {
		return llm.KindForStatus(n)
	}
	for _, s := range [2]string{e.Type, code} {
		switch {
		case strings.Contains(s, "rate_limit"), s == "tokens", s == "requests", s == "insufficient_quota":
			return llm.KindRateLimited
		case s == "invalid_api_key", s == "authentication_error", s == "permission_error":
			return llm.KindAuth
		case s == "invalid_request_error", s == "context_length_exceeded", s == "content_filter":
			return llm.KindInvalid
		}
	}
	return llm.KindOverloaded
}

// decodeError reads the documented error body {"error":{"message","type","param","code"}},
// and vLLM's older top-level {"object":"error","message","type","code"}.
func decodeError(body []byte) (string, string) {
	var w struct {
		Error   *wireError      `json:"error"`
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	}
	if json.Unmarshal(body, &w) != nil {
		return "", ""
	}
	if w.Error != nil {
		return w.Error.typeAndMessage()
	}
	top := wireError{Message: w.Message, Type: w.Type, Code: w.Code}
	return top.typeAndMessage()
}

// embedRequest is the body of POST /embeddings.
type embedRequest struct {
	Model          string   `json:"model,omitempty"`
	Input          []string `json:"input"`
	Dimensions     *int     `json:"dimensions,omitempty"`
	User           string   `json:"user,omitempty"`
	EncodingFormat string   `json:"encoding_format,omitempty"`
}

type embedResponse struct {
	Model string `json:"model"`
	Data  []struct {
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"` // []float or base64 of little-endian float32
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
	} `json:"usage"`
	Error *wireError `json:"error"`
}

// vectors places each vector at its input's index, whatever order the upstream used.
func (w *embedResponse) vectors(n int) ([][]float32, error) {
	if len(w.Data) != n {
		return nil, fmt.Errorf("%d vectors for %d inputs", len(w.Data), n)
	}
	out := make([][]float32, n)
	for _, d := range w.Data {
		if d.Index < 0 || d.Index >= n || out[d.Index] != nil {
			return nil, fmt.Errorf("vector index %d out of range or repeated", d.Index)
		}
		v, err := decodeVector(d.Embedding)
		if err != nil {
			return nil, fmt.Errorf("vector %d: %w", d.Index, err)
		}
		out[d.Index] = v
	}
	return out, nil
}

func decodeVector(raw json.RawMessage) ([]float32, error) {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, err
		}
		if len(b)%4 != 0 {
			return nil, fmt.Errorf("base64 vector of %d bytes", len(b))
		}
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return v, nil
	}
	v := []float32{}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}
