package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

// wsFrame is one server frame of the chat WebSocket.
type wsFrame struct {
	Type string          `json:"type"`
	ID   int             `json:"id"`
	Data json.RawMessage `json:"data"`
}

// wsClient is a chat WebSocket that checks every frame it reads: ids monotonic per
// connection, data matching the spec's schema for the frame's type.
type wsClient struct {
	t      *testing.T
	c      *websocket.Conn
	lastID int
}

func wsURL(ts *httptest.Server) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/chat/ws"
}

func dialChat(t *testing.T, ts *httptest.Server, credential string) *wsClient {
	t.Helper()
	c, _, err := websocket.Dial(t.Context(), wsURL(ts), &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + credential}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return &wsClient{t: t, c: c}
}

func (ws *wsClient) send(frame string) {
	ws.t.Helper()
	ctx, cancel := context.WithTimeout(ws.t.Context(), 5*time.Second)
	defer cancel()
	if err := ws.c.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		ws.t.Fatalf("write %s: %v", frame, err)
	}
}

func (ws *wsClient) read() wsFrame {
	ws.t.Helper()
	ctx, cancel := context.WithTimeout(ws.t.Context(), 5*time.Second)
	defer cancel()
	typ, b, err := ws.c.Read(ctx)
	if err != nil {
		ws.t.Fatalf("read: %v", err)
	}
	var f wsFrame
	if typ != websocket.MessageText || json.Unmarshal(b, &f) != nil {
		ws.t.Fatalf("frame %s is not a JSON text frame", b)
	}
	if f.ID != ws.lastID+1 {
		ws.t.Errorf("frame id %d after %d", f.ID, ws.lastID)
	}
	ws.lastID = f.ID
	schema, ok := eventSchemas[f.Type]
	if !ok {
		ws.t.Fatalf("unknown frame type in %s", b)
	}
	matchSchema(ws.t, schema, f.Data)
	return f
}

// untilEnd reads frames up to and including the done or error frame that ends a reply.
func (ws *wsClient) untilEnd() []wsFrame {
	ws.t.Helper()
	var out []wsFrame
	for {
		f := ws.read()
		out = append(out, f)
		if f.Type == "done" || f.Type == "error" {
			return out
		}
	}
}

// readProblem reads the next frame, requires an error with code, and returns its problem.
func (ws *wsClient) readProblem(code errs.Code) api.Problem {
	ws.t.Helper()
	f := ws.read()
	var p api.Problem
	if f.Type != "error" || json.Unmarshal(f.Data, &p) != nil || p.Code != api.ErrorCode(code) || p.RequestId == "" {
		ws.t.Fatalf("frame %s %s, want an error %s", f.Type, f.Data, code)
	}
	return p
}

func frameTypes(frames []wsFrame) []string {
	var out []string
	for _, f := range frames {
		if len(out) == 0 || out[len(out)-1] != f.Type {
			out = append(out, f.Type)
		}
	}
	return out
}

func frameText(t *testing.T, frames []wsFrame) string {
	t.Helper()
	var b strings.Builder
	for _, f := range frames {
		if f.Type == "message.delta" {
			var d api.ChatDeltaEvent
			if err := json.Unmarshal(f.Data, &d); err != nil {
				t.Fatal(err)
			}
			b.WriteString(d.Text)
		}
	}
	return b.String()
}

func doneOf(t *testing.T, frames []wsFrame) api.ChatDoneEvent {
	t.Helper()
	last := frames[len(frames)-1]
	var d api.ChatDoneEvent
	if last.Type != "done" || json.Unmarshal(last.Data, &d) != nil {
		t.Fatalf("last frame %s %s, want done", last.Type, last.Data)
	}
	return d
}

func TestWebSocket(t *testing.T) {
	t.Parallel()
	slow := newUpstream(t, hangAfter("Hel", nil))
	b := setup(t, withGateway(t, devProviders(map[string]llm.Provider{"slow": slow.provider(t, "slow")}),
		map[string][]llm.Target{"default": {devTarget}, "slow": {{Provider: "slow", Model: "m"}}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"}).Key
	jobsKey := b.createKey(t, alice.AccessToken, []string{"jobs"}).Key
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	hello := `{"type":"chat","data":` + chatJSON("hello") + `}`

	for _, tt := range []struct {
		name, credential string
		status           int
	}{
		{"ErrNoCredentials", "", 401},
		{"ErrBadCredentials", "kiln_test_not_a_key", 401},
		{"ErrKeyWithoutChatScope", jobsKey, 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := &websocket.DialOptions{HTTPHeader: http.Header{}}
			if tt.credential != "" {
				opts.HTTPHeader.Set("Authorization", "Bearer "+tt.credential)
			}
			c, res, err := websocket.Dial(t.Context(), wsURL(ts), opts)
			if err == nil {
				_ = c.CloseNow()
				t.Fatal("the upgrade succeeded")
			}
			if res == nil || res.StatusCode != tt.status || res.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("response %+v, want a %d problem", res, tt.status)
			}
		})
	}

	for _, tt := range []struct{ name, credential string }{{"OKAPIKey", key}, {"OKUserToken", alice.AccessToken}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := dialChat(t, ts, tt.credential)
			for range 2 { // the connection serves one reply after another, ids counting on
				ws.send(hello)
				frames := ws.untilEnd()
				if k := frameTypes(frames); !slices.Equal(k, []string{"message.delta", "usage", "done"}) {
					t.Fatalf("frames %v, last %s", k, frames[len(frames)-1].Data)
				}
				if text := frameText(t, frames); text != "[dev] You said: hello" {
					t.Errorf("text %q", text)
				}
				if d := doneOf(t, frames); d.FinishReason != api.Stop || d.Provider != "dev" || d.Model != "default" {
					t.Errorf("done %+v", d)
				}
			}
		})
	}

	// The done frame tells the client the connection is free: a chat frame sent as soon as
	// it arrives starts the next reply, never a conflict.
	t.Run("OKNextReplyRightAfterDone", func(t *testing.T) {
		t.Parallel()
		ws := dialChat(t, ts, key)
		for i := range 50 {
			ws.send(hello)
			if frames := ws.untilEnd(); frames[len(frames)-1].Type != "done" {
				t.Fatalf("reply %d ended with %s", i+1, frames[len(frames)-1].Data)
			}
		}
	})

	t.Run("OKServerToolLoop", func(t *testing.T) {
		t.Parallel()
		ws := dialChat(t, ts, key)
		ws.send(`{"type":"chat","data":` + chatJSON("use calculator 2+3*4", `"server_tools":["calculator"]`) + `}`)
		frames := ws.untilEnd()
		if k := frameTypes(frames); !slices.Equal(k, []string{"tool_call.delta", "tool_call", "tool_result", "message.delta", "usage", "done"}) {
			t.Fatalf("frames %v", k)
		}
		if text := frameText(t, frames); !strings.Contains(text, "14") {
			t.Errorf("text %q", text)
		}
	})

	t.Run("ErrConflictWhileRunningThenCancel", func(t *testing.T) {
		t.Parallel()
		ws := dialChat(t, ts, key)
		ws.send(`{"type":"chat","data":` + chatJSON("hi", `"model":"slow"`) + `}`)
		if f := ws.read(); f.Type != "message.delta" {
			t.Fatalf("first frame %s %s", f.Type, f.Data)
		}
		ws.send(hello) // the slow reply still runs: its upstream holds the stream open
		if p := ws.readProblem(errs.Conflict); p.Status != 409 {
			t.Errorf("problem %+v", p)
		}
		ws.send(`{"type":"cancel"}`)
		if d := doneOf(t, []wsFrame{ws.read()}); d.FinishReason != api.Cancelled {
			t.Errorf("done %+v, want finish_reason cancelled", d)
		}
		ws.send(hello)
		if d := doneOf(t, ws.untilEnd()); d.FinishReason != api.Stop {
			t.Errorf("the next reply after a cancel: %+v", d)
		}
	})

	t.Run("ErrInvalidFramesKeepTheConnection", func(t *testing.T) {
		t.Parallel()
		ws := dialChat(t, ts, key)
		for _, tt := range []struct {
			frame   string
			code    errs.Code
			pointer string // a field error expected, when set
		}{
			{`{"type":"chat",`, errs.MalformedJSON, ""},
			{`{"type":"shout","data":{}}`, errs.Invalid, "/type"},
			{`{"type":"chat"}`, errs.Invalid, "/data"},
			{`{"type":"chat","data":{"messages":[]}}`, errs.Invalid, "/data/messages"},
			{`{"type":"chat","data":` + chatJSON("hi", `"temperature":3`) + `}`, errs.Invalid, "/data/temperature"},
			{`{"type":"chat","data":{"messages":[{"role":"robot","content":"hi"}]}}`, errs.Invalid, "/data/messages/0/role"},
			{`{"type":"chat","data":` + chatJSON("hi", `"tool_choice":{"mode":"tool"}`) + `}`, errs.Invalid, "/tool_choice/name"},
			{`{"type":"chat","data":` + chatJSON("hi", `"model":"nope"`) + `}`, errs.NotFound, ""},
		} {
			ws.send(tt.frame)
			p := ws.readProblem(tt.code)
			if tt.pointer != "" && !hasField(p, tt.pointer, "") {
				t.Errorf("%s: no field error at %s in %+v", tt.frame, tt.pointer, deref(p.Errors))
			}
		}
		ws.send(`{"type":"cancel"}`) // nothing runs: nothing to answer
		ws.send(hello)
		if frames := ws.untilEnd(); frameText(t, frames) != "[dev] You said: hello" {
			t.Errorf("after invalid frames: %v", frameTypes(frames))
		}
	})
}
