package kiln_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// fakeAuth is a server that takes the access token "access-<n>" of its current pair n
// only, and rotates the pair on POST /v1/auth/refresh with "refresh-<n>".
type fakeAuth struct {
	refreshes atomic.Int32
	current   atomic.Int32
	refuse    bool // answer every refresh with 401
}

func (f *fakeAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.current.Load()
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/auth/refresh":
		f.refreshes.Add(1)
		var body kiln.RefreshRequest
		if f.refuse || json.NewDecoder(r.Body).Decode(&body) != nil || body.RefreshToken != fmt.Sprint("refresh-", n) {
			unauthenticated(w, "req-refresh")
			return
		}
		time.Sleep(20 * time.Millisecond) // lets concurrent 401s pile up behind the refresh
		f.current.Store(n + 1)
		writeJSON(w, http.StatusOK, pair(n+1))
	case r.Header.Get("Authorization") != fmt.Sprint("Bearer access-", n):
		unauthenticated(w, "req-401")
	case r.Method == http.MethodPost && r.URL.Path == "/v1/orgs":
		var body kiln.CreateOrgRequest
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusCreated, kiln.OrgMembership{Name: body.Name, Role: kiln.RoleOwner})
	default:
		writeJSON(w, http.StatusOK, kiln.Me{Email: "a@example.com"})
	}
}

func pair(n int32) kiln.TokenPair {
	return kiln.TokenPair{AccessToken: fmt.Sprint("access-", n), RefreshToken: fmt.Sprint("refresh-", n), TokenType: kiln.Bearer, ExpiresIn: 900}
}

func unauthenticated(w http.ResponseWriter, requestID string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, `{"type":"urn:kiln:problem:unauthenticated","title":"Unauthenticated","status":401,`+
		`"code":"unauthenticated","detail":"Missing or invalid credentials.","request_id":%q}`, requestID)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// newSessionClient serves f and returns a client whose requests go through a session
// that starts from pair(0) with a stale access token.
func newSessionClient(t *testing.T, f *fakeAuth) (*kiln.ClientWithResponses, *kiln.AuthSession) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.current.Store(1)
	session, err := kiln.NewAuthSession(srv.URL, kiln.TokenPair{AccessToken: "expired", RefreshToken: "refresh-1"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := kiln.NewClientWithResponses(srv.URL, kiln.WithHTTPClient(session))
	if err != nil {
		t.Fatal(err)
	}
	return client, session
}

func TestAuthSessionRefreshesOnceForConcurrent401s(t *testing.T) {
	f := &fakeAuth{}
	client, session := newSessionClient(t, f)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			// A request with a body, which the retry must send again.
			name := fmt.Sprint("org-", i)
			resp, err := kiln.CheckResponse(client.CreateOrgWithResponse(t.Context(), nil, kiln.CreateOrgRequest{Name: name}))
			if err != nil {
				t.Error(err)
				return
			}
			if resp.JSON201 == nil || resp.JSON201.Name != name {
				t.Errorf("create org = %d %s, want 201 named %q", resp.StatusCode(), resp.Body, name)
			}
		})
	}
	wg.Wait()
	if n := f.refreshes.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if got := session.Tokens(); got != pair(2) {
		t.Errorf("Tokens() = %+v, want the refreshed pair %+v", got, pair(2))
	}
	// The stored pair is used from now on: no more refreshes.
	if _, err := kiln.CheckResponse(client.GetMeWithResponse(t.Context())); err != nil || f.refreshes.Load() != 1 {
		t.Errorf("GetMe after the refresh: %v, %d refreshes; want success without another", err, f.refreshes.Load())
	}
}

func TestAuthSessionRefreshRefused(t *testing.T) {
	f := &fakeAuth{refuse: true}
	client, session := newSessionClient(t, f)

	_, err := kiln.CheckResponse(client.GetMeWithResponse(t.Context()))
	var problem *kiln.ProblemError
	if !errors.As(err, &problem) || problem.Code != kiln.Unauthenticated || problem.RequestId != "req-401" {
		t.Errorf("error = %v, want the first 401 (request_id req-401)", err)
	}
	if n := f.refreshes.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if got := session.Tokens(); got.RefreshToken != "refresh-1" {
		t.Errorf("Tokens() = %+v, want the pair unchanged", got)
	}
}

func TestAuthSessionOwnAuthorizationPassesThrough(t *testing.T) {
	f := &fakeAuth{}
	client, _ := newSessionClient(t, f)

	_, err := kiln.CheckResponse(client.GetMeWithResponse(t.Context(), kiln.WithBearer("kiln_dev_other")))
	var problem *kiln.ProblemError
	if !errors.As(err, &problem) || problem.Status != http.StatusUnauthorized {
		t.Errorf("error = %v, want the 401 for the request's own credential", err)
	}
	if _, err := kiln.CheckResponse(client.GetMeWithResponse(t.Context(), kiln.WithBearer("access-1"))); err != nil {
		t.Errorf("GetMe with WithBearer(a valid token): %v", err)
	}
	if n := f.refreshes.Load(); n != 0 {
		t.Errorf("%d refreshes, want none", n)
	}
}
