package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/tools"
)

// price is the dev target's price, so that costs are not zero.
var price = llm.Price{Input: 1, Output: 2}

// newRunner returns a runner over a gateway whose alias "dev" is served by model (the dev
// provider when nil), with the built-in tools, at most maxSteps model calls and 1000
// max tokens. Its clock advances a millisecond at every reading.
func newRunner(t *testing.T, model llm.Provider, maxSteps int) *chat.Runner {
	t.Helper()
	if model == nil {
		model = dev.New(llm.ProviderConfig{Name: "dev", Type: "dev"})
	}
	gw, err := llm.NewGateway(llm.GatewayConfig{
		Providers: map[string]llm.Provider{"dev": model},
		Aliases:   map[string][]llm.Target{"dev": {{Provider: "dev", Model: dev.Model, Price: price}}},
		Timeout:   5 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewGateway: %v", err)
	}
	reg, err := tools.NewRegistry(tools.Builtins()...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return &chat.Runner{Gateway: gw, Tools: reg, MaxSteps: maxSteps, ToolTimeout: time.Second, MaxTokens: 1000, Now: steppingClock()}
}

func steppingClock() func() time.Time {
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
}

func userCall(text string, serverTools ...string) chat.Call {
	return chat.Call{Alias: "dev", Request: llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleUser, text)}}, ServerTools: serverTools}
}

func intp(n int) *int { return &n }

var weatherTool = llm.Tool{Name: "get_weather", Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`)}

// run validates c and runs it, blocking when emit is nil. A run that does not end within
// seconds (a tool loop past MaxSteps) fails.
func run(t *testing.T, r *chat.Runner, c chat.Call, emit func(chat.Event) error) *chat.Result {
	t.Helper()
	if err := r.Validate(t.Context(), &c); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	res, err := r.Run(ctx, c, emit)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// recorder collects streamed events.
type recorder struct{ events []chat.Event }

func (r *recorder) emit(ev chat.Event) error {
	r.events = append(r.events, ev)
	return nil
}

func (r *recorder) kinds() []chat.EventKind {
	out := make([]chat.EventKind, len(r.events))
	for i, ev := range r.events {
		out[i] = ev.Kind
	}
	return out
}

func TestValidate(t *testing.T) {
	t.Parallel()
	r := newRunner(t, nil, 5)
	calc := llm.Tool{Name: "calculator"}
	tests := []struct {
		name          string
		call          chat.Call
		wantCode      errs.Code // empty: valid
		wantPointer   string
		wantMaxTokens int
	}{
		{"OKMaxTokensDefaulted", userCall("hi"), "", "", 1000},
		{"OKMaxTokensCapped", chat.Call{Alias: "dev", Request: llm.Request{MaxTokens: intp(5000)}}, "", "", 1000},
		{"OKMaxTokensKept", chat.Call{Alias: "dev", Request: llm.Request{MaxTokens: intp(10)}}, "", "", 10},
		{"OKToolChoiceNamesServerTool", chat.Call{Alias: "dev", ServerTools: []string{"calculator"}, Request: llm.Request{ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "calculator"}}}, "", "", 1000},
		{"OKToolChoiceNamesClientTool", chat.Call{Alias: "dev", Request: llm.Request{Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "get_weather"}}}, "", "", 1000},
		{"OKClientToolNamedLikeUnrequestedServerTool", chat.Call{Alias: "dev", Request: llm.Request{Tools: []llm.Tool{calc}}}, "", "", 1000},
		{"ErrNotFoundUnknownAlias", chat.Call{Alias: "nope"}, errs.NotFound, "", 0},
		{"ErrInvalidUnknownServerTool", chat.Call{Alias: "dev", ServerTools: []string{"nope"}}, errs.Invalid, "/server_tools/0", 0},
		{"ErrInvalidClientToolAlsoServerTool", chat.Call{Alias: "dev", ServerTools: []string{"calculator"}, Request: llm.Request{Tools: []llm.Tool{weatherTool, calc}}}, errs.Invalid, "/tools/1/name", 0},
		{"ErrInvalidToolChoiceNamesNoOfferedTool", chat.Call{Alias: "dev", ServerTools: []string{"calculator"}, Request: llm.Request{Tools: []llm.Tool{weatherTool}, ToolChoice: &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "current_time"}}}, errs.Invalid, "/tool_choice/name", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tt.call
			err := r.Validate(t.Context(), &c)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if c.Request.MaxTokens == nil || *c.Request.MaxTokens != tt.wantMaxTokens {
					t.Fatalf("max tokens = %v, want %d", c.Request.MaxTokens, tt.wantMaxTokens)
				}
				return
			}
			e, ok := errors.AsType[*errs.Error](err)
			if !ok || e.Code != tt.wantCode {
				t.Fatalf("Validate error = %v, want code %s", err, tt.wantCode)
			}
			if tt.wantPointer != "" && (len(e.Fields) != 1 || e.Fields[0].Pointer != tt.wantPointer) {
				t.Fatalf("fields = %+v, want one at %s", e.Fields, tt.wantPointer)
			}
		})
	}
}

// devUsage is what the dev model reports for req.
func devUsage(t *testing.T, req llm.Request) llm.Usage {
	t.Helper()
	res, err := dev.New(llm.ProviderConfig{Name: "dev"}).Chat(t.Context(), &req)
	if err != nil {
		t.Fatalf("dev Chat: %v", err)
	}
	return res.Usage
}

func TestRunServerTool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		text       string
		wantResult string // prefix of the tool's result
	}{
		{"OK", "use calculator 2+3*4", "14"},
		{"ToolErrorGoesBackToModel", "use calculator 2+", "calculator: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRunner(t, nil, 5)
			c := userCall(tt.text, "calculator")
			res := run(t, r, c, nil)

			if len(res.Steps) != 2 {
				t.Fatalf("steps = %+v, want the assistant's call and the tool's result", res.Steps)
			}
			call, result := res.Steps[0], res.Steps[1]
			if call.Role != llm.RoleAssistant || len(call.ToolCalls) != 1 || call.ToolCalls[0].Name != "calculator" {
				t.Fatalf("first step = %+v, want an assistant call of calculator", call)
			}
			if want := `{"expression":"` + strings.TrimPrefix(tt.text, "use calculator ") + `"}`; call.ToolCalls[0].Arguments != want {
				t.Errorf("arguments = %s, want %s", call.ToolCalls[0].Arguments, want)
			}
			if result.Role != llm.RoleTool || result.ToolCallID != call.ToolCalls[0].ID || result.Name != "calculator" || !strings.HasPrefix(result.Text(), tt.wantResult) {
				t.Fatalf("second step = %+v, want the tool result %q answering %s", result, tt.wantResult, call.ToolCalls[0].ID)
			}
			if want := "[dev] The tool calculator returned: " + result.Text(); res.Message.Text() != want || len(res.Message.ToolCalls) != 0 {
				t.Errorf("final message = %+v, want %q", res.Message, want)
			}
			if res.FinishReason != llm.FinishStop || res.Attempts != 2 || res.Served.Target.Provider != "dev" {
				t.Errorf("finish %s, %d attempts, served by %q; want stop, 2, dev", res.FinishReason, res.Attempts, res.Served.Target.Provider)
			}

			// The usage is the sum of both model calls'.
			req := c.Request
			req.MaxTokens = intp(1000)
			req.Tools, _ = r.Tools.Definitions([]string{"calculator"})
			first := devUsage(t, req)
			req.Messages = append(req.Messages, res.Steps...)
			want := first.Add(devUsage(t, req))
			if res.Usage != want {
				t.Errorf("usage = %+v, want %+v summed over both steps", res.Usage, want)
			}
			if math.Abs(res.Cost-price.Cost(want)) > 1e-12 || res.Cost == 0 {
				t.Errorf("cost = %v, want %v", res.Cost, price.Cost(want))
			}
		})
	}
}

func TestRunServerToolStreamed(t *testing.T) {
	t.Parallel()
	r := newRunner(t, nil, 5)
	c := userCall("use calculator 2+3*4", "calculator")
	var rec recorder
	res := run(t, r, c, rec.emit)

	// start, the call's two pieces and the whole call, its result, start of the answer,
	// the answer's words, usage.
	kinds := rec.kinds()
	want := []chat.EventKind{chat.EventStart, chat.EventToolCallDelta, chat.EventToolCallDelta, chat.EventToolCall, chat.EventToolResult, chat.EventStart}
	if len(kinds) < len(want)+2 || !reflect.DeepEqual(kinds[:len(want)], want) || kinds[len(kinds)-1] != chat.EventUsage {
		t.Fatalf("event kinds = %v, want %v, deltas, usage", kinds, want)
	}
	var text strings.Builder
	for _, ev := range rec.events[len(want) : len(kinds)-1] {
		if ev.Kind != chat.EventDelta {
			t.Fatalf("event kinds = %v, want only deltas between the second start and usage", kinds)
		}
		text.WriteString(ev.Text)
	}
	ev := rec.events
	if ev[3].Call.Name != "calculator" || !ev[3].Server || ev[3].Call.Arguments != `{"expression":"2+3*4"}` {
		t.Errorf("tool call event = %+v, want calculator's call marked Server", ev[3])
	}
	if ev[4].Result.Content != "14" || ev[4].Result.IsError || ev[4].Call.ID != ev[3].Call.ID {
		t.Errorf("tool result event = %+v, want 14 for call %s", ev[4], ev[3].Call.ID)
	}
	if ev[0].Served.Target.Provider != "dev" || len(ev[5].Served.Attempts) != 1 {
		t.Errorf("start events = %+v, %+v; want each to name the serving target", ev[0].Served, ev[5].Served)
	}
	if text.String() != res.Message.Text() || res.Message.Text() != "[dev] The tool calculator returned: 14" {
		t.Errorf("streamed text %q, final message %q; want both the model's answer", text.String(), res.Message.Text())
	}
	if last := ev[len(ev)-1]; last.Usage != res.Usage || last.Cost != res.Cost || res.Usage.Total() == 0 {
		t.Errorf("usage event %+v, %v; want the result's %+v, %v", last.Usage, last.Cost, res.Usage, res.Cost)
	}
	if res.TTFT != time.Millisecond {
		t.Errorf("TTFT = %s, want one tick of the clock", res.TTFT)
	}

	blocking := run(t, newRunner(t, nil, 5), c, nil)
	if !reflect.DeepEqual(res.Steps, blocking.Steps) || !reflect.DeepEqual(res.Message, blocking.Message) ||
		res.Usage != blocking.Usage || res.FinishReason != blocking.FinishReason || res.Attempts != blocking.Attempts {
		t.Errorf("streamed result differs from the blocking one:\n%+v\n%+v", res, blocking)
	}
}

func TestRunClientTool(t *testing.T) {
	t.Parallel()
	for _, streamed := range []bool{false, true} {
		name := "OKBlocking"
		if streamed {
			name = "OKStreamed"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRunner(t, nil, 5)
			c := userCall("get_weather Paris", "calculator")
			c.Request.Tools = []llm.Tool{weatherTool}
			var rec recorder
			var emit func(chat.Event) error
			if streamed {
				emit = rec.emit
			}
			res := run(t, r, c, emit)
			if len(res.Steps) != 0 || res.Attempts != 1 {
				t.Fatalf("%d steps, %d attempts; want the run to end after one model call", len(res.Steps), res.Attempts)
			}
			if res.FinishReason != llm.FinishToolCalls || len(res.Message.ToolCalls) != 1 {
				t.Fatalf("finish %s, calls %+v; want the client's tool call returned", res.FinishReason, res.Message.ToolCalls)
			}
			if got := res.Message.ToolCalls[0]; got.Name != "get_weather" || got.Arguments != `{"city":"Paris"}` {
				t.Fatalf("call = %+v, want get_weather for Paris", got)
			}
			if !streamed {
				return
			}
			want := []chat.EventKind{chat.EventStart, chat.EventToolCallDelta, chat.EventToolCallDelta, chat.EventToolCall, chat.EventUsage}
			if got := rec.kinds(); !reflect.DeepEqual(got, want) {
				t.Fatalf("event kinds = %v, want %v", got, want)
			}
			if rec.events[3].Server {
				t.Fatal("the client tool's call is marked Server")
			}
		})
	}
}

// loopingModel is the dev model made to call a tool at every step, as a model stuck in a
// loop would: the tool turns are hidden from it, so it answers the user's message again.
// With stubborn set it also ignores tool_choice none.
type loopingModel struct {
	*dev.Provider
	stubborn bool
}

func (m loopingModel) forget(req *llm.Request) *llm.Request {
	r := *req
	r.Messages = nil
	for _, msg := range req.Messages {
		if msg.Role != llm.RoleTool && len(msg.ToolCalls) == 0 {
			r.Messages = append(r.Messages, msg)
		}
	}
	if m.stubborn {
		r.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceRequired}
	}
	return &r
}

func (m loopingModel) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	return m.Provider.Chat(ctx, m.forget(req))
}

func (m loopingModel) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	return m.Provider.ChatStream(ctx, m.forget(req))
}

func TestRunMaxSteps(t *testing.T) {
	t.Parallel()
	devModel := dev.New(llm.ProviderConfig{Name: "dev"})
	tests := []struct {
		name         string
		model        llm.Provider
		maxSteps     int
		wantAttempts int
		wantSteps    int
		wantText     string // of the final message; empty: not checked
	}{
		{"LastStepForcedToAnswer", devModel, 1, 1, 0, "[dev] You said: use calculator 2+3*4"},
		{"AnswersAfterToolWithinBound", devModel, 2, 2, 2, "[dev] The tool calculator returned: 14"},
		{"LoopEndsWithAnswerAtMaxSteps", loopingModel{Provider: devModel}, 3, 3, 4, "[dev] You said: use calculator 2+3*4"},
		{"LoopIgnoringToolChoiceEndsAtMaxSteps", loopingModel{Provider: devModel, stubborn: true}, 3, 3, 4, ""},
	}
	for _, tt := range tests {
		for _, streamed := range []bool{false, true} {
			name := tt.name
			if streamed {
				name += "Streamed"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				r := newRunner(t, tt.model, tt.maxSteps)
				c := userCall("use calculator 2+3*4", "calculator")
				c.Request.ToolChoice = &llm.ToolChoice{Mode: llm.ToolChoiceTool, Name: "calculator"}
				var rec recorder
				var emit func(chat.Event) error
				if streamed {
					emit = rec.emit
				}
				res := run(t, r, c, emit)
				if res.Attempts != tt.wantAttempts || len(res.Steps) != tt.wantSteps {
					t.Fatalf("%d model calls, %d steps; want %d, %d", res.Attempts, len(res.Steps), tt.wantAttempts, tt.wantSteps)
				}
				if tt.wantText != "" && (res.Message.Text() != tt.wantText || res.FinishReason != llm.FinishStop) {
					t.Fatalf("final message %q (%s), want %q (stop)", res.Message.Text(), res.FinishReason, tt.wantText)
				}
			})
		}
	}
}

func TestRunEmitError(t *testing.T) {
	t.Parallel()
	errGone := errors.New("client went away")
	tests := []struct {
		name         string
		failOn       chat.EventKind
		wantAttempts int
		wantEvents   int // emitted, the failing one included
	}{
		{"ErrOnFirstStart", chat.EventStart, 1, 1},
		{"ErrOnToolCall", chat.EventToolCall, 1, 4},
		{"ErrOnToolResult", chat.EventToolResult, 1, 5},
		{"ErrOnDelta", chat.EventDelta, 2, 7},
		{"ErrOnUsage", chat.EventUsage, 2, 0}, // 0: the last event
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRunner(t, nil, 5)
			c := userCall("use calculator 2+3*4", "calculator")
			if err := r.Validate(t.Context(), &c); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			var kinds []chat.EventKind
			res, err := r.Run(t.Context(), c, func(ev chat.Event) error {
				kinds = append(kinds, ev.Kind)
				if ev.Kind == tt.failOn {
					return errGone
				}
				return nil
			})
			if !errors.Is(err, errGone) {
				t.Fatalf("Run error = %v, want the emit error", err)
			}
			if res == nil || res.Attempts != tt.wantAttempts {
				t.Fatalf("result %+v, want %d model calls", res, tt.wantAttempts)
			}
			if kinds[len(kinds)-1] != tt.failOn || (tt.wantEvents != 0 && len(kinds) != tt.wantEvents) {
				t.Fatalf("emitted %v, want the run to stop at the first %d", kinds, tt.failOn)
			}
		})
	}
}
