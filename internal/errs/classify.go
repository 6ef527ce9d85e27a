package errs

import (
	"context"
	"errors"
	"time"
)

// Classifier is an error from outside the domain vocabulary (an upstream provider's
// failure, say) that knows its place in the catalog. Its package implements it, so errs
// need not import the packages whose errors it classifies.
type Classifier interface {
	error
	// Classify returns the error's code and client-safe message.
	Classify() *Error
}

// Waiter is an error that knows when the same request may succeed (a quota that resets):
// the HTTP layer sends it as Retry-After.
type Waiter interface {
	error
	RetryAfter() time.Duration
}

// Classify maps err to the catalog without side effects, for request handlers and
// background work alike: an *Error as it is, a Classifier's own classification, a passed
// deadline as Timeout, a cancellation as Timeout ("cancelled"). known is false for any
// other error, which is then Internal with a message that hides its text: the caller
// (at the edge) logs such an error once.
func Classify(err error) (e *Error, known bool) {
	if de, ok := errors.AsType[*Error](err); ok {
		return de, true
	}
	if c, ok := errors.AsType[Classifier](err); ok {
		return c.Classify(), true
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: Timeout, Message: "The request did not complete within its deadline."}, true
	case errors.Is(err, context.Canceled):
		return &Error{Code: Timeout, Message: "The request was cancelled."}, true
	}
	return &Error{Code: Internal, Message: "An internal error occurred; quote the request id when reporting it."}, false
}
