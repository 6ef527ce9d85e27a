// Package conversations keeps chat conversations: their messages exactly as they happened
// (user messages, assistant replies with their tool calls, tool results), one reply at a
// time per conversation, feedback on replies, the context-window policy that trims the
// history a reply is generated from, export, and retention.
package conversations

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
)

// MaxMessages bounds a conversation: a reply beyond it is refused.
const MaxMessages = 10000

// MaxPageBytes bounds a page of messages (Messages, and each page an export reads): a page
// ends before the message that would take the size of its messages' text, images and
// tool calls past it, unless that message is the page's first.
const MaxPageBytes = 1 << 20

// historyPage is how many messages a reply's history is read at a time, newest first,
// until the context window is full.
var historyPage = 50

// Status is a message's state; only replies are ever InProgress, Cancelled or Failed.
type Status string

// The message states.
const (
	InProgress Status = "in_progress"
	Completed  Status = "completed"
	Cancelled  Status = "cancelled"
	Failed     Status = "failed"
)

// Owner is who acts on conversations: an org, and the user when the caller is a user
// (a user sees only the conversations they started; an API key sees its org's).
type Owner struct {
	Org  uuid.UUID
	User *uuid.UUID
	Key  *uuid.UUID
}

// Conversation is a conversation's header.
type Conversation struct {
	ID        uuid.UUID
	OrgID     uuid.UUID
	UserID    *uuid.UUID
	Title     string // "": none yet
	Model     string // "": the catalog's default
	Metadata  map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
	DeletedAt *time.Time // nil unless deleted
}

// PromptUse is the stored prompt version a reply ran under.
type PromptUse struct {
	Name         string
	Version      int
	ExperimentID *uuid.UUID
}

// Message is one stored message.
type Message struct {
	ID             uuid.UUID
	ConversationID uuid.UUID
	Seq            int // 0 while a reply is generated
	Role           llm.Role
	Content        string
	Images         []llm.Image // parts after Content
	ToolCalls      []llm.ToolCall
	ToolCallID     string
	Name           string
	IsError        bool
	Status         Status
	ErrorCode      errs.Code
	ErrorDetail    string
	Model          string
	Provider       string
	ProviderModel  string
	FinishReason   llm.FinishReason
	Usage          *llm.Usage
	CostUSD        float64
	Prompt         *PromptUse
	// Citations are the sources of a reply grounded in knowledge bases (empty when none
	// was retrieved); nil for a reply not grounded and every other message.
	Citations   []rag.Citation
	CreatedAt   time.Time
	CompletedAt *time.Time
}

// LLM is the message as the model sees it.
func (m Message) LLM() llm.Message {
	out := llm.Message{Role: m.Role, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, Name: m.Name}
	if m.Content != "" {
		out.Content = append(out.Content, llm.Part{Type: llm.PartText, Text: m.Content})
	}
	for i := range m.Images {
		out.Content = append(out.Content, llm.Part{Type: llm.PartImage, Image: &m.Images[i]})
	}
	return out
}

// Service keeps the conversations. It is safe for concurrent use.
type Service struct {
	st  *store.Store
	now func() time.Time
	// TitleJob, when set, asks for a conversation's title inside the transaction that
	// stores its first completed reply (a job created there is never lost nor orphaned).
	TitleJob func(ctx context.Context, q *db.Queries, org, conversation uuid.UUID) error
	// retention holds the deployment's default retention for deleted conversations.
	retention retention.Days
}

// UseRetention makes d the deployment's default retention (config retention.*; New
// starts with retention.Builtin). Call it before serving.
func (s *Service) UseRetention(d retention.Days) { s.retention = d }

// New returns a Service over st; now is the clock.
func New(st *store.Store, now func() time.Time) *Service {
	return &Service{st: st, now: now, retention: retention.Builtin}
}

func notFound() error { return errs.E(errs.NotFound, "No such conversation.") }

// Create starts a conversation.
func (s *Service) Create(ctx context.Context, o Owner, title, model string, metadata map[string]string) (Conversation, error) {
	meta, err := json.Marshal(orEmpty(metadata))
	if err != nil {
		return Conversation{}, fmt.Errorf("encode metadata: %w", err)
	}
	row, err := s.st.CreateConversation(ctx, db.CreateConversationParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: o.Org, UserID: store.NullUUID(o.User), ApiKeyID: store.NullUUID(o.Key),
		Title: store.Text(title), Model: store.Text(model), Metadata: meta, CreatedAt: s.now().UTC(),
	})
	if err != nil {
		return Conversation{}, store.Translate(err)
	}
	return conversationFromRow(row)
}

// Get returns one conversation the owner may see.
func (s *Service) Get(ctx context.Context, o Owner, id uuid.UUID) (Conversation, error) {
	row, err := s.st.GetConversation(ctx, db.GetConversationParams{OrgID: o.Org, ID: id, UserID: store.NullUUID(o.User)})
	if err != nil {
		if isNotFound(err) {
			return Conversation{}, notFound()
		}
		return Conversation{}, err
	}
	return conversationFromRow(row)
}

// List returns up to limit conversations, newest first, after the cursor id, whose title
// contains q (any when empty): the deleted ones when deleted, else the others.
func (s *Service) List(ctx context.Context, o Owner, limit int, after *uuid.UUID, q string, deleted bool) ([]Conversation, error) {
	var like pgtype.Text
	if q != "" {
		like = store.Text("%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(q) + "%")
	}
	rows, err := s.st.ListConversations(ctx, db.ListConversationsParams{
		OrgID: o.Org, Deleted: deleted, UserID: store.NullUUID(o.User), After: store.NullUUID(after), TitleLike: like, MaxRows: int32(min(limit, 1000)), //nolint:gosec // bounded
	})
	if err != nil {
		return nil, err
	}
	out := make([]Conversation, 0, len(rows))
	for _, r := range rows {
		c, err := conversationFromRow(r)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Update changes what is given (nil: unchanged).
func (s *Service) Update(ctx context.Context, o Owner, id uuid.UUID, title, model *string, metadata map[string]string) (Conversation, error) {
	p := db.UpdateConversationParams{OrgID: o.Org, ID: id, UserID: store.NullUUID(o.User), UpdatedAt: s.now().UTC()}
	if title != nil {
		p.Title = store.Text(*title)
	}
	if model != nil {
		p.Model = store.Text(*model)
	}
	if metadata != nil {
		b, err := json.Marshal(metadata)
		if err != nil {
			return Conversation{}, fmt.Errorf("encode metadata: %w", err)
		}
		p.Metadata = b
	}
	row, err := s.st.UpdateConversation(ctx, p)
	if err != nil {
		if isNotFound(err) {
			return Conversation{}, notFound()
		}
		return Conversation{}, err
	}
	return conversationFromRow(row)
}

// Delete soft-deletes a conversation, audited (conversation.delete) by by, and returns its
// running reply's id, if any, for the caller to cancel.
func (s *Service) Delete(ctx context.Context, o Owner, id uuid.UUID, by audit.Actor) (*uuid.UUID, error) {
	actx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(actx, func(q *db.Queries) error {
		n, err := q.DeleteConversation(actx, db.DeleteConversationParams{OrgID: o.Org, ID: id, UserID: store.NullUUID(o.User), DeletedAt: ptr(s.now().UTC())})
		if err != nil {
			return err
		}
		if n == 0 {
			return notFound()
		}
		return audit.Write(actx, q, by, audit.Event{OrgID: &o.Org, Action: "conversation.delete", TargetType: "conversation", TargetID: id.String()})
	})
	if err != nil {
		return nil, err
	}
	running, err := s.st.RunningMessage(ctx, db.RunningMessageParams{OrgID: o.Org, ConversationID: id})
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return &running.ID, nil
}

// Restore undoes the delete of a conversation the owner could delete, audited
// (conversation.restore) by by. It returns not_found when the owner has no such deleted
// conversation, and retention_expired when it was deleted longer ago than the org's
// retention for deleted conversations.
func (s *Service) Restore(ctx context.Context, o Owner, id uuid.UUID, by audit.Actor) (Conversation, error) {
	var out db.Conversation
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.GetDeletedConversationForUpdate(ctx, db.GetDeletedConversationForUpdateParams{
			Now: s.now(), DefaultDays: int32(s.retention.DeletedConversations), //nolint:gosec // bounded by retention.Days.Check
			OrgID: o.Org, ID: id, UserID: store.NullUUID(o.User),
		})
		if isNotFound(err) {
			return errs.E(errs.NotFound, "No such deleted conversation.")
		}
		if err != nil {
			return err
		}
		if row.Expired {
			return errs.E(errs.RetentionExpired, "The conversation was deleted %s, past this org's retention for deleted conversations; it can no longer be restored.",
				row.DeletedAt.UTC().Format(time.RFC3339))
		}
		if _, err := q.RestoreConversation(ctx, db.RestoreConversationParams{OrgID: o.Org, ID: id}); err != nil {
			return err
		}
		out = db.Conversation{ID: row.ID, OrgID: row.OrgID, UserID: row.UserID, Title: row.Title, Model: row.Model, Metadata: row.Metadata,
			CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &o.Org, Action: "conversation.restore", TargetType: "conversation", TargetID: id.String()})
	})
	if err != nil {
		return Conversation{}, fmt.Errorf("restore conversation: %w", err)
	}
	return conversationFromRow(out)
}

// SetTitle sets a generated title unless the conversation has one by now.
func (s *Service) SetTitle(ctx context.Context, org, id uuid.UUID, title string) (bool, error) {
	title = strings.TrimSpace(title)
	if r := []rune(title); len(r) > 200 {
		title = string(r[:200])
	}
	if title == "" {
		return false, nil
	}
	n, err := s.st.SetConversationTitleIfUnset(ctx, db.SetConversationTitleIfUnsetParams{OrgID: org, ID: id, Title: store.Text(title)})
	return n > 0, err
}

// Messages returns a page of messages, oldest first, after the cursor (a seq from Cursor),
// and the cursor of the next page ("" after the last): up to limit messages, fewer when
// they would take the page past MaxPageBytes. A reply being generated comes last.
func (s *Service) Messages(ctx context.Context, o Owner, id uuid.UUID, limit int, cursor string) ([]Message, string, error) {
	if _, err := s.Get(ctx, o, id); err != nil {
		return nil, "", err
	}
	return s.page(ctx, o.Org, id, limit, cursor, MaxPageBytes)
}

// page is Messages of a conversation the caller has been found to see, with a budget of
// maxBytes. The messages' sizes are read first, so that no more messages than the page
// holds are ever read.
func (s *Service) page(ctx context.Context, org, id uuid.UUID, limit int, cursor string, maxBytes int64) ([]Message, string, error) {
	var after pgtype.Int4
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 32)
		if err != nil || n < 0 {
			return nil, "", errs.InvalidFields("invalid cursor", []errs.FieldError{{Pointer: "/query/cursor", Message: "is not a cursor of this list"}})
		}
		after = pgtype.Int4{Int32: int32(n), Valid: true}
	}
	limit = min(max(limit, 1), MaxMessages)
	sizes, err := s.st.ListMessageSizes(ctx, db.ListMessageSizesParams{OrgID: org, ConversationID: id, AfterSeq: after, MaxRows: int32(limit + 1)}) //nolint:gosec // bounded
	if err != nil {
		return nil, "", err
	}
	n, total := 0, int64(0)
	for _, b := range sizes[:min(limit, len(sizes))] {
		if n > 0 && total+b > maxBytes {
			break
		}
		total += b
		n++
	}
	if n == 0 {
		return nil, "", nil
	}
	rows, err := s.st.ListMessages(ctx, db.ListMessagesParams{OrgID: org, ConversationID: id, AfterSeq: after, MaxRows: int32(n)}) //nolint:gosec // bounded
	if err != nil {
		return nil, "", err
	}
	msgs, err := messagesFromRows(rows)
	if err != nil || n == len(sizes) || len(msgs) == 0 || msgs[len(msgs)-1].Seq == 0 {
		return msgs, "", err
	}
	return msgs, Cursor(msgs[len(msgs)-1]), nil
}

// Cursor is the list cursor after m.
func Cursor(m Message) string { return strconv.Itoa(m.Seq) }

// recent reads the newest placed messages before beforeSeq (all when 0), a page at a time
// and newest first, until the ones read fill budget tokens of the context window (see
// Window) or the conversation's start is reached; it returns them oldest first. Window
// keeps from them what it would keep from the whole history: the turns it keeps fit in
// budget, so they are all among the messages read.
func recent(ctx context.Context, q *db.Queries, org, id uuid.UUID, beforeSeq, budget int) ([]Message, error) {
	var (
		out  []Message
		used int
	)
	before := pgtype.Int4{Int32: int32(beforeSeq), Valid: beforeSeq > 0} //nolint:gosec // a seq
	for {
		rows, err := q.ListHistoryBefore(ctx, db.ListHistoryBeforeParams{OrgID: org, ConversationID: id, BeforeSeq: before, MaxRows: int32(historyPage)}) //nolint:gosec // a small constant
		if err != nil {
			return nil, err
		}
		msgs, err := messagesFromRows(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
		for _, m := range msgs {
			if sent, ok := windowed(m); ok {
				used += EstimateTokens(sent)
			}
		}
		if len(rows) < historyPage || used > budget {
			slices.Reverse(out)
			return out, nil
		}
		before = pgtype.Int4{Int32: int32(msgs[len(msgs)-1].Seq), Valid: true} //nolint:gosec // a seq
	}
}

// History returns the placed messages of a conversation before beforeSeq (all when 0),
// oldest first, as far back as budget tokens of the context window reach (see recent).
func (s *Service) History(ctx context.Context, org, id uuid.UUID, beforeSeq, budget int) ([]Message, error) {
	return recent(ctx, s.st.Queries, org, id, beforeSeq, budget)
}

// Message returns one message of a conversation the owner may see.
func (s *Service) Message(ctx context.Context, o Owner, conversation, id uuid.UUID) (Message, error) {
	row, err := s.st.GetMessage(ctx, db.GetMessageParams{OrgID: o.Org, ID: id, UserID: store.NullUUID(o.User)})
	if err == nil && row.ConversationID != conversation {
		err = errs.E(errs.NotFound, "no such message")
	}
	if err != nil {
		if isNotFound(err) {
			return Message{}, errs.E(errs.NotFound, "No such message in this conversation.")
		}
		return Message{}, err
	}
	return messageFromRow(row)
}

func conversationFromRow(r db.Conversation) (Conversation, error) {
	c := Conversation{
		ID: r.ID, OrgID: r.OrgID, UserID: store.UUIDPtr(r.UserID), Title: r.Title.String, Model: r.Model.String,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt,
	}
	if err := json.Unmarshal(r.Metadata, &c.Metadata); err != nil {
		return Conversation{}, fmt.Errorf("decode metadata of %s: %w", r.ID, err)
	}
	return c, nil
}

// storedImage is an image part as stored.
type storedImage struct {
	URL       string `json:"url,omitempty"`
	MediaType string `json:"media_type,omitempty"`
	Data      []byte `json:"data,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// storedCall is a tool call as stored.
type storedCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

func encodeImages(images []llm.Image) ([]byte, error) {
	if len(images) == 0 {
		return nil, nil
	}
	out := make([]storedImage, len(images))
	for i, im := range images {
		out[i] = storedImage(im)
	}
	return json.Marshal(out)
}

func encodeCalls(calls []llm.ToolCall) ([]byte, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	out := make([]storedCall, len(calls))
	for i, c := range calls {
		out[i] = storedCall(c)
	}
	b, err := json.Marshal(out)
	return storableJSON(b), err
}

func messageFromRow(r db.Message) (Message, error) {
	m := Message{
		ID: r.ID, ConversationID: r.ConversationID, Seq: int(r.Seq.Int32), Role: llm.Role(r.Role), Content: r.Content,
		ToolCallID: r.ToolCallID.String, Name: r.Name.String, IsError: r.IsError, Status: Status(r.Status),
		ErrorCode: errs.Code(r.ErrorCode.String), ErrorDetail: r.ErrorDetail.String, Model: r.Model.String,
		Provider: r.Provider.String, ProviderModel: r.ProviderModel.String, FinishReason: llm.FinishReason(r.FinishReason.String),
		CostUSD: r.CostUsd.Float64, CreatedAt: r.CreatedAt, CompletedAt: r.CompletedAt,
	}
	if r.Parts != nil {
		var images []storedImage
		if err := json.Unmarshal(r.Parts, &images); err != nil {
			return Message{}, fmt.Errorf("decode parts of message %s: %w", r.ID, err)
		}
		for _, im := range images {
			m.Images = append(m.Images, llm.Image(im))
		}
	}
	if r.ToolCalls != nil {
		var calls []storedCall
		if err := json.Unmarshal(r.ToolCalls, &calls); err != nil {
			return Message{}, fmt.Errorf("decode tool calls of message %s: %w", r.ID, err)
		}
		for _, c := range calls {
			m.ToolCalls = append(m.ToolCalls, llm.ToolCall(c))
		}
	}
	if r.PromptTokens.Valid {
		m.Usage = &llm.Usage{PromptTokens: int(r.PromptTokens.Int32), CompletionTokens: int(r.CompletionTokens.Int32), CachedTokens: int(r.CachedTokens.Int32)}
	}
	if r.PromptName.Valid {
		m.Prompt = &PromptUse{Name: r.PromptName.String, Version: int(r.PromptVersion.Int32), ExperimentID: store.UUIDPtr(r.ExperimentID)}
	}
	if r.Citations != nil {
		if err := json.Unmarshal(r.Citations, &m.Citations); err != nil {
			return Message{}, fmt.Errorf("decode citations of message %s: %w", r.ID, err)
		}
	}
	return m, nil
}

func messagesFromRows(rows []db.Message) ([]Message, error) {
	out := make([]Message, 0, len(rows))
	for _, r := range rows {
		m, err := messageFromRow(r)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// isNotFound reports a no-rows error.
func isNotFound(err error) bool { return errs.CodeOf(store.Translate(err)) == errs.NotFound }

// Turn returns what one request added: the messages from its first input through its
// reply, in order (the input, the server-side tool steps, the reply).
func (s *Service) Turn(ctx context.Context, o Owner, conversation, firstInput, reply uuid.UUID) ([]Message, error) {
	first, err := s.Message(ctx, o, conversation, firstInput)
	if err != nil {
		return nil, err
	}
	msgs, _, err := s.page(ctx, o.Org, conversation, 1000, strconv.Itoa(first.Seq-1), math.MaxInt64) // Message checked who sees it
	if err != nil {
		return nil, err
	}
	for i, m := range msgs {
		if m.ID == reply {
			return msgs[:i+1], nil
		}
	}
	return nil, errs.E(errs.NotFound, "No such reply in this conversation.")
}
