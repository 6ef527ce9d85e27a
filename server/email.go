package server

import (
	"context"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TEMPORARY: placeholders while this area is being built; replaced before it lands.

// ResetPassword is not built yet.
func (s *Server) ResetPassword(context.Context, api.ResetPasswordRequestObject) (api.ResetPasswordResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// RequestPasswordReset is not built yet.
func (s *Server) RequestPasswordReset(context.Context, api.RequestPasswordResetRequestObject) (api.RequestPasswordResetResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// VerifyEmail is not built yet.
func (s *Server) VerifyEmail(context.Context, api.VerifyEmailRequestObject) (api.VerifyEmailResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// RequestEmailVerification is not built yet.
func (s *Server) RequestEmailVerification(context.Context, api.RequestEmailVerificationRequestObject) (api.RequestEmailVerificationResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}

// ChangePassword is not built yet.
func (s *Server) ChangePassword(context.Context, api.ChangePasswordRequestObject) (api.ChangePasswordResponseObject, error) {
	return nil, errs.E(errs.Internal, "not implemented")
}
