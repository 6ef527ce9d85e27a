// Package notify sends messages to people: email over SMTP, or, in development with no
// SMTP server configured, into the log.
package notify

import (
	"context"
	"log/slog"
)

// Message is one plain-text email.
type Message struct {
	To      string
	Subject string
	Text    string
}

// Mailer sends email.
type Mailer interface {
	Send(ctx context.Context, m Message) error
}

// LogMailer writes messages to the log instead of sending them: the development default,
// so sign-up and password-reset links work with no SMTP server. The service says so at start.
type LogMailer struct{ Log *slog.Logger }

// Send logs m whole, links included.
func (l LogMailer) Send(ctx context.Context, m Message) error {
	l.Log.InfoContext(ctx, "email not sent (no SMTP configured): written here instead",
		"to", m.To, "subject", m.Subject, "text", m.Text)
	return nil
}
