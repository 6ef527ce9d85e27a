package kiln_test

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

func TestAsProblem(t *testing.T) {
	t.Parallel()
	const problemJSON = `{"type":"urn:kiln:problem:invalid_request","title":"Invalid request","status":400,` +
		`"code":"invalid_request","detail":"The body is invalid.","request_id":"from-body",` +
		`"errors":[{"pointer":"/name","message":"must be at most 100 characters"}]}`

	tests := []struct {
		name        string
		status      int
		contentType string
		requestID   string
		body        string
		want        *kiln.Problem // nil: AsProblem returns nil
	}{
		{name: "OK", status: 200, contentType: "application/json", body: `{"status":"ok"}`},
		{name: "OKNoContent", status: 204},
		{
			name: "ErrProblem", status: 400, contentType: "application/problem+json", requestID: "from-header",
			body: problemJSON,
			want: &kiln.Problem{
				Type: "urn:kiln:problem:invalid_request", Title: "Invalid request", Status: 400,
				Code: kiln.InvalidRequest, Detail: ptr("The body is invalid."), RequestId: "from-body",
				Errors: &[]kiln.FieldError{{Pointer: "/name", Message: "must be at most 100 characters"}},
			},
		},
		{
			name: "ErrProblemGapsFromResponse", status: 429, contentType: "application/problem+json; charset=utf-8",
			requestID: "from-header", body: `{"code":"rate_limited","title":"Too many requests"}`,
			want: &kiln.Problem{Title: "Too many requests", Status: 429, Code: kiln.RateLimited, RequestId: "from-header"},
		},
		{
			name: "ErrJSONNotAProblem", status: 500, contentType: "application/json", requestID: "from-header",
			body: `{"error":"boom"}`,
			want: &kiln.Problem{
				Type: "about:blank", Title: "Internal Server Error", Status: 500,
				Detail: ptr(`{"error":"boom"}`), RequestId: "from-header",
			},
		},
		{
			name: "ErrHTMLPageTruncated", status: 502, contentType: "text/html",
			body: "<html>" + strings.Repeat("x", 600),
			want: &kiln.Problem{
				Type: "about:blank", Title: "Bad Gateway", Status: 502,
				Detail: ptr("<html>" + strings.Repeat("x", 506)),
			},
		},
		{
			name: "ErrEmptyBody", status: 503,
			want: &kiln.Problem{Type: "about:blank", Title: "Service Unavailable", Status: 503},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}}
			if tt.contentType != "" {
				resp.Header.Set("Content-Type", tt.contentType)
			}
			if tt.requestID != "" {
				resp.Header.Set(kiln.RequestIDHeader, tt.requestID)
			}
			err := kiln.AsProblem(resp, []byte(tt.body))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("AsProblem = %v, want nil", err)
				}
				return
			}
			var got *kiln.ProblemError
			if !errors.As(err, &got) {
				t.Fatalf("AsProblem = %v (%T), want *kiln.ProblemError", err, err)
			}
			if !reflect.DeepEqual(got.Problem, *tt.want) {
				t.Errorf("problem\n got %s\nwant %s", describe(got.Problem), describe(*tt.want))
			}
		})
	}
}

func TestProblemErrorError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		problem kiln.Problem
		want    string
	}{
		{
			name:    "Detail",
			problem: kiln.Problem{Code: kiln.NotFound, Status: 404, Title: "Not found", Detail: ptr("No route matches GET /nope."), RequestId: "r1"},
			want:    "kiln: not_found (404): No route matches GET /nope. (request_id r1)",
		},
		{
			name:    "TitleWithoutDetail",
			problem: kiln.Problem{Code: kiln.Unauthenticated, Status: 401, Title: "Unauthenticated", RequestId: "r2"},
			want:    "kiln: unauthenticated (401): Unauthenticated (request_id r2)",
		},
		{
			name:    "NoCodeNoRequestID",
			problem: kiln.Problem{Status: 502, Title: "Bad Gateway"},
			want:    "kiln: HTTP 502: Bad Gateway",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := (&kiln.ProblemError{Problem: tt.problem}).Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCheckResponse(t *testing.T) {
	t.Parallel()
	t.Run("ErrTransportPassedThrough", func(t *testing.T) {
		t.Parallel()
		transportErr := errors.New("dial tcp: connection refused")
		resp, err := kiln.CheckResponse[*kiln.GetHealthResponse](nil, transportErr)
		if resp != nil || !errors.Is(err, transportErr) {
			t.Errorf("CheckResponse = %v, %v; want nil, the transport error", resp, err)
		}
	})
}

// describe renders a Problem with its optional fields dereferenced, for comparison.
func describe(p kiln.Problem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "code=%s type=%s title=%s status=%d request_id=%s", p.Code, p.Type, p.Title, p.Status, p.RequestId)
	if p.Detail != nil {
		fmt.Fprintf(&b, " detail=%q", *p.Detail)
	}
	if p.Errors != nil {
		for _, e := range *p.Errors {
			fmt.Fprintf(&b, " error=%s:%s", e.Pointer, e.Message)
		}
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }
