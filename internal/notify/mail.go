// Package notify sends messages to people: email over SMTP, or, in development with no
// SMTP server configured, into the log.
package notify

import (
	"context"
	"errors"
	"log/slog"
)

// Message is one email: plain text, with an HTML alternative when HTML is set.
type Message struct {
	To      string
	Subject string
	Text    string
	// HTML, when set, is sent beside Text as multipart/alternative.
	HTML string
	// ID, when set, is the Message-ID's local part (the sender's domain is added), so a
	// message sent twice after a crash carries the same id; empty: a random one.
	ID string
}

// ErrRecipientRejected wraps a send error where the server refused the recipient for good
// (a 5xx reply to RCPT TO): the email bounced, and sending it again cannot help.
var ErrRecipientRejected = errors.New("recipient rejected")

// ErrMessageRejected wraps a send error where the server refused the message for good (a
// 5xx reply to DATA or to its end, such as a spam verdict).
var ErrMessageRejected = errors.New("message rejected")

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
