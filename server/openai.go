package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

// The OpenAI-compatible surface speaks OpenAI's wire format, whose unions (content as a
// string or parts, stop as a string or a list, tool_choice as a string or an object) the
// spec describes loosely on purpose: these types decode it, the spec only bounds it.

// isOpenAIRoute reports whether r is under /openai, where every error, a 404 or 405 of the
// router included, is in OpenAI's error body so OpenAI SDKs can show it.
func isOpenAIRoute(r *http.Request) bool {
	return r.URL.Path == "/openai" || strings.HasPrefix(r.URL.Path, "/openai/")
}

// writeOpenAIError writes e in OpenAI's body shape. A quota's refusal is OpenAI's own
// insufficient_quota (type and code), the figures in its message.
func writeOpenAIError(w http.ResponseWriter, e *errs.Error) {
	code := e.Code
	pt, ok := catalog[code]
	if !ok {
		code, pt = errs.Internal, catalog[errs.Internal]
	}
	typ := "api_error"
	switch pt.Status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusConflict, http.StatusMethodNotAllowed:
		typ = "invalid_request_error"
	case http.StatusUnauthorized:
		typ = "authentication_error"
	case http.StatusForbidden:
		typ = "permission_error"
	case http.StatusNotFound:
		typ = "not_found_error"
	case http.StatusTooManyRequests:
		typ = "rate_limit_error"
	case http.StatusGatewayTimeout:
		typ = "timeout_error"
	}
	body := openAIError{}
	body.Error.Message, body.Error.Type, body.Error.Code = e.Message, typ, string(code)
	if code == errs.QuotaExceeded {
		body.Error.Type, body.Error.Code = openAIInsufficientQuota, openAIInsufficientQuota
	}
	if len(e.Fields) > 0 {
		param := strings.ReplaceAll(strings.TrimPrefix(e.Fields[0].Pointer, "/"), "/", ".")
		body.Error.Param = &param
		for _, f := range e.Fields { // OpenAI has no list of field errors: the message carries them
			body.Error.Message += " " + strings.TrimPrefix(f.Pointer, "/") + ": " + f.Message + "."
		}
	}
	writeErrorBody(w, "application/json", body, pt.Status)
}

// openAIInsufficientQuota is OpenAI's type and code of a refusal for quota.
const openAIInsufficientQuota = "insufficient_quota"

type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

type oaiChatRequest struct {
	Model         string       `json:"model"`
	Messages      []oaiMessage `json:"messages"`
	Stream        bool         `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
	ToolChoice     json.RawMessage `json:"tool_choice"`
	ResponseFormat *struct {
		Type       string `json:"type"`
		JSONSchema *struct {
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict bool            `json:"strict"`
		} `json:"json_schema"`
	} `json:"response_format"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stop                json.RawMessage `json:"stop"`
	Seed                *int64          `json:"seed"`
	User                string          `json:"user"`
	Cache               *bool           `json:"cache"` // Kiln's extension: the response cache
}

type oaiMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []oaiToolCall   `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

type oaiToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type oaiPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL struct {
		URL    string `json:"url"`
		Detail string `json:"detail"`
	} `json:"image_url"`
}

// openAIChatRequest reads the chat request of r from the value the validator decoded, so
// the body is parsed once. A request with tools or a response format is decoded from its
// bytes instead, so their JSON Schemas reach the provider byte for byte as sent.
func openAIChatRequest(r *http.Request) (oaiChatRequest, error) {
	var body oaiChatRequest
	v, raw, err := bodyOf(r)
	if err != nil {
		return body, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return body, errors.New("the body is not an object")
	}
	if hasMember(m, "tools") || hasMember(m, "response_format") {
		return body, json.Unmarshal(raw, &body)
	}
	err = eachField(m, oaiChatFields, func(name string, v any) error {
		var err error
		switch name {
		case "model":
			body.Model, err = stringOf(v)
		case "messages":
			body.Messages, err = oaiMessagesOf(v)
		case "stream":
			body.Stream, err = boolOf(v)
		case "stream_options":
			var o map[string]any
			if o, err = objectOf(v); err == nil && o != nil {
				body.StreamOptions = &struct {
					IncludeUsage bool `json:"include_usage"`
				}{}
				err = eachField(o, []string{"include_usage"}, func(_ string, v any) error {
					var err error
					body.StreamOptions.IncludeUsage, err = boolOf(v)
					return err
				})
			}
		case "tool_choice":
			body.ToolChoice, err = rawOf(v)
		case "stop":
			body.Stop, err = rawOf(v)
		case "temperature":
			body.Temperature, err = floatOf(v)
		case "top_p":
			body.TopP, err = floatOf(v)
		case "max_tokens":
			body.MaxTokens, err = intOf(v)
		case "max_completion_tokens":
			body.MaxCompletionTokens, err = intOf(v)
		case "seed":
			body.Seed, err = int64Of(v)
		case "user":
			body.User, err = stringOf(v)
		case "cache":
			var c bool
			if c, err = boolOf(v); v != nil && err == nil {
				body.Cache = &c
			}
		}
		return err
	})
	return body, err
}

var oaiChatFields = []string{"model", "messages", "stream", "stream_options", "tool_choice", "stop", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "user", "cache"}

func oaiMessagesOf(v any) ([]oaiMessage, error) {
	list, err := arrayOf(v)
	if err != nil {
		return nil, err
	}
	out := make([]oaiMessage, len(list))
	for i, item := range list {
		m, err := objectOf(item)
		if err != nil {
			return nil, err
		}
		msg := &out[i]
		err = eachField(m, []string{"role", "content", "name", "tool_calls", "tool_call_id"}, func(name string, v any) error {
			var err error
			switch name {
			case "role":
				msg.Role, err = stringOf(v)
			case "content":
				msg.Content, err = rawOf(v)
			case "name":
				msg.Name, err = stringOf(v)
			case "tool_call_id":
				msg.ToolCallID, err = stringOf(v)
			case "tool_calls":
				var raw json.RawMessage
				if raw, err = rawOf(v); err == nil && raw != nil {
					err = json.Unmarshal(raw, &msg.ToolCalls)
				}
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hasMember reports whether m has name, matched as encoding/json matches a field.
func hasMember(m map[string]any, name string) bool {
	found := false
	_ = eachField(m, []string{name}, func(string, any) error { found = true; return nil })
	return found
}

// eachField calls set with each member of m whose key names a field, matched as
// encoding/json matches struct fields: exactly, else ignoring case (an exact key wins).
func eachField(m map[string]any, fields []string, set func(field string, v any) error) error {
	for k, v := range m {
		field := k
		if !slices.Contains(fields, k) {
			i := slices.IndexFunc(fields, func(f string) bool { return strings.EqualFold(f, k) })
			if i < 0 {
				continue
			}
			if field = fields[i]; hasKey(m, field) {
				continue
			}
		}
		if err := set(field, v); err != nil {
			return err
		}
	}
	return nil
}

func hasKey(m map[string]any, k string) bool { _, ok := m[k]; return ok }

// The decoded value's members as the typed decoder would have read them: null leaves the
// field as it is; a value of another type is an error.

func stringOf(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	}
	return "", errors.New("not a string")
}

func boolOf(v any) (bool, error) {
	switch v := v.(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	}
	return false, errors.New("not a boolean")
}

func floatOf(v any) (*float64, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		f, err := v.Float64()
		return &f, err
	}
	return nil, errors.New("not a number")
}

func intOf(v any) (*int, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, strconv.IntSize)
		i := int(n)
		return &i, err
	}
	return nil, errors.New("not an integer")
}

func int64Of(v any) (*int64, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, 64)
		return &n, err
	}
	return nil, errors.New("not an integer")
}

func objectOf(v any) (map[string]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	}
	return nil, errors.New("not an object")
}

func arrayOf(v any) ([]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return v, nil
	}
	return nil, errors.New("not an array")
}

// rawOf is a union member (content, stop, tool_choice) as JSON for toOpenAICall: a string
// is quoted without the encoder, the rest encoded.
func rawOf(v any) (json.RawMessage, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return json.RawMessage(jsonString(v)), nil
	}
	return json.Marshal(v)
}

// toOpenAICall converts OpenAI's request into a runner call, naming each bad field.
func toOpenAICall(b *oaiChatRequest) (chat.Call, error) {
	c := chat.Call{Alias: b.Model}
	req := &c.Request
	var fields []errs.FieldError
	bad := func(pointer, msg string) { fields = append(fields, errs.FieldError{Pointer: pointer, Message: msg}) }
	for i, m := range b.Messages {
		at := "/messages/" + strconv.Itoa(i)
		role := llm.Role(m.Role)
		if m.Role == "developer" {
			role = llm.RoleSystem
		}
		msg := llm.Message{Role: role, ToolCallID: m.ToolCallID, Name: m.Name}
		switch {
		case len(m.Content) == 0 || string(m.Content) == "null":
		case m.Content[0] == '"':
			var text string
			if err := json.Unmarshal(m.Content, &text); err != nil {
				bad(at+"/content", "must be a string or an array of parts")
			}
			msg.Content = []llm.Part{{Type: llm.PartText, Text: text}}
		default:
			var parts []oaiPart
			if err := json.Unmarshal(m.Content, &parts); err != nil {
				bad(at+"/content", "must be a string or an array of parts")
			}
			for j, p := range parts {
				switch p.Type {
				case "text":
					msg.Content = append(msg.Content, llm.Part{Type: llm.PartText, Text: p.Text})
				case "image_url":
					img, err := imageFromURL(p.ImageURL.URL)
					if err != nil {
						bad(at+"/content/"+strconv.Itoa(j)+"/image_url/url", err.Error())
						continue
					}
					img.Detail = p.ImageURL.Detail
					msg.Content = append(msg.Content, llm.Part{Type: llm.PartImage, Image: img})
				default:
					bad(at+"/content/"+strconv.Itoa(j)+"/type", "must be text or image_url")
				}
			}
		}
		for _, tc := range m.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		req.Messages = append(req.Messages, msg)
	}
	for i, t := range b.Tools {
		if t.Type != "function" || t.Function.Name == "" {
			bad("/tools/"+strconv.Itoa(i), "must be a function tool with a name")
			continue
		}
		params := t.Function.Parameters
		if len(params) == 0 {
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		req.Tools = append(req.Tools, llm.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: params})
	}
	if len(b.ToolChoice) > 0 && string(b.ToolChoice) != "null" {
		var mode string
		if json.Unmarshal(b.ToolChoice, &mode) == nil {
			switch mode {
			case "auto", "none", "required":
				req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceMode(mode)}
			default:
				bad("/tool_choice", "must be auto, none, required or a function")
			}
		} else {
			var named struct {
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			}
			if json.Unmarshal(b.ToolChoice, &named) != nil || named.Function.Name == "" {
				bad("/tool_choice", "must be auto, none, required or a function")
			}
			req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: named.Function.Name}
		}
	}
	if rf := b.ResponseFormat; rf != nil {
		req.ResponseFormat = &llm.ResponseFormat{Type: rf.Type}
		if rf.Type == "json_schema" {
			if rf.JSONSchema == nil || len(rf.JSONSchema.Schema) == 0 {
				bad("/response_format/json_schema", "is required for type json_schema")
			} else {
				req.ResponseFormat.Name, req.ResponseFormat.Schema, req.ResponseFormat.Strict = rf.JSONSchema.Name, rf.JSONSchema.Schema, rf.JSONSchema.Strict
			}
		}
	}
	if len(b.Stop) > 0 && string(b.Stop) != "null" {
		var one string
		if json.Unmarshal(b.Stop, &one) == nil {
			req.Stop = []string{one}
		} else if json.Unmarshal(b.Stop, &req.Stop) != nil || len(req.Stop) > 4 {
			bad("/stop", "must be a string or up to 4 strings")
		}
	}
	req.Temperature, req.TopP, req.Seed, req.User = b.Temperature, b.TopP, b.Seed, b.User
	req.MaxTokens = b.MaxCompletionTokens
	if req.MaxTokens == nil {
		req.MaxTokens = b.MaxTokens
	}
	c.Cache = useCache(b.Cache, req.Temperature)
	return c, errs.InvalidFields("invalid chat completion request", fields)
}

// imageFromURL accepts an http(s) URL or a base64 data URL.
func imageFromURL(u string) (*llm.Image, error) {
	if rest, ok := strings.CutPrefix(u, "data:"); ok {
		meta, data, found := strings.Cut(rest, ",")
		mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
		if !found || !isBase64 {
			return nil, errors.New("a data URL must be base64: data:<type>;base64,<data>")
		}
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, errors.New("the data URL is not valid base64")
		}
		return &llm.Image{MediaType: mediaType, Data: b}, nil
	}
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		return nil, errors.New("must be an http(s) or data URL")
	}
	return &llm.Image{URL: u}, nil
}

// openAIModelKnown returns the not_found error of a model alias the catalog lacks, naming
// this API's own list (the runner's names /v1/models, which OpenAI clients do not know).
func (s *Server) openAIModelKnown(alias string) error {
	if !s.llm.Runner.Gateway.Has(alias) {
		return errs.E(errs.NotFound, "No model named %q; GET /openai/v1/models lists them.", alias)
	}
	return nil
}

// openaiCreateChatCompletion serves POST /openai/v1/chat/completions.
func (s *Server) openaiCreateChatCompletion(w http.ResponseWriter, r *http.Request) {
	body, err := openAIChatRequest(r)
	if err != nil {
		s.respondError(w, r, &errs.Error{Code: errs.MalformedJSON, Message: "The request body could not be decoded."})
		return
	}
	r, who, call, cancel, ok := s.beginCall(w, r, func(caller) (chat.Call, error) {
		call, err := toOpenAICall(&body)
		if err == nil {
			err = s.openAIModelKnown(body.Model)
		}
		return call, err
	})
	defer cancel()
	if !ok {
		return
	}
	ctx := r.Context()
	start := time.Now()
	id := "chatcmpl-" + uuid.Must(uuid.NewV7()).String()
	if !body.Stream {
		res, err := s.llm.Runner.Run(ctx, call, nil)
		s.recordUsage(r, who, "openai.chat", call.Alias, start, res, err, nil)
		if err != nil {
			s.respondError(w, r, err)
			return
		}
		setServedHeaders(w, res.Served, res.Cache)
		writeCompletion(w, toOpenAICompletion(id, call.Alias, start, res))
		return
	}
	cw := &chunkWriter{w: w, rc: http.NewResponseController(w)}
	cw.prefix = []byte(`{"id":"` + id + `","object":"chat.completion.chunk","created":` + strconv.FormatInt(start.Unix(), 10) + `,"model":` + jsonString(call.Alias) + `,`)
	res, err := s.llm.Runner.Run(ctx, call, func(ev chat.Event) error {
		switch ev.Kind {
		case chat.EventStart:
			setServedHeaders(w, ev.Served, ev.Cache)
			return cw.choice(`{"role":"assistant","content":""}`, "null")
		case chat.EventDelta:
			return cw.choice(`{"content":`+jsonString(ev.Text)+`}`, "null")
		case chat.EventToolCallDelta:
			tc := oaiToolCall{Index: &ev.Index, ID: ev.Call.ID}
			if ev.Call.ID != "" {
				tc.Type = "function"
			}
			tc.Function.Name, tc.Function.Arguments = ev.Call.Name, ev.Call.Arguments
			b, _ := json.Marshal([]oaiToolCall{tc})
			return cw.choice(`{"tool_calls":`+string(b)+`}`, "null")
		}
		return nil
	})
	s.recordUsage(r, who, "openai.chat", call.Alias, start, res, err, nil)
	switch {
	case err != nil && !cw.started:
		s.respondError(w, r, err)
		return
	case err != nil:
		if r.Context().Err() == nil || errors.Is(r.Context().Err(), context.DeadlineExceeded) {
			c := s.classify(r, err)
			var e openAIError
			e.Error.Message, e.Error.Type, e.Error.Code = c.Message, "api_error", string(c.Code)
			b, _ := json.Marshal(e)
			_ = cw.data(b)
		}
		return
	}
	_ = cw.choice("{}", jsonString(string(res.FinishReason)))
	if body.StreamOptions != nil && body.StreamOptions.IncludeUsage {
		u, _ := json.Marshal(toOpenAIUsage(res.Usage))
		_ = cw.chunk(`"choices":[],"usage":`, string(u))
	}
	_ = cw.data([]byte("[DONE]"))
}

// writeCompletion writes a blocking completion as writeJSON would, encoded by go-json in
// one write: the gateway's hot path.
func writeCompletion(w http.ResponseWriter, c oaiCompletion) {
	b, err := json.Marshal(c)
	if err != nil {
		writeJSON(w, http.StatusOK, c) // not reached: the type always encodes
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// chunkWriter writes OpenAI's stream: `data:` lines only (OpenAI SDKs treat `event:`
// lines as other streams), flushed per chunk.
type chunkWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	prefix  []byte // `{"id":…,"model":…,` : every chunk's opening
	buf     []byte
	started bool
}

// choice writes a chunk of one choice with delta and finish_reason (JSON).
func (c *chunkWriter) choice(delta, finish string) error {
	return c.chunk(`"choices":[{"index":0,"delta":`, delta, `,"logprobs":null,"finish_reason":`, finish, `}]`)
}

// chunk writes a chat.completion.chunk whose remaining fields are the concatenation of rest.
func (c *chunkWriter) chunk(rest ...string) error {
	c.buf = append(append(c.buf[:0], "data: "...), c.prefix...)
	for _, r := range rest {
		c.buf = append(c.buf, r...)
	}
	c.buf = append(c.buf, "}\n\n"...)
	return c.write(c.buf)
}

// data writes one `data:` line of payload.
func (c *chunkWriter) data(payload []byte) error {
	c.buf = append(append(append(c.buf[:0], "data: "...), payload...), "\n\n"...)
	return c.write(c.buf)
}

func (c *chunkWriter) write(b []byte) error {
	if !c.started {
		c.started = true
		commitEventStream(c.w)
	}
	if _, err := c.w.Write(b); err != nil {
		return err
	}
	return c.rc.Flush()
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type oaiUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func toOpenAIUsage(u llm.Usage) oaiUsage {
	out := oaiUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.Total()}
	out.PromptTokensDetails.CachedTokens = u.CachedTokens
	return out
}

type oaiCompletion struct {
	ID      string      `json:"id"`
	Object  string      `json:"object"`
	Created int64       `json:"created"`
	Model   string      `json:"model"`
	Choices []oaiChoice `json:"choices"`
	Usage   oaiUsage    `json:"usage"`
}

type oaiChoice struct {
	Index   int `json:"index"`
	Message struct {
		Role      string        `json:"role"`
		Content   *string       `json:"content"`
		ToolCalls []oaiToolCall `json:"tool_calls,omitempty"`
	} `json:"message"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason string    `json:"finish_reason"`
}

func toOpenAICompletion(id, alias string, start time.Time, res *chat.Result) oaiCompletion {
	out := oaiCompletion{ID: id, Object: "chat.completion", Created: start.Unix(), Model: alias, Usage: toOpenAIUsage(res.Usage)}
	out.Choices = make([]oaiChoice, 1)
	ch := &out.Choices[0]
	ch.Message.Role, ch.FinishReason = "assistant", string(res.FinishReason)
	if text := res.Message.Text(); text != "" || len(res.Message.ToolCalls) == 0 {
		ch.Message.Content = &text
	}
	for _, c := range res.Message.ToolCalls {
		tc := oaiToolCall{ID: c.ID, Type: "function"}
		tc.Function.Name, tc.Function.Arguments = c.Name, c.Arguments
		ch.Message.ToolCalls = append(ch.Message.ToolCalls, tc)
	}
	return out
}

type oaiEmbeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

// openaiCreateEmbeddings serves POST /openai/v1/embeddings.
func (s *Server) openaiCreateEmbeddings(w http.ResponseWriter, r *http.Request) {
	var body oaiEmbeddingRequest
	if !s.decodeBody(w, r, &body) {
		return
	}
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	var inputs []string
	var one string
	if json.Unmarshal(body.Input, &one) == nil {
		inputs = []string{one}
	} else if json.Unmarshal(body.Input, &inputs) != nil {
		s.respondError(w, r, errs.InvalidFields("invalid embeddings request", []errs.FieldError{{Pointer: "/input", Message: "must be a string or an array of strings (token arrays are not supported)"}}))
		return
	}
	if err := s.openAIModelKnown(body.Model); err != nil {
		s.respondError(w, r, err)
		return
	}
	ctx, cancel := s.bound(r.Context(), who)
	defer cancel()
	r = r.WithContext(ctx)
	start := time.Now()
	res, served, err := s.llm.Runner.Gateway.Embed(ctx, body.Model, &llm.EmbedRequest{Input: inputs, Dimensions: body.Dimensions, User: body.User})
	result := &chat.Result{Served: served, Attempts: len(served.Attempts)}
	if err == nil {
		result.Usage, result.Cost = res.Usage, served.Target.Price.Cost(res.Usage)
	}
	s.recordUsage(r, who, "openai.embeddings", body.Model, start, result, err, nil)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	type item struct {
		Object    string `json:"object"`
		Index     int    `json:"index"`
		Embedding any    `json:"embedding"`
	}
	data := make([]item, len(res.Vectors))
	for i, v := range res.Vectors {
		data[i] = item{Object: "embedding", Index: i, Embedding: v}
		if body.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(f))
			}
			data[i].Embedding = base64.StdEncoding.EncodeToString(b)
		}
	}
	setServedHeaders(w, served, "")
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "model": body.Model,
		"usage": map[string]int{"prompt_tokens": res.Usage.PromptTokens, "total_tokens": res.Usage.PromptTokens},
	})
}

// openaiListModels serves GET /openai/v1/models.
func (s *Server) openaiListModels(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	aliases := s.llm.Runner.Gateway.Aliases()
	data := make([]model, len(aliases))
	for i, a := range aliases {
		data[i] = model{ID: a, Object: "model", Created: s.started.Unix(), OwnedBy: "kiln"}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
