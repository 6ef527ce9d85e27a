package server

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// afterResponseTimeout bounds the work a handler leaves running once it has answered:
// issuing a token and handing the email to the SMTP server.
const afterResponseTimeout = time.Minute

// RequestEmailVerification emails the caller a link that verifies their address, unless it
// is verified already. The email is sent after the answer: a slow SMTP server does not hold
// the request, and a failure to send is logged.
func (s *Server) RequestEmailVerification(ctx context.Context, _ api.RequestEmailVerificationRequestObject) (api.RequestEmailVerificationResponseObject, error) {
	p, _ := principalFrom(ctx)
	user, token, err := s.auth.Accounts.EmailVerificationToken(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	if token != "" {
		msg := verificationEmail(user.Email, s.emailLink("verify-email", token))
		s.afterResponse(ctx, "send verification email", func(ctx context.Context) error {
			return s.auth.Mailer.Send(ctx, msg)
		})
	}
	return api.RequestEmailVerification202Response{}, nil
}

// VerifyEmail spends a verification token and marks the address verified.
func (s *Server) VerifyEmail(ctx context.Context, req api.VerifyEmailRequestObject) (api.VerifyEmailResponseObject, error) {
	if _, err := s.auth.Accounts.VerifyEmail(ctx, req.Body.Token, actor(ctx)); err != nil {
		return nil, err
	}
	return api.VerifyEmail204Response{}, nil
}

// RequestPasswordReset answers 202 at once, whatever the address, and does the work after
// the answer: finding the account, issuing the token, sending the email. So neither the
// answer nor its timing tells whether the address has an account. Each request is audited
// with the address (and, for an account, in its personal org), sent or not.
func (s *Server) RequestPasswordReset(ctx context.Context, req api.RequestPasswordResetRequestObject) (api.RequestPasswordResetResponseObject, error) {
	email, by := req.Body.Email, actor(ctx)
	s.afterResponse(ctx, "send password reset email", func(ctx context.Context) error {
		user, token, err := s.auth.Accounts.PasswordResetToken(ctx, email, by)
		if errs.CodeOf(err) == errs.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		return s.auth.Mailer.Send(ctx, resetEmail(user.Email, s.emailLink("reset-password", token)))
	})
	return api.RequestPasswordReset202Response{}, nil
}

// ResetPassword sets a new password with a reset token and signs every session out.
func (s *Server) ResetPassword(ctx context.Context, req api.ResetPasswordRequestObject) (api.ResetPasswordResponseObject, error) {
	user, _, err := s.auth.Accounts.ResetPassword(ctx, req.Body.Token, req.Body.Password, actor(ctx))
	if err != nil {
		return nil, err
	}
	s.passwordChanged(ctx, user)
	return api.ResetPassword204Response{}, nil
}

// ChangePassword replaces the caller's password and signs out every other session.
func (s *Server) ChangePassword(ctx context.Context, req api.ChangePasswordRequestObject) (api.ChangePasswordResponseObject, error) {
	p, _ := principalFrom(ctx)
	user, _, err := s.auth.Accounts.ChangePassword(ctx, p.UserID, p.SessionID, req.Body.CurrentPassword, req.Body.NewPassword, actor(ctx))
	if err != nil {
		return nil, err
	}
	s.passwordChanged(ctx, user)
	return api.ChangePassword204Response{}, nil
}

// passwordChanged tells the owner of a changed password by email, so that a change they
// did not make does not go unnoticed.
func (s *Server) passwordChanged(ctx context.Context, user account.User) {
	msg := passwordChangedEmail(user.Email, s.emailLink("reset-password", ""))
	s.afterResponse(ctx, "send password changed email", func(ctx context.Context) error {
		return s.auth.Mailer.Send(ctx, msg)
	})
}

// emailLink is the client page that receives an emailed token: <link_base>/<page>?token=….
// Without a token it is the page itself.
func (s *Server) emailLink(page, token string) string {
	link := strings.TrimRight(s.auth.LinkBase, "/") + "/" + page
	if token != "" {
		link += "?token=" + url.QueryEscape(token)
	}
	return link
}

// afterResponse runs fn once the handler has answered, on a context of its own that
// carries only the request id (for its log lines): nothing of the request (its
// cancellation, caller, connection) outlives the answer, and fn gets the values it needs
// from its caller. The work is bounded by afterResponseTimeout; a failure is logged. The
// work is lost if the process stops first; an email is the kind of thing a user can ask for
// again.
func (s *Server) afterResponse(ctx context.Context, what string, fn func(ctx context.Context) error) {
	ctx = logging.WithRequestID(context.Background(), logging.RequestID(ctx))
	go func() {
		ctx, cancel := context.WithTimeout(ctx, afterResponseTimeout)
		defer cancel()
		defer func() {
			if r := recover(); r != nil {
				s.log.ErrorContext(ctx, what+": panic", "panic", fmt.Sprint(r))
			}
		}()
		if err := fn(ctx); err != nil {
			s.log.ErrorContext(ctx, what+" failed", "error", err)
		}
	}()
}

func verificationEmail(to, link string) notify.Message {
	return notify.Message{
		To:      to,
		Subject: "Verify your email address",
		Text: "Hello,\n\n" +
			"Please confirm that " + to + " is your email address by opening this link within 48 hours:\n\n" +
			link + "\n\n" +
			"If you did not create an account, you can ignore this email.\n",
	}
}

func resetEmail(to, link string) notify.Message {
	return notify.Message{
		To:      to,
		Subject: "Reset your password",
		Text: "Hello,\n\n" +
			"Someone asked to reset the password of the account " + to + ". " +
			"To choose a new password, open this link within 1 hour:\n\n" +
			link + "\n\n" +
			"If it was not you, ignore this email: your password stays as it is.\n",
	}
}

func passwordChangedEmail(to, resetPage string) notify.Message {
	return notify.Message{
		To:      to,
		Subject: "Your password was changed",
		Text: "Hello,\n\n" +
			"The password of the account " + to + " was just changed, and the account was signed out " +
			"of its other devices.\n\n" +
			"If it was not you, reset your password now at " + resetPage + " and review your account.\n",
	}
}
