// Package responses is the app layer of the OpenAI Responses API over Kiln's
// conversations: a response is a reply in a conversation, and a follow-up
// (previous_response_id) is the next reply in the same conversation. It stores what a
// response is asked with beside the reply (model, instructions, the options the wire format
// echoes, metadata) and knows nothing of HTTP nor of OpenAI's JSON: the transport shapes
// both and passes its options through as opaque JSON.
package responses

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/store"
)

// Endpoint names the responses' model calls in the usage records.
const Endpoint = "openai.responses"

// Service keeps the responses. It is safe for concurrent use.
type Service struct {
	st      *store.Store
	convs   *conversations.Service
	replies *replies.Service
	now     func() time.Time
}

// New returns the service over st, the conversations and their replies; now is the clock.
func New(st *store.Store, convs *conversations.Service, rs *replies.Service, now func() time.Time) *Service {
	return &Service{st: st, convs: convs, replies: rs, now: now}
}

// Response is a stored response: the reply it is and what it was asked with.
type Response struct {
	ID             uuid.UUID // the reply message's id
	ConversationID uuid.UUID
	PreviousID     *uuid.UUID
	Model          string
	Instructions   string
	// Options is the transport's echo of the request's options, stored as it gave it.
	Options   json.RawMessage
	Metadata  map[string]string
	CreatedAt time.Time
	// Reply is the reply message as it is now (in progress while it is generated).
	Reply conversations.Message
}

// Request asks for a response.
type Request struct {
	// Previous is the response this one follows up, nil for a new conversation.
	Previous *uuid.UUID
	Input    conversations.Input
	// Reply is the reply's request without its conversation and input: the call (its
	// Alias "" for the followed conversation's model, else "default") with the response's
	// instructions as its leading system message.
	Reply        replies.Request
	Instructions string
	Options      json.RawMessage
	Metadata     map[string]string
}

// Started is a response whose reply is being generated.
type Started struct {
	Response
	*replies.Started
}

// Create starts a response: in a new conversation, or in the conversation of the response
// it follows up. Errors: not_found (no such previous response; the error points at
// /previous_response_id), and those of replies.Service.Start (conflict while the previous
// response is still generated or waits for its function call outputs, invalid_request).
func (s *Service) Create(ctx context.Context, c replies.Caller, req Request) (*Started, error) {
	o := c.Owner
	var conv uuid.UUID
	if req.Previous != nil {
		prev, err := s.Get(ctx, o, *req.Previous)
		if err != nil {
			return nil, atPrevious(err)
		}
		conv = prev.ConversationID
	} else {
		created, err := s.convs.Create(ctx, o, "", req.Reply.Call.Alias, req.Metadata)
		if err != nil {
			return nil, fmt.Errorf("create the response's conversation: %w", err)
		}
		conv = created.ID
	}
	r := req.Reply
	r.Conversation, r.Input, r.Endpoint = conv, req.Input, Endpoint
	started, err := s.replies.Start(ctx, c, r)
	if err != nil {
		return nil, err
	}
	meta, err := json.Marshal(orEmpty(req.Metadata))
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	options := req.Options
	if len(options) == 0 {
		options = json.RawMessage("{}")
	}
	row, err := s.st.CreateOpenAIResponse(ctx, db.CreateOpenAIResponseParams{
		ID: started.Message.ID, OrgID: o.Org, ConversationID: conv, PreviousResponseID: store.NullUUID(req.Previous),
		Model: started.Message.Model, Instructions: store.Text(req.Instructions), Options: options, Metadata: meta,
		CreatedAt: started.Message.CreatedAt,
	})
	if err != nil { // the reply goes on, as a conversation's: it is not a response
		return nil, fmt.Errorf("store response: %w", errors.Join(store.Translate(err), started.Cancel(context.WithoutCancel(ctx))))
	}
	resp, err := fromRow(row)
	resp.Reply = started.Message
	return &Started{Response: resp, Started: started}, err
}

// Get returns a stored response with its reply as it is now: not_found when there is
// none the owner may see (another org's, another user's, deleted, or its conversation
// deleted).
func (s *Service) Get(ctx context.Context, o conversations.Owner, id uuid.UUID) (Response, error) {
	row, err := s.st.GetOpenAIResponse(ctx, db.GetOpenAIResponseParams{OrgID: o.Org, ID: id})
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return Response{}, notFound(id)
		}
		return Response{}, fmt.Errorf("get response: %w", err)
	}
	resp, err := fromRow(row)
	if err != nil {
		return Response{}, err
	}
	if resp.Reply, err = s.convs.Message(ctx, o, resp.ConversationID, id); err != nil {
		if errs.CodeOf(err) == errs.NotFound {
			return Response{}, notFound(id)
		}
		return Response{}, err
	}
	return resp, nil
}

// Delete deletes a stored response and cancels its reply if it runs: not_found as Get.
func (s *Service) Delete(ctx context.Context, o conversations.Owner, id uuid.UUID) error {
	resp, err := s.Get(ctx, o, id)
	if err != nil {
		return err
	}
	if _, err := s.st.DeleteOpenAIResponse(ctx, db.DeleteOpenAIResponseParams{OrgID: o.Org, ID: id}); err != nil {
		return fmt.Errorf("delete response: %w", err)
	}
	if resp.Reply.Status == conversations.InProgress {
		if _, err := s.replies.Cancel(ctx, o, resp.ConversationID, id); err != nil {
			return fmt.Errorf("cancel the deleted response's reply: %w", err)
		}
	}
	return nil
}

// History returns the messages of the conversation that response id ended, as the model
// sees them: what a follow-up that is not stored continues from. not_found as Get, pointing
// at /previous_response_id.
func (s *Service) History(ctx context.Context, o conversations.Owner, id uuid.UUID) ([]llm.Message, error) {
	resp, err := s.Get(ctx, o, id)
	if err != nil {
		return nil, atPrevious(err)
	}
	before := 0 // a reply in progress is not placed yet: every placed message
	if resp.Reply.Seq > 0 {
		before = resp.Reply.Seq + 1
	}
	msgs, err := s.convs.History(ctx, o.Org, resp.ConversationID, before, math.MaxInt)
	if err != nil {
		return nil, fmt.Errorf("read the response's conversation: %w", err)
	}
	out := make([]llm.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Role == llm.RoleAssistant && m.Status != conversations.Completed {
			continue // a failed or cancelled reply is no turn of the conversation
		}
		out = append(out, m.LLM())
		if m.ID == id {
			break
		}
	}
	return out, nil
}

// ID is a response's id on the wire: resp_ and its reply's id in hex.
func ID(id uuid.UUID) string { return "resp_" + hex.EncodeToString(id[:]) }

// ParseID reads a response's id (ID); not_found when it is none.
func ParseID(s string) (uuid.UUID, error) {
	h, ok := strings.CutPrefix(s, "resp_")
	var id uuid.UUID
	if !ok || len(h) != hex.EncodedLen(len(id)) {
		return uuid.Nil, errs.E(errs.NotFound, "No response with id %q.", s)
	}
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return uuid.Nil, errs.E(errs.NotFound, "No response with id %q.", s)
	}
	return id, nil
}

// ParsePrevious reads the id of the response a request follows up: not_found pointing at
// /previous_response_id when it is none.
func ParsePrevious(s string) (uuid.UUID, error) {
	id, err := ParseID(s)
	return id, atPrevious(err)
}

// atPrevious points a not_found error at /previous_response_id.
func atPrevious(err error) error {
	if e, ok := errors.AsType[*errs.Error](err); ok && e.Code == errs.NotFound {
		return &errs.Error{Code: e.Code, Message: e.Message, Fields: []errs.FieldError{{Pointer: "/previous_response_id", Message: "names no response of yours"}}}
	}
	return err
}

func notFound(id uuid.UUID) error {
	return errs.E(errs.NotFound, "No response with id %s.", ID(id))
}

func fromRow(r db.OpenaiResponse) (Response, error) {
	out := Response{
		ID: r.ID, ConversationID: r.ConversationID, PreviousID: store.UUIDPtr(r.PreviousResponseID), Model: r.Model,
		Instructions: r.Instructions.String, Options: r.Options, CreatedAt: r.CreatedAt,
	}
	if err := json.Unmarshal(r.Metadata, &out.Metadata); err != nil {
		return Response{}, fmt.Errorf("decode response metadata: %w", err)
	}
	return out, nil
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
