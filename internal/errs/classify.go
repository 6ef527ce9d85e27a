package errs

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
)

// Classifier is an error from outside the domain vocabulary (an upstream provider's
// failure, say) that knows its place in the catalog. Its package implements it, so errs
// need not import the packages whose errors it classifies.
type Classifier interface {
	error
	// Classify returns the error's code and client-safe message.
	Classify() *Error
}

// Classify maps err to the catalog without side effects, for request handlers and
// background work alike: an *Error as it is, a Classifier's own classification, a passed
// deadline as Timeout, a cancellation as Timeout ("cancelled"), a database's refusal of
// the data it was given (SQLSTATE class 22, the client's fault) as Invalid, and a
// dependency that cannot be reached (a refused or broken connection, a database shutting
// down or out of connections) as Unavailable. known is false for any
// other error, which is then Internal with a message that hides its text: the caller
// (at the edge) logs such an error once.
func Classify(err error) (e *Error, known bool) {
	if de, ok := errors.AsType[*Error](err); ok {
		return de, true
	}
	if c, ok := errors.AsType[Classifier](err); ok {
		return c.Classify(), true
	}
	if e, ok := classifySQLState(err); ok {
		return e, true
	}
	switch {
	case unreachable(err): // first: a dependency's own connect deadline is its outage, not the request's
		return &Error{Code: Unavailable, Message: UnavailableMessage}, true
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Code: Timeout, Message: "The request did not complete within its deadline."}, true
	case errors.Is(err, context.Canceled):
		return &Error{Code: Timeout, Message: "The request was cancelled."}, true
	}
	return &Error{Code: Internal, Message: "An internal error occurred; quote the request id when reporting it."}, false
}

// UnavailableMessage is the client's message of every Unavailable error.
const UnavailableMessage = "A service Kiln depends on is unavailable right now; retry after Retry-After seconds."

// sqlStater is a database error with its SQLSTATE (pgconn.PgError has the method), matched
// by method so that errs imports no driver.
type sqlStater interface {
	error
	SQLState() string
}

// dataExceptions are the SQLSTATEs of class 22 that a client's value causes: a database
// must never turn them into a 500. The message names no column: the database's text may
// quote the value or the schema.
var dataExceptions = map[string]string{
	"22001": "A value is longer than the field allows.",
	"22003": "A number is out of range.",
	"22007": "A date or time is malformed.",
	"22008": "A date or time is out of range.",
	"22019": "A pattern holds an invalid escape character.",
	"22021": "A text holds a character that cannot be stored (U+0000 or invalid UTF-8).",
	"22025": "A pattern holds an invalid escape sequence.",
	"2201B": "A pattern is not a valid regular expression.",
	"22P02": "A value is malformed for its type.",
	"22P05": "A text holds a character that cannot be stored (U+0000 or invalid UTF-8).",
}

// classifySQLState classifies a database error by its SQLSTATE: a client's bad data as
// Invalid, a server that refuses connections (class 08, shutdown, too many connections) as
// Unavailable.
func classifySQLState(err error) (*Error, bool) {
	se, ok := errors.AsType[sqlStater](err)
	if !ok {
		return nil, false
	}
	state := se.SQLState()
	if msg, ok := dataExceptions[state]; ok {
		return &Error{Code: Invalid, Message: msg}, true
	}
	switch {
	case strings.HasPrefix(state, "08"), state == "57P01", state == "57P02", state == "57P03", state == "53300":
		return &Error{Code: Unavailable, Message: UnavailableMessage}, true
	}
	return nil, false
}

// unreachable reports whether err is a failure to reach or to keep talking to a dependency
// (PostgreSQL, Redis), recognised without importing their drivers:
//   - a refused, reset or timed-out connection (a *net.OpError, as both drivers return it,
//     or its errno);
//   - pgx's "failed to connect" (pgconn.ConnectError), whatever its cause: a refused dial,
//     its connect_timeout, a server that refuses logins;
//   - go-redis's pool that found no usable connection in time (redis.ErrPoolTimeout,
//     redis.ErrPoolExhausted).
//
// A cancellation is never an outage: the client went away. A connection PostgreSQL closes
// under an open pool reads as a *net.OpError too (internal/store dials so). A bare io.EOF
// is no outage: a client's truncated body ends so. TestClassifyDriverErrors produces each
// case with the real drivers.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	return inChain(err, func(e error) bool {
		msg := e.Error()
		return strings.HasPrefix(msg, "failed to connect to ") || msg == "redis: connection pool timeout" || msg == "redis: connection pool exhausted"
	})
}

// inChain reports whether match holds for err or any error it wraps.
func inChain(err error, match func(error) bool) bool {
	for err != nil {
		if match(err) {
			return true
		}
		switch u := err.(type) { //nolint:errorlint // this walks the chain one link at a time
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if inChain(e, match) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}
