package conversations

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/store"
)

// Input is what a reply answers: the user's message, or the results of the last reply's
// client tool calls.
type Input struct {
	User        *llm.Message
	ToolResults []ToolResult
	// Context is stored before User: the earlier turns a client sends with its message
	// (user and assistant messages, tool calls and their results), as the OpenAI Responses
	// API's input items carry them. Only with User.
	Context []llm.Message
}

// ToolResult answers one client tool call.
type ToolResult struct {
	CallID  string
	Content string
	IsError bool
}

// Reply is a reply just started: its conversation, the input messages stored for it, the
// reply's message (in progress) and the history it is generated from (inputs included):
// the newest messages, as far back as the context window reaches.
type Reply struct {
	Conversation Conversation
	Inputs       []Message
	Message      Message
	History      []Message
	// FirstExchange is whether the input holds the conversation's only user message.
	FirstExchange bool
}

// Start stores the input and the reply in progress, in one transaction. It is a conflict
// while another reply runs, when a user message comes while client tool calls wait for
// their results, and past MaxMessages; results must answer every waiting call once. The
// history is read newest first until it fills budget tokens (the room for it in the
// model's context window), so a long conversation is never read whole.
func (s *Service) Start(ctx context.Context, o Owner, id uuid.UUID, in Input, model string, prompt *PromptUse, budget int) (Reply, error) {
	var out Reply
	now := s.now().UTC()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.LockConversation(ctx, db.LockConversationParams{OrgID: o.Org, ID: id})
		if err == nil && (row.DeletedAt != nil || (o.User != nil && row.UserID.UUID != *o.User)) {
			return notFound()
		}
		if err != nil {
			if isNotFound(err) {
				return notFound()
			}
			return err
		}
		if out.Conversation, err = conversationFromRow(row); err != nil {
			return err
		}
		if _, err := q.RunningMessage(ctx, db.RunningMessageParams{OrgID: o.Org, ConversationID: id}); err == nil {
			return errs.E(errs.Conflict, "A reply is being generated in this conversation; wait for its end or cancel it.")
		} else if !isNotFound(err) {
			return err
		}
		if int(row.NextSeq)+len(in.Context)+len(in.ToolResults)+1 > MaxMessages {
			return errs.E(errs.Conflict, "The conversation has reached %d messages; start a new one.", MaxMessages)
		}
		waiting, err := waitingCalls(ctx, q, o.Org, id)
		if err != nil {
			return err
		}
		inputs, err := toInputs(in, waiting)
		if err != nil {
			return err
		}
		first, err := q.ReserveMessageSeq(ctx, db.ReserveMessageSeqParams{OrgID: o.Org, ID: id, N: int32(len(inputs)), UpdatedAt: now}) //nolint:gosec // ≤ 129
		if err != nil {
			return err
		}
		if out.Inputs, err = place(ctx, q, o.Org, id, inputs, int(first), now); err != nil {
			return err
		}
		p := db.CreateMessageParams{
			ID: uuid.Must(uuid.NewV7()), OrgID: o.Org, ConversationID: id, Role: string(llm.RoleAssistant),
			Status: string(InProgress), Model: store.Text(model), CreatedAt: now,
		}
		if prompt != nil {
			p.PromptName, p.PromptVersion, p.ExperimentID = store.Text(prompt.Name), pgtype.Int4{Int32: int32(prompt.Version), Valid: true}, store.NullUUID(prompt.ExperimentID) //nolint:gosec // a version number
		}
		reply, err := q.CreateMessage(ctx, p)
		if err != nil {
			return store.Translate(err)
		}
		if out.Message, err = messageFromRow(reply); err != nil {
			return err
		}
		users, err := q.CountUserMessages(ctx, db.CountUserMessagesParams{OrgID: o.Org, ConversationID: id})
		if err != nil {
			return err
		}
		out.FirstExchange = users == 1
		out.History, err = recent(ctx, q, o.Org, id, 0, budget)
		return err
	})
	return out, err
}

// waitingCalls returns the client tool calls of the last assistant message that no tool
// message after it answers.
func waitingCalls(ctx context.Context, q *db.Queries, org, id uuid.UUID) ([]llm.ToolCall, error) {
	rows, err := q.LastMessages(ctx, db.LastMessagesParams{OrgID: org, ConversationID: id, MaxRows: 130})
	if err != nil {
		return nil, err
	}
	answered := map[string]bool{}
	for _, r := range rows {
		m, err := messageFromRow(r)
		if err != nil {
			return nil, err
		}
		switch m.Role {
		case llm.RoleTool:
			answered[m.ToolCallID] = true
			continue
		case llm.RoleAssistant:
			var waiting []llm.ToolCall
			if m.Status == Completed {
				for _, c := range m.ToolCalls {
					if !answered[c.ID] {
						waiting = append(waiting, c)
					}
				}
			}
			return waiting, nil
		}
		return nil, nil
	}
	return nil, nil
}

// input is an input message to store.
type input struct {
	llm.Message
	isError bool
}

// toInputs checks the input against the waiting calls and returns the messages to store.
func toInputs(in Input, waiting []llm.ToolCall) ([]input, error) {
	if in.User != nil {
		if len(waiting) > 0 {
			return nil, errs.E(errs.Conflict, "The last reply called the client's tools (%s); send their results to POST /v1/conversations/{id}/tool-results first.", waiting[0].ID)
		}
		out := make([]input, 0, len(in.Context)+1)
		for _, m := range in.Context {
			out = append(out, input{Message: m})
		}
		return append(out, input{Message: *in.User}), nil
	}
	if len(in.Context) > 0 {
		return nil, errs.E(errs.Invalid, "Earlier messages come with a user message, not with tool results.")
	}
	if len(waiting) == 0 {
		return nil, errs.E(errs.Conflict, "No client tool call of this conversation waits for a result.")
	}
	byID := map[string]llm.ToolCall{}
	for _, c := range waiting {
		byID[c.ID] = c
	}
	var fields []errs.FieldError
	seen := map[string]bool{}
	out := make([]input, 0, len(in.ToolResults))
	for i, r := range in.ToolResults {
		call, ok := byID[r.CallID]
		switch {
		case !ok:
			fields = append(fields, errs.FieldError{Pointer: "/results/" + strconv.Itoa(i) + "/tool_call_id", Message: "answers no waiting tool call"})
		case seen[r.CallID]:
			fields = append(fields, errs.FieldError{Pointer: "/results/" + strconv.Itoa(i) + "/tool_call_id", Message: "is answered twice"})
		}
		seen[r.CallID] = true
		msg := llm.Message{Role: llm.RoleTool, ToolCallID: r.CallID, Name: call.Name, Content: []llm.Part{{Type: llm.PartText, Text: r.Content}}}
		out = append(out, input{Message: msg, isError: r.IsError})
	}
	for _, c := range waiting {
		if !seen[c.ID] {
			fields = append(fields, errs.FieldError{Pointer: "/results", Message: fmt.Sprintf("has no result for tool call %s (%s)", c.ID, c.Name)})
		}
	}
	return out, errs.InvalidFields("invalid tool results", fields)
}

// Outcome is how a reply ended. Message holds what was generated (partial when cancelled
// or failed: its tool calls are kept only when it completed).
type Outcome struct {
	Steps        []llm.Message // the server-side tool calls and results before Message
	Message      llm.Message
	Status       Status
	Err          error // Failed: why
	Provider     string
	Model        string
	FinishReason llm.FinishReason
	Usage        llm.Usage
	CostUSD      float64
	// Citations are the sources a reply grounded in knowledge bases was given (nil: not
	// grounded); they are stored however it ended.
	Citations []rag.Citation
	// FirstExchange is set on the reply that ends a conversation's first exchange while it
	// has no title: once completed, Finish asks for its title (Service.TitleJob).
	FirstExchange bool
}

// Finish stores a reply's outcome: its server-side tool steps are placed before it. It
// returns the steps and the reply as stored. A reply already ended is a conflict.
func (s *Service) Finish(ctx context.Context, org, conversation, id uuid.UUID, out Outcome) ([]Message, error) {
	now := s.now().UTC()
	var added []Message
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		if _, err := q.LockConversation(ctx, db.LockConversationParams{OrgID: org, ID: conversation}); err != nil {
			return store.Translate(err)
		}

		answered := answeredSteps(out.Steps)
		first, err := q.ReserveMessageSeq(ctx, db.ReserveMessageSeqParams{OrgID: org, ID: conversation, N: int32(len(answered) + 1), UpdatedAt: now}) //nolint:gosec // bounded by the tool loop
		if err != nil {
			return err
		}
		steps := make([]input, len(answered))
		for i, m := range answered {
			steps[i].Message = m
		}
		if added, err = place(ctx, q, org, conversation, steps, int(first), now); err != nil {
			return err
		}
		calls := out.Message.ToolCalls
		if out.Status != Completed {
			calls = nil
		}
		callsJSON, err := encodeCalls(calls)
		if err != nil {
			return err
		}
		p := db.FinishMessageParams{
			OrgID: org, ID: id, Seq: pgtype.Int4{Int32: first + int32(len(answered)), Valid: true}, //nolint:gosec // bounded
			Content: storable(out.Message.Text()), ToolCalls: callsJSON, Status: string(out.Status),
			Provider: store.Text(out.Provider), ProviderModel: store.Text(out.Model), FinishReason: store.Text(string(out.FinishReason)),
			CompletedAt: &now,
		}
		if out.Provider != "" {
			u := out.Usage
			p.PromptTokens, p.CompletionTokens, p.CachedTokens = int4(u.PromptTokens), int4(u.CompletionTokens), int4(u.CachedTokens)
			p.CostUsd = pgtype.Float8{Float64: out.CostUSD, Valid: true}
		}
		if out.Citations != nil {
			if p.Citations, err = json.Marshal(out.Citations); err != nil {
				return fmt.Errorf("encode citations: %w", err)
			}
			p.Citations = storableJSON(p.Citations)
		}
		if out.Err != nil {
			p.ErrorCode, p.ErrorDetail = store.Text(string(errs.CodeOf(out.Err))), store.Text(storable(errorDetail(out.Err)))
		}
		row, err := q.FinishMessage(ctx, p)
		if err != nil {
			if isNotFound(err) {
				return errs.E(errs.Conflict, "The reply has already ended.")
			}
			return err
		}
		reply, err := messageFromRow(row)
		added = append(added, reply)
		if err == nil && out.FirstExchange && out.Status == Completed && s.TitleJob != nil {
			if err := s.TitleJob(ctx, q, org, conversation); err != nil {
				return fmt.Errorf("ask for a title: %w", err)
			}
		}
		return err
	})
	return added, err
}

// answeredSteps is steps up to the last assistant step whose tool calls all have their
// results: a reply stopped amid its server-side tools leaves calls without a result, which
// no provider would take back in the history.
func answeredSteps(steps []llm.Message) []llm.Message {
	keep := 0
	for i, m := range steps {
		if m.Role != llm.RoleAssistant {
			continue
		}
		results := map[string]bool{}
		for _, r := range steps[i+1:] {
			if r.Role != llm.RoleTool {
				break
			}
			results[r.ToolCallID] = true
		}
		for _, c := range m.ToolCalls {
			if !results[c.ID] {
				return steps[:keep]
			}
		}
		keep = i + 1 + len(results)
	}
	return steps[:keep]
}

// errorDetail is what a failed reply tells its reader: a Kiln error's message, else a
// generic line (internal errors are logged where they happen, not stored).
func errorDetail(err error) string {
	if e, ok := errors.AsType[*errs.Error](err); ok {
		return e.Message
	}
	if ue, ok := errors.AsType[*llm.Error](err); ok {
		return ue.Error()
	}
	return "The reply failed."
}

func int4(n int) pgtype.Int4 { return pgtype.Int4{Int32: int32(n), Valid: true} } //nolint:gosec // token counts

// place stores msgs as completed messages at the positions from first on.
func place(ctx context.Context, q *db.Queries, org, conversation uuid.UUID, msgs []input, first int, now time.Time) ([]Message, error) {
	out := make([]Message, 0, len(msgs))
	for i, m := range msgs {
		p, err := messageParams(org, conversation, m.Message, first+i, now)
		if err != nil {
			return nil, err
		}
		p.IsError, p.Status, p.CompletedAt = m.isError, string(Completed), &now
		row, err := q.CreateMessage(ctx, p)
		if err != nil {
			return nil, store.Translate(err)
		}
		stored, err := messageFromRow(row)
		if err != nil {
			return nil, err
		}
		out = append(out, stored)
	}
	return out, nil
}

// messageParams stores m at seq.
func messageParams(org, conversation uuid.UUID, m llm.Message, seq int, now time.Time) (db.CreateMessageParams, error) {
	p := db.CreateMessageParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: org, ConversationID: conversation, Seq: int4(seq), Role: string(m.Role),
		ToolCallID: store.Text(storable(m.ToolCallID)), Name: store.Text(storable(m.Name)), CreatedAt: now,
	}
	var images []llm.Image
	for _, part := range m.Content {
		switch {
		case part.Type == llm.PartText:
			p.Content += storable(part.Text)
		case part.Image != nil:
			images = append(images, *part.Image)
		}
	}
	var err error
	if p.Parts, err = encodeImages(images); err != nil {
		return p, err
	}
	p.ToolCalls, err = encodeCalls(m.ToolCalls)
	return p, err
}

// storable is s as PostgreSQL can store it: a text value cannot hold U+0000, which a model
// may well stream, so it becomes U+FFFD (the replacement character) rather than failing
// the store and with it the reply. The reply's events keep what the model sent.
func storable(s string) string {
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// storableJSON is JSON text (as encoding/json writes it) as a jsonb value can hold it:
// the escape \u0000 becomes \ufffd, as storable does for text.
func storableJSON(b []byte) []byte {
	if !bytes.Contains(b, []byte(`\u0000`)) {
		return b
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' || i+1 >= len(b) {
			out = append(out, b[i])
			continue
		}
		if b[i+1] == 'u' && i+6 <= len(b) && string(b[i+2:i+6]) == "0000" {
			out = append(out, `\ufffd`...)
			i += 5
			continue
		}
		out = append(out, b[i], b[i+1]) // another escape, kept whole
		i++
	}
	return out
}
