package kiln_test

import (
	"context"
	"errors"
	"fmt"
	"io"
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
