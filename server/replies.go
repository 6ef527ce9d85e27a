package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/responses"
	"github.com/kilnhq/kiln/internal/streams"
)

// Conversations is what the conversation endpoints need.
type Conversations struct {
	Service *conversations.Service
	// Replies runs the conversations' replies.
	Replies *replies.Service
	// Responses serves the OpenAI Responses API over the conversations.
	Responses *responses.Service
}

// replyCaller is who asks for a reply in ctx (a request's), with the request's own values for
// the reply to keep once the request has ended.
func replyCaller(ctx context.Context, who caller, instance string) replies.Caller {
	return replies.Caller{Owner: who.owner(), RequestID: logging.RequestID(ctx), Instance: instance, ReadsKnowledge: readsKnowledge(ctx),
		Trace: trace.SpanContextFromContext(ctx)}
}

// toReplyRequest is a request for a reply in conversation: its input and options.
func toReplyRequest(conversation uuid.UUID, in conversations.Input, o *api.ReplyOptions) (replies.Request, error) {
	body := toChatRequest(o)
	call, err := toChatCall(body)
	if body.Model == nil {
		call.Alias = "" // the conversation's model applies
	}
	req := replies.Request{Conversation: conversation, Input: in, Call: call}
	if p := body.Prompt; p != nil {
		ref := toPromptRef(p)
		req.Prompt, req.StickyKey = &ref, deref(p.StickyKey)
	}
	return req, errs.UnderPointer(err, "/options")
}

// toChatRequest is a reply's options as a chat request without messages.
func toChatRequest(o *api.ReplyOptions) api.ChatRequest {
	if o == nil {
		return api.ChatRequest{}
	}
	return api.ChatRequest{
		Model: o.Model, Prompt: o.Prompt, Tools: o.Tools, ServerTools: o.ServerTools, ToolChoice: o.ToolChoice,
		ResponseFormat: o.ResponseFormat, Temperature: o.Temperature, TopP: o.TopP, MaxTokens: o.MaxTokens,
		Stop: o.Stop, Seed: o.Seed, User: o.User, KnowledgeBases: o.KnowledgeBases,
	}
}

// userInput is the user's message of a request, from its content and parts.
func userInput(content *string, parts *[]api.ContentPart) (conversations.Input, error) {
	m := api.ChatMessage{Role: api.ChatRoleUser, Content: content, Parts: parts}
	msg, fields := toLLMMessage(m, "")
	if len(fields) > 0 {
		return conversations.Input{}, errs.InvalidFields("invalid message", fields)
	}
	return conversations.Input{User: &msg}, nil
}

// createConversationMessage serves POST /v1/conversations/{id}/messages.
func (s *Server) createConversationMessage(w http.ResponseWriter, r *http.Request) {
	var body api.ConversationMessageRequest
	if !s.decodeBody(w, r, &body) {
		return
	}
	in, err := userInput(body.Content, body.Parts)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.serveReply(w, r, in, body.Options, body.Stream != nil && *body.Stream)
}

// submitToolResults serves POST /v1/conversations/{id}/tool-results.
func (s *Server) submitToolResults(w http.ResponseWriter, r *http.Request) {
	var body api.ToolResultsRequest
	if !s.decodeBody(w, r, &body) {
		return
	}
	s.serveReply(w, r, toolResultsInput(body.Results), body.Options, body.Stream != nil && *body.Stream)
}

// toolResultsInput is the client's tool results of a request.
func toolResultsInput(results []api.ToolResult) conversations.Input {
	in := conversations.Input{}
	for _, res := range results {
		in.ToolResults = append(in.ToolResults, conversations.ToolResult{CallID: res.ToolCallId, Content: res.Content, IsError: res.IsError != nil && *res.IsError})
	}
	return in
}

// serveReply starts a reply and answers with its messages once it ends or, streaming,
// with its events as they are published.
func (s *Server) serveReply(w http.ResponseWriter, r *http.Request, in conversations.Input, options *api.ReplyOptions, stream bool) {
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		s.respondError(w, r, errs.E(errs.NotFound, "No such conversation."))
		return
	}
	req, err := toReplyRequest(id, in, options)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	started, err := s.conv.Replies.Start(r.Context(), replyCaller(r.Context(), who, r.URL.Path), req)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.attachIdempotent(r, started.Ref())
	w.Header().Set("Kiln-Message-Id", started.Message.ID.String())
	if stream {
		s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
			return s.follow(ctx, who.owner().Org, started.Message, 0, st)
		})
		return
	}
	added, err := started.Wait(r.Context())
	switch {
	case r.Context().Err() != nil: // the client went away; the reply goes on
	case err != nil:
		s.respondError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, toAPIConversationReply(added))
	}
}

// follow sends a reply's stored events after `after`, then its live ones, until its end.
// The stream opens at once: a client attaching to a reply that is thinking knows it is
// attached.
func (s *Server) follow(ctx context.Context, org uuid.UUID, reply conversations.Message, after uint64, st *sseStream) error {
	if err := st.open(); err != nil {
		return err
	}
	return s.conv.Replies.Follow(ctx, org, reply, after, func(ev streams.Event) error {
		return st.SendStored(ev.ID, ev.Type, ev.Data)
	})
}

// streamMessageEvents serves GET /v1/conversations/{id}/messages/{message_id}/events.
func (s *Server) streamMessageEvents(w http.ResponseWriter, r *http.Request) {
	who, err := s.callerFor(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	conv, err1 := uuid.Parse(r.PathValue("id"))
	msgID, err2 := uuid.Parse(r.PathValue("message_id"))
	if err1 != nil || err2 != nil {
		s.respondError(w, r, errs.E(errs.NotFound, "No such message in this conversation."))
		return
	}
	m, err := s.conv.Replies.Events(r.Context(), who.owner(), conv, msgID)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	after, err := lastEventID(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
		return s.follow(ctx, who.owner().Org, m, after, st)
	})
}

// lastEventID is the id of the last event a client resuming a stream received:
// Last-Event-ID, else ?after=, else 0.
func lastEventID(r *http.Request) (uint64, error) {
	var after uint64
	var err error
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		after, err = strconv.ParseUint(h, 10, 64)
	} else if q := r.URL.Query().Get("after"); q != "" {
		after, err = strconv.ParseUint(q, 10, 64)
	}
	if err != nil {
		return 0, errs.InvalidFields("invalid event id", []errs.FieldError{{Pointer: "/header/Last-Event-ID", Message: "must be an event id"}})
	}
	return after, nil
}

// reattach answers a retry of a request whose reply was started (ref: Started.Ref): with
// the reply's events from the first when it asks for a stream, else with the messages the
// first request added, once the reply has ended.
func (s *Server) reattach(w http.ResponseWriter, r *http.Request, ref string, body []byte) {
	who, err := s.callerFor(r)
	var a replies.Attached
	if err == nil {
		a, err = s.conv.Replies.Reattach(r.Context(), who.owner(), ref)
	}
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(body, &req) // validated before the first request ran
	w.Header().Set(replayedHeader, "true")
	w.Header().Set("Kiln-Message-Id", a.ID.String())
	if req.Stream {
		if err := s.conv.Replies.Kept(r.Context(), a.Message); err != nil {
			s.respondError(w, r, err)
			return
		}
		s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
			return s.follow(ctx, who.owner().Org, a.Message, 0, st)
		})
		return
	}
	turn, err := s.conv.Replies.Result(r.Context(), who.owner(), a)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAPIConversationReply(turn))
}

// toAPIConversationReply is the answer of a request that added msgs.
func toAPIConversationReply(msgs []conversations.Message) api.ConversationReply {
	out := api.ConversationReply{Messages: make([]api.ConversationMessage, len(msgs))}
	for i, m := range msgs {
		out.Messages[i] = toAPIConversationMessage(m)
	}
	return out
}

// ReplyEvents shapes a conversation reply's events as the spec has them (replies.Events).
type ReplyEvents struct{}

var _ replies.Events = ReplyEvents{}

// Started is a ReplyStartedEvent.
func (ReplyEvents) Started(r conversations.Reply) any {
	inputs := make([]uuid.UUID, len(r.Inputs))
	for i, m := range r.Inputs {
		inputs[i] = m.ID
	}
	return api.ReplyStartedEvent{ConversationId: r.Conversation.ID, MessageId: r.Message.ID, InputMessageIds: inputs}
}

// Event is the chat stream's event of ev.
func (ReplyEvents) Event(ev chat.Event) (string, any) { return toChatEvent(ev) }

// Done is a ChatDoneEvent naming the target that served the reply.
func (ReplyEvents) Done(reply conversations.Message, out conversations.Outcome, res *chat.Result) any {
	if res == nil {
		res = &chat.Result{}
	}
	d := toChatDone(reply.ID.String(), reply.Model, res)
	d.Provider, d.ProviderModel, d.FinishReason = out.Provider, out.Model, api.FinishReason(out.FinishReason)
	return d
}

// Text reads a message.delta's text back; a tool_result ends a step.
func (ReplyEvents) Text(ev streams.Event) (string, bool) {
	switch ev.Type {
	case "message.delta":
		var d api.ChatDeltaEvent
		if json.Unmarshal(ev.Data, &d) == nil {
			return d.Text, false
		}
	case "tool_result":
		return "", true
	}
	return "", false
}

// Failed is the problem document of the reply's error.
func (ReplyEvents) Failed(requestID, instance string, e *errs.Error) any {
	p := newProblem(context.Background(), instance, &errs.Error{Code: e.Code, Message: e.Message, Quota: e.Quota})
	p.RequestId = requestID
	if instance == "" {
		p.Instance = nil
	}
	return p
}
