package errreport_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/errreport"
	"github.com/kilnhq/kiln/internal/platform/errreport/errreporttest"
)

var req = errreport.Request{
	Method: "POST", Route: "POST /v1/chat/completions", Path: "/v1/chat/completions", Status: 500, Code: "internal",
	RequestID: "req-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Org: "org-1", User: "user-1",
	ClientIP: "203.0.113.7", UserAgent: "curl/8",
}

func newReporter(t *testing.T, cfg config.Sentry) (*errreport.Reporter, *errreporttest.Receiver) {
	t.Helper()
	sentry := errreporttest.New(t)
	cfg.DSN = sentry.DSN()
	if cfg.SampleRate == 0 {
		cfg.SampleRate = 1
	}
	r, err := errreport.New(cfg, "production", "v1.2.3")
	if err != nil || r == nil {
		t.Fatalf("New = %v, %v", r, err)
	}
	return r, sentry
}

// TestErrorScrubbed: a server error reaches Sentry with the request's ids, route and code,
// and without the secrets or emails its text held; no user or client IP without send_pii.
func TestErrorScrubbed(t *testing.T) {
	r, sentry := newReporter(t, config.Sentry{})
	secret := "Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4eHh4eHh4eCJ9.c2lnbmF0dXJl"
	r.Error(context.Background(), req, errors.New("load ada@example.com with "+secret+": connection reset"))
	r.Flush(5 * time.Second)
	e := sentry.WaitFor(t, 1)[0]

	if e.Environment != "production" || e.Release != "v1.2.3" || e.Level != "error" {
		t.Errorf("environment %q, release %q, level %q", e.Environment, e.Release, e.Level)
	}
	for k, want := range map[string]string{"route": req.Route, "code": "internal", "status": "500", "request_id": "req-1", "trace_id": req.TraceID, "org_id": "org-1"} {
		if e.Tags[k] != want {
			t.Errorf("tag %s = %q, want %q", k, e.Tags[k], want)
		}
	}
	if e.Contexts["trace"]["trace_id"] != req.TraceID {
		t.Errorf("trace context %v", e.Contexts["trace"])
	}
	if !slices.Equal(e.Fingerprint, []string{req.Route, "internal"}) {
		t.Errorf("fingerprint %v", e.Fingerprint)
	}
	if len(e.Exception) != 1 || !strings.Contains(e.Exception[0].Value, "connection reset") {
		t.Fatalf("exception %+v", e.Exception)
	}
	for _, leak := range []string{"ada@example.com", "eyJhbGciOiJFZERTQSJ9", "203.0.113.7", "user-1"} {
		if strings.Contains(e.Raw, leak) {
			t.Errorf("the event holds %q:\n%s", leak, e.Raw)
		}
	}
	if e.Request == nil || e.Request.Method != "POST" || e.Request.URL != req.Path || e.Request.Headers["User-Agent"] != "curl/8" {
		t.Errorf("request %+v", e.Request)
	}
}

// TestPanicWithPII: a panic is a fatal event with the panicking stack; with send_pii the
// user id, client IP and emails are sent, credentials still are not.
func TestPanicWithPII(t *testing.T) {
	r, sentry := newReporter(t, config.Sentry{SendPII: true, Environment: "staging", Release: "r9"})
	func() {
		defer func() {
			if v := recover(); v != nil {
				r.Panic(context.Background(), req, v)
			}
		}()
		panicking("ada@example.com sk-abcdefghijklmnopqrstuvwx")
	}()
	r.Flush(5 * time.Second)
	e := sentry.WaitFor(t, 1)[0]
	if e.Level != "fatal" || e.Environment != "staging" || e.Release != "r9" {
		t.Errorf("level %q, environment %q, release %q", e.Level, e.Environment, e.Release)
	}
	if len(e.Exception) != 1 || e.Exception[0].Type != "panic" || e.Exception[0].Stacktrace == nil {
		t.Fatalf("exception %+v", e.Exception)
	}
	var sawPanicking bool
	for _, f := range e.Exception[0].Stacktrace.Frames {
		sawPanicking = sawPanicking || f.Function == "panicking"
	}
	if !sawPanicking {
		t.Errorf("the stack lacks the panicking function: %+v", e.Exception[0].Stacktrace.Frames)
	}
	if !strings.Contains(e.Exception[0].Value, "ada@example.com") || strings.Contains(e.Raw, "sk-abcdefghijklmnopqrstuvwx") {
		t.Errorf("with send_pii the email stays and the key goes: %q", e.Exception[0].Value)
	}
	if e.User["id"] != "user-1" || e.User["ip_address"] != "203.0.113.7" {
		t.Errorf("user %v", e.User)
	}
}

func panicking(msg string) { panic(msg) }

// TestOff: no DSN, or a sample rate of 0, reports nothing, and a nil Reporter is safe.
func TestOff(t *testing.T) {
	for _, cfg := range []config.Sentry{{}, {DSN: "http://public@127.0.0.1:1/42", SampleRate: 0}} {
		r, err := errreport.New(cfg, "dev", "dev")
		if err != nil || r != nil {
			t.Errorf("New(%+v) = %v, %v; want nil, nil", cfg, r, err)
		}
		r.Error(context.Background(), req, errors.New("x"))
		r.Panic(context.Background(), req, "x")
		r.Flush(time.Millisecond)
	}
	if _, err := errreport.New(config.Sentry{DSN: "not a dsn", SampleRate: 1}, "dev", "dev"); err == nil {
		t.Error("a malformed DSN was accepted")
	}
}
