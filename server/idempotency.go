package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/internal/idempotency"
)

const (
	idempotencyKeyHeader = "Idempotency-Key"
	replayedHeader       = "Idempotent-Replayed"
)

// idempotentRoutes reads the spec once: the route templates of the operations that declare
// the Idempotency-Key header.
func idempotentRoutes(spec *openapi3.T) map[string]bool {
	out := map[string]bool{}
	declares := func(params openapi3.Parameters) bool {
		for _, p := range params {
			if p.Value != nil && p.Value.In == openapi3.ParameterInHeader && strings.EqualFold(p.Value.Name, idempotencyKeyHeader) {
				return true
			}
		}
		return false
	}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if declares(op.Parameters) || declares(item.Parameters) {
				out[method+" "+path] = true
			}
		}
	}
	return out
}

// idempotent answers a retried request with the stored first response. It runs after
// authentication (keys are scoped to the caller) and validation (a refused request claims
// nothing). Redis being unavailable does not fail the request: it is served without
// idempotency and a warning is logged, since a possible duplicate is better than every
// creating and charging call failing.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(idempotencyKeyHeader)
		route := s.routeOf(r)
		if s.idem == nil || key == "" || !s.idemRoutes[route] {
			next.ServeHTTP(w, r)
			return
		}
		p, ok := principalFrom(r.Context())
		if !ok { // none of these operations is public; nothing to scope a key to
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body) // already buffered by validation, bounded by limitBody
		if err != nil {
			s.respondError(w, r, err)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))

		// The org the request acts for, as resolved, not as spelled: the personal org named
		// and left out are one scope.
		org := ""
		if access, ok := resolvedOrg(r.Context()); ok {
			org = access.OrgID.String()
		}
		scope := route + " user:" + p.UserID.String() + " org:" + org
		if p.Key != nil {
			scope = route + " apikey:" + p.Key.ID.String()
		}
		claim, stored, err := s.idem.Claim(r.Context(), scope, key, idempotency.NewFingerprint(r.Method, route, org, body))
		switch {
		case stored != nil && stored.Attached != "":
			s.reattach(w, r, stored.Attached, body)
			return
		case stored != nil:
			replay(w, stored)
			return
		case errors.Is(err, idempotency.ErrInProgress):
			w.Header().Set("Retry-After", "1")
			s.respondError(w, r, err)
			return
		case errors.Is(err, idempotency.ErrKeyReused):
			s.respondError(w, r, err)
			return
		case err != nil:
			s.log.WarnContext(r.Context(), "idempotency unavailable; serving the request without it", "error", err)
			next.ServeHTTP(w, r)
			return
		}

		tee := &teeWriter{ResponseWriter: w, limit: s.idem.MaxBody()}
		state := &idemState{claim: claim}
		r = r.WithContext(context.WithValue(r.Context(), idemStateKey{}, state))
		done := false
		// Written as a defer so a panicking handler releases the key too (the panic goes on
		// to recoverPanics).
		defer func() {
			if state.attached { // retries re-attach to the work the request started
				return
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
			defer cancel()
			if reason := s.incomplete(r, route, tee, done); reason != "" {
				if reason != "client gone" {
					s.log.WarnContext(ctx, "idempotent response not stored: "+reason, "route", route)
				}
				if err := s.idem.Release(ctx, claim); err != nil {
					s.log.WarnContext(ctx, "release idempotency key", "error", err)
				}
				return
			}
			if err := s.idem.Complete(ctx, claim, tee.response()); err != nil {
				s.log.WarnContext(ctx, "store idempotent response", "error", err)
				_ = s.idem.Release(ctx, claim)
			}
		}()
		next.ServeHTTP(tee, r)
		done = true
	})
}

// idemState is the claim of the request being served, for a handler whose work outlives the
// request to attach it (attachIdempotent).
type idemState struct {
	claim    *idempotency.Claim
	attached bool
}

type idemStateKey struct{}

// attachIdempotent makes the retries of r (same Idempotency-Key) re-attach to ref instead of
// running again: the work goes on when the client goes away, so a retry must not start it
// twice. Without Redis the retry is not protected (logged).
func (s *Server) attachIdempotent(r *http.Request, ref string) {
	state, ok := r.Context().Value(idemStateKey{}).(*idemState)
	if !ok {
		return
	}
	if err := s.idem.Attach(r.Context(), state.claim, ref); err != nil {
		s.log.WarnContext(r.Context(), "attach an idempotency key to its reply", "error", err)
		return
	}
	state.attached = true
}

// incomplete says why the response tee saw is not the whole answer to the request, or "".
func (s *Server) incomplete(r *http.Request, route string, tee *teeWriter, returned bool) string {
	switch {
	case !returned:
		return "the handler panicked"
	case errors.Is(r.Context().Err(), context.Canceled), tee.err != nil:
		return "client gone"
	case tee.overflow:
		return "the body exceeds the size limit"
	}
	if s.streaming[route] {
		select {
		case <-s.draining: // the stream was cut, or refused, for the shutdown: a retry must run
			return "the server is shutting down"
		default:
		}
	}
	return ""
}

// replay writes a stored response, marked as a replay.
func replay(w http.ResponseWriter, res *idempotency.Response) {
	h := w.Header()
	for name, values := range res.Header {
		h[name] = values
	}
	h.Set(replayedHeader, "true")
	w.WriteHeader(res.Status)
	_, _ = w.Write(res.Body)
}

// replayedHeaders are the response headers stored with a response and replayed; the rest
// (X-Request-Id, Set-Cookie, …) belong to each response of their own. Any RateLimit-*
// header is kept too.
var replayedHeaders = []string{"Content-Type", "Cache-Control", "Location", "Retry-After", "Kiln-Provider", "Kiln-Provider-Model"}

// teeWriter passes a response through while recording its status, replayable headers and up
// to limit bytes of body. Flushes pass through at once, so a stream is still streamed, and
// the rest of http.ResponseController stays reachable through Unwrap.
type teeWriter struct {
	http.ResponseWriter
	status   int
	header   http.Header
	body     bytes.Buffer
	limit    int
	overflow bool
	err      error // a write failed: the client did not get the whole response
}

func (w *teeWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 { // 1xx are informational; the final status follows
		w.status = status
		w.header = replayable(w.Header())
	}
	w.ResponseWriter.WriteHeader(status)
}

// replayable copies the headers of h worth storing.
func replayable(h http.Header) http.Header {
	out := http.Header{}
	for name, values := range h {
		if isReplayed(name) {
			out[name] = slices.Clone(values)
		}
	}
	return out
}

func isReplayed(name string) bool {
	for _, r := range replayedHeaders {
		if strings.EqualFold(name, r) {
			return true
		}
	}
	return len(name) >= len("RateLimit") && strings.EqualFold(name[:len("RateLimit")], "RateLimit")
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	if err != nil && w.err == nil {
		w.err = err
	}
	if !w.overflow {
		if w.body.Len()+n > w.limit {
			w.overflow = true
			w.body = bytes.Buffer{} // never stored; let it go now
		} else {
			w.body.Write(b[:n])
		}
	}
	return n, err
}

func (w *teeWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// response is what the tee recorded; a handler that wrote nothing sent an empty 200.
func (w *teeWriter) response() idempotency.Response {
	if w.status == 0 {
		return idempotency.Response{Status: http.StatusOK, Header: replayable(w.Header())}
	}
	return idempotency.Response{Status: w.status, Header: w.header, Body: w.body.Bytes()}
}
