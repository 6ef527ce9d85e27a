package server

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browserPage is the client app of TestBrowserCORS: what a frontend on another origin does
// with fetch and WebSocket, and nothing more (no SDK), so what it proves is what browsers
// allow. The API's base URL comes in the page's query.
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Kiln from another origin</title></head>
<body><script>
const api = new URLSearchParams(location.search).get('api');

function call(method, path, token, body, headers) {
  const h = Object.assign({}, headers);
  if (token) h['Authorization'] = 'Bearer ' + token;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  return fetch(api + path, {method, headers: h, body: body === undefined ? undefined : JSON.stringify(body)});
}

// readEvents reads a text/event-stream response, giving each event to onEvent until it
// returns true or the stream ends.
async function readEvents(res, onEvent) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = {id: '', event: '', data: ''};
      for (const line of block.split('\n')) {
        const at = line.indexOf(':');
        if (at <= 0) continue; // a heartbeat comment
        const k = line.slice(0, at), v = line.slice(at + 1).replace(/^ /, '');
        if (k === 'id') ev.id = v; else if (k === 'event') ev.event = v; else if (k === 'data') ev.data += v;
      }
      if (ev.event && onEvent(ev)) { await reader.cancel(); return; }
    }
  }
}

function chatOverWebSocket(token, text) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(api.replace(/^http/, 'ws') + '/v1/chat/ws', ['kiln.v1', 'kiln.bearer.' + token]);
    let got = '';
    ws.onopen = () => ws.send(JSON.stringify({type: 'chat', data: {messages: [{role: 'user', content: text}]}}));
    ws.onmessage = m => {
      const f = JSON.parse(m.data);
      if (f.type === 'message.delta') got += f.data.text;
      if (f.type === 'error') reject(new Error(m.data));
      if (f.type === 'done') { ws.close(1000); resolve(got); }
    };
    ws.onerror = () => reject(new Error('WebSocket error'));
  });
}

async function runAllowed() {
  const out = {};
  let res = await call('POST', '/v1/auth/signup', null, {email: 'browser@example.com', password: 'correct horse battery', name: 'Browser'});
  out.signup = res.status;
  out.requestId = res.headers.get('X-Request-Id');
  out.rateLimit = res.headers.get('RateLimit');
  const token = (await res.json()).access_token;

  res = await call('POST', '/v1/chat/completions', token, {messages: [{role: 'user', content: 'hello over SSE'}], stream: true});
  out.sse = res.status;
  out.provider = res.headers.get('Kiln-Provider');
  out.sseText = '';
  await readEvents(res, ev => { if (ev.event === 'message.delta') out.sseText += JSON.parse(ev.data).text; return ev.event === 'done'; });

  out.wsText = await chatOverWebSocket(token, 'hello over WebSocket');

  const key = 'browser-' + Date.now();
  res = await call('POST', '/v1/conversations', token, {title: 'from the browser'}, {'Idempotency-Key': key});
  const conv = await res.json();
  res = await call('POST', '/v1/conversations', token, {title: 'from the browser'}, {'Idempotency-Key': key});
  out.replayed = res.headers.get('Idempotent-Replayed');
  out.sameConversation = (await res.json()).id === conv.id;

  // A reply whose connection drops after its first event (reply.started), resumed from
  // its event stream after that event's id: the text comes from the resumed stream.
  res = await call('POST', '/v1/conversations/' + conv.id + '/messages', token, {content: 'hello again', stream: true});
  out.messageId = res.headers.get('Kiln-Message-Id');
  let first = '';
  await readEvents(res, ev => { out.resumedFrom = ev.id; first = ev.event; return true; });
  res = await call('GET', '/v1/conversations/' + conv.id + '/messages/' + out.messageId + '/events', token, undefined, {'Last-Event-ID': out.resumedFrom});
  out.resume = res.status;
  out.resumedText = '';
  await readEvents(res, ev => { if (ev.event === 'message.delta') out.resumedText += JSON.parse(ev.data).text; return ev.event === 'done'; });
  out.firstEvent = first;
  return out;
}

async function runBlocked(token) {
  const out = {};
  try { await call('POST', '/v1/auth/login', null, {email: 'browser@example.com', password: 'correct horse battery'}); out.login = 'read'; } catch (e) { out.login = 'blocked'; }
  try { await fetch(api + '/health'); out.health = 'read'; } catch (e) { out.health = 'blocked'; }
  try { await chatOverWebSocket(token, 'hi'); out.ws = 'open'; } catch (e) { out.ws = 'blocked'; }
  return out;
}
</script></body></html>`

// chromium finds Debian's chromium (scripts/dev-deps.sh --test installs it): without it the
// test is skipped on a developer's machine, and fails in CI (CI=true), so make test there
// always runs it.
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; scripts/dev-deps.sh --test installs it")
	}
	t.Skip("chromium is not installed (scripts/dev-deps.sh --test installs it)")
	return ""
}

// startBrowser starts a headless chromium for the test, closed when it ends, with 90
// seconds for everything the test does in it (a loaded CI machine takes seconds to
// start it and to parse Swagger UI); each openTab is a tab of it.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := chromium(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
	)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// tab is a browser tab and the errors its console reported.
type tab struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func openTab(t *testing.T, browser context.Context) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	tb := &tab{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				for _, a := range ev.Args {
					msg += string(a.Value) + a.Description + " "
				}
			}
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				msg = ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			tb.mu.Lock()
			tb.errors = append(tb.errors, msg)
			tb.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start the browser: %v", err)
	}
	return tb
}

// run opens page and evaluates the promise expr in it into a T.
func run[T any](t *testing.T, tb *tab, page, expr string) T {
	t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("open %s: %v", page, err)
	}
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v; console: %q", expr, err, tb.console())
	}
	return v
}

func (tb *tab) console() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.errors...)
}

// TestBrowserCORS runs a real browser: a page served from another origin signs up, chats
// over SSE and over WebSocket, and resumes a reply, reading the headers a client needs,
// with nothing in its console; a page from an origin not allowed is blocked on each.
func TestBrowserCORS(t *testing.T) {
	t.Parallel()
	pages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprint(w, browserPage)
	})
	app, other := httptest.NewServer(pages), httptest.NewServer(pages)
	t.Cleanup(app.Close)
	t.Cleanup(other.Close)
	b := setup(t, withCORS(app.URL))
	srv := httptest.NewServer(b.srv)
	t.Cleanup(srv.Close)

	browser := startBrowser(t)
	query := "/?api=" + url.QueryEscape(srv.URL)

	allowed := openTab(t, browser)
	type result struct {
		Signup           int    `json:"signup"`
		SSE              int    `json:"sse"`
		Resume           int    `json:"resume"`
		RequestID        string `json:"requestId"`
		RateLimit        string `json:"rateLimit"`
		Provider         string `json:"provider"`
		SSEText          string `json:"sseText"`
		WSText           string `json:"wsText"`
		ResumedText      string `json:"resumedText"`
		MessageID        string `json:"messageId"`
		ResumedFrom      string `json:"resumedFrom"`
		Replayed         string `json:"replayed"`
		SameConversation bool   `json:"sameConversation"`
		FirstEvent       string `json:"firstEvent"`
	}
	got := run[result](t, allowed, app.URL+query, "runAllowed()")
	if got.Signup != http.StatusCreated || got.SSE != http.StatusOK || got.Resume != http.StatusOK {
		t.Errorf("statuses: sign-up %d, chat %d, resume %d", got.Signup, got.SSE, got.Resume)
	}
	if got.SSEText != "[dev] You said: hello over SSE" || got.WSText != "[dev] You said: hello over WebSocket" || got.ResumedText != "[dev] You said: hello again" {
		t.Errorf("texts: SSE %q, WebSocket %q, resumed %q", got.SSEText, got.WSText, got.ResumedText)
	}
	if got.FirstEvent != "reply.started" || got.ResumedFrom == "" {
		t.Errorf("first event %q, id %q: want reply.started with an id to resume after", got.FirstEvent, got.ResumedFrom)
	}
	// Headers a script reads only when they are exposed.
	if got.RequestID == "" || got.RateLimit == "" || got.Provider == "" || got.MessageID == "" || got.Replayed != "true" || !got.SameConversation {
		t.Errorf("headers unreadable: %+v", got)
	}
	if errs := allowed.console(); len(errs) > 0 {
		t.Errorf("console errors on the allowed origin: %q", errs)
	}

	key := b.createKey(t, b.signUp(t, "blocked@example.com").AccessToken, []string{"chat"}).Key
	blocked := openTab(t, browser)
	type refusals struct {
		Login  string `json:"login"`
		Health string `json:"health"`
		WS     string `json:"ws"`
	}
	refused := run[refusals](t, blocked, other.URL+query, fmt.Sprintf("runBlocked(%q)", key))
	if refused.Login != "blocked" || refused.Health != "blocked" || refused.WS != "blocked" {
		t.Errorf("another origin: %+v, want each blocked", refused)
	}
	if !strings.Contains(strings.Join(blocked.console(), "\n"), "CORS policy") {
		t.Errorf("the browser did not report a CORS refusal: %q", blocked.console())
	}
}
