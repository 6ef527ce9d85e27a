package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/streams"
)

// Conversations is what the conversation endpoints need.
type Conversations struct {
	Service *conversations.Service
	// Streams carries the replies' events between replicas.
	Streams *streams.Bus
	// ContextWindow is a model alias's context window, in tokens.
	ContextWindow func(alias string) int
}

// errShuttingDown ends the replies still running when the server stops.
var errShuttingDown = errors.New("server shutting down")

// replyOutcome is how a reply ended, for a caller waiting on this replica.
type replyOutcome struct {
	added []conversations.Message // the server-side tool steps and the reply
	err   error                   // set when the reply failed
}

// startedReply is a reply generating in the background.
type startedReply struct {
	conversations.Reply
	done <-chan replyOutcome
}

// replyInput is a request for a reply: the input and how to generate it.
type replyInput struct {
	conversation uuid.UUID
	input        conversations.Input
	options      *api.ReplyOptions
}

// startReply validates the options, stores the input and the reply in progress, and
// generates the reply apart from the request: it goes on when the client goes away, until
// it ends, is cancelled (from any replica) or the server stops. Errors come before
// anything is stored, except a message too big for the context window, which fails the
// stored reply.
func (s *Server) startReply(r *http.Request, who caller, in replyInput) (startedReply, error) {
	ctx := r.Context()
	o := who.owner()
	conv, err := s.conv.Service.Get(ctx, o, in.conversation)
	if err != nil {
		return startedReply{}, err
	}
	body := toChatRequest(in.options)
	if body.Model == nil && conv.Model != "" {
		body.Model = &conv.Model
	}
	if body.Prompt != nil && body.Prompt.StickyKey == nil && body.User == nil {
		sticky := conv.ID.String() // a split is sticky per conversation
		body.Prompt.StickyKey = &sticky
	}
	call, use, err := s.chatCallOf(ctx, who, &body)
	if err != nil {
		return startedReply{}, underPointer(err, "/options")
	}
	var prompt *conversations.PromptUse
	if u := use.usage(); u != nil {
		prompt = &conversations.PromptUse{Name: u.Name, Version: u.Version, ExperimentID: u.ExperimentID}
	}
	if !s.holdReply() {
		return startedReply{}, errs.E(errs.NotReady, "The server is shutting down; retry on another replica.")
	}
	reply, err := s.conv.Service.Start(ctx, o, conv.ID, in.input, call.Alias, prompt)
	if err != nil {
		s.replies.Done()
		return startedReply{}, err
	}
	system := call.Request.Messages // the prompt's, rendered
	budget := s.conv.ContextWindow(call.Alias) - *call.Request.MaxTokens
	for _, m := range system {
		budget -= conversations.EstimateTokens(m)
	}
	serverTools, _ := s.llm.Runner.Tools.Definitions(call.ServerTools) // validated above
	for _, t := range append(serverTools, call.Request.Tools...) {
		budget -= (len(t.Name) + len(t.Description) + len(t.Parameters)) / 4
	}
	window, dropped, err := conversations.Window(reply.History, budget)
	if err != nil {
		s.failReply(r, who, reply, err)
		s.replies.Done()
		return startedReply{}, err
	}
	if dropped > 0 {
		s.log.InfoContext(ctx, "history trimmed to the context window", "conversation_id", conv.ID, "dropped_messages", dropped)
	}
	call.Request.Messages = append(append([]llm.Message(nil), system...), window...)
	done := make(chan replyOutcome, 1)
	go s.generate(r, who, reply, call, use, done)
	return startedReply{Reply: reply, done: done}, nil
}

// failReply ends a reply that could not start.
func (s *Server) failReply(r *http.Request, who caller, reply conversations.Reply, cause error) {
	s.endReply(r, who, reply, conversations.Outcome{Status: conversations.Failed, Err: s.storedError(r, cause)}, nil)
}

// endReply stores how a reply ended and publishes its last event; a reply that could not
// be stored ends failed. It returns the messages stored (the steps and the reply) and the
// outcome as published.
func (s *Server) endReply(r *http.Request, who caller, reply conversations.Reply, out conversations.Outcome, res *chat.Result) ([]conversations.Message, conversations.Outcome) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	added, err := s.conv.Service.Finish(ctx, who.org, reply.Conversation.ID, reply.Message.ID, out)
	if err != nil { // the housekeeping task fails the reply later; its stream ends now
		s.log.ErrorContext(ctx, "store a reply", "message_id", reply.Message.ID, "error", err)
		out.Status, out.Err = conversations.Failed, err
	}
	s.publishEnd(r, reply.Message.ID.String(), reply.Message.Model, out, res)
	return added, out
}

// storedError is the error a failed reply is stored and reported with.
func (s *Server) storedError(r *http.Request, err error) error {
	code, detail, _ := s.classify(r, err)
	return &errs.Error{Code: code, Message: detail}
}

// generate runs a reply, publishing its events on the stream bus, and stores how it ended.
func (s *Server) generate(r *http.Request, who caller, reply conversations.Reply, call chat.Call, use *promptUse, done chan<- replyOutcome) {
	defer s.replies.Done()
	id := reply.Message.ID.String()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(r.Context()))
	defer cancel(nil)
	stop := context.AfterFunc(s.replyCtx, func() { cancel(errShuttingDown) })
	defer stop()
	ctx, unwatch := s.conv.Streams.Watch(ctx, id)
	defer unwatch()
	ctx, cancelBound := s.bound(ctx, who)
	defer cancelBound()
	rr := r.WithContext(ctx)

	start := time.Now()
	pub := s.conv.Streams.Publisher(id)
	inputs := make([]uuid.UUID, len(reply.Inputs))
	for i, m := range reply.Inputs {
		inputs[i] = m.ID
	}
	var text strings.Builder // the reply's text so far (not its steps')
	var served llm.Served
	_, err := pub.Publish(ctx, "reply.started", api.ReplyStartedEvent{ConversationId: reply.Conversation.ID, MessageId: reply.Message.ID, InputMessageIds: inputs})
	var res *chat.Result
	if err == nil {
		res, err = s.llm.Runner.Run(ctx, call, func(ev chat.Event) error {
			if ev.Kind == chat.EventStart {
				served = ev.Served
				return nil
			}
			name, data := toChatEvent(ev)
			if _, err := pub.Publish(ctx, name, data); err != nil {
				return err
			}
			switch ev.Kind { // the stored text is what was published
			case chat.EventDelta:
				text.WriteString(ev.Text)
			case chat.EventToolResult:
				text.Reset()
			}
			return nil
		})
	}
	s.recordUsage(rr, who, "conversation", call.Alias, start, res, err, use.usage())

	out := conversations.Outcome{Status: conversations.Completed, Provider: served.Target.Provider, Model: served.Target.Model}
	if res != nil {
		out.Steps, out.Usage, out.CostUSD = res.Steps, res.Usage, res.Cost
		if res.Served.Target.Provider != "" {
			out.Provider, out.Model = res.Served.Target.Provider, res.Served.Target.Model
		}
	}
	switch cause := context.Cause(ctx); {
	case err == nil:
		out.Message, out.FinishReason = res.Message, res.FinishReason
	case errors.Is(cause, streams.ErrCancelled):
		out.Status, out.FinishReason = conversations.Cancelled, llm.FinishReason(api.Cancelled)
	case errors.Is(cause, errShuttingDown):
		out.Status, out.Err = conversations.Failed, errs.E(errs.NotReady, "The server stopped while generating this reply; send the message again.")
	default:
		out.Status, out.Err = conversations.Failed, s.storedError(rr, err)
	}
	if out.Status != conversations.Completed {
		out.Message = llm.TextMessage(llm.RoleAssistant, text.String())
	}

	out.FirstExchange = reply.Conversation.Title == "" && firstExchange(reply.History)
	added, out := s.endReply(r, who, reply, out, res)
	done <- replyOutcome{added: added, err: out.Err}
}

// publishEnd publishes a reply's last event: done, or error for a failed reply.
func (s *Server) publishEnd(r *http.Request, id, alias string, out conversations.Outcome, res *chat.Result) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	pub := s.conv.Streams.Publisher(id)
	var err error
	if out.Status == conversations.Failed {
		code, detail, _ := s.classify(r, out.Err)
		_, err = pub.Finish(ctx, "error", newProblem(ctx, r.URL.Path, code, detail, nil))
	} else {
		if res == nil {
			res = &chat.Result{}
		}
		d := toChatDone(id, alias, res)
		d.Provider, d.ProviderModel, d.FinishReason = out.Provider, out.Model, api.FinishReason(out.FinishReason)
		_, err = pub.Finish(ctx, "done", d)
	}
	if err != nil {
		s.log.ErrorContext(ctx, "publish the end of a reply", "message_id", id, "error", err)
	}
}

// firstExchange reports whether history (with the new input) holds one user message.
func firstExchange(history []conversations.Message) bool {
	users := 0
	for _, m := range history {
		if m.Role == llm.RoleUser {
			users++
		}
	}
	return users == 1
}

// holdReply counts a reply about to start, unless the server is stopping.
func (s *Server) holdReply() bool {
	s.replyMu.Lock()
	defer s.replyMu.Unlock()
	if s.stopping {
		return false
	}
	s.replies.Add(1)
	return true
}

// WaitReplies refuses new replies, waits for those running on this server to end, up to
// ctx; then it stops the rest (stored as failed) and waits for them to be stored.
func (s *Server) WaitReplies(ctx context.Context) {
	s.replyMu.Lock()
	s.stopping = true
	s.replyMu.Unlock()
	idle := make(chan struct{})
	go func() { s.replies.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-ctx.Done():
		s.stopReplies()
		<-idle
	}
}

// toChatRequest is a reply's options as a chat request without messages.
func toChatRequest(o *api.ReplyOptions) api.ChatRequest {
	if o == nil {
		return api.ChatRequest{}
	}
	return api.ChatRequest{
		Model: o.Model, Prompt: o.Prompt, Tools: o.Tools, ServerTools: o.ServerTools, ToolChoice: o.ToolChoice,
		ResponseFormat: o.ResponseFormat, Temperature: o.Temperature, TopP: o.TopP, MaxTokens: o.MaxTokens,
		Stop: o.Stop, Seed: o.Seed, User: o.User,
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
	started, err := s.startReply(r, who, replyInput{conversation: id, input: in, options: options})
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.attachIdempotent(r, started.Conversation.ID.String()+"/"+started.Message.ID.String()+"/"+started.Inputs[0].ID.String())
	w.Header().Set("Kiln-Message-Id", started.Message.ID.String())
	if stream {
		s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
			return s.follow(ctx, started.Message.ID.String(), 0, st)
		})
		return
	}
	select {
	case out := <-started.done:
		if out.err != nil {
			s.respondError(w, r, out.err)
			return
		}
		writeJSON(w, http.StatusOK, toAPIConversationReply(append(slices.Clip(started.Inputs), out.added...)))
	case <-r.Context().Done(): // the client went away; the reply goes on
	}
}

// follow sends a reply's stored events after `after`, then its live ones, until its end.
// The stream opens at once: a client attaching to a reply that is thinking knows it is
// attached.
func (s *Server) follow(ctx context.Context, id string, after uint64, st *sseStream) error {
	if err := st.open(); err != nil {
		return err
	}
	return s.followReply(ctx, id, after, func(ev streams.Event) error {
		return st.SendStored(ev.ID, ev.Type, ev.Data)
	})
}

// followReply follows a reply's events after `after` until its end. A reply whose replica
// died before it ended its stream never ends it: following stops when no reply could still
// be running.
func (s *Server) followReply(ctx context.Context, id string, after uint64, fn func(streams.Event) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.llm.StreamTimeout+time.Minute)
	defer cancel()
	return s.conv.Streams.Follow(ctx, id, after, fn)
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
	m, err := s.conv.Service.Message(r.Context(), who.owner(), conv, msgID)
	if err == nil && m.Role != llm.RoleAssistant {
		err = errs.E(errs.NotFound, "Message %s is not a reply: it has no events.", msgID)
	}
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	after, err := lastEventID(r)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.serveEvents(w, r, m, after)
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

// serveEvents streams reply m's events after `after`: stored, then live. Past the stream's
// TTL it is a 410.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request, m conversations.Message, after uint64) {
	if m.Status != conversations.InProgress {
		ok, err := s.conv.Streams.Exists(r.Context(), m.ID.String())
		if err == nil && !ok {
			err = errs.E(errs.StreamExpired, "The reply's events are no longer kept; read the reply with GET /v1/conversations/%s/messages.", m.ConversationID)
		}
		if err != nil {
			s.respondError(w, r, err)
			return
		}
	}
	s.serveSSE(w, r, func(ctx context.Context, st *sseStream) error {
		return s.follow(ctx, m.ID.String(), after, st)
	})
}

// reattach answers a retry of a request whose reply was started (ref: conversation, reply
// and first input ids): with the reply's events from the first when it asks for a stream,
// else with the messages the first request added, once the reply has ended.
func (s *Server) reattach(w http.ResponseWriter, r *http.Request, ref string, body []byte) {
	var ids [3]uuid.UUID // conversation, reply, first input
	parts := strings.Split(ref, "/")
	err := fmt.Errorf("malformed idempotency reference %q", ref)
	if len(parts) == len(ids) {
		err = nil
		for i := range ids {
			ids[i], err = uuid.Parse(parts[i])
			if err != nil {
				break
			}
		}
	}
	var who caller
	if err == nil {
		who, err = s.callerFor(r)
	}
	var m conversations.Message
	if err == nil {
		m, err = s.conv.Service.Message(r.Context(), who.owner(), ids[0], ids[1])
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
	w.Header().Set("Kiln-Message-Id", m.ID.String())
	if req.Stream {
		s.serveEvents(w, r, m, 0)
		return
	}
	if m.Status == conversations.InProgress { // wait for its end
		if err := s.followReply(r.Context(), m.ID.String(), 0, func(streams.Event) error { return nil }); err != nil {
			s.respondError(w, r, err)
			return
		}
		if m, err = s.conv.Service.Message(r.Context(), who.owner(), ids[0], ids[1]); err != nil {
			s.respondError(w, r, err)
			return
		}
	}
	if m.Status == conversations.Failed {
		s.respondError(w, r, &errs.Error{Code: m.ErrorCode, Message: m.ErrorDetail})
		return
	}
	turn, err := s.conv.Service.Turn(r.Context(), who.owner(), ids[0], ids[2], ids[1])
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
