package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// problemType is the catalog entry for one error code.
type problemType struct {
	Status int
	Title  string
}

// catalog is the one table from error codes to HTTP statuses; docs/errors.md and the
// ErrorCode enum of the spec list the same codes (a test keeps the three in step).
var catalog = map[errs.Code]problemType{
	errs.Invalid:               {http.StatusBadRequest, "Invalid request"},
	errs.MalformedJSON:         {http.StatusBadRequest, "Malformed JSON"},
	errs.UnsupportedMediaType:  {http.StatusUnsupportedMediaType, "Unsupported media type"},
	errs.NotFound:              {http.StatusNotFound, "Not found"},
	errs.MethodNotAllowed:      {http.StatusMethodNotAllowed, "Method not allowed"},
	errs.RequestTooLarge:       {http.StatusRequestEntityTooLarge, "Request too large"},
	errs.Unauthenticated:       {http.StatusUnauthorized, "Unauthenticated"},
	errs.PermissionDenied:      {http.StatusForbidden, "Permission denied"},
	errs.Conflict:              {http.StatusConflict, "Conflict"},
	errs.IdempotencyKeyReused:  {http.StatusUnprocessableEntity, "Idempotency key reused"},
	errs.IdempotencyInProgress: {http.StatusConflict, "Idempotent request in progress"},
	errs.StreamExpired:         {http.StatusGone, "Stream expired"},
	errs.RateLimited:           {http.StatusTooManyRequests, "Rate limited"},
	errs.Timeout:               {http.StatusServiceUnavailable, "Request timed out"},
	errs.NotReady:              {http.StatusServiceUnavailable, "Not ready"},
	errs.Unavailable:           {http.StatusServiceUnavailable, "Dependency unavailable"},
	errs.Internal:              {http.StatusInternalServerError, "Internal error"},
	errs.ModelUnavailable:      {http.StatusServiceUnavailable, "Model unavailable"},
	errs.UpstreamRejected:      {http.StatusBadRequest, "Rejected by the provider"},
	errs.UpstreamRateLimited:   {http.StatusTooManyRequests, "Provider rate limit"},
	errs.UpstreamTimeout:       {http.StatusGatewayTimeout, "Provider timeout"},
	errs.UpstreamError:         {http.StatusBadGateway, "Provider error"},
	errs.QuotaExceeded:         {http.StatusTooManyRequests, "Quota exceeded"},
	errs.PaymentRequired:       {http.StatusPaymentRequired, "Payment required"},
	errs.FeatureNotInPlan:      {http.StatusForbidden, "Feature not in plan"},
	errs.PlanLimitReached:      {http.StatusForbidden, "Plan limit reached"},
	errs.ProviderNotConfigured: {http.StatusUnprocessableEntity, "Payment provider not configured"},
	errs.RetentionExpired:      {http.StatusGone, "Retention expired"},
	errs.ExportDownloaded:      {http.StatusGone, "Export downloaded already"},
	errs.ExportLinkExpired:     {http.StatusGone, "Export link expired"},
	errs.SoleOwner:             {http.StatusConflict, "Sole owner of a shared org"},
	errs.OrgDeletionPending:    {http.StatusConflict, "Org deletion pending"},
	errs.PlanFromConfig:        {http.StatusConflict, "Plan from config"},
}

// unavailableRetryAfter is the Retry-After (seconds) of an unavailable answer: pools
// reconnect on their next use, so a dependency back within it serves the retry.
const unavailableRetryAfter = 5

// newProblem builds the problem document of e; its message is shown to the client.
func newProblem(ctx context.Context, instance string, e *errs.Error) api.Problem {
	code := e.Code
	pt, ok := catalog[code]
	if !ok {
		code, pt = errs.Internal, catalog[errs.Internal]
	}
	p := api.Problem{
		Type:      "urn:kiln:problem:" + string(code),
		Title:     pt.Title,
		Status:    pt.Status,
		Code:      api.ErrorCode(code),
		RequestId: logging.RequestID(ctx),
		Instance:  &instance,
	}
	if e.Message != "" {
		p.Detail = &e.Message
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		id := sc.TraceID().String()
		p.TraceId = &id
	}
	if len(e.Fields) > 0 {
		fe := make([]api.FieldError, len(e.Fields))
		for i, f := range e.Fields {
			fe[i] = api.FieldError{Pointer: f.Pointer, Message: f.Message}
		}
		p.Errors = &fe
	}
	if q := e.Quota; q != nil {
		name := api.ProblemLimitName(q.Name)
		switch code {
		case errs.QuotaExceeded:
			resets := q.ResetsAt.UTC()
			p.LimitName, p.Limit, p.Used, p.Reserved, p.ResetsAt = &name, &q.Limit, &q.Used, &q.Reserved, &resets
		case errs.PlanLimitReached:
			p.LimitName, p.Limit, p.Used = &name, &q.Limit, &q.Used
		}
	}
	return p
}

// writeProblem sends p as application/problem+json.
func writeProblem(w http.ResponseWriter, p any, status int) {
	writeErrorBody(w, "application/problem+json", p, status)
}

// writeErrorBody sends an error document that no cache may keep.
func writeErrorBody(w http.ResponseWriter, contentType string, body any, status int) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// respondError is the one error path of the HTTP layer: it maps err to a problem and logs
// internal errors once, here. Clients never see an internal error's text.
func (s *Server) respondError(w http.ResponseWriter, r *http.Request, err error) {
	e := s.classify(r, err)
	if ue, ok := errors.AsType[*llm.Error](err); ok && ue.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ceilSeconds(ue.RetryAfter)))
	}
	if e.Quota != nil && e.Code == errs.QuotaExceeded {
		setQuotaHeaders(w.Header(), e.Quota, time.Now())
	}
	if e.Code == errs.Unavailable {
		w.Header().Set("Retry-After", strconv.Itoa(unavailableRetryAfter))
	}
	if isOpenAIRoute(r) {
		writeOpenAIError(w, e)
		return
	}
	p := newProblem(r.Context(), r.URL.Path, e)
	writeProblem(w, p, p.Status)
}

// setQuotaHeaders adds the quota that refused a call to the RateLimit-Policy and RateLimit
// lists (IETF httpapi draft, beside the API rate limits already there) and waits for its
// reset with Retry-After.
func setQuotaHeaders(h http.Header, q *errs.Quota, now time.Time) {
	reset := max(1, ceilSeconds(q.ResetsAt.Sub(now)))
	appendItem := func(name, item string) {
		if prev := h.Get(name); prev != "" {
			item = prev + ", " + item
		}
		h.Set(name, item)
	}
	appendItem("RateLimit-Policy", fmt.Sprintf("%q;q=%d;w=%d", q.Name, q.Limit, ceilSeconds(q.Window)))
	appendItem("RateLimit", fmt.Sprintf("%q;r=%d;t=%d", q.Name, q.Remaining(), reset))
	h.Set("Retry-After", strconv.Itoa(reset))
}

// classify maps err to its client-safe error (errs.Classify, plus what only the edge
// knows: the body limit and whether the client is still there), logging internal errors
// once, here.
func (s *Server) classify(r *http.Request, err error) *errs.Error {
	return s.classifyAt(r.Context(), r.Method, r.URL.Path, err)
}

// classifyAt is classify for work of the request method path that runs in ctx but does
// not hold the request (the WebSocket's replies).
func (s *Server) classifyAt(ctx context.Context, method, path string, err error) *errs.Error {
	if tooLarge, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return errs.E(errs.RequestTooLarge, "The request body exceeds %d bytes.", tooLarge.Limit)
	}
	e, known := errs.Classify(err)
	if known && e.Code == errs.Timeout && errors.Is(err, context.Canceled) && ctx.Err() == nil {
		known = false // a cancellation the client did not ask for is Kiln's own failure
	}
	if known && e.Code == errs.Unavailable {
		s.log.WarnContext(ctx, "dependency unavailable", "error", err, "method", method, "path", path)
	}
	if !known {
		s.log.ErrorContext(ctx, "internal error", "error", err, "method", method, "path", path)
		e, _ = errs.Classify(nil) // the Internal fallback, its text hidden
	}
	s.reportServerError(ctx, e.Code, err)
	return e
}
