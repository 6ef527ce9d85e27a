package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/orgkeys"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/rag"
)

// LLM is what the model endpoints need.
type LLM struct {
	Runner *chat.Runner
	Usage  *usage.Recorder
	// OrgKeys holds the orgs' own provider keys.
	OrgKeys *orgkeys.Service
	// StreamTimeout bounds one reply, streamed or not.
	StreamTimeout time.Duration
	// Billing is the gateway's meter (plans, quotas) and serves the subscription,
	// entitlement and plan endpoints; nil answers those not_ready.
	Billing *billing.Service
}

// ListModels lists the model aliases.
func (s *Server) ListModels(context.Context, api.ListModelsRequestObject) (api.ListModelsResponseObject, error) {
	g := s.llm.Runner.Gateway
	out := api.ListModels200JSONResponse{Data: []api.ModelAlias{}}
	for _, alias := range g.Aliases() {
		m := api.ModelAlias{Id: alias, Targets: []api.ModelTarget{}}
		for _, t := range g.Targets(alias) {
			m.Targets = append(m.Targets, api.ModelTarget{Provider: t.Provider, Model: t.Model})
		}
		out.Data = append(out.Data, m)
	}
	return out, nil
}

// caller is who a model call is accounted to.
type caller struct {
	org, user, key uuid.UUID
}

// callerFor resolves the org (Kiln-Org for user tokens) and the user or key of a request.
func (s *Server) callerFor(r *http.Request) (caller, error) {
	var requested *uuid.UUID
	if h := r.Header.Get("Kiln-Org"); h != "" {
		id, err := uuid.Parse(h)
		if err != nil {
			return caller{}, errs.InvalidFields("invalid Kiln-Org", []errs.FieldError{{Pointer: "/header/Kiln-Org", Message: "must be a UUID"}})
		}
		requested = &id
	}
	return s.callerOf(r.Context(), requested)
}

// callerOf resolves the org requested (nil: the caller's default) and the user or key of
// the caller in ctx.
func (s *Server) callerOf(ctx context.Context, requested *uuid.UUID) (caller, error) {
	access, err := s.orgFor(ctx, requested)
	if err != nil {
		return caller{}, err
	}
	c := caller{org: access.OrgID}
	if p, ok := principalFrom(ctx); ok {
		if p.Key != nil {
			c.key = p.Key.ID
		} else {
			c.user = p.UserID
		}
	}
	return c, nil
}

// decodeBody decodes a JSON request body into v; on failure it has answered.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		s.respondError(w, r, &errs.Error{Code: errs.MalformedJSON, Message: "The request body could not be decoded."})
		return false
	}
	return true
}

// beginCall resolves the caller, builds and validates the call, and bounds it by the
// stream timeout, for the org's own provider keys; on failure it has answered.
func (s *Server) beginCall(w http.ResponseWriter, r *http.Request, toCall func(caller) (chat.Call, error)) (*http.Request, caller, chat.Call, context.CancelFunc, bool) {
	who, err := s.callerFor(r)
	var call chat.Call
	if err == nil {
		call, err = toCall(who)
		call.Org = who.org
	}
	if err == nil {
		err = knowledgeScope(r.Context(), call.KnowledgeBases)
	}
	if err == nil {
		err = s.llm.Runner.Validate(r.Context(), &call)
	}
	if err != nil {
		s.respondError(w, r, err)
		return r, who, call, func() {}, false
	}
	ctx, cancel := s.bound(r.Context(), who)
	return r.WithContext(ctx), who, call, cancel, true
}

// chatCallOf builds the validated runner call of a chat request for who (the WebSocket's
// chat frames, conversation replies): the request's fields, its stored prompt if any, then
// the runner's checks.
func (s *Server) chatCallOf(ctx context.Context, who caller, body *api.ChatRequest) (chat.Call, *promptUse, error) {
	call, err := toChatCall(*body)
	call.Org = who.org
	var use *promptUse
	if err == nil {
		use, err = s.applyPrompt(ctx, who, body, &call)
	}
	if err == nil {
		err = knowledgeScope(ctx, call.KnowledgeBases)
	}
	if err == nil {
		err = s.llm.Runner.Validate(ctx, &call)
	}
	return call, use, err
}

// knowledgeScope refuses knowledge bases to an API key without kb:read: answering from
// them reads them.
func knowledgeScope(ctx context.Context, kbs []uuid.UUID) error {
	if len(kbs) > 0 && !readsKnowledge(ctx) {
		return errs.E(errs.PermissionDenied, "This API key lacks the scope %q, which answering from knowledge_bases needs.", apikey.ScopeKBRead)
	}
	return nil
}

// readsKnowledge is whether the caller in ctx may read its org's knowledge bases: a user,
// or an API key with kb:read.
func readsKnowledge(ctx context.Context) bool {
	p, _ := principalFrom(ctx)
	return p.Key == nil || apikey.Has(p.Key.Scopes, apikey.ScopeKBRead)
}

// bound limits a model call to the stream timeout and tells the gateway its org (for the
// org's own provider keys) and its API key (for the key's token budget).
func (s *Server) bound(ctx context.Context, who caller) (context.Context, context.CancelFunc) {
	ctx = llm.WithOrg(ctx, who.org)
	if who.key != uuid.Nil {
		ctx = llm.WithAPIKey(ctx, who.key)
	}
	return context.WithTimeout(ctx, s.llm.StreamTimeout)
}

// createChatCompletion serves POST /v1/chat/completions: JSON, or SSE with stream: true.
func (s *Server) createChatCompletion(w http.ResponseWriter, r *http.Request) {
	var body api.ChatRequest
	if !s.decodeBody(w, r, &body) {
		return
	}
	var use *promptUse
	r, who, call, cancel, ok := s.beginCall(w, r, func(who caller) (chat.Call, error) {
		c, err := toChatCall(body)
		if err == nil {
			use, err = s.applyPrompt(r.Context(), who, &body, &c)
		}
		return c, err
	})
	defer cancel()
	if !ok {
		return
	}
	ctx := r.Context()
	start := time.Now()
	id := uuid.Must(uuid.NewV7()).String()
	if body.Stream == nil || !*body.Stream {
		res, err := s.llm.Runner.Run(ctx, call, nil)
		s.recordUsage(r, who, "chat", call.Alias, start, res, err, use.usage())
		if err != nil {
			s.respondError(w, r, err)
			return
		}
		setServedHeaders(w, res.Served, res.Cache)
		writeJSON(w, http.StatusOK, toChatCompletion(id, call.Alias, start, res))
		return
	}
	s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
		res, err := s.llm.Runner.Run(ctx, call, func(ev chat.Event) error {
			if ev.Kind == chat.EventStart {
				setServedHeaders(w, ev.Served, ev.Cache) // before the first event commits the headers
				return nil
			}
			name, data := toChatEvent(ev)
			return st.Send(name, data)
		})
		s.recordUsage(r, who, "chat", call.Alias, start, res, err, use.usage())
		if err != nil {
			return err
		}
		return st.Send("done", toChatDone(id, call.Alias, res))
	})
}

// setServedHeaders names the target that served a reply, and the cache outcome if any.
func setServedHeaders(w http.ResponseWriter, served llm.Served, cacheStatus string) {
	h := w.Header()
	h.Set("Kiln-Provider", served.Target.Provider)
	h.Set("Kiln-Provider-Model", served.Target.Model)
	if cacheStatus != "" {
		h.Set("Kiln-Cache", cacheStatus)
	}
}

// useCache decides whether a request goes through the response cache: as it asks, else
// when it is deterministic (temperature 0).
func useCache(asked *bool, temperature *float64) bool {
	if asked != nil {
		return *asked
	}
	return temperature != nil && *temperature == 0
}

// recordUsage accounts for one call of r, however it ended.
func (s *Server) recordUsage(r *http.Request, who caller, endpoint, alias string, start time.Time, res *chat.Result, err error, prompt *usage.PromptUse) {
	s.llm.Usage.Record(chat.UsageRecord(r.Context(), who.account(r.Context()), endpoint, alias, start, res, err, prompt))
}

// account is who's accounting entry for a call made in ctx.
func (c caller) account(ctx context.Context) chat.Account {
	return chat.Account{Org: c.org, User: c.user, APIKey: c.key, RequestID: logging.RequestID(ctx)}
}

// toChatCall converts the API request into a runner call.
func toChatCall(b api.ChatRequest) (chat.Call, error) {
	c := chat.Call{Alias: "default"}
	if b.Model != nil {
		c.Alias = *b.Model
	}
	if b.ServerTools != nil {
		c.ServerTools = *b.ServerTools
	}
	if b.KnowledgeBases != nil {
		c.KnowledgeBases = *b.KnowledgeBases
	}
	req := &c.Request
	var fields []errs.FieldError
	for i, m := range b.Messages {
		msg, fe := toLLMMessage(m, "/messages/"+strconv.Itoa(i))
		fields = append(fields, fe...)
		req.Messages = append(req.Messages, msg)
	}
	if b.Tools != nil {
		for _, t := range *b.Tools {
			params, _ := json.Marshal(t.Parameters)
			req.Tools = append(req.Tools, llm.Tool{Name: t.Name, Description: deref(t.Description), Parameters: params})
		}
	}
	if tc := b.ToolChoice; tc != nil {
		req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceMode(tc.Mode), Name: deref(tc.Name)}
		if tc.Mode == api.ToolChoiceModeTool && req.ToolChoice.Name == "" {
			fields = append(fields, errs.FieldError{Pointer: "/tool_choice/name", Message: "is required for mode tool"})
		}
	}
	if rf := b.ResponseFormat; rf != nil {
		req.ResponseFormat = &llm.ResponseFormat{Type: string(rf.Type), Name: deref(rf.Name), Strict: rf.Strict != nil && *rf.Strict}
		if rf.Schema != nil {
			req.ResponseFormat.Schema, _ = json.Marshal(*rf.Schema)
		}
		if rf.Type == api.ResponseFormatTypeJsonSchema && rf.Schema == nil {
			fields = append(fields, errs.FieldError{Pointer: "/response_format/schema", Message: "is required for type json_schema"})
		}
	}
	req.Temperature, req.TopP, req.MaxTokens, req.Seed = b.Temperature, b.TopP, b.MaxTokens, b.Seed
	if b.Stop != nil {
		req.Stop = *b.Stop
	}
	req.User = deref(b.User)
	c.Cache = useCache(b.Cache, req.Temperature)
	return c, errs.InvalidFields("invalid chat request", fields)
}

func toLLMMessage(m api.ChatMessage, pointer string) (llm.Message, []errs.FieldError) {
	msg := llm.Message{Role: llm.Role(m.Role), ToolCallID: deref(m.ToolCallId), Name: deref(m.Name)}
	var fields []errs.FieldError
	if m.Content != nil {
		msg.Content = append(msg.Content, llm.Part{Type: llm.PartText, Text: *m.Content})
	}
	if m.Parts != nil {
		for i, p := range *m.Parts {
			at := pointer + "/parts/" + strconv.Itoa(i)
			switch p.Type {
			case api.ContentPartTypeText:
				if p.Text == nil {
					fields = append(fields, errs.FieldError{Pointer: at + "/text", Message: "is required for a text part"})
					continue
				}
				msg.Content = append(msg.Content, llm.Part{Type: llm.PartText, Text: *p.Text})
			case api.ContentPartTypeImage:
				img := &llm.Image{URL: deref(p.ImageUrl)}
				if p.Detail != nil {
					img.Detail = string(*p.Detail)
				}
				if p.ImageData != nil {
					img.Data = *p.ImageData
					if p.MediaType == nil {
						fields = append(fields, errs.FieldError{Pointer: at + "/media_type", Message: "is required with image_data"})
					} else {
						img.MediaType = string(*p.MediaType)
					}
				}
				if (img.URL == "") == (img.Data == nil) {
					fields = append(fields, errs.FieldError{Pointer: at, Message: "an image part needs exactly one of image_url and image_data"})
				}
				msg.Content = append(msg.Content, llm.Part{Type: llm.PartImage, Image: img})
			}
		}
	}
	if m.ToolCalls != nil {
		if m.Role != api.ChatRoleAssistant {
			fields = append(fields, errs.FieldError{Pointer: pointer + "/tool_calls", Message: "only assistant messages carry tool calls"})
		}
		for _, c := range *m.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, llm.ToolCall{ID: c.Id, Name: c.Name, Arguments: c.Arguments})
		}
	}
	if m.Role == api.ChatRoleTool && msg.ToolCallID == "" {
		fields = append(fields, errs.FieldError{Pointer: pointer + "/tool_call_id", Message: "is required for a tool message"})
	}
	if len(msg.Content) == 0 && len(msg.ToolCalls) == 0 {
		fields = append(fields, errs.FieldError{Pointer: pointer + "/content", Message: "a message needs content, parts or tool_calls"})
	}
	return msg, fields
}

func toAPIMessage(m llm.Message) api.ChatMessage {
	out := api.ChatMessage{Role: api.ChatRole(m.Role)}
	if text := m.Text(); text != "" || len(m.ToolCalls) == 0 {
		out.Content = &text
	}
	if len(m.ToolCalls) > 0 {
		calls := make([]api.ToolCall, len(m.ToolCalls))
		for i, c := range m.ToolCalls {
			calls[i] = api.ToolCall{Id: c.ID, Name: c.Name, Arguments: c.Arguments}
		}
		out.ToolCalls = &calls
	}
	if m.ToolCallID != "" {
		out.ToolCallId, out.Name = &m.ToolCallID, &m.Name
	}
	return out
}

func toChatUsage(res *chat.Result) api.ChatUsage {
	u := res.Usage
	return api.ChatUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens, TotalTokens: u.Total(), CostUsd: res.Cost}
}

func toAttempts(served llm.Served) []api.ChatAttempt {
	out := make([]api.ChatAttempt, len(served.Attempts))
	for i, a := range served.Attempts {
		out[i] = api.ChatAttempt{Target: a.Target}
		if a.Error != "" {
			e := a.Error
			out[i].Error = &e
		}
	}
	return out
}

func toChatCompletion(id, alias string, start time.Time, res *chat.Result) api.ChatCompletion {
	out := api.ChatCompletion{
		Id: id, Model: alias, Provider: res.Served.Target.Provider, ProviderModel: res.Served.Target.Model,
		CreatedAt: start.UTC(), Message: toAPIMessage(res.Message), FinishReason: api.FinishReason(res.FinishReason),
		Usage: toChatUsage(res), Attempts: toAttempts(res.Served),
	}
	if res.Citations != nil {
		cs := toAPICitations(res.Citations)
		out.Citations = &cs
	}
	if len(res.Steps) > 0 {
		steps := make([]api.ChatMessage, len(res.Steps))
		for i, m := range res.Steps {
			steps[i] = toAPIMessage(m)
		}
		out.Steps = &steps
	}
	return out
}

// toChatEvent names and shapes one stream event (EventStart is not sent).
func toChatEvent(ev chat.Event) (string, any) {
	switch ev.Kind {
	case chat.EventCitations:
		return string(api.ChatEventTypeCitations), api.CitationsEvent{Citations: toAPICitations(ev.Citations)}
	case chat.EventDelta:
		return "message.delta", api.ChatDeltaEvent{Text: ev.Text}
	case chat.EventToolCallDelta:
		d := api.ToolCallDeltaEvent{Index: ev.Index, Arguments: ev.Call.Arguments}
		if ev.Call.ID != "" {
			d.Id = &ev.Call.ID
		}
		if ev.Call.Name != "" {
			d.Name = &ev.Call.Name
		}
		return "tool_call.delta", d
	case chat.EventToolCall:
		executor := api.ToolExecutorClient
		if ev.Server {
			executor = api.ToolExecutorServer
		}
		return "tool_call", api.ToolCallEvent{Index: ev.Index, Id: ev.Call.ID, Name: ev.Call.Name, Arguments: ev.Call.Arguments, Executor: executor}
	case chat.EventToolResult:
		return "tool_result", api.ToolResultEvent{ToolCallId: ev.Call.ID, Name: ev.Call.Name, Content: ev.Result.Content, IsError: ev.Result.IsError}
	default: // chat.EventUsage
		u := ev.Usage
		return "usage", api.ChatUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens, TotalTokens: u.Total(), CostUsd: ev.Cost}
	}
}

// toAPICitations is a grounded reply's sources as the spec has them (never nil).
func toAPICitations(cs []rag.Citation) []api.Citation {
	out := make([]api.Citation, len(cs))
	for i, c := range cs {
		out[i] = api.Citation{N: c.Source, KnowledgeBaseId: c.KnowledgeBaseID, DocumentId: c.DocumentID, ChunkId: c.ChunkID, Title: c.Title, Snippet: c.Snippet}
	}
	return out
}

func toChatDone(id, alias string, res *chat.Result) api.ChatDoneEvent {
	return api.ChatDoneEvent{
		Id: id, Model: alias, Provider: res.Served.Target.Provider, ProviderModel: res.Served.Target.Model,
		FinishReason: api.FinishReason(res.FinishReason), Attempts: toAttempts(res.Served),
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
