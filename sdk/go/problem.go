package kiln

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// RequestIDHeader is the response header that carries the id of the request; Kiln echoes
// it on every response, and a Problem's RequestId holds the same value.
const RequestIDHeader = "X-Request-Id"

// maxFallbackDetail bounds how much of a body that is not a problem document ends up in
// ProblemError.Detail.
const maxFallbackDetail = 512

// ProblemError is a non-2xx answer from the API, as an error. Kiln answers every error
// with an RFC 9457 problem document; ProblemError carries it, so callers branch on the
// stable Code:
//
//	var p *kiln.ProblemError
//	if errors.As(err, &p) && p.Code == kiln.NotFound { ... }
//
// When the body was not a Kiln problem document (an error page from a proxy in front of
// Kiln, say), Code is empty and Status, Title and Detail describe the HTTP response.
type ProblemError struct {
	Problem
}

// Error returns the code, status, detail (or title) and request id, e.g.
// "kiln: not_found (404): No route matches GET /nope. (request_id 0193…)", or
// "kiln: HTTP 502: …" when the body was not a problem document.
func (e *ProblemError) Error() string {
	var b strings.Builder
	if e.Code != "" {
		fmt.Fprintf(&b, "kiln: %s (%d)", e.Code, e.Status)
	} else {
		fmt.Fprintf(&b, "kiln: HTTP %d", e.Status)
	}
	if e.Detail != nil && *e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(*e.Detail)
	} else if e.Title != "" {
		b.WriteString(": ")
		b.WriteString(e.Title)
	}
	if e.RequestId != "" {
		b.WriteString(" (request_id ")
		b.WriteString(e.RequestId)
		b.WriteByte(')')
	}
	return b.String()
}

// AsProblem returns nil when resp has a 2xx status and a *ProblemError otherwise, decoded
// from body, the response body already read. Fields the body lacks are filled from the
// response: Status from the status code, RequestId from the X-Request-Id header.
func AsProblem(resp *http.Response, body []byte) error {
	return asProblem(resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get(RequestIDHeader), body)
}

// Response is the part of every generated *…Response type (GetHealthResponse, …) that
// CheckResponse reads.
type Response interface {
	StatusCode() int
	ContentType() string
	GetBody() []byte
}

// CheckResponse passes through the result of a ClientWithResponses call and turns a
// non-2xx status into a *ProblemError, so that one error check covers both transport
// errors and API errors:
//
//	resp, err := kiln.CheckResponse(client.GetHealthWithResponse(ctx))
//
// resp is returned as it is, so operation-specific error bodies (GetReadyResponse's
// ApplicationproblemJSON503, with each failed check) stay reachable. The generated types
// expose no headers through a method, so RequestId comes from the body alone; Kiln's
// problem documents always carry it.
func CheckResponse[R Response](resp R, err error) (R, error) {
	if err != nil {
		return resp, err
	}
	return resp, asProblem(resp.StatusCode(), resp.ContentType(), "", resp.GetBody())
}

func asProblem(status int, contentType, requestID string, body []byte) error {
	if status >= 200 && status < 300 {
		return nil
	}
	pe := &ProblemError{}
	if !isJSON(contentType) || json.Unmarshal(body, &pe.Problem) != nil || pe.Code == "" {
		pe.Problem = Problem{Type: "about:blank", Title: http.StatusText(status)}
		if detail := fallbackDetail(body); detail != "" {
			pe.Detail = &detail
		}
	}
	if pe.Status == 0 {
		pe.Status = status
	}
	if pe.RequestId == "" {
		pe.RequestId = requestID
	}
	return pe
}

// isJSON reports whether contentType is application/json or a +json type such as
// application/problem+json.
func isJSON(contentType string) bool {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// fallbackDetail returns the start of a body that is not a problem document, as valid
// UTF-8 text, for the error message.
func fallbackDetail(body []byte) string {
	if len(body) > maxFallbackDetail {
		body = body[:maxFallbackDetail]
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(body), string(utf8.RuneError)))
}
