package server

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// requestIDHeader carries the request id in both directions.
const requestIDHeader = "X-Request-Id"

// requestIDChars are the bytes allowed in a client's request id.
var requestIDChars = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-") {
		t[c] = true
	}
	return t
}()

// validRequestID accepts ids of 1–128 characters of A-Za-z0-9._:- so a client's id is
// safe to echo and to log.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !requestIDChars[id[i]] {
			return false
		}
	}
	return true
}

// withRequestID accepts a well-formed X-Request-Id or generates one (UUIDv7), echoes it
// and puts it in the context so every log line of the request carries it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(requestIDHeader)
		if !validRequestID(id) {
			id = uuid.Must(uuid.NewV7()).String()
		}
		w.Header().Set(requestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(logging.WithRequestID(r.Context(), id)))
	})
}

// statusRecorder remembers the status and size of a response. It keeps Flush and
// Hijack reachable through Unwrap (http.ResponseController) for streaming.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusRecorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe writes one access-log line and the request metrics per request, labelled with
// the route template (never the raw path, so label cardinality stays bounded).
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		route := s.routeOf(r)
		r = s.withReportFacts(r, route)
		s.metrics.inFlight.Inc()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			s.metrics.inFlight.Dec()
			elapsed := time.Since(start)
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			s.metrics.requests.WithLabelValues(r.Method, route, strconv.Itoa(status)).Inc()
			s.metrics.duration.WithLabelValues(r.Method, route).Observe(elapsed.Seconds())
			s.log.LogAttrs(r.Context(), accessLevel(status), "request",
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Duration("duration", elapsed),
				slog.String("remote", r.RemoteAddr),
				slog.String("user_agent", r.UserAgent()),
			)
		}()
		next.ServeHTTP(rec, r)
	})
}

// accessLevel logs server errors at error level and everything else at info.
func accessLevel(status int) slog.Level {
	if status >= 500 {
		return slog.LevelError
	}
	return slog.LevelInfo
}

// routeOf returns the route template that will serve r ("GET /health"), or "unmatched".
func (s *Server) routeOf(r *http.Request) string {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		return pattern
	}
	return "unmatched"
}

// recoverPanics turns a panic into a 500 problem; the stack goes to the log, not to the client.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // sentinel compared as net/http does
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			s.reports.Panic(r.Context(), reportOf(r.Context(), http.StatusInternalServerError, ""), v)
			if rec, ok := w.(*statusRecorder); ok && rec.status != 0 {
				return // headers are gone; the client sees a truncated response
			}
			s.respondError(w, r, reported{errs.E(errs.Internal, "An internal error occurred; quote the request id when reporting it.")})
		}()
		next.ServeHTTP(w, r)
	})
}

// rejectUnrouted answers requests no route matches with 404 or 405 errors (with Allow),
// in OpenAI's error body under /openai like every error there. A path that is not clean
// ("//v1/me", "/v1/../v1/me", "/v1/./me") matches no route: ServeMux would answer it with
// an HTML redirect to the cleaned path.
func (s *Server) rejectUnrouted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != "" && path.Clean(p) != p && path.Clean(p)+"/" != p {
			s.respondError(w, r, errs.E(errs.NotFound, "No route matches %s %s; paths are matched as sent, never cleaned or redirected.", r.Method, r.URL.Path))
			return
		}
		h, pattern := s.mux.Handler(r)
		if pattern != "" {
			next.ServeHTTP(w, r)
			return
		}
		// The mux's own handler tells 404 from 405 and computes Allow.
		probe := httptest.NewRecorder()
		h.ServeHTTP(probe, r)
		if probe.Code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", probe.Header().Get("Allow"))
			s.respondError(w, r, errs.E(errs.MethodNotAllowed, "%s is not allowed on %s; allowed: %s.", r.Method, r.URL.Path, probe.Header().Get("Allow")))
			return
		}
		s.respondError(w, r, errs.E(errs.NotFound, "No route matches %s %s.", r.Method, r.URL.Path))
	})
}

// limitBody caps request bodies at http.max_body_bytes (or a route's own limit): a declared Content-Length over the limit is
// refused at once, a body that grows past it fails when read.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := s.cfg.MaxBodyBytes
		if s.bodyLimits != nil {
			if l, ok := s.bodyLimits[s.routeOf(r)]; ok {
				limit = l
			}
		}
		if r.ContentLength > limit {
			s.respondError(w, r, &http.MaxBytesError{Limit: limit})
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// withDeadline bounds non-streaming handlers by the request timeout: their context is
// cancelled at the deadline, and a handler that returns ctx.Err() gets a 503 timeout problem.
func (s *Server) withDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.streaming[s.routeOf(r)] {
			next.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
