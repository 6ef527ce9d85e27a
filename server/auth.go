package server

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
)

// principal is who is calling: a user (through a session's access token) or an API key.
type principal struct {
	UserID    uuid.UUID // zero for API keys
	SessionID uuid.UUID // zero for API keys
	Key       *apikey.Key
	IssuedAt  time.Time // when the access token was issued; zero for API keys
}

type principalKey struct{}

func principalFrom(ctx context.Context) (principal, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p, ok
}

// requirement is what an operation's `security`, `x-kiln-scope` and `x-kiln-feature` ask
// of the caller.
type requirement struct {
	userToken bool     // bearerAuth: a user's access token is accepted
	apiKey    bool     // apiKeyAuth: an API key is accepted
	scopes    []string // an API key needs one of these scopes (none: any key)
	org       bool     // the operation acts for an org, which Kiln-Org may name
	feature   string   // the org's plan needs this feature ("": none)
}

// requirements reads the spec once: route template ("GET /v1/api-keys/{id}") → requirement.
// Operations without security are public.
func requirements(spec *openapi3.T) map[string]requirement {
	out := map[string]requirement{}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			sec := spec.Security
			if op.Security != nil {
				sec = *op.Security
			}
			var req requirement
			for _, alt := range sec {
				for name := range alt {
					switch name {
					case "bearerAuth":
						req.userToken = true
					case "apiKeyAuth":
						req.apiKey = true
					}
				}
			}
			if !req.userToken && !req.apiKey {
				continue
			}
			for _, p := range append(append(openapi3.Parameters{}, item.Parameters...), op.Parameters...) {
				req.org = req.org || (p.Value.In == openapi3.ParameterInHeader && p.Value.Name == orgHeader)
			}
			switch v := op.Extensions["x-kiln-scope"].(type) { // one scope, or a list of alternatives
			case string:
				req.scopes = []string{v}
			case []any:
				for _, sc := range v {
					if sc, ok := sc.(string); ok {
						req.scopes = append(req.scopes, sc)
					}
				}
			}
			req.feature, _ = op.Extensions["x-kiln-feature"].(string)
			out[method+" "+path] = req
		}
	}
	return out
}

// errUnauthenticated is the one answer to every bad credential, so nothing can be learnt
// from it about why.
var errUnauthenticated = errs.E(errs.Unauthenticated, "Missing or invalid credentials.")

// authenticate resolves the caller of operations that need one. Missing, malformed,
// unknown, revoked and expired credentials all get the same 401; a valid credential of a
// kind the operation does not take, or a key without the operation's scope, gets a 403
// naming what is missing. For an operation that acts for an org it resolves the org here,
// once for every such route (the model list and the streams included): a Kiln-Org the
// caller is not a member of is a 404 before anything else; and it holds the operation to
// its `x-kiln-feature`, the one entitlement check (403 feature_not_in_plan).
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, ok := s.auth.requirements[s.routeOf(r)]
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		credential, ok := bearer(r)
		if !ok {
			s.refuse(w, r, errUnauthenticated)
			return
		}
		var p principal
		if strings.HasPrefix(credential, "kiln_") {
			key, err := s.auth.Keys.Authenticate(r.Context(), credential)
			if err != nil {
				s.refuse(w, r, err)
				return
			}
			if !req.apiKey {
				s.respondError(w, r, errs.E(errs.PermissionDenied, "This operation needs a user's access token, not an API key."))
				return
			}
			if len(req.scopes) > 0 && !slices.ContainsFunc(req.scopes, func(sc string) bool { return apikey.Has(key.Scopes, sc) }) {
				s.respondError(w, r, errs.E(errs.PermissionDenied, "This API key lacks the scope %q.", strings.Join(req.scopes, `" or "`)))
				return
			}
			p.Key = &key
		} else {
			claims, err := s.auth.Tokens.Verify(r.Context(), credential)
			if err != nil {
				s.refuse(w, r, err)
				return
			}
			if !req.userToken {
				if isOpenAIRoute(r) { // OpenAI SDKs know a bad key as a 401 AuthenticationError
					w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
					s.respondError(w, r, errs.E(errs.Unauthenticated, "The OpenAI-compatible API takes a Kiln API key (kiln_…), not an access token."))
					return
				}
				s.respondError(w, r, errs.E(errs.PermissionDenied, "This operation needs an API key."))
				return
			}
			p.UserID, p.SessionID, p.IssuedAt = claims.UserID, claims.SessionID, claims.IssuedAt
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		if req.org {
			var requested *uuid.UUID
			if id, err := uuid.Parse(r.Header.Get(orgHeader)); err == nil {
				requested = &id
			} else if r.Header.Get(orgHeader) != "" {
				next.ServeHTTP(w, r.WithContext(ctx)) // the validator names the malformed header
				return
			}
			access, err := s.orgFor(ctx, requested)
			if err != nil {
				s.respondError(w, r, err)
				return
			}
			if req.feature != "" && s.llm.Billing != nil {
				if err := s.llm.Billing.Require(ctx, access.OrgID, req.feature); err != nil {
					s.respondError(w, r, err)
					return
				}
			}
			ctx = context.WithValue(ctx, orgKey{}, access)
			if err := s.orgWritable(ctx, r, access.OrgID); err != nil {
				s.respondError(w, r, err)
				return
			}
		}
		noteCaller(ctx)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// orgHeader names the org a user's request acts for.
const orgHeader = "Kiln-Org"

type orgKey struct{}

// resolvedOrg returns the org the authentication resolved for an operation that acts for
// one: Kiln-Org when given (a caller who is not a member got a 404 already), else the
// caller's personal org or the API key's org.
func resolvedOrg(ctx context.Context) (orgAccess, bool) {
	a, ok := ctx.Value(orgKey{}).(orgAccess)
	return a, ok
}

// refuse answers a failed authentication: every bad credential with the one 401 body;
// anything else (the database is down) as what it is.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	if errs.CodeOf(err) != errs.Unauthenticated {
		s.respondError(w, r, err)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="kiln"`)
	s.respondError(w, r, errUnauthenticated)
}

// wsBearerPrefix marks a credential offered as a WebSocket subprotocol: browsers cannot set
// headers on a WebSocket handshake, so they offer "kiln.v1, kiln.bearer.<token>"; the
// server answers with "kiln.v1" only, never echoing the token.
const wsBearerPrefix = "kiln.bearer."

// bearer returns the credential of an `Authorization: Bearer …` header, or of a
// kiln.bearer.* subprotocol on a WebSocket handshake without that header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
			for p := range strings.SplitSeq(v, ",") {
				if c, ok := strings.CutPrefix(strings.TrimSpace(p), wsBearerPrefix); ok {
					return c, c != "" && len(c) <= 4096
				}
			}
		}
	}
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	c := strings.TrimSpace(h[7:])
	return c, c != "" && len(c) <= 4096
}

// orgAccess is the org a request acts for and the caller's standing in it.
type orgAccess struct {
	OrgID uuid.UUID
	Role  string // the user's role; "" for API keys
}

// isAdmin reports whether the caller may manage the org: an owner or admin, or an API key
// (whose admin scope the middleware already checked).
func (a orgAccess) isAdmin() bool {
	return a.Role == "" || a.Role == account.RoleOwner || a.Role == account.RoleAdmin
}

// orgFor resolves the org a request acts for: an API key's own org; for a user, the org
// named by Kiln-Org (404 when they are not a member) or their personal org.
func (s *Server) orgFor(ctx context.Context, requested *uuid.UUID) (orgAccess, error) {
	p, ok := principalFrom(ctx)
	if !ok {
		return orgAccess{}, errUnauthenticated
	}
	if p.Key != nil {
		if requested != nil && *requested != p.Key.OrgID {
			return orgAccess{}, errs.E(errs.NotFound, "No org %s.", requested)
		}
		return orgAccess{OrgID: p.Key.OrgID}, nil
	}
	m, err := s.auth.memberships.get(ctx, p.UserID)
	if err != nil {
		return orgAccess{}, err
	}
	orgID := m.personalOrg
	if requested != nil {
		orgID = *requested
	}
	role, ok := m.roles[orgID]
	if !ok {
		return orgAccess{}, errs.E(errs.NotFound, "No org %s.", orgID)
	}
	return orgAccess{OrgID: orgID, Role: role}, nil
}

// membershipCache keeps each user's orgs and roles for a short while, so resolving the
// org of a request costs no query. A role change shows within ttl; writes through this
// server drop the entry at once.
type membershipCache struct {
	accounts *account.Service
	ttl      time.Duration
	now      func() time.Time
	mu       sync.Mutex
	entries  map[uuid.UUID]memberships
}

type memberships struct {
	personalOrg uuid.UUID
	roles       map[uuid.UUID]string
	loaded      time.Time
}

const membershipCacheLimit = 10_000

func (c *membershipCache) get(ctx context.Context, userID uuid.UUID) (memberships, error) {
	c.mu.Lock()
	m, ok := c.entries[userID]
	c.mu.Unlock()
	if ok && c.now().Sub(m.loaded) < c.ttl {
		return m, nil
	}
	user, err := c.accounts.User(ctx, userID)
	if err != nil {
		return memberships{}, err
	}
	list, err := c.accounts.Memberships(ctx, userID)
	if err != nil {
		return memberships{}, err
	}
	m = memberships{personalOrg: user.PersonalOrgID, roles: make(map[uuid.UUID]string, len(list)), loaded: c.now()}
	for _, ms := range list {
		m.roles[ms.Org.ID] = ms.Role
	}
	c.mu.Lock()
	if len(c.entries) >= membershipCacheLimit {
		clear(c.entries) // rare; a cold reload per user is cheap
	}
	c.entries[userID] = m
	c.mu.Unlock()
	return m, nil
}

func (c *membershipCache) forget(userID uuid.UUID) {
	c.mu.Lock()
	delete(c.entries, userID)
	c.mu.Unlock()
}
