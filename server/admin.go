package server

import (
	"context"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/flags"
)

// platformAdmin returns the caller when they are an enabled platform admin, and
// permission_denied otherwise. Admin routes take user tokens only (the middleware refuses
// API keys), and the flag is read from the database on every call, so a revoke or a
// disable takes effect at the next request.
func (s *Server) platformAdmin(ctx context.Context) (uuid.UUID, error) {
	p, ok := principalFrom(ctx)
	if !ok || p.Key != nil {
		return uuid.Nil, errs.E(errs.PermissionDenied, "Only a platform admin may do this.")
	}
	if err := s.admin.Authorize(ctx, p.UserID); err != nil {
		return uuid.Nil, err
	}
	return p.UserID, nil
}

// AdminListUsers lists every user, newest first; q matches email or name.
func (s *Server) AdminListUsers(ctx context.Context, req api.AdminListUsersRequestObject) (api.AdminListUsersResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	users, err := s.admin.Users(ctx, orZero(req.Params.Q), limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(users, limit, func(u account.User) uuid.UUID { return u.ID }, toAdminUser)
	return api.AdminListUsers200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminDisableUser disables a user and ends every session of theirs at once: refresh
// tokens in the database, access tokens through the token revocation list.
func (s *Server) AdminDisableUser(ctx context.Context, req api.AdminDisableUserRequestObject) (api.AdminDisableUserResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	if _, err := s.admin.Disable(ctx, actor(ctx), req.Id); err != nil {
		return nil, err
	}
	return api.AdminDisableUser204Response{}, nil
}

// AdminEnableUser lets a disabled user log in again.
func (s *Server) AdminEnableUser(ctx context.Context, req api.AdminEnableUserRequestObject) (api.AdminEnableUserResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	if _, err := s.admin.Enable(ctx, actor(ctx), req.Id); err != nil {
		return nil, err
	}
	return api.AdminEnableUser204Response{}, nil
}

// AdminListOrgs lists every org, newest first; q matches the name.
func (s *Server) AdminListOrgs(ctx context.Context, req api.AdminListOrgsRequestObject) (api.AdminListOrgsResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	orgs, err := s.admin.Orgs(ctx, orZero(req.Params.Q), limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(orgs, limit, func(o account.Org) uuid.UUID { return o.ID }, toAPIOrg)
	return api.AdminListOrgs200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminListAuditEvents lists the whole audit log, newest first, by org, actor and action.
func (s *Server) AdminListAuditEvents(ctx context.Context, req api.AdminListAuditEventsRequestObject) (api.AdminListAuditEventsResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	limit, before, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	filter := admin.EventFilter{OrgID: req.Params.OrgId, ActorID: req.Params.ActorId, Action: orZero(req.Params.Action)}
	events, err := s.admin.AuditEvents(ctx, filter, limit+1, before)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(events, limit, func(e audit.Event) uuid.UUID { return e.ID }, toAPIAuditEvent)
	return api.AdminListAuditEvents200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminListFeatureFlags lists the flags stored in the database, by key.
func (s *Server) AdminListFeatureFlags(ctx context.Context, _ api.AdminListFeatureFlagsRequestObject) (api.AdminListFeatureFlagsResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	list, err := s.flags.List(ctx)
	if err != nil {
		return nil, err
	}
	data := make([]api.FeatureFlag, len(list))
	for i, f := range list {
		data[i] = toAPIFlag(f)
	}
	return api.AdminListFeatureFlags200JSONResponse{Data: data}, nil
}

// AdminGetFeatureFlag returns one stored flag.
func (s *Server) AdminGetFeatureFlag(ctx context.Context, req api.AdminGetFeatureFlagRequestObject) (api.AdminGetFeatureFlagResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	f, err := s.flags.Get(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return api.AdminGetFeatureFlag200JSONResponse(toAPIFlag(f)), nil
}

// AdminPutFeatureFlag creates or replaces a flag (omitted fields take their defaults);
// the audit event holds the flag before and after.
func (s *Server) AdminPutFeatureFlag(ctx context.Context, req api.AdminPutFeatureFlagRequestObject) (api.AdminPutFeatureFlagResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	f := flags.NewFlag(req.Key)
	f.Description, f.Enabled = orZero(req.Body.Description), req.Body.Enabled
	if req.Body.RolloutPercent != nil {
		f.RolloutPercent = *req.Body.RolloutPercent
	}
	if req.Body.StickyBy != nil {
		f.StickyBy = flags.SubjectType(*req.Body.StickyBy)
	}
	stored, err := s.flags.Set(ctx, f, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.AdminPutFeatureFlag200JSONResponse(toAPIFlag(stored)), nil
}

// AdminDeleteFeatureFlag deletes a flag; its config default applies again.
func (s *Server) AdminDeleteFeatureFlag(ctx context.Context, req api.AdminDeleteFeatureFlagRequestObject) (api.AdminDeleteFeatureFlagResponseObject, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return nil, err
	}
	if err := s.flags.Delete(ctx, req.Key, actor(ctx)); err != nil {
		return nil, err
	}
	return api.AdminDeleteFeatureFlag204Response{}, nil
}

// orZero is *p, or the zero value when p is nil (an omitted optional parameter).
func orZero[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func toAdminUser(u account.User) api.AdminUser {
	return api.AdminUser{
		Id: u.ID, Email: u.Email, Name: u.Name, EmailVerified: u.EmailVerified,
		PlatformAdmin: u.PlatformAdmin, Disabled: u.Disabled, CreatedAt: u.CreatedAt.UTC(),
	}
}

func toAPIOrg(o account.Org) api.Org {
	return api.Org{Id: o.ID, Name: o.Name, Personal: o.Personal, CreatedAt: o.CreatedAt.UTC()}
}

func toAPIFlag(f flags.Flag) api.FeatureFlag {
	return api.FeatureFlag{
		Key: f.Key, Description: f.Description, Enabled: f.Enabled,
		RolloutPercent: f.RolloutPercent, StickyBy: api.FeatureFlagStickyBy(f.StickyBy),
	}
}
