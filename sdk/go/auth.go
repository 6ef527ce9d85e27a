package kiln

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// WithBearer returns a RequestEditorFn that sends token, an access token or an API key
// (`kiln_…`), as `Authorization: Bearer <token>`. Give it to every call of a client, or to
// one call, where it wins over the client's editors:
//
//	client, err := kiln.NewClientWithResponses(url, kiln.WithRequestEditorFn(kiln.WithBearer(apiKey)))
//	me, err := kiln.CheckResponse(client.GetMeWithResponse(ctx, kiln.WithBearer(pair.AccessToken)))
func WithBearer(token string) RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+token)
		return nil
	}
}

// AuthSession signs a user's requests in with a TokenPair (from SignUp, Login or
// RefreshTokens). It is an HttpRequestDoer: each request without an Authorization header
// gets the current access token, and when the API answers 401 (the access token expired)
// the session spends the refresh token once, stores the new pair and sends the request
// again with it. Refresh tokens rotate, so save Tokens() rather than the first pair. When
// the refresh is refused too (the session was revoked), the first 401 is returned as is.
// An AuthSession is safe for concurrent use; concurrent 401s cause a single refresh.
//
//	session, err := kiln.NewAuthSession(url, pair)
//	client, err := kiln.NewClientWithResponses(url, kiln.WithHTTPClient(session))
type AuthSession struct {
	doer    HttpRequestDoer      // sends the requests
	refresh *ClientWithResponses // calls RefreshTokens through doer

	mu   sync.Mutex // held through a refresh, so that one refresh serves every waiter
	pair TokenPair
}

// NewAuthSession returns a session for the API at server that starts from pair. opts
// configure the refresh calls; WithHTTPClient also sets the doer that sends every request
// of the session (default: a new http.Client).
func NewAuthSession(server string, pair TokenPair, opts ...ClientOption) (*AuthSession, error) {
	c, err := NewClient(server, opts...)
	if err != nil {
		return nil, err
	}
	return &AuthSession{doer: c.Client, refresh: &ClientWithResponses{ClientInterface: c}, pair: pair}, nil
}

// Tokens returns the current token pair.
func (s *AuthSession) Tokens() TokenPair {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pair
}

// Do sends req with the session's access token, refreshing it once on a 401. Requests
// that carry their own Authorization header, and those whose body cannot be sent again
// (no GetBody), pass through as they are.
func (s *AuthSession) Do(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" {
		return s.doer.Do(req)
	}
	token := s.Tokens().AccessToken
	resp, err := s.send(req, req.Body, token)
	if err != nil || resp.StatusCode != http.StatusUnauthorized ||
		(req.Body != nil && req.Body != http.NoBody && req.GetBody == nil) {
		return resp, err
	}
	fresh, err := s.refreshAfter(req.Context(), token)
	var problem *ProblemError
	if errors.As(err, &problem) && problem.Status == http.StatusUnauthorized {
		return resp, nil // the session is over: the caller sees the first 401
	}
	_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("kiln: refresh the access token: %w", err)
	}
	body := req.Body
	if req.GetBody != nil {
		if body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	return s.send(req, body, fresh)
}

// send sends a copy of req with body and the access token.
func (s *AuthSession) send(req *http.Request, body io.ReadCloser, token string) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Body = body
	r.Header.Set("Authorization", "Bearer "+token)
	return s.doer.Do(r)
}

// refreshAfter returns an access token newer than stale: the current one when another
// request has refreshed meanwhile, else one from a refresh, whose pair it stores.
func (s *AuthSession) refreshAfter(ctx context.Context, stale string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pair.AccessToken != stale {
		return s.pair.AccessToken, nil
	}
	resp, err := CheckResponse(s.refresh.RefreshTokensWithResponse(ctx, RefreshRequest{RefreshToken: s.pair.RefreshToken}))
	if err != nil {
		return "", err
	}
	if resp.JSON200 == nil {
		return "", fmt.Errorf("kiln: refresh answered %d without a token pair", resp.StatusCode())
	}
	s.pair = *resp.JSON200
	return s.pair.AccessToken, nil
}
