package server

import (
	"context"
	"errors"
	"net/http"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/errreport"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// reportKey holds the facts an error report gives of its request (*errreport.Request), put
// in the context by observe when reports are on: middleware outside authentication (the
// panic handler) and work that keeps only the context (the WebSocket's replies) report with
// them.
type reportKey struct{}

// withReportFacts stores what a report says of r: method, route, path, user agent, client.
func (s *Server) withReportFacts(r *http.Request, route string) *http.Request {
	if s.reports == nil {
		return r
	}
	facts := &errreport.Request{Method: r.Method, Route: route, Path: r.URL.Path, UserAgent: r.UserAgent(), ClientIP: s.clientIP(r)}
	return r.WithContext(context.WithValue(r.Context(), reportKey{}, facts))
}

// noteCaller adds who calls (a user's id, or an API key's) and for which org to the report
// facts of ctx; authentication calls it once it knows, before the handler runs.
func noteCaller(ctx context.Context) {
	facts, ok := ctx.Value(reportKey{}).(*errreport.Request)
	if !ok {
		return
	}
	if a, ok := resolvedOrg(ctx); ok {
		facts.Org = a.OrgID.String()
	}
	if p, ok := principalFrom(ctx); ok {
		if p.Key != nil {
			facts.User = "api_key:" + p.Key.ID.String()
		} else {
			facts.User = p.UserID.String()
		}
	}
}

// reportOf is the report of a failure answered with status and code, in ctx: the request's
// facts, and its request and trace ids.
func reportOf(ctx context.Context, status int, code errs.Code) errreport.Request {
	var req errreport.Request
	if facts, ok := ctx.Value(reportKey{}).(*errreport.Request); ok {
		req = *facts
	}
	req.Status, req.Code, req.RequestID = status, string(code), logging.RequestID(ctx)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		req.TraceID = sc.TraceID().String()
	}
	return req
}

// reported wraps the answer to a failure that was reported already (a panic), so that
// answering it reports nothing more.
type reported struct{ error }

func (e reported) Unwrap() error { return e.error }

// reportServerError sends err to Sentry when code is answered with a 5xx status.
func (s *Server) reportServerError(ctx context.Context, code errs.Code, err error) {
	if s.reports == nil {
		return
	}
	if _, ok := errors.AsType[reported](err); ok {
		return
	}
	if status := catalog[code].Status; status >= http.StatusInternalServerError {
		s.reports.Error(ctx, reportOf(ctx, status, code), err)
	}
}
