package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
)

// RequestEmailVerification emails the caller a link that verifies their address, unless it
// is verified already. The email is queued as a job in the token's transaction.
func (s *Server) RequestEmailVerification(ctx context.Context, _ api.RequestEmailVerificationRequestObject) (api.RequestEmailVerificationResponseObject, error) {
	p, _ := principalFrom(ctx)
	if _, _, err := s.auth.Accounts.EmailVerificationToken(ctx, p.UserID); err != nil {
		return nil, err
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

// RequestPasswordReset answers 202 whatever the address once it has created the job that
// handles the request (account.KindPasswordResetRequest): the same work for every address,
// so neither the answer nor its timing tells whether the address has an account. The job
// issues the token and queues its email for an account, and audits each request.
func (s *Server) RequestPasswordReset(ctx context.Context, req api.RequestPasswordResetRequestObject) (api.RequestPasswordResetResponseObject, error) {
	if err := s.auth.Accounts.RequestPasswordReset(ctx, req.Body.Email, actor(ctx)); err != nil {
		return nil, err
	}
	return api.RequestPasswordReset202Response{}, nil
}

// ResetPassword sets a new password with a reset token and signs every session out.
func (s *Server) ResetPassword(ctx context.Context, req api.ResetPasswordRequestObject) (api.ResetPasswordResponseObject, error) {
	_, _, err := s.auth.Accounts.ResetPassword(ctx, req.Body.Token, req.Body.Password, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.ResetPassword204Response{}, nil
}

// ChangePassword replaces the caller's password and signs out every other session.
func (s *Server) ChangePassword(ctx context.Context, req api.ChangePasswordRequestObject) (api.ChangePasswordResponseObject, error) {
	p, _ := principalFrom(ctx)
	_, _, err := s.auth.Accounts.ChangePassword(ctx, p.UserID, p.SessionID, req.Body.CurrentPassword, req.Body.NewPassword, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.ChangePassword204Response{}, nil
}
