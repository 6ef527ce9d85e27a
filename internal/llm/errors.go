package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/errs"
)

// ErrorKind classifies an upstream failure; the Gateway fails over on the retryable kinds
// and the HTTP layer maps each kind to an error code.
type ErrorKind string

// The kinds of upstream failure.
const (
	KindInvalid     ErrorKind = "invalid_request" // 400, 404, 413, 422: the request is at fault; not retried
	KindAuth        ErrorKind = "auth"            // 401, 403: the provider key is wrong; not retried, but another target may work
	KindRateLimited ErrorKind = "rate_limited"    // 429: retried after RetryAfter
	KindOverloaded  ErrorKind = "overloaded"      // 5xx, 529
	KindTimeout     ErrorKind = "timeout"         // no answer in time
	KindConnection  ErrorKind = "connection"      // refused, reset, cut mid-stream
	KindProtocol    ErrorKind = "protocol"        // an answer Kiln cannot decode
	KindUnsupported ErrorKind = "unsupported"     // the provider has no such capability
)

// Error is a failure reported by, or on the way to, an upstream. Message is the
// upstream's own text (safe to show: providers do not echo keys in errors).
type Error struct {
	Provider   string
	Kind       ErrorKind
	Status     int    // upstream HTTP status; 0 when none was received
	Type       string // upstream error type or code, e.g. rate_limit_error
	Message    string
	RetryAfter time.Duration // from Retry-After (or retry-after-ms) when the upstream sent one
	Err        error         // the transport error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Provider, e.Kind)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Classify places the failure in Kiln's catalog (errs.Classifier): the code by kind, and a
// message naming the provider and passing its text on, except for credential failures:
// those are the operator's to fix, and the caller learns only that it failed.
func (e *Error) Classify() *errs.Error {
	return &errs.Error{Code: e.code(), Message: e.detail()}
}

func (e *Error) code() errs.Code {
	switch e.Kind {
	case KindInvalid, KindUnsupported:
		return errs.UpstreamRejected
	case KindRateLimited:
		return errs.UpstreamRateLimited
	case KindTimeout:
		return errs.UpstreamTimeout
	default:
		return errs.UpstreamError
	}
}

func (e *Error) detail() string {
	switch e.Kind {
	case KindAuth:
		return fmt.Sprintf("The provider %s refused Kiln's credentials (HTTP %d); the operator must fix its key.", e.Provider, e.Status)
	case KindConnection, KindProtocol, KindTimeout:
		return fmt.Sprintf("The provider %s failed: %s.", e.Provider, e.Message)
	}
	if e.Status != 0 {
		return fmt.Sprintf("The provider %s answered HTTP %d: %s", e.Provider, e.Status, e.Message)
	}
	return fmt.Sprintf("The provider %s failed: %s", e.Provider, e.Message)
}

// Retryable reports whether another attempt (here or at another target) may succeed.
func (e *Error) Retryable() bool {
	switch e.Kind {
	case KindRateLimited, KindOverloaded, KindTimeout, KindConnection:
		return true
	}
	return false
}

// KindForStatus classifies an upstream HTTP status.
func KindForStatus(status int) ErrorKind {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return KindAuth
	case status == http.StatusTooManyRequests:
		return KindRateLimited
	case status == http.StatusRequestTimeout || status == http.StatusGatewayTimeout:
		return KindTimeout
	case status >= 500: // includes Anthropic's 529 overloaded
		return KindOverloaded
	case status == http.StatusConflict:
		return KindOverloaded // OpenAI and Azure use 409 for transient conflicts
	default:
		return KindInvalid
	}
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// StatusError builds the *Error for a non-2xx upstream response. decode extracts the
// provider's error type and message from the body (it may return empty strings); the body
// is read up to 64 KiB and closed.
func StatusError(provider string, res *http.Response, decode func(body []byte) (typ, message string)) *Error {
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxErrorBody))
	_ = res.Body.Close()
	e := &Error{Provider: provider, Kind: KindForStatus(res.StatusCode), Status: res.StatusCode, RetryAfter: RetryAfter(res.Header, time.Now())}
	if decode != nil {
		e.Type, e.Message = decode(body)
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 500 {
			e.Message = e.Message[:500]
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(res.StatusCode)
	}
	return e
}

// TransportError wraps a failure to reach the upstream or to read its answer: ctx's own
// cancellation is returned as is, deadlines become KindTimeout, the rest KindConnection.
func TransportError(ctx context.Context, provider string, err error) error {
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	var ne interface{ Timeout() bool }
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &Error{Provider: provider, Kind: KindTimeout, Message: "the upstream did not answer in time", Err: err}
	}
	return &Error{Provider: provider, Kind: KindConnection, Message: "the connection to the upstream failed", Err: err}
}

// ProtocolError reports an answer that cannot be decoded.
func ProtocolError(provider string, format string, args ...any) *Error {
	return &Error{Provider: provider, Kind: KindProtocol, Message: fmt.Sprintf(format, args...)}
}

// Unsupported reports a capability the provider lacks.
func Unsupported(provider, what string) *Error {
	return &Error{Provider: provider, Kind: KindUnsupported, Message: provider + " does not support " + what}
}

// RetryAfter reads retry-after-ms (OpenAI, Azure) or Retry-After in seconds or as an HTTP
// date; zero when absent or malformed.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
