package server

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	json "github.com/goccy/go-json"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/responses"
	"github.com/kilnhq/kiln/internal/streams"
)

// The OpenAI Responses API over Kiln's conversations (internal/responses): these types
// decode OpenAI's request (input items, flat function tools) and write its response object
// and its response.* stream events; the spec only bounds them.

type oaiResponseRequest struct {
	Model              string            `json:"model"`
	Input              json.RawMessage   `json:"input"`
	Instructions       *string           `json:"instructions"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Stream             *bool             `json:"stream"`
	Store              *bool             `json:"store"`
	Tools              []oaiResponseTool `json:"tools"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	Metadata           map[string]string `json:"metadata"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls"`
	User               string            `json:"user"`
}

// oaiResponseTool is a tool in the Responses API's flat shape.
type oaiResponseTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

type oaiInputItem struct {
	Type      string          `json:"type"` // "" with a role: a message
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

type oaiInputPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL string `json:"image_url"`
	Detail   string `json:"detail"`
}

// oaiResponseOptions is what a response echoes of its request beside its model,
// instructions and metadata; stored as it is (responses.Response.Options).
type oaiResponseOptions struct {
	Tools             []oaiResponseTool `json:"tools"`
	ToolChoice        json.RawMessage   `json:"tool_choice"`
	Temperature       *float64          `json:"temperature"`
	TopP              *float64          `json:"top_p"`
	MaxOutputTokens   *int              `json:"max_output_tokens"`
	ParallelToolCalls bool              `json:"parallel_tool_calls"`
	User              *string           `json:"user,omitempty"`
}

// oaiResponseCall is a decoded Responses request: the runner call (instructions and the
// input's system messages first), the input's other messages, and the echo.
type oaiResponseCall struct {
	call     chat.Call
	input    []llm.Message
	previous *uuid.UUID
	stream   bool
	store    bool
	options  oaiResponseOptions
}

// toResponseCall converts OpenAI's request, naming each bad field.
func toResponseCall(b *oaiResponseRequest) (oaiResponseCall, error) {
	out := oaiResponseCall{stream: b.Stream != nil && *b.Stream, store: b.Store == nil || *b.Store}
	var fields []errs.FieldError
	bad := func(pointer, msg string) { fields = append(fields, errs.FieldError{Pointer: pointer, Message: msg}) }
	c := &out.call
	c.Alias = b.Model
	req := &c.Request
	if b.Instructions != nil && *b.Instructions != "" {
		req.Messages = append(req.Messages, llm.TextMessage(llm.RoleSystem, *b.Instructions))
	}
	if b.PreviousResponseID != nil && *b.PreviousResponseID != "" {
		id, err := responses.ParsePrevious(*b.PreviousResponseID)
		if err != nil {
			return out, err
		}
		out.previous = &id
	}
	system, input, inputFields := toResponseInput(b.Input)
	fields = append(fields, inputFields...)
	req.Messages = append(req.Messages, system...)
	out.input = input
	for i, t := range b.Tools {
		if t.Type != "function" || t.Name == "" {
			bad("/tools/"+strconv.Itoa(i), "must be a function tool with a name (Kiln runs no hosted tools)")
			continue
		}
		params := t.Parameters
		if len(params) == 0 || string(params) == "null" {
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		}
		req.Tools = append(req.Tools, llm.Tool{Name: t.Name, Description: t.Description, Parameters: params})
		out.options.Tools = append(out.options.Tools, t)
	}
	out.options.ToolChoice = json.RawMessage(`"auto"`)
	if len(b.ToolChoice) > 0 && string(b.ToolChoice) != "null" {
		out.options.ToolChoice = b.ToolChoice
		var mode string
		var named struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		switch {
		case json.Unmarshal(b.ToolChoice, &mode) == nil && (mode == "auto" || mode == "none" || mode == "required"):
			req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceMode(mode)}
		case json.Unmarshal(b.ToolChoice, &named) == nil && named.Type == "function" && named.Name != "":
			req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: named.Name}
		default:
			bad("/tool_choice", `must be auto, none, required or {"type": "function", "name": …}`)
		}
	}
	if len(out.input) == 0 {
		bad("/input", "must hold a message or function call outputs")
	}
	req.Temperature, req.TopP, req.MaxTokens, req.User = b.Temperature, b.TopP, b.MaxOutputTokens, b.User
	out.options.Temperature, out.options.TopP, out.options.MaxOutputTokens = b.Temperature, b.TopP, b.MaxOutputTokens
	out.options.ParallelToolCalls = b.ParallelToolCalls == nil || *b.ParallelToolCalls
	if b.User != "" {
		out.options.User = &b.User
	}
	return out, errs.InvalidFields("invalid response request", fields)
}

// toResponseInput converts the input (a string or items) into the system messages (the
// input's system and developer messages, which apply to this response alone, as its
// instructions) and the conversation's messages, in order: function_call items join the
// assistant message before them.
func toResponseInput(raw json.RawMessage) (system, msgs []llm.Message, fields []errs.FieldError) {
	bad := func(pointer, msg string) { fields = append(fields, errs.FieldError{Pointer: pointer, Message: msg}) }
	var text string
	if json.Unmarshal(raw, &text) == nil {
		return nil, []llm.Message{llm.TextMessage(llm.RoleUser, text)}, nil
	}
	var items []oaiInputItem
	if err := json.Unmarshal(raw, &items); err != nil {
		bad("/input", "must be a string or an array of input items")
		return nil, nil, fields
	}
	for i, it := range items {
		at := "/input/" + strconv.Itoa(i)
		switch it.Type {
		case "", "message":
			m, partFields := toInputMessage(it, at)
			fields = append(fields, partFields...)
			if m.Role == llm.RoleSystem {
				system = append(system, m)
			} else {
				msgs = append(msgs, m)
			}
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				bad(at, "a function_call needs its call_id and name")
				continue
			}
			call := llm.ToolCall{ID: it.CallID, Name: it.Name, Arguments: it.Arguments}
			if n := len(msgs); n > 0 && msgs[n-1].Role == llm.RoleAssistant {
				msgs[n-1].ToolCalls = append(msgs[n-1].ToolCalls, call)
			} else {
				msgs = append(msgs, llm.Message{Role: llm.RoleAssistant, ToolCalls: []llm.ToolCall{call}})
			}
		case "function_call_output":
			var out string
			if it.CallID == "" || json.Unmarshal(it.Output, &out) != nil {
				bad(at, "a function_call_output needs its call_id and a string output")
				continue
			}
			msgs = append(msgs, llm.Message{Role: llm.RoleTool, ToolCallID: it.CallID, Content: []llm.Part{{Type: llm.PartText, Text: out}}})
		default:
			bad(at+"/type", "must be message, function_call or function_call_output")
		}
	}
	return system, msgs, fields
}

// toInputMessage converts a message item: content as a string or input_text,
// output_text and input_image parts.
func toInputMessage(it oaiInputItem, at string) (llm.Message, []errs.FieldError) {
	var fields []errs.FieldError
	bad := func(pointer, msg string) { fields = append(fields, errs.FieldError{Pointer: pointer, Message: msg}) }
	m := llm.Message{}
	switch it.Role {
	case "user", "assistant":
		m.Role = llm.Role(it.Role)
	case "system", "developer":
		m.Role = llm.RoleSystem
	default:
		bad(at+"/role", "must be user, assistant, system or developer")
	}
	var text string
	if json.Unmarshal(it.Content, &text) == nil {
		m.Content = []llm.Part{{Type: llm.PartText, Text: text}}
		return m, fields
	}
	var parts []oaiInputPart
	if json.Unmarshal(it.Content, &parts) != nil {
		bad(at+"/content", "must be a string or an array of content parts")
		return m, fields
	}
	for j, p := range parts {
		switch p.Type {
		case "input_text", "output_text", "text":
			m.Content = append(m.Content, llm.Part{Type: llm.PartText, Text: p.Text})
		case "input_image":
			img, err := imageFromURL(p.ImageURL)
			if err != nil {
				bad(at+"/content/"+strconv.Itoa(j)+"/image_url", err.Error())
				continue
			}
			img.Detail = p.Detail
			m.Content = append(m.Content, llm.Part{Type: llm.PartImage, Image: img})
		default:
			bad(at+"/content/"+strconv.Itoa(j)+"/type", "must be input_text, output_text or input_image")
		}
	}
	return m, fields
}

// toConversationInput is the input of a stored response's reply: function call outputs
// alone (answering the previous response's calls), or messages ending with the user's.
func toConversationInput(msgs []llm.Message) (conversations.Input, error) {
	results := make([]conversations.ToolResult, 0, len(msgs))
	for _, m := range msgs {
		if m.Role != llm.RoleTool {
			break
		}
		results = append(results, conversations.ToolResult{CallID: m.ToolCallID, Content: m.Text()})
	}
	if len(results) == len(msgs) {
		return conversations.Input{ToolResults: results}, nil
	}
	last := msgs[len(msgs)-1]
	if last.Role != llm.RoleUser {
		return conversations.Input{}, errs.InvalidFields("invalid response request", []errs.FieldError{{
			Pointer: "/input", Message: "a stored response's input must end with a user message, or be function_call_output items alone",
		}})
	}
	return conversations.Input{Context: msgs[:len(msgs)-1], User: &last}, nil
}

// openaiCreateResponse serves POST /openai/v1/responses.
func (s *Server) openaiCreateResponse(w http.ResponseWriter, r *http.Request) {
	var body oaiResponseRequest
	if !s.decodeBody(w, r, &body) {
		return
	}
	rc, err := toResponseCall(&body)
	if err == nil {
		err = s.openAIModelKnown(body.Model)
	}
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	if !rc.store {
		s.serveUnstoredResponse(w, r, &body, rc)
		return
	}
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	in, err := toConversationInput(rc.input)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	options, _ := json.Marshal(rc.options) // always encodes
	started, err := s.conv.Responses.Create(r.Context(), replyCaller(r.Context(), who, r.URL.Path), responses.Request{
		Previous: rc.previous, Input: in, Reply: replies.Request{Call: rc.call},
		Instructions: deref(body.Instructions), Options: options, Metadata: body.Metadata,
	})
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	w.Header().Set("Kiln-Message-Id", started.Message.ID.String())
	if rc.stream {
		s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
			return s.streamStoredResponse(ctx, st, who.owner(), started)
		})
		return
	}
	added, err := started.Wait(r.Context())
	switch {
	case r.Context().Err() != nil: // the client went away; the reply goes on
	case err != nil:
		s.respondError(w, r, err)
	default:
		resp := started.Response
		resp.Reply = added[len(added)-1]
		writeJSON(w, http.StatusOK, toOAIResponse(storedState(resp)))
	}
}

// streamStoredResponse sends a stored response's events as its reply publishes them, then
// its final state as read back.
func (s *Server) streamStoredResponse(ctx context.Context, st *sseStream, o conversations.Owner, started *responses.Started) error {
	rs := newResponseStream(st, storedState(started.Response))
	if err := rs.begin(); err != nil {
		return err
	}
	err := s.conv.Replies.Follow(ctx, o.Org, started.Message, 0, func(ev streams.Event) error {
		switch ev.Type {
		case "message.delta":
			var d struct {
				Text string `json:"text"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			return rs.delta(d.Text)
		case "tool_call.delta", "tool_call":
			var d struct {
				Index     int    `json:"index"`
				ID        string `json:"id"`
				Name      string `json:"name"`
				Arguments string `json:"arguments"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			call := llm.ToolCall{ID: d.ID, Name: d.Name, Arguments: d.Arguments}
			if ev.Type == "tool_call" {
				return rs.toolCall(d.Index, call)
			}
			return rs.toolCallDelta(d.Index, call)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The reply is stored before its last event is published.
	resp, err := s.conv.Responses.Get(context.WithoutCancel(ctx), o, started.Message.ID)
	if err != nil {
		return err
	}
	return rs.end(storedState(resp))
}

// serveUnstoredResponse runs a response that is not stored (store: false) as the chat
// completions do: in the request, nothing kept but its usage record. A follow-up of a
// stored response continues from that response's conversation.
func (s *Server) serveUnstoredResponse(w http.ResponseWriter, r *http.Request, body *oaiResponseRequest, rc oaiResponseCall) {
	r, who, call, cancel, ok := s.beginCall(w, r, func(who caller) (chat.Call, error) {
		call := rc.call
		if call.Alias == "" {
			call.Alias = "default"
		}
		if rc.previous != nil {
			history, err := s.conv.Responses.History(r.Context(), who.owner(), *rc.previous)
			if err != nil {
				return call, err
			}
			call.Request.Messages = append(call.Request.Messages, history...)
		}
		call.Request.Messages = append(call.Request.Messages, rc.input...)
		return call, nil
	})
	defer cancel()
	if !ok {
		return
	}
	ctx := r.Context()
	start := time.Now()
	state := oaiResponseState{
		id: uuid.Must(uuid.NewV7()), created: start, model: call.Alias, instructions: deref(body.Instructions),
		options: rc.options, metadata: body.Metadata, previous: rc.previous, status: conversations.InProgress,
	}
	var rs *responseStream
	var onEvent func(chat.Event) error
	if rc.stream {
		rs = newResponseStream(&sseStream{w: w, rc: http.NewResponseController(w)}, state)
		onEvent = func(ev chat.Event) error {
			switch ev.Kind {
			case chat.EventStart:
				return rs.begin()
			case chat.EventDelta:
				return rs.delta(ev.Text)
			case chat.EventToolCallDelta:
				return rs.toolCallDelta(ev.Index, ev.Call)
			case chat.EventToolCall:
				return rs.toolCall(ev.Index, ev.Call)
			}
			return nil
		}
	}
	res, err := s.llm.Runner.Run(ctx, call, onEvent)
	s.recordUsage(r, who, responses.Endpoint, call.Alias, start, res, err, nil)
	switch {
	case err != nil && (rs == nil || !rs.st.started):
		s.respondError(w, r, err)
		return
	case err != nil:
		if r.Context().Err() == nil || errors.Is(r.Context().Err(), context.DeadlineExceeded) {
			e := s.classify(r, err)
			state.status, state.errCode, state.errDetail = conversations.Failed, e.Code, e.Message
			_ = rs.end(state)
		}
		return
	}
	state.status, state.text, state.calls, state.finish = conversations.Completed, res.Message.Text(), res.Message.ToolCalls, res.FinishReason
	state.usage = &res.Usage
	if rs != nil {
		_ = rs.end(state)
		return
	}
	writeJSON(w, http.StatusOK, toOAIResponse(state))
}

// openaiGetResponse serves GET /openai/v1/responses/{response_id}.
func (s *Server) openaiGetResponse(w http.ResponseWriter, r *http.Request) {
	who, id, err := s.responseOf(r)
	var resp responses.Response
	if err == nil {
		resp, err = s.conv.Responses.Get(r.Context(), who.owner(), id)
	}
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toOAIResponse(storedState(resp)))
}

// openaiDeleteResponse serves DELETE /openai/v1/responses/{response_id}.
func (s *Server) openaiDeleteResponse(w http.ResponseWriter, r *http.Request) {
	who, id, err := s.responseOf(r)
	if err == nil {
		err = s.conv.Responses.Delete(r.Context(), who.owner(), id)
	}
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": r.PathValue("response_id"), "object": "response.deleted", "deleted": true})
}

// responseOf is the caller and the response id of a request on one response.
func (s *Server) responseOf(r *http.Request) (caller, uuid.UUID, error) {
	who, err := s.callerFor(r)
	if err != nil {
		return who, uuid.Nil, err
	}
	id, err := responses.ParseID(r.PathValue("response_id"))
	return who, id, err
}

// oaiResponseState is a response as the wire shows it, stored or not.
type oaiResponseState struct {
	id           uuid.UUID
	created      time.Time
	model        string
	instructions string
	options      oaiResponseOptions
	metadata     map[string]string
	previous     *uuid.UUID
	status       conversations.Status
	text         string
	calls        []llm.ToolCall
	finish       llm.FinishReason
	usage        *llm.Usage
	errCode      errs.Code
	errDetail    string
}

// storedState is a stored response's state.
func storedState(resp responses.Response) oaiResponseState {
	m := resp.Reply
	out := oaiResponseState{
		id: resp.ID, created: resp.CreatedAt, model: resp.Model, instructions: resp.Instructions, metadata: resp.Metadata,
		previous: resp.PreviousID, status: m.Status, text: m.Content, calls: m.ToolCalls, finish: m.FinishReason,
		usage: m.Usage, errCode: m.ErrorCode, errDetail: m.ErrorDetail,
	}
	_ = json.Unmarshal(resp.Options, &out.options) // stored by toResponseCall's encoding
	if out.options.ToolChoice == nil {
		out.options.ToolChoice = json.RawMessage(`"auto"`)
	}
	return out
}

// The item ids of a response: its message's and its function calls'.
func (st oaiResponseState) messageID() string { return "msg_" + hex.EncodeToString(st.id[:]) }
func (st oaiResponseState) callItemID(i int) string {
	return "fc_" + hex.EncodeToString(st.id[:]) + "_" + strconv.Itoa(i)
}

// wireStatus is the response's status, and why it is incomplete if it is.
func (st oaiResponseState) wireStatus() (string, map[string]string) {
	switch st.status {
	case conversations.InProgress:
		return "in_progress", nil
	case conversations.Failed:
		return "failed", nil
	case conversations.Cancelled:
		return "cancelled", nil
	}
	switch st.finish {
	case llm.FinishLength:
		return "incomplete", map[string]string{"reason": "max_output_tokens"}
	case llm.FinishContentFilter:
		return "incomplete", map[string]string{"reason": "content_filter"}
	}
	return "completed", nil
}

type oaiOutputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

type oaiOutputItem struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Status    string          `json:"status"`
	Role      string          `json:"role,omitempty"`
	Content   []oaiOutputText `json:"content,omitempty"`
	CallID    string          `json:"call_id,omitempty"`
	Name      string          `json:"name,omitempty"`
	Arguments *string         `json:"arguments,omitempty"`
}

type oaiResponseObject struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"`
	Error              *oaiResponseError `json:"error"`
	IncompleteDetails  map[string]string `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    *int              `json:"max_output_tokens"`
	Model              string            `json:"model"`
	Output             []oaiOutputItem   `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Store              bool              `json:"store"`
	Temperature        *float64          `json:"temperature"`
	TopP               *float64          `json:"top_p"`
	Text               any               `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              []oaiResponseTool `json:"tools"`
	Truncation         string            `json:"truncation"`
	Usage              *oaiResponseUsage `json:"usage"`
	User               *string           `json:"user,omitempty"`
	Metadata           map[string]string `json:"metadata"`
}

type oaiResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type oaiResponseUsage struct {
	InputTokens        int `json:"input_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int `json:"output_tokens"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int `json:"total_tokens"`
}

// toOAIResponse is OpenAI's response object of st.
func toOAIResponse(st oaiResponseState) oaiResponseObject {
	status, incomplete := st.wireStatus()
	out := oaiResponseObject{
		ID: responses.ID(st.id), Object: "response", CreatedAt: st.created.Unix(), Status: status, IncompleteDetails: incomplete,
		MaxOutputTokens: st.options.MaxOutputTokens, Model: st.model, Output: []oaiOutputItem{},
		ParallelToolCalls: st.options.ParallelToolCalls, Store: true, Temperature: st.options.Temperature, TopP: st.options.TopP,
		Text: map[string]any{"format": map[string]string{"type": "text"}}, ToolChoice: st.options.ToolChoice,
		Tools: st.options.Tools, Truncation: "disabled", User: st.options.User, Metadata: st.metadata,
	}
	if out.Tools == nil {
		out.Tools = []oaiResponseTool{}
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	if st.instructions != "" {
		out.Instructions = &st.instructions
	}
	if st.previous != nil {
		prev := responses.ID(*st.previous)
		out.PreviousResponseID = &prev
	}
	if st.status == conversations.Failed {
		out.Error = &oaiResponseError{Code: string(st.errCode), Message: st.errDetail}
	}
	if st.status != conversations.InProgress {
		if st.text != "" {
			out.Output = append(out.Output, st.messageItem("completed"))
		}
		for i, c := range st.calls {
			out.Output = append(out.Output, st.callItem(i, c, "completed"))
		}
	}
	if u := st.usage; u != nil {
		out.Usage = &oaiResponseUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.Total()}
		out.Usage.InputTokensDetails.CachedTokens = u.CachedTokens
	}
	return out
}

func (st oaiResponseState) messageItem(status string) oaiOutputItem {
	item := oaiOutputItem{Type: "message", ID: st.messageID(), Status: status, Role: "assistant", Content: []oaiOutputText{}}
	if status == "completed" {
		item.Content = append(item.Content, oaiOutputText{Type: "output_text", Text: st.text, Annotations: []any{}, Logprobs: []any{}})
	}
	return item
}

func (st oaiResponseState) callItem(i int, c llm.ToolCall, status string) oaiOutputItem {
	args := c.Arguments
	return oaiOutputItem{Type: "function_call", ID: st.callItemID(i), Status: status, CallID: c.ID, Name: c.Name, Arguments: &args}
}

// responseStream writes a response's response.* events, each with its sequence number,
// from the runner's events: text deltas open a message item, tool call deltas a
// function_call item each; end closes what is open and sends the final state.
type responseStream struct {
	st    *sseStream
	state oaiResponseState
	seq   int
	// outputs counts the output items opened; text is the open message item's index
	// (-1: none), calls the function_call items by the runner's call index.
	outputs int
	text    int
	textBuf strings.Builder
	calls   map[int]*streamedCall
}

type streamedCall struct {
	output int
	call   llm.ToolCall
	done   bool
}

func newResponseStream(st *sseStream, state oaiResponseState) *responseStream {
	return &responseStream{st: st, state: state, text: -1, calls: map[int]*streamedCall{}}
}

// send writes one event: its type, its sequence number and fields.
func (rs *responseStream) send(typ string, fields map[string]any) error {
	fields["type"], fields["sequence_number"] = typ, rs.seq
	rs.seq++
	return rs.st.Send(typ, fields)
}

// begin sends response.created and response.in_progress.
func (rs *responseStream) begin() error {
	snapshot := rs.state
	snapshot.status = conversations.InProgress
	if err := rs.send("response.created", map[string]any{"response": toOAIResponse(snapshot)}); err != nil {
		return err
	}
	return rs.send("response.in_progress", map[string]any{"response": toOAIResponse(snapshot)})
}

func (rs *responseStream) delta(text string) error {
	id := rs.state.messageID()
	if rs.text < 0 {
		rs.text = rs.outputs
		rs.outputs++
		if err := rs.send("response.output_item.added", map[string]any{"output_index": rs.text, "item": rs.state.messageItem("in_progress")}); err != nil {
			return err
		}
		part := oaiOutputText{Type: "output_text", Annotations: []any{}, Logprobs: []any{}}
		if err := rs.send("response.content_part.added", map[string]any{"item_id": id, "output_index": rs.text, "content_index": 0, "part": part}); err != nil {
			return err
		}
	}
	rs.textBuf.WriteString(text)
	return rs.send("response.output_text.delta", map[string]any{"item_id": id, "output_index": rs.text, "content_index": 0, "delta": text, "logprobs": []any{}})
}

// closeText ends the open message item, if any.
func (rs *responseStream) closeText() error {
	if rs.text < 0 {
		return nil
	}
	id, text := rs.state.messageID(), rs.textBuf.String()
	part := oaiOutputText{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}
	if err := rs.send("response.output_text.done", map[string]any{"item_id": id, "output_index": rs.text, "content_index": 0, "text": text, "logprobs": []any{}}); err != nil {
		return err
	}
	if err := rs.send("response.content_part.done", map[string]any{"item_id": id, "output_index": rs.text, "content_index": 0, "part": part}); err != nil {
		return err
	}
	done := rs.state
	done.text = text
	if err := rs.send("response.output_item.done", map[string]any{"output_index": rs.text, "item": done.messageItem("completed")}); err != nil {
		return err
	}
	rs.text = -1
	return nil
}

// openCall returns call index's item, opening it (after closing the message) at its first piece.
func (rs *responseStream) openCall(index int, piece llm.ToolCall) (*streamedCall, error) {
	if c, ok := rs.calls[index]; ok {
		return c, nil
	}
	if err := rs.closeText(); err != nil {
		return nil, err
	}
	c := &streamedCall{output: rs.outputs, call: llm.ToolCall{ID: piece.ID, Name: piece.Name}}
	rs.outputs++
	rs.calls[index] = c
	return c, rs.send("response.output_item.added", map[string]any{"output_index": c.output, "item": rs.state.callItem(index, c.call, "in_progress")})
}

func (rs *responseStream) toolCallDelta(index int, piece llm.ToolCall) error {
	c, err := rs.openCall(index, piece)
	if err != nil || piece.Arguments == "" {
		return err
	}
	c.call.Arguments += piece.Arguments
	return rs.send("response.function_call_arguments.delta", map[string]any{"item_id": rs.state.callItemID(index), "output_index": c.output, "delta": piece.Arguments})
}

func (rs *responseStream) toolCall(index int, call llm.ToolCall) error {
	c, err := rs.openCall(index, call)
	if err != nil {
		return err
	}
	c.call, c.done = call, true
	id := rs.state.callItemID(index)
	if err := rs.send("response.function_call_arguments.done", map[string]any{"item_id": id, "output_index": c.output, "name": call.Name, "arguments": call.Arguments}); err != nil {
		return err
	}
	return rs.send("response.output_item.done", map[string]any{"output_index": c.output, "item": rs.state.callItem(index, call, "completed")})
}

// end closes the open items of a response that did not fail and sends its last event
// with its final state: response.completed, response.incomplete or response.failed.
func (rs *responseStream) end(final oaiResponseState) error {
	if !rs.st.started {
		if err := rs.begin(); err != nil {
			return err
		}
	}
	obj := toOAIResponse(final)
	typ := "response.failed"
	switch obj.Status {
	case "completed":
		typ = "response.completed"
	case "incomplete":
		typ = "response.incomplete"
	}
	if typ != "response.failed" {
		if err := rs.closeText(); err != nil {
			return err
		}
	}
	return rs.send(typ, map[string]any{"response": obj})
}
