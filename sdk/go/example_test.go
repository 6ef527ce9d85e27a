package kiln_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// A server that answers every request the way Kiln answers an unknown route.
func newNotFoundServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set(kiln.RequestIDHeader, "req-42")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"type":"urn:kiln:problem:not_found","title":"Not found","status":404,`+
			`"code":"not_found","detail":"No route matches GET %s.","request_id":"req-42"}`, r.URL.Path)
	}))
}

// CheckResponse wraps a generated ClientWithResponses call: one error check covers
// transport errors and problem answers, and errors.As gives the problem's stable code.
func ExampleCheckResponse() {
	srv := newNotFoundServer()
	defer srv.Close()

	client, err := kiln.NewClientWithResponses(srv.URL)
	if err != nil {
		panic(err)
	}
	_, err = kiln.CheckResponse(client.GetHealthWithResponse(context.Background()))

	var problem *kiln.ProblemError
	if errors.As(err, &problem) && problem.Code == kiln.NotFound {
		fmt.Println("not found; request id:", problem.RequestId)
	}
	fmt.Println(err)
	// Output:
	// not found; request id: req-42
	// kiln: not_found (404): No route matches GET /health. (request_id req-42)
}

// AsProblem reads the error out of a response obtained outside the generated client, for
// example with a plain http.Client.
func ExampleAsProblem() {
	srv := newNotFoundServer()
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/nope")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	fmt.Println(kiln.AsProblem(resp, body))
	// Output:
	// kiln: not_found (404): No route matches GET /nope. (request_id req-42)
}

// A body that is not a problem document, such as a proxy's error page, still becomes a
// *ProblemError: Code is empty and the status, its text and the start of the body
// describe what happened.
func ExampleAsProblem_notAProblem() {
	resp := &http.Response{
		StatusCode: http.StatusBadGateway,
		Header:     http.Header{"Content-Type": {"text/plain"}},
	}
	err := kiln.AsProblem(resp, []byte("upstream connect error\n"))

	var problem *kiln.ProblemError
	fmt.Println(errors.As(err, &problem), problem.Code == "", problem.Title)
	fmt.Println(err)
	// Output:
	// true true Bad Gateway
	// kiln: HTTP 502: upstream connect error
}

// An AuthSession signs a client's requests in with a user's tokens and, when the access
// token has expired, refreshes the pair once and sends the request again.
func ExampleAuthSession() {
	f := &fakeAuth{}
	f.current.Store(2) // the server has moved on: access-1 is expired, refresh-1 still valid
	srv := httptest.NewServer(f)
	defer srv.Close()

	// pair would come from client.LoginWithResponse (or SignUp) in a real program.
	pair := kiln.TokenPair{AccessToken: "access-1", RefreshToken: "refresh-2"}
	session, err := kiln.NewAuthSession(srv.URL, pair)
	if err != nil {
		panic(err)
	}
	client, err := kiln.NewClientWithResponses(srv.URL, kiln.WithHTTPClient(session))
	if err != nil {
		panic(err)
	}
	me, err := kiln.CheckResponse(client.GetMeWithResponse(context.Background()))
	if err != nil {
		panic(err)
	}
	fmt.Println(me.JSON200.Email)
	fmt.Println(session.Tokens().RefreshToken) // save it: refresh tokens rotate
	// Output:
	// a@example.com
	// refresh-3
}

// WithBearer authenticates a client, or a single call, with an API key or access token.
func ExampleWithBearer() {
	client, err := kiln.NewClientWithResponses("https://api.example.com",
		kiln.WithRequestEditorFn(kiln.WithBearer("kiln_live_…")))
	if err != nil {
		panic(err)
	}
	_ = client // client.ListAPIKeysWithResponse(ctx, nil) sends Authorization: Bearer kiln_live_…
}

// The README's quick start in Go: a first chat with an API key, against a real kiln serve
// and its offline dev model.
func Example_quickStart() {
	ctx := context.Background()
	baseURL, apiKey := exampleServer()

	// From here to the output, README.md's Go example word for word (TestREADMEGoExamples).
	client, err := kiln.NewClientWithResponses(baseURL, kiln.WithRequestEditorFn(kiln.WithBearer(apiKey)))
	if err != nil {
		log.Fatal(err)
	}
	hello := "Hello, Kiln"
	resp, err := kiln.CheckResponse(client.CreateChatCompletionWithResponse(ctx, nil, kiln.ChatRequest{
		Messages: []kiln.ChatMessage{{Role: kiln.ChatRoleUser, Content: &hello}},
	}))
	if err != nil {
		log.Fatal(err) // a *kiln.ProblemError for an answer that is not 2xx
	}
	fmt.Println(*resp.JSON200.Message.Content)
	// Output: [dev] You said: Hello, Kiln
}
