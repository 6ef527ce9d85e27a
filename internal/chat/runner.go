// Package chat runs chat requests: one model call through the gateway, or a bounded loop
// of model calls and server-side tool calls, streamed as events or returned whole.
package chat

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/cache"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/rag"
)

// Runner runs chat requests on the gateway's model aliases.
type Runner struct {
	Gateway     *llm.Gateway
	Tools       *tools.Registry
	Cache       *cache.Cache  // nil: no response cache
	MaxSteps    int           // model calls per request when server tools run
	ToolTimeout time.Duration // per server tool call
	MaxTokens   int           // cap and default of a request's max tokens
	Now         func() time.Time
	// Knowledge grounds the calls that name knowledge bases; nil: such calls are refused.
	Knowledge Knowledge
	// ContextWindow is a model alias's context window in tokens: a grounded call's sources
	// take the room its messages and reply leave (nil: SourceTokens, whatever the window).
	ContextWindow func(alias string) int
	// SourceTokens caps the tokens of a grounded call's sources (default DefaultSourceTokens).
	SourceTokens int
}

// DefaultSourceTokens is Runner.SourceTokens's default.
const DefaultSourceTokens = 4096

// Knowledge retrieves from an org's knowledge bases and composes what it finds into the
// model's context (rag.Service).
type Knowledge interface {
	// CheckKnowledgeBases returns not_found naming the first of ids that is not org's.
	CheckKnowledgeBases(ctx context.Context, org uuid.UUID, ids []uuid.UUID) error
	// Ground retrieves the chunks that best answer query and composes them, fenced as
	// untrusted data, within budget tokens.
	Ground(ctx context.Context, org uuid.UUID, ids []uuid.UUID, query string, budget int) (rag.Composed, error)
}

// Call is one chat request.
type Call struct {
	Alias   string
	Request llm.Request
	// ServerTools names the registered tools to offer the model; Kiln runs their calls.
	ServerTools []string
	// Org scopes the response cache; Cache asks to use it (ignored with server tools,
	// whose results may change: current_time).
	Org   uuid.UUID
	Cache bool
	// KnowledgeBases are org's knowledge bases the reply is grounded in: before the model
	// is called, the last user message retrieves from them, and the composed sources go to
	// the model as a system message after the leading ones (Result.Citations).
	KnowledgeBases []uuid.UUID
}

// The cache outcomes of a run.
const (
	CacheHit  = "hit"
	CacheMiss = "miss"
)

// EventKind is the kind of a streamed chat event.
type EventKind int

// The streamed chat events.
const (
	EventStart         EventKind = iota + 1 // Served (and Cache): a target or the cache answered; nothing sent to the client yet
	EventDelta                              // Text
	EventToolCallDelta                      // Index, Call (a piece)
	EventToolCall                           // Index, Call, Server
	EventToolResult                         // Call (the call answered), Result
	EventUsage                              // Usage, Cost (of the whole request)
	EventCitations                          // Citations: a grounded call's sources, once, right after the first EventStart
)

// Event is one step of a streamed reply.
type Event struct {
	Kind   EventKind
	Text   string
	Index  int
	Call   llm.ToolCall
	Server bool // the call is a server tool's: Kiln runs it
	Result tools.Result
	Usage  llm.Usage
	Cost   float64
	Served llm.Served
	Cache  string // EventStart: CacheHit, CacheMiss or "" (not cacheable)
	// Citations are EventCitations's sources (never nil there).
	Citations []rag.Citation
}

// Result is a finished reply.
type Result struct {
	Message llm.Message // the final assistant message
	// Steps are the assistant tool calls and tool results of server tools before Message.
	Steps        []llm.Message
	FinishReason llm.FinishReason
	Usage        llm.Usage
	Cost         float64
	Served       llm.Served // of the last model call
	Attempts     int        // upstream attempts over all steps
	TTFT         time.Duration
	Cache        string // CacheHit, CacheMiss or "" (not cacheable)
	// Citations are the sources of a grounded call, by number (empty when none was
	// retrieved); nil when the call named no knowledge base.
	Citations []rag.Citation
	cited     bool // EventCitations was emitted
}

// Validate checks what the spec cannot: the alias, the server tools, the tool choice and
// that the knowledge bases are c.Org's, and caps max tokens. It returns invalid_request or
// not_found errors naming the field (not_ready when the server has no knowledge bases).
func (r *Runner) Validate(ctx context.Context, c *Call) error {
	if !r.Gateway.Has(c.Alias) {
		return errs.E(errs.NotFound, "No model named %q; GET /v1/models lists them.", c.Alias)
	}
	if len(c.KnowledgeBases) > 0 {
		if r.Knowledge == nil {
			return errs.E(errs.NotReady, "This server answers from no knowledge base.")
		}
		if err := r.Knowledge.CheckKnowledgeBases(ctx, c.Org, c.KnowledgeBases); err != nil {
			return err
		}
	}
	if len(c.ServerTools) > 0 {
		if _, err := r.Tools.Definitions(c.ServerTools); err != nil {
			return err
		}
	}
	for i, t := range c.Request.Tools {
		if r.Tools.Has(t.Name) && contains(c.ServerTools, t.Name) {
			return errs.InvalidFields("invalid tools", []errs.FieldError{{Pointer: fmt.Sprintf("/tools/%d/name", i), Message: "is also requested in server_tools"}})
		}
	}
	if tc := c.Request.ToolChoice; tc != nil && tc.Mode == llm.ToolChoiceTool {
		found := contains(c.ServerTools, tc.Name)
		for _, t := range c.Request.Tools {
			found = found || t.Name == tc.Name
		}
		if !found {
			return errs.InvalidFields("invalid tool_choice", []errs.FieldError{{Pointer: "/tool_choice/name", Message: "names no offered tool"}})
		}
	}
	if c.Request.MaxTokens == nil || *c.Request.MaxTokens > r.MaxTokens {
		n := r.MaxTokens
		c.Request.MaxTokens = &n
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Run runs c (validated by Validate). With emit nil it makes blocking model calls and
// returns the whole reply; otherwise it streams, calling emit for every event; an error
// from emit (the client went away) stops the run. Errors before the first EventStart
// mean nothing was sent.
func (r *Runner) Run(ctx context.Context, c Call, emit func(Event) error) (*Result, error) {
	start := r.Now()
	req := c.Request
	if len(c.ServerTools) > 0 {
		defs, err := r.Tools.Definitions(c.ServerTools)
		if err != nil {
			return nil, err
		}
		req.Tools = append(append([]llm.Tool(nil), req.Tools...), defs...)
	}
	req.Messages = append([]llm.Message(nil), req.Messages...)
	res := &Result{}
	if len(c.KnowledgeBases) > 0 {
		cited, err := r.ground(ctx, c, &req)
		if err != nil {
			return nil, err
		}
		res.Citations = cited
	}
	key := ""
	if c.Cache && r.Cache != nil && len(c.ServerTools) == 0 {
		key = cacheKeyOf(c)
		if b, ok, err := r.Cache.Get(ctx, c.Org, key); err == nil && ok {
			if hit, ok, err := r.replay(ctx, c, b, res.Citations, emit, start); ok {
				return hit, err
			}
		}
		res.Cache = CacheMiss
	}
	for step := 1; ; step++ {
		if step == r.MaxSteps && len(c.ServerTools) > 0 {
			req.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceNone} // the last step must answer
		}
		var reply *llm.Response
		var served llm.Served
		var err error
		if emit == nil {
			reply, served, err = r.Gateway.Chat(ctx, c.Alias, &req)
		} else {
			reply, served, err = r.stream(ctx, c, &req, emit, res, start)
		}
		res.Attempts += len(served.Attempts)
		res.Served = served
		if err != nil {
			return res, err
		}
		res.Usage = res.Usage.Add(reply.Usage)
		res.Cost += served.Target.Price.Cost(reply.Usage)
		res.Message, res.FinishReason = reply.Message, reply.FinishReason
		calls := reply.Message.ToolCalls
		if len(calls) == 0 || !r.allServer(c, calls) || step >= r.MaxSteps {
			break
		}
		res.Steps = append(res.Steps, reply.Message)
		req.Messages = append(req.Messages, reply.Message)
		for _, call := range calls {
			out := r.Tools.Run(ctx, call, r.ToolTimeout)
			msg := llm.Message{Role: llm.RoleTool, ToolCallID: call.ID, Name: call.Name, Content: []llm.Part{{Type: llm.PartText, Text: out.Content}}}
			res.Steps = append(res.Steps, msg)
			req.Messages = append(req.Messages, msg)
			if emit != nil {
				if err := emit(Event{Kind: EventToolResult, Call: call, Result: out}); err != nil {
					return res, err
				}
			}
		}
	}
	if emit != nil {
		if err := emit(Event{Kind: EventUsage, Usage: res.Usage, Cost: res.Cost}); err != nil {
			return res, err
		}
	}
	if key != "" {
		b, err := json.Marshal(cachedReply{Message: res.Message, FinishReason: res.FinishReason, Usage: res.Usage, Target: res.Served.Target})
		if err == nil {
			_ = r.Cache.Put(context.WithoutCancel(ctx), c.Org, key, b) // a failed put only costs a later miss
		}
	}
	return res, nil
}

// cachedReply is what the response cache keeps of a reply.
type cachedReply struct {
	Message      llm.Message
	FinishReason llm.FinishReason
	Usage        llm.Usage
	Target       llm.Target
}

// cacheKey is what makes two requests the same for the cache: the normalised request
// (defaults applied by Validate, raw schemas canonicalised), without the end-user id.
type cacheKey struct {
	Alias          string
	Messages       []llm.Message
	Tools          []llm.Tool
	ToolChoice     *llm.ToolChoice
	ResponseFormat *llm.ResponseFormat
	Temperature    *float64
	TopP           *float64
	MaxTokens      *int
	Stop           []string
	Seed           *int64
}

func cacheKeyOf(c Call) string {
	req := c.Request
	k := cacheKey{Alias: c.Alias, Messages: req.Messages, ToolChoice: req.ToolChoice, Temperature: req.Temperature,
		TopP: req.TopP, MaxTokens: req.MaxTokens, Stop: req.Stop, Seed: req.Seed}
	for _, t := range req.Tools {
		t.Parameters = cache.Canonical(t.Parameters)
		k.Tools = append(k.Tools, t)
	}
	if rf := req.ResponseFormat; rf != nil {
		f := *rf
		f.Schema = cache.Canonical(f.Schema)
		k.ResponseFormat = &f
	}
	key, err := cache.Key(k)
	if err != nil {
		return "" // unreachable: every field encodes
	}
	return key
}

// replay answers from a cached reply, as events when emit is set; ok is false when the
// entry cannot be read, and the caller generates instead.
func (r *Runner) replay(ctx context.Context, c Call, b []byte, citations []rag.Citation, emit func(Event) error, start time.Time) (res *Result, ok bool, err error) {
	var cr cachedReply
	if json.Unmarshal(b, &cr) != nil {
		return nil, false, nil //nolint:nilerr // an entry of another format is a miss: generate instead
	}
	res = &Result{Message: cr.Message, FinishReason: cr.FinishReason, Usage: cr.Usage, Cache: CacheHit,
		Served: llm.Served{Alias: c.Alias, Target: cr.Target}, TTFT: r.Now().Sub(start), Citations: citations}
	if emit == nil {
		return res, true, ctx.Err()
	}
	if err := r.start(emit, res, Event{Kind: EventStart, Served: res.Served, Cache: CacheHit}); err != nil {
		return res, true, err
	}
	var events []Event
	if text := cr.Message.Text(); text != "" {
		events = append(events, Event{Kind: EventDelta, Text: text})
	}
	for i, call := range cr.Message.ToolCalls {
		events = append(events, Event{Kind: EventToolCallDelta, Index: i, Call: call}, Event{Kind: EventToolCall, Index: i, Call: call})
	}
	events = append(events, Event{Kind: EventUsage, Usage: cr.Usage})
	for _, ev := range events {
		if err := emit(ev); err != nil {
			return res, true, err
		}
	}
	return res, true, nil
}

// allServer reports whether every call is of an offered server tool. A reply that also
// calls a client tool goes back to the client whole: it must answer every call.
func (r *Runner) allServer(c Call, calls []llm.ToolCall) bool {
	for _, call := range calls {
		if !contains(c.ServerTools, call.Name) {
			return false
		}
	}
	return true
}

// stream makes one streamed model call, emitting its events, and assembles the reply.
func (r *Runner) stream(ctx context.Context, c Call, req *llm.Request, emit func(Event) error, res *Result, start time.Time) (*llm.Response, llm.Served, error) {
	s, served, err := r.Gateway.ChatStream(ctx, c.Alias, req)
	if err != nil {
		return nil, served, err
	}
	defer s.Close()
	if res.TTFT == 0 {
		res.TTFT = r.Now().Sub(start)
	}
	if err := r.start(emit, res, Event{Kind: EventStart, Served: served, Cache: res.Cache}); err != nil {
		return nil, served, err
	}
	reply := &llm.Response{Message: llm.Message{Role: llm.RoleAssistant}}
	var text []byte
	var calls llm.ToolCallBuffer
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, served, err
		}
		var out Event
		switch ev.Type {
		case llm.EventText:
			text = append(text, ev.Text...)
			out = Event{Kind: EventDelta, Text: ev.Text}
		case llm.EventToolCallDelta:
			calls.Add(ev.Index, ev.ToolCall)
			out = Event{Kind: EventToolCallDelta, Index: ev.Index, Call: ev.ToolCall}
		case llm.EventToolCall:
			calls.Set(ev.Index, ev.ToolCall)
			out = Event{Kind: EventToolCall, Index: ev.Index, Call: ev.ToolCall, Server: contains(c.ServerTools, ev.ToolCall.Name)}
		case llm.EventUsage:
			reply.Usage = ev.Usage
			continue
		case llm.EventFinish:
			reply.FinishReason = ev.FinishReason
			continue
		default:
			continue
		}
		if err := emit(out); err != nil {
			return nil, served, err
		}
	}
	if len(text) > 0 {
		reply.Message.Content = []llm.Part{{Type: llm.PartText, Text: string(text)}}
	}
	reply.Message.ToolCalls = calls.Calls()
	return reply, served, nil
}

// start emits ev (an EventStart), then, the first time, a grounded call's citations: a
// client knows the sources before the reply's first word.
func (r *Runner) start(emit func(Event) error, res *Result, ev Event) error {
	if err := emit(ev); err != nil {
		return err
	}
	if res.Citations == nil || res.cited {
		return nil
	}
	res.cited = true
	return emit(Event{Kind: EventCitations, Citations: res.Citations})
}

// ground retrieves from c's knowledge bases with the last user message of req and puts
// the composed sources in req as a system message after the leading ones (the prompt's
// instructions), before the conversation. It returns the sources' citations.
func (r *Runner) ground(ctx context.Context, c Call, req *llm.Request) ([]rag.Citation, error) {
	query := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if m := req.Messages[i]; m.Role == llm.RoleUser {
			query = m.Text()
			break
		}
	}
	composed, err := r.Knowledge.Ground(ctx, c.Org, c.KnowledgeBases, query, r.sourceBudget(c, req))
	if err != nil {
		return nil, fmt.Errorf("ground in knowledge bases: %w", err)
	}
	at := 0
	for at < len(req.Messages) && req.Messages[at].Role == llm.RoleSystem {
		at++
	}
	req.Messages = slices.Insert(req.Messages, at, llm.TextMessage(llm.RoleSystem, composed.Instructions))
	return composed.Citations, nil
}

// sourceBudget is the tokens a grounded call's sources may take: the room left in the
// model's context window by the reply's max tokens, the messages and the tools'
// definitions, at most SourceTokens.
func (r *Runner) sourceBudget(c Call, req *llm.Request) int {
	budget := cmp.Or(r.SourceTokens, DefaultSourceTokens)
	if r.ContextWindow == nil {
		return budget
	}
	room := r.ContextWindow(c.Alias) - *req.MaxTokens
	for _, m := range req.Messages {
		room -= messageTokens + rag.EstimateTokens(m.Text())
		for _, call := range m.ToolCalls {
			room -= rag.EstimateTokens(call.Name + " " + call.Arguments)
		}
	}
	for _, t := range req.Tools {
		room -= (len(t.Name) + len(t.Description) + len(t.Parameters)) / 4
	}
	return max(0, min(budget, room))
}

// messageTokens is a message's own cost in tokens, beside its text (role, separators).
const messageTokens = 4

// SourceRoom is the share of room (the tokens a conversation's history could fill) that a
// reply grounded in knowledge bases keeps for its sources: half, at most SourceTokens;
// 0 for a call that names no knowledge base.
func (r *Runner) SourceRoom(c Call, room int) int {
	if len(c.KnowledgeBases) == 0 || room <= 0 {
		return 0
	}
	return min(room/2, cmp.Or(r.SourceTokens, DefaultSourceTokens))
}
