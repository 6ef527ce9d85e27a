package account

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
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

// KindPasswordResetRequest handles a password-reset request after its answer: it looks
// the address up and, for an account, issues the token and queues its email in one
// transaction (PasswordResetToken). The request only creates this job, the same work for
// every address, so neither the answer nor its timing tells whether the address has an
// account.
var KindPasswordResetRequest = jobs.Kind{Name: "auth.password_reset_request", MaxAttempts: 5, Timeout: time.Minute,
	Backoff: jobs.Backoff{Base: 5 * time.Second, Max: time.Minute}}

// passwordResetRequest is the payload of KindPasswordResetRequest.
type passwordResetRequest struct {
	Email string      `json:"email"`
	By    audit.Actor `json:"by"`
}

// UseJobs declares the account's job kinds on reg and creates them there. Call it before
// serving, with the registry the job runtime runs.
func (s *Service) UseJobs(reg *jobs.Registry) {
	s.jobs = reg
	jobs.Register(reg, KindPasswordResetRequest, func(ctx context.Context, _ *jobs.Run, p passwordResetRequest) (any, error) {
		_, _, err := s.PasswordResetToken(ctx, p.Email, p.By)
		if errs.CodeOf(err) == errs.NotFound {
			return nil, nil // audited as a request for an unknown address; nothing to send
		}
		return nil, err
	})
}

// RequestPasswordReset creates the job that handles a password-reset request for email
// (KindPasswordResetRequest), on a context the client's hang-up cannot cancel. Errors:
// invalid_request naming /email when the folded address fails EmailProblem (no account
// can have it, so the answer tells nothing about accounts).
func (s *Service) RequestPasswordReset(ctx context.Context, email string, by audit.Actor) error {
	if s.jobs == nil {
		return errors.New("request password reset: no job registry (UseJobs)")
	}
	email = NormaliseEmail(email)
	if err := checkEmail("invalid password reset request", email); err != nil {
		return err
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	return s.st.InTx(ctx, func(q *db.Queries) error {
		_, err := s.jobs.Enqueue(ctx, q, s.now(), jobs.New{Kind: KindPasswordResetRequest.Name,
			Payload: passwordResetRequest{Email: email, By: by}})
		if err != nil {
			return fmt.Errorf("request password reset: %w", err)
		}
		return nil
	})
}
