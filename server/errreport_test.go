package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/errreport"
	"github.com/kilnhq/kiln/internal/platform/errreport/errreporttest"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestSentryReports: a panic and a 5xx answer (PostgreSQL down) each reach Sentry once, with
// the request id the client saw, the route, the code, the org; never the credentials,
// cookies, query string or email of the request. A 4xx reaches nothing.
func TestSentryReports(t *testing.T) {
	t.Parallel()
	sentry := errreporttest.New(t)
	reports, err := errreport.New(config.Sentry{DSN: sentry.DSN(), SampleRate: 1}, "test", "v0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	pg := storetest.NewProxy(t, storetest.PostgresAddr())
	rd := storetest.NewProxy(t, storetest.RedisAddr())
	b := setupBehind(t, pg, rd, func(d *Deps) { d.ErrorReports = reports })
	alice := b.signUp(t, "alice@example.com").AccessToken
	org := b.currentUser(t, alice).PersonalOrgId.String()

	req := httptest.NewRequest("GET", "/test/panic?token=kiln_query_secret", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	req.Header.Set("Cookie", "session=cookie_secret")
	req.Header.Set("User-Agent", "sentry-test/1")
	res := b.do(t, req)
	panicked := decodeProblem(t, res)
	if res.StatusCode != http.StatusInternalServerError {
		t.Fatalf("GET /test/panic = %d", res.StatusCode)
	}
	if res := b.call(t, "GET", "/v1/conversations/00000000-0000-0000-0000-000000000000", alice, nil, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown conversation = %d, want 404", res.StatusCode)
	}
	pg.Cut()
	res = b.call(t, "GET", "/v1/conversations", alice, nil, nil)
	outage := decodeProblem(t, res)
	pg.Restore()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET /v1/conversations with PostgreSQL down = %d", res.StatusCode)
	}
	reports.Flush(5 * time.Second)
	events := sentry.WaitFor(t, 2)
	time.Sleep(200 * time.Millisecond)
	if n := len(sentry.Events()); n != 2 {
		for _, e := range sentry.Events() {
			t.Logf("event %v: %+v", e.Tags, e.Exception)
		}
		t.Fatalf("Sentry got %d events, want 2 (the panic and the 503; not the 404)", n)
	}

	byCode := map[string]errreporttest.Event{}
	for _, e := range events {
		byCode[e.Tags["code"]] = e
	}
	p := byCode[""] // a panic has no code
	if p.Level != "fatal" || p.Tags["route"] != "GET /test/panic" || p.Tags["request_id"] != panicked.RequestId ||
		p.Tags["status"] != "500" || p.Environment != "test" || p.Release != "v0.0.1" {
		t.Errorf("panic event: level %q, tags %v, environment %q, release %q (request id %s)", p.Level, p.Tags, p.Environment, p.Release, panicked.RequestId)
	}
	if p.Request == nil || p.Request.URL != "/test/panic" || p.Request.QueryString != "" || p.Request.Cookies != "" ||
		len(p.Request.Headers) != 1 || p.Request.Headers["User-Agent"] != "sentry-test/1" {
		t.Errorf("panic event request: %+v", p.Request)
	}
	o, ok := byCode[string(errs.Unavailable)]
	if !ok {
		t.Fatalf("no unavailable event among %v", events)
	}
	if o.Level != "error" || o.Tags["route"] != "GET /v1/conversations" || o.Tags["request_id"] != outage.RequestId ||
		o.Tags["status"] != "503" || o.Tags["org_id"] != org {
		t.Errorf("outage event: level %q, tags %v (request id %s, org %s)", o.Level, o.Tags, outage.RequestId, org)
	}
	for _, e := range events {
		for _, leak := range []string{alice, "kiln_query_secret", "cookie_secret", "alice@example.com"} {
			if strings.Contains(e.Raw, leak) {
				t.Errorf("the %s event holds %q", e.Tags["route"], leak)
			}
		}
		if len(e.User) != 0 {
			t.Errorf("without send_pii the event has a user: %v", e.User)
		}
	}
}
