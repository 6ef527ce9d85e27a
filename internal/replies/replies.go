// Package replies is the app layer of conversation replies, shared by every transport
// (HTTP, SSE, WebSocket, idempotent retries) and the worker. It starts a reply (stores its
// input, fits the history to the model's context window, generates it apart from the
// request that asked for it), lets a transport wait for it or follow its events, re-attach
// to it, cancel it from any replica, and stops this replica's replies at shutdown. It
// knows nothing of HTTP: the transports shape its events (Events) and convert its errors.
package replies

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/streams"
)

// The event types the reply itself publishes; the runner's events are named by Events.
const (
	EventStarted = "reply.started"
	EventDone    = "done"
	EventError   = "error"
)

// storeTimeout bounds storing and publishing a reply's end, detached from whatever
// cancelled the reply.
const storeTimeout = 10 * time.Second

// DefaultLeaseTTL is how long a reply's lease lasts without renewal (Deps.LeaseTTL).
const DefaultLeaseTTL = 6 * time.Second

// ErrUnstored is the error of a reply the store refused as generated (its tool calls, its
// steps): it is stored failed with the text it published.
var ErrUnstored = errs.E(errs.Internal, "The reply could not be stored as generated; the text it published is kept.")

// errShuttingDown ends the replies still running when the replica stops.
var errShuttingDown = errors.New("replica shutting down")

// Events shapes a reply's events for its readers: the wire format is the transports',
// the order and meaning the reply's.
type Events interface {
	// Started is the data of a reply's first event, reply.started.
	Started(r conversations.Reply) any
	// Event names and shapes one runner event (never chat.EventStart).
	Event(ev chat.Event) (string, any)
	// Done is the data of the last event of a reply that completed or was cancelled; res
	// is nil when the runner returned none.
	Done(reply conversations.Message, out conversations.Outcome, res *chat.Result) any
	// Failed is the data of the last event of a failed reply. requestID and instance
	// name the request that started it ("" when there is none).
	Failed(requestID, instance string, e *errs.Error) any
	// Text reads a published event back: the text it adds to the reply (a delta's), and
	// whether the text so far belonged to a finished step (a tool result). A reply whose
	// generator died is stored with the text its events published.
	Text(ev streams.Event) (text string, reset bool)
}

// Deps is what the service needs; cmd/kiln builds it.
type Deps struct {
	Conversations *conversations.Service
	Prompts       *prompts.Service
	Runner        *chat.Runner
	Usage         *usage.Recorder
	// Streams carries the replies' events between replicas.
	Streams *streams.Bus
	Events  Events
	// Log reports what fails after the request that started a reply has ended.
	Log *slog.Logger
	// ContextWindow is a model alias's context window, in tokens.
	ContextWindow func(alias string) int
	// StreamTimeout bounds one reply (llm.stream_timeout).
	StreamTimeout time.Duration
	// LeaseTTL is how long a reply's lease lasts unless its generator renews it (every
	// third of it); a reply in progress without a lease, older than one, lost its
	// generator and is ended by the next message, follower or housekeeping. Default
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	// Now is the clock of the conversations' store (default time.Now): a reply's age is
	// measured on it.
	Now func() time.Time
}

// Service runs the replies of one replica.
type Service struct {
	d Deps
	// mu orders hold's Add before Shutdown's Wait.
	mu       sync.Mutex
	stopping bool
	running  sync.WaitGroup
	stop     context.Context //nolint:containedctx // the lifetime of this replica's replies
	stopAll  context.CancelFunc
}

// New returns the service.
func New(d Deps) *Service {
	if d.LeaseTTL <= 0 {
		d.LeaseTTL = DefaultLeaseTTL
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Service{d: d}
	s.stop, s.stopAll = context.WithCancel(context.Background())
	return s
}

// Caller is who asks for a reply and the request that asked: the values a reply keeps
// once that request has ended.
type Caller struct {
	Owner     conversations.Owner
	RequestID string
	// Instance names the request in a failed reply's error event (its path); "" none.
	Instance string
	// ReadsKnowledge is whether the caller may read the org's knowledge bases (a user, or
	// an API key with kb:read): a reply grounded in them reads them.
	ReadsKnowledge bool
	// Trace is the caller's span, which the reply's spans (model calls, queries) continue;
	// invalid when tracing is off.
	Trace trace.SpanContext
}

// account is the caller's usage entry.
func (c Caller) account() chat.Account {
	a := chat.Account{Org: c.Owner.Org, RequestID: c.RequestID}
	if c.Owner.Key != nil {
		a.APIKey = *c.Owner.Key
	}
	if c.Owner.User != nil {
		a.User = *c.Owner.User
	}
	return a
}

// background is a context for work that outlives the caller's request: its request id
// for the logs, its trace, no cancellation of its own.
func (c Caller) background() context.Context {
	return trace.ContextWithSpanContext(logging.WithRequestID(context.Background(), c.RequestID), c.Trace)
}

// Request asks for a reply in a conversation.
type Request struct {
	Conversation uuid.UUID
	Input        conversations.Input
	// Call is the reply's options as a runner call without messages. Its Alias is "" when
	// the request names no model: the conversation's model applies, else the prompt's,
	// else "default".
	Call chat.Call
	// Prompt is the stored prompt the reply uses, if any; StickyKey who a split label is
	// sticky for ("": the call's user, else the conversation).
	Prompt    *prompts.Ref
	StickyKey string
	// Endpoint names the transport in the reply's usage record ("": conversation).
	Endpoint string
}

// Started is a reply generating in the background.
type Started struct {
	conversations.Reply
	s    *Service
	done <-chan ended
}

// ended is how a reply ended, for a caller waiting on this replica.
type ended struct {
	added []conversations.Message // the server-side tool steps and the reply
	err   error                   // set when the reply failed
}

// Start validates the request, stores the input and the reply in progress, and generates
// the reply apart from the caller: it goes on when the caller goes away, until it ends, is
// cancelled (from any replica) or the replica stops. Errors come before anything is
// stored (not_found, invalid_request under /options, conflict, not_ready while shutting
// down), except a message too big for the context window (invalid_request), which fails
// the stored reply.
func (s *Service) Start(ctx context.Context, c Caller, req Request) (*Started, error) {
	o := c.Owner
	conv, err := s.d.Conversations.Get(ctx, o, req.Conversation)
	if err != nil {
		return nil, err
	}
	call, prompt, err := s.callOf(ctx, c, conv, req)
	if err != nil {
		return nil, errs.UnderPointer(err, "/options")
	}
	if !s.hold() {
		return nil, errs.E(errs.NotReady, "The server is shutting down; retry on another replica.")
	}
	var stored *conversations.PromptUse
	if prompt != nil {
		stored = &conversations.PromptUse{Name: prompt.Name, Version: prompt.Version, ExperimentID: prompt.ExperimentID}
	}
	budget := s.budget(call)
	budget -= s.d.Runner.SourceRoom(call, budget) // the room a grounded reply keeps for its sources
	reply, err := s.d.Conversations.Start(ctx, o, conv.ID, req.Input, call.Alias, stored, budget)
	if errs.CodeOf(err) == errs.Conflict && s.freeOrphaned(ctx, o.Org, conv.ID) {
		reply, err = s.d.Conversations.Start(ctx, o, conv.ID, req.Input, call.Alias, stored, budget)
	}
	if err != nil {
		s.running.Done()
		return nil, err
	}
	window, dropped, err := conversations.Window(reply.History, budget)
	if err != nil {
		s.end(c, reply, conversations.Outcome{Status: conversations.Failed, Err: s.failure(ctx, reply, err)}, nil)
		s.running.Done()
		return nil, err
	}
	if dropped > 0 {
		s.d.Log.InfoContext(ctx, "history trimmed to the context window", "conversation_id", conv.ID, "dropped_messages", dropped)
	}
	call.Request.Messages = append(slices.Clip(call.Request.Messages), window...) // the prompt's, then the history
	done := make(chan ended, 1)
	endpoint := req.Endpoint
	if endpoint == "" {
		endpoint = "conversation"
	}
	go s.generate(c, reply, call, prompt, endpoint, done)
	return &Started{Reply: reply, s: s, done: done}, nil
}

// callOf is the validated runner call of req in conv, and the prompt it uses if any. The
// model is the request's, else the conversation's, else the prompt's, else "default"; a
// prompt's split is sticky per conversation unless the request says otherwise.
func (s *Service) callOf(ctx context.Context, c Caller, conv conversations.Conversation, req Request) (chat.Call, *usage.PromptUse, error) {
	call := req.Call
	call.Org = c.Owner.Org
	if call.Alias == "" {
		call.Alias = conv.Model
	}
	var use *usage.PromptUse
	if req.Prompt != nil {
		sticky := req.StickyKey
		if sticky == "" {
			sticky = call.Request.User
		}
		if sticky == "" {
			sticky = conv.ID.String()
		}
		rendered, err := s.d.Prompts.Resolve(ctx, c.Owner.Org, *req.Prompt, sticky)
		if err != nil {
			return call, nil, errs.UnderPointer(err, "/prompt")
		}
		rendered.Apply(&call.Request)
		if len(call.KnowledgeBases) == 0 {
			call.KnowledgeBases = rendered.Parameters.KnowledgeBases
		}
		if call.Alias == "" {
			call.Alias = rendered.Model
		}
		use = &usage.PromptUse{Name: rendered.Prompt, Version: rendered.Version, ExperimentID: rendered.ExperimentID}
	}
	if call.Alias == "" {
		call.Alias = "default"
	}
	if len(call.KnowledgeBases) > 0 && !c.ReadsKnowledge {
		return call, use, errs.E(errs.PermissionDenied, "This API key lacks the scope \"kb:read\", which answering from knowledge bases needs.")
	}
	return call, use, s.d.Runner.Validate(ctx, &call)
}

// budget is the room left for the history in the model's context window: the window less
// the reply's max tokens, the prompt's messages and the offered tools' definitions.
func (s *Service) budget(call chat.Call) int {
	budget := s.d.ContextWindow(call.Alias) - *call.Request.MaxTokens
	for _, m := range call.Request.Messages {
		budget -= conversations.EstimateTokens(m)
	}
	serverTools, _ := s.d.Runner.Tools.Definitions(call.ServerTools) // validated
	for _, t := range append(serverTools, call.Request.Tools...) {
		budget -= (len(t.Name) + len(t.Description) + len(t.Parameters)) / 4
	}
	return budget
}

// Ref names the reply for the retries of the request that started it (Reattach).
func (r *Started) Ref() string {
	return r.Conversation.ID.String() + "/" + r.Message.ID.String() + "/" + r.Inputs[0].ID.String()
}

// Wait waits, up to ctx, for the reply's end and returns the messages the request added
// (its inputs, the server-side tool steps and the reply), or the error the reply failed
// with; ctx's error when ctx ends first (the reply goes on).
func (r *Started) Wait(ctx context.Context) ([]conversations.Message, error) {
	select {
	case e := <-r.done:
		if e.err != nil {
			return nil, e.err
		}
		return append(slices.Clip(r.Inputs), e.added...), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Cancel asks the reply to stop, on whichever replica generates it.
func (r *Started) Cancel(ctx context.Context) error {
	return r.s.d.Streams.Cancel(ctx, r.Message.ID.String())
}

// generate runs a reply, publishing its events on the stream bus, and stores how it ended.
func (s *Service) generate(c Caller, reply conversations.Reply, call chat.Call, prompt *usage.PromptUse, endpoint string, done chan<- ended) {
	defer s.running.Done()
	id := reply.Message.ID.String()
	ctx, cancel := context.WithCancelCause(c.background())
	defer cancel(nil)
	stop := context.AfterFunc(s.stop, func() { cancel(errShuttingDown) })
	defer stop()
	ctx, unwatch := s.d.Streams.Watch(ctx, id)
	defer unwatch()
	ctx = llm.WithConversation(llm.WithOrg(ctx, c.Owner.Org), reply.Message.ConversationID.String())
	if c.Owner.Key != nil {
		ctx = llm.WithAPIKey(ctx, *c.Owner.Key)
	}
	ctx, cancelBound := context.WithTimeout(ctx, s.d.StreamTimeout)
	defer cancelBound()
	release := s.lease(c, id)
	defer release() // once the end is stored (or could not be): run last

	start := time.Now()
	pub := s.d.Streams.Publisher(id)
	var text strings.Builder // the reply's text so far (not its steps')
	var served llm.Served
	_, err := pub.Publish(ctx, EventStarted, s.d.Events.Started(reply))
	var res *chat.Result
	if err == nil {
		res, err = s.d.Runner.Run(ctx, call, func(ev chat.Event) error {
			if ev.Kind == chat.EventStart {
				served = ev.Served
				return nil
			}
			name, data := s.d.Events.Event(ev)
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
	s.d.Usage.Record(chat.UsageRecord(ctx, c.account(), endpoint, call.Alias, start, res, err, prompt))

	out := conversations.Outcome{Status: conversations.Completed, Provider: served.Target.Provider, Model: served.Target.Model}
	if res != nil {
		out.Steps, out.Usage, out.CostUSD, out.Citations = res.Steps, res.Usage, res.Cost, res.Citations
		if res.Served.Target.Provider != "" {
			out.Provider, out.Model = res.Served.Target.Provider, res.Served.Target.Model
		}
	}
	switch cause := context.Cause(ctx); {
	case err == nil:
		out.Message, out.FinishReason = res.Message, res.FinishReason
	case errors.Is(cause, streams.ErrCancelled):
		out.Status, out.FinishReason = conversations.Cancelled, llm.FinishCancelled
	case errors.Is(cause, errShuttingDown):
		out.Status, out.Err = conversations.Failed, errs.E(errs.NotReady, "The server stopped while generating this reply; send the message again.")
	default:
		out.Status, out.Err = conversations.Failed, s.failure(ctx, reply, err)
	}
	if out.Status != conversations.Completed {
		out.Message = llm.TextMessage(llm.RoleAssistant, text.String())
	}

	// Completed, the reply that ends an untitled conversation's first exchange asks for its
	// title in the transaction that stores it (conversations.Service.TitleJob).
	out.FirstExchange = reply.Conversation.Title == "" && reply.FirstExchange
	added, out := s.end(c, reply, out, res)
	done <- ended{added: added, err: out.Err}
}

// failure is the error a failed reply is stored and reported with. An internal error is
// logged here, once: nobody else sees its text.
func (s *Service) failure(ctx context.Context, reply conversations.Reply, err error) *errs.Error {
	e, known := errs.Classify(err)
	if !known {
		s.d.Log.ErrorContext(ctx, "reply failed", "message_id", reply.Message.ID, "error", err)
	}
	return e
}

// end stores how a reply ended and publishes its last event; a reply that could not be
// stored ends failed. It returns the messages stored (the steps and the reply) and the
// outcome as published.
func (s *Service) end(c Caller, reply conversations.Reply, out conversations.Outcome, res *chat.Result) ([]conversations.Message, conversations.Outcome) {
	ctx, cancel := context.WithTimeout(c.background(), storeTimeout)
	defer cancel()
	added, err := s.d.Conversations.Finish(ctx, c.Owner.Org, reply.Conversation.ID, reply.Message.ID, out)
	if err != nil && errs.CodeOf(err) != errs.Conflict {
		// Keep what was published: the text alone, failed.
		s.d.Log.ErrorContext(ctx, "store a reply", "message_id", reply.Message.ID, "error", err)
		kept := conversations.Outcome{
			Status: conversations.Failed, Err: ErrUnstored, Message: llm.TextMessage(llm.RoleAssistant, out.Message.Text()),
			Provider: out.Provider, Model: out.Model, FinishReason: out.FinishReason, Citations: out.Citations,
		}
		if added, err = s.d.Conversations.Finish(ctx, c.Owner.Org, reply.Conversation.ID, reply.Message.ID, kept); err == nil {
			out = kept
		}
	}
	if err != nil { // released, the reply's lease lets the next message, follower or housekeeping end it; its stream ends now
		s.d.Log.ErrorContext(ctx, "store a reply", "message_id", reply.Message.ID, "error", err)
		out.Status, out.Err = conversations.Failed, err
	}
	pub := s.d.Streams.Publisher(reply.Message.ID.String())
	if out.Status == conversations.Failed {
		e, _ := errs.Classify(out.Err) // an internal error is logged above
		_, err = pub.Finish(ctx, EventError, s.d.Events.Failed(c.RequestID, c.Instance, e))
	} else {
		_, err = pub.Finish(ctx, EventDone, s.d.Events.Done(reply.Message, out, res))
	}
	if err != nil {
		s.d.Log.ErrorContext(ctx, "publish the end of a reply", "message_id", reply.Message.ID, "error", err)
	}
	return added, out
}

// hold counts a reply about to start, unless the replica is stopping.
func (s *Service) hold() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.running.Add(1)
	return true
}

// Shutdown refuses new replies and waits for those running on this replica to end, up to
// ctx; then it stops the rest (stored as failed, not_ready) and waits for them to be
// stored.
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() { s.running.Wait(); close(idle) }()
	select {
	case <-idle:
	case <-ctx.Done():
		s.stopAll()
		<-idle
	}
}

// lease takes reply id's lease and renews it until release, which drops it.
func (s *Service) lease(c Caller, id string) (release func()) {
	ctx, cancel := context.WithCancel(c.background())
	renew := func() {
		if err := s.d.Streams.Lease(ctx, id, s.d.LeaseTTL); err != nil && ctx.Err() == nil {
			s.d.Log.WarnContext(ctx, "renew the lease of a reply", "message_id", id, "error", err)
		}
	}
	renew()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		tick := time.NewTicker(s.d.LeaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				renew()
			}
		}
	}()
	return func() {
		cancel()
		<-renewed
		ctx, cancel := context.WithTimeout(c.background(), storeTimeout)
		defer cancel()
		if err := s.d.Streams.Release(ctx, id); err != nil {
			s.d.Log.WarnContext(ctx, "release the lease of a reply", "message_id", id, "error", err)
		}
	}
}

// freeOrphaned ends the reply in progress in a conversation if its generator died, and
// reports whether it did: the conversation is free again.
func (s *Service) freeOrphaned(ctx context.Context, org, conversation uuid.UUID) bool {
	running, err := s.d.Conversations.Running(ctx, org, conversation)
	if err != nil {
		return false
	}
	ended, err := s.endOrphaned(ctx, org, running)
	if err != nil {
		s.d.Log.WarnContext(ctx, "end an orphaned reply", "message_id", running.ID, "error", err)
	}
	return ended
}

// endOrphaned ends reply as failed if no replica generates it any more: it is still in
// progress, older than a lease, and holds none. It reports whether it did.
func (s *Service) endOrphaned(ctx context.Context, org uuid.UUID, reply conversations.Message) (bool, error) {
	if s.d.Now().Sub(reply.CreatedAt) < s.d.LeaseTTL {
		return false, nil // its generator may not have taken its lease yet
	}
	held, err := s.d.Streams.Leased(ctx, reply.ID.String())
	if err != nil || held {
		return false, err
	}
	running, err := s.d.Conversations.Running(ctx, org, reply.ConversationID)
	if errs.CodeOf(err) == errs.NotFound || err == nil && running.ID != reply.ID {
		return false, nil // it ended
	}
	if err != nil {
		return false, err
	}
	stored, err := s.endStale(ctx, org, reply.ConversationID, reply.ID)
	return stored || err == nil, err // ended by this call, or by another meanwhile
}

// endStale stores reply id as failed (conversations.ErrStale) with the text its events
// published, and ends its stream with an error event. It reports false when the reply
// had ended meanwhile. When its events cannot be read (Redis is down) it is still ended,
// without its text, and the error is returned: the conversation is free again.
func (s *Service) endStale(ctx context.Context, org, conversation, id uuid.UUID) (bool, error) {
	text, readErr := s.published(ctx, id.String())
	out := conversations.Outcome{Status: conversations.Failed, Err: conversations.ErrStale, Message: llm.TextMessage(llm.RoleAssistant, text)}
	if _, err := s.d.Conversations.Finish(ctx, org, conversation, id, out); errs.CodeOf(err) == errs.Conflict {
		return false, nil // it ended meanwhile, and its stream with it
	} else if err != nil {
		return false, fmt.Errorf("store stale reply %s: %w", id, err)
	}
	if readErr != nil {
		return true, fmt.Errorf("read the text of stale reply %s: %w", id, readErr)
	}
	_, err := s.d.Streams.Publisher(id.String()).Finish(ctx, EventError, s.d.Events.Failed("", "", conversations.ErrStale))
	if err != nil && !errors.Is(err, streams.ErrFinished) {
		return true, fmt.Errorf("end the stream of reply %s: %w", id, err)
	}
	return true, nil
}

// published is the text reply id's events published, as generate keeps it.
func (s *Service) published(ctx context.Context, id string) (string, error) {
	var text strings.Builder
	for after := uint64(0); ; {
		evs, _, err := s.d.Streams.Read(ctx, id, after, publishedPage)
		if err != nil {
			return "", err
		}
		for _, ev := range evs {
			t, reset := s.d.Events.Text(ev)
			if reset {
				text.Reset()
			}
			text.WriteString(t)
			after = ev.ID
		}
		if len(evs) < publishedPage {
			return text.String(), nil
		}
	}
}

// publishedPage is how many events published reads at once.
const publishedPage = 512
