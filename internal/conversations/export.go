package conversations

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/llm"
)

// Export returns a conversation with every message, oldest first.
func (s *Service) Export(ctx context.Context, o Owner, id uuid.UUID) (Conversation, []Message, error) {
	c, err := s.Get(ctx, o, id)
	if err != nil {
		return Conversation{}, nil, err
	}
	var msgs []Message
	cursor := ""
	for { // every message: server-side tool steps may take a conversation past MaxMessages
		page, err := s.page(ctx, o.Org, id, MaxMessages, cursor)
		if err != nil {
			return Conversation{}, nil, err
		}
		msgs = append(msgs, page...)
		if len(page) < MaxMessages || page[len(page)-1].Seq == 0 {
			return c, msgs, nil
		}
		cursor = Cursor(page[len(page)-1])
	}
}

// Markdown renders a conversation as a Markdown transcript: a heading per message with
// its role and time, tool calls and results as fenced blocks, images by URL or type and
// size, and how a reply that did not complete ended.
func Markdown(c Conversation, msgs []Message, exportedAt time.Time) string {
	var b strings.Builder
	title := c.Title
	if title == "" {
		title = "Untitled conversation"
	}
	fmt.Fprintf(&b, "# %s\n\n_Conversation %s, started %s, exported %s._\n", oneLine(title), c.ID, stamp(c.CreatedAt), stamp(exportedAt))
	for _, m := range msgs {
		b.WriteString("\n## ")
		switch m.Role {
		case llm.RoleUser:
			b.WriteString("User")
		case llm.RoleAssistant:
			b.WriteString("Assistant")
			if m.ProviderModel != "" {
				fmt.Fprintf(&b, " (%s: %s/%s)", m.Model, m.Provider, m.ProviderModel)
			}
		case llm.RoleTool:
			fmt.Fprintf(&b, "Tool result: `%s` (`%s`)", m.Name, m.ToolCallID)
			if m.IsError {
				b.WriteString(", an error")
			}
		default:
			b.WriteString(string(m.Role))
		}
		fmt.Fprintf(&b, " · %s\n\n", stamp(m.CreatedAt))
		if m.Content != "" {
			if m.Role == llm.RoleTool {
				fence(&b, "", m.Content)
			} else {
				b.WriteString(m.Content)
				b.WriteString("\n")
			}
		}
		for _, im := range m.Images {
			if im.URL != "" {
				fmt.Fprintf(&b, "\n![image](%s)\n", im.URL)
			} else {
				fmt.Fprintf(&b, "\n_An image (%s, %d bytes)._\n", im.MediaType, len(im.Data))
			}
		}
		for _, call := range m.ToolCalls {
			fmt.Fprintf(&b, "\nTool call `%s` (`%s`):\n\n", call.Name, call.ID)
			fence(&b, "json", call.Arguments)
		}
		switch m.Status {
		case InProgress:
			b.WriteString("\n_Being generated._\n")
		case Cancelled:
			b.WriteString("\n_Cancelled._\n")
		case Failed:
			fmt.Fprintf(&b, "\n_Failed (%s): %s_\n", m.ErrorCode, oneLine(m.ErrorDetail))
		}
	}
	return b.String()
}

// fence writes s in a fenced code block longer than any backtick run inside it.
func fence(b *strings.Builder, lang, s string) {
	ticks := "```"
	for strings.Contains(s, ticks) {
		ticks += "`"
	}
	fmt.Fprintf(b, "%s%s\n%s\n%s\n", ticks, lang, strings.TrimRight(s, "\n"), ticks)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
