package conversations

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/llm"
)

// exportPage is how many messages an export reads at a time (each page also within
// MaxPageBytes).
const exportPage = 100

// An Export reads a conversation for export: its header, then its messages a page at a
// time, so that an export of any size holds one page in memory.
type Export struct {
	Conversation Conversation
	s            *Service
	cursor       string
	done         bool
}

// Export starts the export of a conversation the owner may see (not_found otherwise).
func (s *Service) Export(ctx context.Context, o Owner, id uuid.UUID) (*Export, error) {
	c, err := s.Get(ctx, o, id)
	if err != nil {
		return nil, err
	}
	return &Export{Conversation: c, s: s}, nil
}

// Next returns the next page of messages, oldest first, and nil after the last. The
// pages are read as they are asked for: a reply that ends meanwhile may be missed (an
// export is of the conversation as it was), no message is read twice.
func (e *Export) Next(ctx context.Context) ([]Message, error) {
	if e.done {
		return nil, nil
	}
	msgs, next, err := e.s.page(ctx, e.Conversation.OrgID, e.Conversation.ID, exportPage, e.cursor, MaxPageBytes)
	if err != nil {
		return nil, fmt.Errorf("export conversation: %w", err)
	}
	e.cursor, e.done = next, next == ""
	return msgs, nil
}

// MarkdownHeader writes the heading of a conversation's Markdown transcript.
func MarkdownHeader(w io.Writer, c Conversation, exportedAt time.Time) error {
	title := c.Title
	if title == "" {
		title = "Untitled conversation"
	}
	_, err := fmt.Fprintf(w, "# %s\n\n_Conversation %s, started %s, exported %s._\n", oneLine(title), c.ID, stamp(c.CreatedAt), stamp(exportedAt))
	return err
}

// MarkdownMessage writes one message of a Markdown transcript (after MarkdownHeader): a
// heading with its role and time, tool calls and results as fenced blocks, images by URL
// or type and size, and how a reply that did not complete ended.
func MarkdownMessage(w io.Writer, m Message) error {
	var b strings.Builder
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
	_, err := io.WriteString(w, b.String())
	return err
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
