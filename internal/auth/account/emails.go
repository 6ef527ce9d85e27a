package account

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/notify"
)

// EmailQueue queues an email inside the caller's transaction: it goes out once the
// transaction commits, with retries, and never if it rolls back (notify.Center).
type EmailQueue interface {
	QueueEmail(ctx context.Context, q *db.Queries, now time.Time, r notify.EmailRequest) (uuid.UUID, error)
}

// The notify templates of the account emails.
const (
	TemplateVerification    = "verification"
	TemplatePasswordReset   = "password_reset"
	TemplatePasswordChanged = "password_changed"
)

// UseEmails makes the service queue its emails (verification, password reset, password
// changed) on emails, in the transaction that issues the token or makes the change, with
// links to the client pages under linkBase (mail.link_base). Call it before serving;
// without it no email is queued (tests of the account rules alone).
func (s *Service) UseEmails(emails EmailQueue, linkBase string) {
	s.emails, s.linkBase = emails, linkBase
}

// EmailLink is the client page that receives an emailed token: <base>/<page>?token=….
// Without a token it is the page itself.
func EmailLink(base, page, token string) string {
	link := strings.TrimRight(base, "/") + "/" + page
	if token != "" {
		link += "?token=" + url.QueryEscape(token)
	}
	return link
}

// queueEmail queues template to user in q's transaction, with the link to page carrying
// token.
func (s *Service) queueEmail(ctx context.Context, q *db.Queries, now time.Time, user db.User, template, page, token string) error {
	if s.emails == nil {
		return nil
	}
	_, err := s.emails.QueueEmail(ctx, q, now, notify.EmailRequest{
		To: user.Email, Template: template, UserID: &user.ID, OrgID: &user.PersonalOrgID,
		Data: map[string]string{"email": user.Email, "link": EmailLink(s.linkBase, page, token)},
	})
	if err != nil {
		return fmt.Errorf("queue %s email: %w", template, err)
	}
	return nil
}
