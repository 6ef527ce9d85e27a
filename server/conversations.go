package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store"
)

// owner is who acts on conversations: the caller's org, and the user for a user token
// (users see the conversations they started; API keys see their org's).
func (c caller) owner() conversations.Owner {
	o := conversations.Owner{Org: c.org}
	if c.key != uuid.Nil {
		o.Key = &c.key
	} else {
		o.User = &c.user
	}
	return o
}

// ownerFor resolves the caller of a strict handler.
func (s *Server) ownerFor(ctx context.Context, requested *uuid.UUID) (conversations.Owner, error) {
	who, err := s.callerOf(ctx, requested)
	return who.owner(), err
}

// ListConversations lists the caller's conversations, newest first.
func (s *Server) ListConversations(ctx context.Context, req api.ListConversationsRequestObject) (api.ListConversationsResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.conv.Service.List(ctx, o, limit+1, after, deref(req.Params.Q), deref(req.Params.Deleted))
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(c conversations.Conversation) uuid.UUID { return c.ID }, toAPIConversation)
	return api.ListConversations200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateConversation starts a conversation.
func (s *Server) CreateConversation(ctx context.Context, req api.CreateConversationRequestObject) (api.CreateConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.checkAlias(req.Body.Model); err != nil {
		return nil, err
	}
	c, err := s.conv.Service.Create(ctx, o, deref(req.Body.Title), deref(req.Body.Model), deref(req.Body.Metadata))
	if err != nil {
		return nil, err
	}
	return api.CreateConversation201JSONResponse(toAPIConversation(c)), nil
}

// checkAlias refuses a model alias the catalog does not have.
func (s *Server) checkAlias(alias *string) error {
	if alias != nil && !s.llm.Runner.Gateway.Has(*alias) {
		return errs.InvalidFields("invalid model", []errs.FieldError{{Pointer: "/model", Message: "is not a model alias of the catalog (GET /v1/models)"}})
	}
	return nil
}

// GetConversation returns one conversation.
func (s *Server) GetConversation(ctx context.Context, req api.GetConversationRequestObject) (api.GetConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	c, err := s.conv.Service.Get(ctx, o, req.Id)
	if err != nil {
		return nil, err
	}
	return api.GetConversation200JSONResponse(toAPIConversation(c)), nil
}

// UpdateConversation renames a conversation or changes its default model or metadata.
func (s *Server) UpdateConversation(ctx context.Context, req api.UpdateConversationRequestObject) (api.UpdateConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.checkAlias(req.Body.Model); err != nil {
		return nil, err
	}
	c, err := s.conv.Service.Update(ctx, o, req.Id, req.Body.Title, req.Body.Model, deref(req.Body.Metadata))
	if err != nil {
		return nil, err
	}
	return api.UpdateConversation200JSONResponse(toAPIConversation(c)), nil
}

// DeleteConversation soft-deletes a conversation and cancels its running reply.
func (s *Server) DeleteConversation(ctx context.Context, req api.DeleteConversationRequestObject) (api.DeleteConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.conv.Replies.Delete(ctx, o, req.Id, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeleteConversation204Response{}, nil
}

// RestoreConversation undoes the delete of a conversation.
func (s *Server) RestoreConversation(ctx context.Context, req api.RestoreConversationRequestObject) (api.RestoreConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	c, err := s.conv.Service.Restore(ctx, o, req.Id, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.RestoreConversation200JSONResponse(toAPIConversation(c)), nil
}

// ListConversationMessages lists a conversation's messages, oldest first.
func (s *Server) ListConversationMessages(ctx context.Context, req api.ListConversationMessagesRequestObject) (api.ListConversationMessagesResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit := 20
	if req.Params.Limit != nil {
		limit = *req.Params.Limit
	}
	msgs, next, err := s.conv.Service.Messages(ctx, o, req.Id, limit, deref(req.Params.Cursor))
	if err != nil {
		return nil, err
	}
	out := api.ListConversationMessages200JSONResponse{Data: []api.ConversationMessage{}}
	if next != "" {
		out.NextCursor = &next
	}
	for _, m := range msgs {
		out.Data = append(out.Data, toAPIConversationMessage(m))
	}
	return out, nil
}

// CancelMessage asks a running reply to stop, on whichever replica generates it.
func (s *Server) CancelMessage(ctx context.Context, req api.CancelMessageRequestObject) (api.CancelMessageResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	m, err := s.conv.Replies.Cancel(ctx, o, req.Id, req.MessageId)
	if err != nil {
		return nil, err
	}
	return api.CancelMessage202JSONResponse(toAPIConversationMessage(m)), nil
}

// ExportConversation returns every message as JSON or a Markdown transcript.
func (s *Server) ExportConversation(ctx context.Context, req api.ExportConversationRequestObject) (api.ExportConversationResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	exp, err := s.conv.Service.Export(ctx, o, req.Id)
	if err != nil {
		return nil, err
	}
	first, err := exp.Next(ctx) // a failure before anything is sent is a problem
	if err != nil {
		return nil, err
	}
	return exportResponse{
		ctx: ctx, exp: exp, first: first, at: time.Now().UTC(),
		markdown: req.Params.Format != nil && *req.Params.Format == api.Markdown,
		fail: func(err error) {
			s.log.ErrorContext(ctx, "export cut short", "conversation_id", req.Id, "error", err)
		},
	}, nil
}

// exportResponse writes an export as its pages are read (ConversationExport's JSON, or the
// Markdown transcript), holding one page at a time. A page that fails after the first has
// been sent aborts the response, so the client sees a cut transfer, never a complete-looking
// but partial export.
type exportResponse struct {
	ctx      context.Context //nolint:containedctx // the request's, for the pages read while writing
	exp      *conversations.Export
	first    []conversations.Message
	at       time.Time
	markdown bool
	fail     func(error)
}

func (e exportResponse) VisitExportConversationResponse(w http.ResponseWriter) error {
	if e.markdown {
		w.Header().Set("Content-Type", "text/markdown")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(http.StatusOK)
	if err := e.write(w); err != nil {
		e.fail(err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

func (e exportResponse) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	var err error
	if e.markdown {
		err = conversations.MarkdownHeader(bw, e.exp.Conversation, e.at)
	} else {
		err = writeJSONPrefix(bw, e.exp.Conversation, e.at)
	}
	n := 0
	for page := e.first; err == nil && len(page) > 0; {
		for _, m := range page {
			if e.markdown {
				err = conversations.MarkdownMessage(bw, m)
			} else {
				err = writeJSONMessage(bw, m, n)
			}
			if err != nil {
				return err
			}
			n++
		}
		if err = bw.Flush(); err == nil {
			page, err = e.exp.Next(e.ctx)
		}
	}
	if err == nil && !e.markdown {
		_, err = bw.WriteString("]}\n")
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// writeJSONPrefix opens a ConversationExport: its conversation and time, and its messages array.
func writeJSONPrefix(w *bufio.Writer, c conversations.Conversation, at time.Time) error {
	conv, err := json.Marshal(toAPIConversation(c))
	if err != nil {
		return err
	}
	stamp, err := json.Marshal(at)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, `{"conversation":%s,"exported_at":%s,"messages":[`, conv, stamp)
	return err
}

// writeJSONMessage writes the nth message of a ConversationExport's messages array.
func writeJSONMessage(w *bufio.Writer, m conversations.Message, n int) error {
	b, err := json.Marshal(toAPIConversationMessage(m))
	if err != nil {
		return err
	}
	if n > 0 {
		if err := w.WriteByte(','); err != nil {
			return err
		}
	}
	_, err = w.Write(b)
	return err
}

// SetMessageFeedback records the caller's rating of a reply.
func (s *Server) SetMessageFeedback(ctx context.Context, req api.SetMessageFeedbackRequestObject) (api.SetMessageFeedbackResponseObject, error) {
	o, err := s.ownerFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	rater := o.Key
	if rater == nil {
		rater = o.User
	}
	f, err := s.conv.Service.SetFeedback(ctx, o, req.Id, *rater, string(req.Body.Rating), deref(req.Body.Comment))
	if err != nil {
		return nil, err
	}
	return api.SetMessageFeedback200JSONResponse{
		MessageId: f.MessageID, Rating: api.FeedbackRating(f.Rating), Comment: orNil(f.Comment),
		CreatedAt: f.CreatedAt.UTC(), UpdatedAt: f.UpdatedAt.UTC(),
	}, nil
}

// GetOrgSettings returns an org's settings.
func (s *Server) GetOrgSettings(ctx context.Context, req api.GetOrgSettingsRequestObject) (api.GetOrgSettingsResponseObject, error) {
	access, err := s.orgFor(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	days, err := s.conv.Service.RetentionDays(ctx, access.OrgID)
	if err != nil {
		return nil, err
	}
	return api.GetOrgSettings200JSONResponse{ConversationRetentionDays: days}, nil
}

// UpdateOrgSettings changes an org's settings.
func (s *Server) UpdateOrgSettings(ctx context.Context, req api.UpdateOrgSettingsRequestObject) (api.UpdateOrgSettingsResponseObject, error) {
	access, err := s.adminOrg(ctx, &req.Id)
	if err != nil {
		return nil, err
	}
	days, err := s.conv.Service.SetRetentionDays(ctx, access.OrgID, req.Body.ConversationRetentionDays, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.UpdateOrgSettings200JSONResponse{ConversationRetentionDays: days}, nil
}

func toAPIConversation(c conversations.Conversation) api.Conversation {
	meta := c.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return api.Conversation{
		Id: c.ID, Title: orNil(c.Title), Model: orNil(c.Model), Metadata: meta,
		CreatedAt: c.CreatedAt.UTC(), UpdatedAt: c.UpdatedAt.UTC(), DeletedAt: store.UTC(c.DeletedAt),
	}
}

func toAPIConversationMessage(m conversations.Message) api.ConversationMessage {
	msg := toAPIMessage(m.LLM())
	out := api.ConversationMessage{
		Id: m.ID, ConversationId: m.ConversationID, Role: api.ChatRole(m.Role), Status: api.ConversationMessageStatus(m.Status),
		ToolCalls: msg.ToolCalls, ToolCallId: orNil(m.ToolCallID), Name: orNil(m.Name),
		Model: orNil(m.Model), Provider: orNil(m.Provider), ProviderModel: orNil(m.ProviderModel),
		CreatedAt: m.CreatedAt.UTC(), CompletedAt: store.UTC(m.CompletedAt),
	}
	if m.Content != "" || (len(m.ToolCalls) == 0 && m.Status != conversations.InProgress) {
		out.Content = &m.Content
	}
	if len(m.Images) > 0 {
		parts := make([]api.ContentPart, len(m.Images))
		for i, im := range m.Images {
			parts[i] = toAPIImagePart(im)
		}
		out.Parts = &parts
	}
	if m.IsError {
		out.IsError = &m.IsError
	}
	if m.ErrorCode != "" {
		out.Error = &api.MessageError{Code: api.ErrorCode(m.ErrorCode), Detail: m.ErrorDetail}
	}
	if m.FinishReason != "" {
		fr := api.FinishReason(m.FinishReason)
		out.FinishReason = &fr
	}
	if m.Usage != nil {
		u := *m.Usage
		out.Usage = &api.ChatUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens, TotalTokens: u.Total(), CostUsd: m.CostUSD}
	}
	if m.Prompt != nil {
		out.Prompt = &api.MessagePrompt{Name: m.Prompt.Name, Version: m.Prompt.Version, ExperimentId: m.Prompt.ExperimentID}
	}
	if m.Citations != nil {
		cs := toAPICitations(m.Citations)
		out.Citations = &cs
	}
	return out
}

func toAPIImagePart(im llm.Image) api.ContentPart {
	p := api.ContentPart{Type: api.ContentPartTypeImage, ImageUrl: orNil(im.URL)}
	if len(im.Data) > 0 {
		p.ImageData = &im.Data
		mt := api.ContentPartMediaType(im.MediaType)
		p.MediaType = &mt
	}
	if im.Detail != "" {
		d := api.ContentPartDetail(im.Detail)
		p.Detail = &d
	}
	return p
}
