package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// KindEmail is the job kind that sends one email delivery.
const KindEmail = "notify.email"

// DeliveryStatus is what became of an email.
type DeliveryStatus string

// The delivery statuses. StatusQueued covers the attempts still to come.
const (
	StatusQueued  DeliveryStatus = "queued"
	StatusSent    DeliveryStatus = "sent"
	StatusFailed  DeliveryStatus = "failed"
	StatusBounced DeliveryStatus = "bounced"
)

// EmailKind is the notify.email job kind: 18 attempts, the n-th retry waiting a random
// time in [0, min(6 min, 30 s·2^(n-1))]. The 17 retries' ceilings add up to 85.5 minutes
// (the longest an email is retried), their mean to about 43 minutes, and 95 % of
// schedules span more than 30 minutes (TestEmailRetrySchedule), so an SMTP server down
// for half an hour loses no email. Overridable in config (jobs.kinds.notify.email).
func EmailKind() jobs.Kind {
	return jobs.Kind{
		Name:        KindEmail,
		MaxAttempts: 18,
		Backoff:     jobs.Backoff{Base: 30 * time.Second, Max: 6 * time.Minute},
		Timeout:     2 * time.Minute,
	}
}

// EmailPayload is a notify.email job's payload.
type EmailPayload struct {
	DeliveryID uuid.UUID `json:"delivery_id"`
}

// EmailRequest is an email to send.
type EmailRequest struct {
	To       string
	Template string
	// Locale picks the language; empty: the user's locale, else the org's, else English.
	Locale Locale
	Data   map[string]string
	// UserID and OrgID, when set, say whom it is for: the language falls back on their
	// locales, and the delivery is theirs.
	UserID *uuid.UUID
	OrgID  *uuid.UUID
}

// QueueEmail records an email delivery and enqueues the job that sends it, inside q's
// transaction: the email goes out once the transaction commits, and never if it rolls
// back. It returns the delivery id. Errors: invalid_request naming /to, /template,
// /locale or /data/<field>.
func (c *Center) QueueEmail(ctx context.Context, q *db.Queries, now time.Time, r EmailRequest) (uuid.UUID, error) {
	var bad []errs.FieldError
	if a, err := mail.ParseAddress(r.To); err != nil || a.Address != r.To || len(r.To) > 254 {
		bad = append(bad, errs.FieldError{Pointer: "/to", Message: "must be one email address"})
	}
	if r.Locale != "" {
		if _, ok := ParseLocale(string(r.Locale)); !ok {
			bad = append(bad, errs.FieldError{Pointer: "/locale", Message: fmt.Sprintf("must be one of %v", Locales)})
		}
	}
	if err := errs.InvalidFields("invalid email", bad); err != nil {
		return uuid.Nil, err
	}
	// Rendering now finds bad data while the caller can still be told.
	for _, l := range Locales {
		if _, err := Render(r.Template, l, r.Data); err != nil {
			return uuid.Nil, err
		}
	}
	data, err := json.Marshal(r.Data)
	if err != nil {
		return uuid.Nil, fmt.Errorf("queue email: encode data: %w", err)
	}
	row, err := q.CreateEmailDelivery(ctx, db.CreateEmailDeliveryParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: store.NullUUID(r.OrgID), UserID: store.NullUUID(r.UserID),
		ToAddress: r.To, Template: r.Template, Locale: pgtype.Text{String: string(r.Locale), Valid: r.Locale != ""},
		Data: data, CreatedAt: now,
	})
	if err != nil {
		return uuid.Nil, fmt.Errorf("queue email: %w", store.Translate(err))
	}
	if _, err := c.jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindEmail, OrgID: r.OrgID, Payload: EmailPayload{DeliveryID: row.ID}}); err != nil {
		return uuid.Nil, fmt.Errorf("queue email: %w", err)
	}
	return row.ID, nil
}

// Delivery is an email delivery as stored.
type Delivery struct {
	ID                uuid.UUID
	To                string
	Template          string
	Status            DeliveryStatus
	Attempts          int
	LastError         string
	ProviderMessageID string
	SentAt            *time.Time
}

// GetDelivery returns one delivery. Errors: not_found.
func (c *Center) GetDelivery(ctx context.Context, id uuid.UUID) (Delivery, error) {
	d, err := c.st.GetEmailDelivery(ctx, id)
	if err != nil {
		return Delivery{}, fmt.Errorf("get email delivery: %w", store.Translate(err))
	}
	return toDelivery(d), nil
}

func toDelivery(d db.EmailDelivery) Delivery {
	return Delivery{
		ID: d.ID, To: d.ToAddress, Template: d.Template, Status: DeliveryStatus(d.Status), Attempts: int(d.Attempts),
		LastError: d.LastError, ProviderMessageID: d.ProviderMessageID.String, SentAt: d.SentAt,
	}
}

// EmailResult is a notify.email job's result.
type EmailResult struct {
	Status    DeliveryStatus `json:"status"`
	MessageID string         `json:"message_id,omitempty"`
}

// messageIDer is a mailer that tells the Message-ID it gives a message.
type messageIDer interface{ MessageID(id string) string }

// deliverEmail is one attempt at a delivery: it takes the delivery for the attempt (so a
// duplicate task waits rather than send twice), renders it, sends it and records what
// happened. A delivery sent, bounced or failed already is left as it is. A recipient the
// server refuses for good bounces and a message it refuses for good fails, at once
// (jobs.Permanent); anything else is retried by the job's policy.
func (c *Center) deliverEmail(ctx context.Context, _ *jobs.Run, p EmailPayload) (any, error) {
	now := c.now()
	lease := EmailKind().Timeout
	if k, ok := c.jobs.Kind(KindEmail); ok {
		lease = k.Timeout
	}
	d, err := c.st.ClaimEmailDelivery(ctx, db.ClaimEmailDeliveryParams{ID: p.DeliveryID, LockedUntil: new(now.Add(lease + 30*time.Second)), Now: now})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		cur, err := c.st.GetEmailDelivery(ctx, p.DeliveryID)
		switch {
		case errs.CodeOf(store.Translate(err)) == errs.NotFound:
			return nil, jobs.Permanent(fmt.Errorf("email delivery %s: not found", p.DeliveryID))
		case err != nil:
			return nil, fmt.Errorf("email delivery %s: %w", p.DeliveryID, err)
		case DeliveryStatus(cur.Status) != StatusQueued:
			return EmailResult{Status: DeliveryStatus(cur.Status), MessageID: cur.ProviderMessageID.String}, nil
		default:
			return nil, fmt.Errorf("email delivery %s: another attempt holds it until %s", p.DeliveryID, cur.LockedUntil.UTC().Format(time.RFC3339))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("claim email delivery %s: %w", p.DeliveryID, err)
	}
	msg, err := c.message(ctx, d)
	if err != nil {
		c.finishAttempt(ctx, d.ID, StatusFailed, err, "")
		return nil, jobs.Permanent(err)
	}
	messageID := msg.ID
	if m, ok := c.mailer.(messageIDer); ok {
		messageID = m.MessageID(msg.ID)
	}
	switch err := c.mailer.Send(ctx, msg); {
	case err == nil:
		c.finishAttempt(ctx, d.ID, StatusSent, nil, messageID)
		return EmailResult{Status: StatusSent, MessageID: messageID}, nil
	case errors.Is(err, ErrRecipientRejected):
		c.finishAttempt(ctx, d.ID, StatusBounced, err, "")
		return nil, jobs.Permanent(err)
	case errors.Is(err, ErrMessageRejected):
		c.finishAttempt(ctx, d.ID, StatusFailed, err, "")
		return nil, jobs.Permanent(err)
	default:
		c.finishAttempt(ctx, d.ID, StatusQueued, err, "")
		return nil, err
	}
}

// message renders a delivery in its language: the delivery's own, else its user's, else
// the org's, else English.
func (c *Center) message(ctx context.Context, d db.EmailDelivery) (Message, error) {
	var data map[string]string
	if err := json.Unmarshal(d.Data, &data); err != nil {
		return Message{}, fmt.Errorf("email delivery %s: decode data: %w", d.ID, err)
	}
	locale, err := c.localeOf(ctx, d)
	if err != nil {
		return Message{}, err
	}
	r, err := Render(d.Template, locale, data)
	if err != nil {
		return Message{}, fmt.Errorf("email delivery %s: %w", d.ID, err)
	}
	return Message{To: d.ToAddress, Subject: r.Subject, Text: r.Text, HTML: r.HTML, ID: d.ID.String()}, nil
}

func (c *Center) localeOf(ctx context.Context, d db.EmailDelivery) (Locale, error) {
	candidates := []pgtype.Text{d.Locale}
	switch {
	case d.UserID.Valid:
		who, err := c.st.GetRecipient(ctx, db.GetRecipientParams{UserID: d.UserID.UUID, OrgID: d.OrgID})
		if err != nil && errs.CodeOf(store.Translate(err)) != errs.NotFound {
			return "", fmt.Errorf("email delivery %s: recipient: %w", d.ID, err)
		}
		candidates = append(candidates, who.Locale, who.OrgLocale)
	case d.OrgID.Valid:
		l, err := c.st.GetOrgLocale(ctx, d.OrgID.UUID)
		if err != nil && errs.CodeOf(store.Translate(err)) != errs.NotFound {
			return "", fmt.Errorf("email delivery %s: org locale: %w", d.ID, err)
		}
		candidates = append(candidates, l)
	}
	for _, t := range candidates {
		if l, ok := ParseLocale(t.String); ok && t.Valid {
			return l, nil
		}
	}
	return English, nil
}

// finishAttempt records an attempt's outcome. It runs on a context the job's cancellation
// cannot end, so an email that went out is recorded as sent.
func (c *Center) finishAttempt(ctx context.Context, id uuid.UUID, status DeliveryStatus, cause error, messageID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	now := c.now()
	p := db.FinishEmailAttemptParams{ID: id, Status: string(status), Now: now,
		ProviderMessageID: store.Text(messageID)}
	if cause != nil {
		p.LastError = truncate(cause.Error(), 2000)
	}
	if status == StatusSent {
		p.SentAt = &now
	}
	if err := c.st.FinishEmailAttempt(ctx, p); err != nil {
		// The row stays locked until its lease ends; the next attempt then finds it.
		c.log.ErrorContext(ctx, "record an email attempt", "delivery_id", id, "status", status, "error", err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
