package worker

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// KindConversationTitle is the job that titles a conversation after its first exchange.
// It is created in the transaction that stores the exchange's first reply, with the
// conversation's id as unique key: one title job per conversation.
var KindConversationTitle = jobs.Kind{Name: "conversation.title", MaxAttempts: 4, Timeout: time.Minute, Backoff: jobs.Backoff{Base: 5 * time.Second, Max: time.Minute}}

// TitlePayload is the payload of KindConversationTitle.
type TitlePayload struct {
	Org          uuid.UUID `json:"org_id"`
	Conversation uuid.UUID `json:"conversation_id"`
}

// RegisterTitles declares KindConversationTitle, run by t.
func RegisterTitles(r *jobs.Registry, t Titler) {
	jobs.Register(r, KindConversationTitle, func(ctx context.Context, _ *jobs.Run, p TitlePayload) (any, error) {
		return nil, t.Title(ctx, p)
	})
}

// titleInstruction asks the model for a title only.
const titleInstruction = "Write a title of at most six words for the conversation below. Answer with the title only: no quotes, no final punctuation."

// titleSource bounds how much of the exchange the title model reads.
const titleSource = 2000

// Titler titles conversations with a model alias, accounting the call to the org.
type Titler struct {
	Conversations *conversations.Service
	Runner        *chat.Runner
	Usage         *usage.Recorder
	Model         string
}

// Title titles a conversation that has no title yet; a deleted conversation or one
// titled meanwhile is left as it is.
func (t Titler) Title(ctx context.Context, p TitlePayload) error {
	c, err := t.Conversations.Get(ctx, conversations.Owner{Org: p.Org}, p.Conversation)
	if errs.CodeOf(err) == errs.NotFound || (err == nil && c.Title != "") {
		return nil
	}
	if err != nil {
		return err
	}
	// The first exchange is at the start: one page of messages holds more than titleSource.
	history, _, err := t.Conversations.Messages(ctx, conversations.Owner{Org: p.Org}, p.Conversation, 20, "")
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, m := range history {
		if m.Content == "" || (m.Role != llm.RoleUser && m.Role != llm.RoleAssistant) {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
		if b.Len() > titleSource {
			break
		}
	}
	source := b.String()
	if len(source) > titleSource {
		source = strings.ToValidUTF8(source[:titleSource], "")
	}
	if source == "" {
		return nil
	}
	maxTokens, temperature := 24, 0.2
	call := chat.Call{Alias: t.Model, Org: p.Org, Request: llm.Request{
		Messages:  []llm.Message{llm.TextMessage(llm.RoleSystem, titleInstruction), llm.TextMessage(llm.RoleUser, source)},
		MaxTokens: &maxTokens, Temperature: &temperature,
	}}
	start := time.Now()
	res, err := t.Runner.Run(llm.WithOrg(ctx, p.Org), call, nil)
	rec := usage.Record{OrgID: p.Org, Endpoint: "title", Alias: t.Model, Status: usage.StatusOK, Latency: time.Since(start), At: start.UTC()}
	if res != nil {
		rec.Provider, rec.Model, rec.Usage, rec.CostUSD, rec.Attempts = res.Served.Target.Provider, res.Served.Target.Model, res.Usage, res.Cost, res.Attempts
	}
	if err != nil {
		rec.Status, rec.ErrorCode = usage.StatusError, string(errs.CodeOf(err))
	}
	t.Usage.Record(rec)
	if err != nil {
		return fmt.Errorf("title conversation %s: %w", p.Conversation, err)
	}
	title := strings.Trim(strings.Join(strings.Fields(res.Message.Text()), " "), `"'.`)
	_, err = t.Conversations.SetTitle(ctx, p.Org, p.Conversation, title)
	return err
}
