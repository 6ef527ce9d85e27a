// Package errreport sends panics and server errors to Sentry, with what leads an operator
// to the request (request id, route, org, trace id) and without personal data or secrets:
// never the Authorization header, cookies, query strings or bodies; the caller's user id and
// IP only when sentry.send_pii is set; credentials in error texts are always redacted, and
// emails too unless sentry.send_pii is set.
package errreport

import (
	"context"
	"encoding/hex"
	"fmt"
	"regexp"
	"time"

	"github.com/getsentry/sentry-go"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// Reporter sends reports to one Sentry project. A nil *Reporter reports nothing, so callers
// need no check.
type Reporter struct {
	hub     *sentry.Hub
	sendPII bool
}

// New returns a Reporter for cfg, or nil when no DSN is set or the sample rate is 0 (Sentry's
// SDK would read 0 as "send everything"). environment and release are used when cfg leaves
// them empty. It returns an error for a DSN Sentry's SDK refuses.
func New(cfg config.Sentry, environment, release string) (*Reporter, error) {
	if cfg.DSN == "" || cfg.SampleRate == 0 {
		return nil, nil //nolint:nilnil // nil is the Reporter that reports nothing
	}
	if cfg.Environment != "" {
		environment = cfg.Environment
	}
	if cfg.Release != "" {
		release = cfg.Release
	}
	r := &Reporter{sendPII: cfg.SendPII}
	client, err := sentry.NewClient(sentry.ClientOptions{
		Dsn:            cfg.DSN,
		Environment:    environment,
		Release:        release,
		SampleRate:     cfg.SampleRate,
		SendDefaultPII: cfg.SendPII,
		BeforeSend:     func(e *sentry.Event, _ *sentry.EventHint) *sentry.Event { return r.scrub(e) },
		// Only what Kiln reports: no default integrations reading modules or the environment.
		Integrations: func([]sentry.Integration) []sentry.Integration { return nil },
	})
	if err != nil {
		return nil, fmt.Errorf("sentry.dsn: %w", err)
	}
	r.hub = sentry.NewHub(client, sentry.NewScope())
	return r, nil
}

// Request is what a report says about the request that failed.
type Request struct {
	Method, Route, Path string
	Status              int
	Code                string // the problem code; empty for a panic
	RequestID, TraceID  string
	Org                 string // id; empty when unknown
	User, ClientIP      string // sent only with sentry.send_pii
	UserAgent           string
}

// Panic reports a recovered panic, with the stack of the goroutine that panicked; call it
// in the deferred function that recovered v.
func (r *Reporter) Panic(ctx context.Context, req Request, v any) {
	if r == nil {
		return
	}
	e := r.event(req, sentry.LevelFatal)
	e.Exception = []sentry.Exception{{Type: "panic", Value: fmt.Sprint(v), Stacktrace: sentry.NewStacktrace()}}
	r.capture(ctx, e)
}

// Error reports err, the cause of a 5xx answer. Answers of one route and code are one issue
// in Sentry, whatever their error texts.
func (r *Reporter) Error(ctx context.Context, req Request, err error) {
	if r == nil {
		return
	}
	e := r.event(req, sentry.LevelError)
	e.Exception = []sentry.Exception{{Type: req.Code, Value: err.Error()}}
	e.Fingerprint = []string{req.Route, req.Code}
	r.capture(ctx, e)
}

// Flush waits up to timeout for queued reports to be sent; call it before the process exits.
func (r *Reporter) Flush(timeout time.Duration) {
	if r != nil {
		r.hub.Flush(timeout)
	}
}

func (r *Reporter) event(req Request, level sentry.Level) *sentry.Event {
	e := sentry.NewEvent()
	e.Level = level
	e.Tags = map[string]string{"route": req.Route, "status": fmt.Sprint(req.Status)}
	for k, v := range map[string]string{"code": req.Code, "request_id": req.RequestID, "trace_id": req.TraceID, "org_id": req.Org} {
		if v != "" {
			e.Tags[k] = v
		}
	}
	e.Request = &sentry.Request{Method: req.Method, URL: req.Path, Headers: map[string]string{}}
	if req.UserAgent != "" {
		e.Request.Headers["User-Agent"] = req.UserAgent
	}
	if r.sendPII {
		e.User = sentry.User{ID: req.User, IPAddress: req.ClientIP}
	}
	return e
}

// capture sends e on a hub of its own, whose trace is the request's (OpenTelemetry's trace
// id), so Sentry links the event to the trace.
func (r *Reporter) capture(ctx context.Context, e *sentry.Event) {
	hub := r.hub.Clone()
	if id, err := hex.DecodeString(e.Tags["trace_id"]); err == nil && len(id) == len(sentry.TraceID{}) {
		pc := sentry.NewPropagationContext()
		copy(pc.TraceID[:], id)
		hub.Scope().SetPropagationContext(pc)
	}
	hub.CaptureEventWithHint(e, &sentry.EventHint{Context: ctx})
}

// email finds addresses in free text.
var email = regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}`)

// scrub is the last look at every event before it leaves: the request keeps its method, path
// and user agent only; credentials are redacted from every text, and emails too unless
// sentry.send_pii is set.
func (r *Reporter) scrub(e *sentry.Event) *sentry.Event {
	text := func(s string) string {
		s = logging.RedactString(s)
		if !r.sendPII {
			s = email.ReplaceAllString(s, "[email]")
		}
		return s
	}
	if e.Request != nil {
		ua := e.Request.Headers["User-Agent"]
		e.Request = &sentry.Request{Method: e.Request.Method, URL: text(e.Request.URL), Headers: map[string]string{}}
		if ua != "" {
			e.Request.Headers["User-Agent"] = text(ua)
		}
	}
	e.Message = text(e.Message)
	for i := range e.Exception {
		e.Exception[i].Value = text(e.Exception[i].Value)
	}
	if !r.sendPII {
		e.User = sentry.User{}
	}
	e.Breadcrumbs = nil
	return e
}
