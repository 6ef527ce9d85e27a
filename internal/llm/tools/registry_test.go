package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

func echo(_ context.Context, args json.RawMessage) (string, error) { return string(args), nil }

func TestNewRegistry(t *testing.T) {
	t.Parallel()
	ok := Tool{Name: "echo", Handler: echo}
	tests := []struct {
		name    string
		tools   []Tool
		wantErr string // substring; empty: success
	}{
		{"OK", []Tool{ok, {Name: "A-b_9", Parameters: json.RawMessage(`{"type":"object"}`), Handler: echo}}, ""},
		{"OKNone", nil, ""},
		{"OKNameOf64", []Tool{{Name: strings.Repeat("a", 64), Handler: echo}}, ""},
		{"ErrEmptyName", []Tool{{Name: "", Handler: echo}}, `tool "": name must match`},
		{"ErrNameTooLong", []Tool{{Name: strings.Repeat("a", 65), Handler: echo}}, "name must match"},
		{"ErrNameCharacters", []Tool{{Name: "get.weather", Handler: echo}}, `tool "get.weather": name must match`},
		{"ErrDuplicate", []Tool{ok, ok}, `tool "echo": registered twice`},
		{"ErrNoHandler", []Tool{{Name: "nohandler"}}, `tool "nohandler": no handler`},
		{"ErrSchemaNotJSON", []Tool{{Name: "bad", Parameters: json.RawMessage(`{"type":`), Handler: echo}}, `tool "bad": parameters: not valid JSON`},
		{"ErrSchemaNotObject", []Tool{{Name: "bad", Parameters: json.RawMessage(`[]`), Handler: echo}}, `tool "bad": parameters: want a JSON Schema object, got an array`},
		{"ErrSchemaInvalid", []Tool{{Name: "bad", Parameters: json.RawMessage(`{"type":"objekt"}`), Handler: echo}}, `tool "bad": parameters:`},
		{"ErrSchemaBadPattern", []Tool{{Name: "bad", Parameters: json.RawMessage(`{"properties":{"a":{"pattern":"("}}}`), Handler: echo}}, `tool "bad"`},
		{"ErrRemoteRef", []Tool{{Name: "remote", Parameters: json.RawMessage(`{"$ref":"https://example.com/schema.json"}`), Handler: echo}}, "external schema references are not allowed"},
		{"ErrFileRef", []Tool{{Name: "file", Parameters: json.RawMessage(`{"$ref":"file:///etc/passwd"}`), Handler: echo}}, "external schema references are not allowed"},
		{"ErrRelativeRef", []Tool{{Name: "rel", Parameters: json.RawMessage(`{"$ref":"other.json"}`), Handler: echo}}, "external schema references are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewRegistry(tt.tools...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewRegistry: %v", err)
				}
				if len(r.Names()) != len(tt.tools) {
					t.Fatalf("Names() = %v, want %d tools", r.Names(), len(tt.tools))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewRegistry error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRegistryNames(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Tool{Name: "zeta", Handler: echo}, Tool{Name: "alpha", Handler: echo}, Tool{Name: "mid", Handler: echo})
	got := r.Names()
	if want := "alpha,mid,zeta"; strings.Join(got, ",") != want {
		t.Fatalf("Names() = %v, want %s", got, want)
	}
	got[0] = "changed"
	if r.Names()[0] != "alpha" {
		t.Fatal("Names() returned the registry's own slice")
	}
	if !r.Has("mid") || r.Has("nope") || r.Has("") {
		t.Fatal("Has disagrees with the registered tools")
	}
}

func TestRegistryDefinitions(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Builtins()...)
	tests := []struct {
		name      string
		names     []string
		want      []string
		wantField []errs.FieldError
	}{
		{name: "OK", names: []string{"current_time", "calculator"}, want: []string{"current_time", "calculator"}},
		{name: "OKEmpty", names: nil, want: nil},
		{
			name: "ErrUnknown", names: []string{"calculator", "web_search", "shell"},
			wantField: []errs.FieldError{
				{Pointer: "/server_tools/1", Message: `unknown tool "web_search" (known tools: calculator, current_time)`},
				{Pointer: "/server_tools/2", Message: `unknown tool "shell" (known tools: calculator, current_time)`},
			},
		},
		{
			name: "ErrDuplicate", names: []string{"calculator", "calculator"},
			wantField: []errs.FieldError{{Pointer: "/server_tools/1", Message: `tool "calculator" listed twice`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			defs, err := r.Definitions(tt.names)
			if tt.wantField != nil {
				e, ok := errors.AsType[*errs.Error](err)
				if !ok || e.Code != errs.Invalid {
					t.Fatalf("Definitions error = %v, want an errs.Invalid *errs.Error", err)
				}
				if fmt.Sprint(e.Fields) != fmt.Sprint(tt.wantField) {
					t.Fatalf("fields = %v\nwant     %v", e.Fields, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Definitions: %v", err)
			}
			if len(defs) != len(tt.want) {
				t.Fatalf("got %d definitions, want %d", len(defs), len(tt.want))
			}
			for i, d := range defs {
				if d.Name != tt.want[i] || d.Description == "" || !json.Valid(d.Parameters) {
					t.Errorf("definition %d = %+v, want %s with a description and a JSON schema", i, d, tt.want[i])
				}
			}
		})
	}
}

func TestRegistryDefinitionsDefaultSchema(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Tool{Name: "noargs", Handler: echo})
	defs, err := r.Definitions([]string{"noargs"})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(defs[0].Parameters); got != `{"type":"object"}` {
		t.Fatalf("Parameters = %s, want the empty object schema", got)
	}
}

func TestRegistryRun(t *testing.T) {
	t.Parallel()
	strict := json.RawMessage(`{
		"type": "object",
		"properties": {
			"city": {"type": "string"},
			"days": {"type": "integer", "minimum": 1}
		},
		"required": ["city"],
		"additionalProperties": false
	}`)
	r := newTestRegistry(t,
		Tool{Name: "weather", Parameters: strict, Handler: func(_ context.Context, args json.RawMessage) (string, error) {
			return "sunny: " + string(args), nil
		}},
		Tool{Name: "echo", Handler: echo},
		Tool{Name: "fails", Handler: func(context.Context, json.RawMessage) (string, error) {
			return "partial", errors.New("upstream said no")
		}},
		Tool{Name: "blocks", Handler: func(ctx context.Context, _ json.RawMessage) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}},
		Tool{Name: "ignores_ctx", Handler: func(context.Context, json.RawMessage) (string, error) {
			time.Sleep(time.Second)
			return "late", nil
		}},
		Tool{Name: "panics", Handler: func(context.Context, json.RawMessage) (string, error) {
			panic("secret internal state")
		}},
		Tool{Name: "panics_nil", Handler: func(context.Context, json.RawMessage) (string, error) {
			panic(nil)
		}},
		Tool{Name: "goexits", Handler: func(context.Context, json.RawMessage) (string, error) {
			runtime.Goexit()
			return "", nil
		}},
		Tool{Name: "huge", Handler: func(context.Context, json.RawMessage) (string, error) {
			return strings.Repeat("é", 40_000), nil
		}},
		Tool{Name: "huge_error", Handler: func(context.Context, json.RawMessage) (string, error) {
			return "", errors.New(strings.Repeat("x", 50_000))
		}},
	)

	tests := []struct {
		name      string
		call      llm.ToolCall
		timeout   time.Duration
		want      string // exact content; empty: check wantParts
		wantParts []string
		wantError bool
	}{
		{name: "OK", call: llm.ToolCall{Name: "weather", Arguments: ` {"city":"Oslo","days":2} `}, want: `sunny: {"city":"Oslo","days":2}`},
		{name: "OKEmptyArgumentsAreEmptyObject", call: llm.ToolCall{Name: "echo", Arguments: ""}, want: "{}"},
		{name: "ErrUnknownTool", call: llm.ToolCall{Name: "rm_rf", Arguments: "{}"}, wantError: true,
			want: `unknown tool "rm_rf"; available tools: blocks, echo, fails, goexits, huge, huge_error, ignores_ctx, panics, panics_nil, weather`},
		{name: "ErrBadJSON", call: llm.ToolCall{Name: "weather", Arguments: `{"city": "Oslo"`}, wantError: true,
			wantParts: []string{`invalid arguments for tool "weather": not valid JSON`}},
		{name: "ErrTrailingJSON", call: llm.ToolCall{Name: "weather", Arguments: `{"city":"Oslo"} {}`}, wantError: true,
			wantParts: []string{"not valid JSON"}},
		{name: "ErrNotObject", call: llm.ToolCall{Name: "echo", Arguments: `["a"]`}, wantError: true,
			want: `invalid arguments for tool "echo": want a JSON object, got an array`},
		{name: "ErrNull", call: llm.ToolCall{Name: "echo", Arguments: `null`}, wantError: true,
			want: `invalid arguments for tool "echo": want a JSON object, got null`},
		{name: "ErrMissingRequired", call: llm.ToolCall{Name: "weather", Arguments: `{"days":3}`}, wantError: true,
			want: "invalid arguments for tool \"weather\":\n- (arguments object): missing property 'city'\nFix the arguments and call the tool again."},
		{name: "ErrWrongType", call: llm.ToolCall{Name: "weather", Arguments: `{"city":7,"days":1.5}`}, wantError: true,
			wantParts: []string{"- /city: got number, want string", "- /days: got number, want integer"}},
		{name: "ErrMinimumAndExtraProperty", call: llm.ToolCall{Name: "weather", Arguments: `{"city":"Oslo","days":0,"unit":"C"}`}, wantError: true,
			wantParts: []string{"- /days: minimum: got 0, want 1", "additional properties 'unit' not allowed"}},
		{name: "ErrHandler", call: llm.ToolCall{Name: "fails", Arguments: "{}"}, wantError: true, want: "upstream said no"},
		{name: "ErrTimeout", call: llm.ToolCall{Name: "blocks", Arguments: "{}"}, timeout: 20 * time.Millisecond, wantError: true,
			want: `tool "blocks" timed out after 20ms`},
		{name: "ErrTimeoutHandlerIgnoresContext", call: llm.ToolCall{Name: "ignores_ctx", Arguments: "{}"}, timeout: 20 * time.Millisecond, wantError: true,
			want: `tool "ignores_ctx" timed out after 20ms`},
		{name: "ErrPanicRecovered", call: llm.ToolCall{Name: "panics", Arguments: "{}"}, wantError: true,
			want: `tool "panics" failed with an internal error`},
		{name: "ErrPanicNilRecovered", call: llm.ToolCall{Name: "panics_nil", Arguments: "{}"}, wantError: true,
			want: `tool "panics_nil" failed with an internal error`},
		{name: "ErrGoexitContained", call: llm.ToolCall{Name: "goexits", Arguments: "{}"}, wantError: true,
			want: `tool "goexits" failed with an internal error`},
		{name: "OKTruncated", call: llm.ToolCall{Name: "huge", Arguments: "{}"},
			wantParts: []string{"é", "[truncated: ", " of 80000 bytes shown]"}},
		{name: "ErrTruncated", call: llm.ToolCall{Name: "huge_error", Arguments: "{}"}, wantError: true,
			wantParts: []string{"[truncated: ", " of 50000 bytes shown]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			start := time.Now()
			res := r.Run(t.Context(), tt.call, timeout)
			if elapsed := time.Since(start); elapsed > timeout+time.Second {
				t.Errorf("Run took %s with a timeout of %s", elapsed, timeout)
			}
			if res.IsError != tt.wantError {
				t.Errorf("IsError = %t, want %t (content %q)", res.IsError, tt.wantError, res.Content)
			}
			if tt.want != "" && res.Content != tt.want {
				t.Errorf("Content = %q\nwant      %q", res.Content, tt.want)
			}
			for _, part := range tt.wantParts {
				if !strings.Contains(res.Content, part) {
					t.Errorf("Content = %.200q..., want it to contain %q", res.Content, part)
				}
			}
			if len(res.Content) > maxResultBytes || !utf8.ValidString(res.Content) {
				t.Errorf("Content is %d bytes (limit %d), valid UTF-8: %t", len(res.Content), maxResultBytes, utf8.ValidString(res.Content))
			}
		})
	}
	t.Run("HandlerNotCalledOnInvalidArguments", func(t *testing.T) {
		t.Parallel()
		r2 := newTestRegistry(t, Tool{Name: "weather", Parameters: strict, Handler: func(context.Context, json.RawMessage) (string, error) {
			t.Error("handler called with invalid arguments")
			return "", nil
		}})
		for _, args := range []string{`{`, `[]`, `{"days":1}`, `{"city":1}`} {
			if res := r2.Run(t.Context(), llm.ToolCall{Name: "weather", Arguments: args}, time.Second); !res.IsError {
				t.Errorf("Run(%s) = %+v, want an error result", args, res)
			}
		}
	})
}

func TestRegistryRunCanceled(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Tool{Name: "blocks", Handler: func(ctx context.Context, _ json.RawMessage) (string, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}})
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(10*time.Millisecond, cancel)
	res := r.Run(ctx, llm.ToolCall{Name: "blocks", Arguments: "{}"}, time.Minute)
	if !res.IsError || strings.Contains(res.Content, "timed out") || !strings.Contains(res.Content, "context canceled") {
		t.Fatalf("Run = %+v, want a cancellation error, not a timeout", res)
	}
}

func TestRegistryRunConcurrent(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Builtins()...)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			call := llm.ToolCall{Name: "calculator", Arguments: fmt.Sprintf(`{"expression":"%d * 2"}`, i)}
			if res := r.Run(t.Context(), call, time.Second); res.IsError || res.Content != fmt.Sprint(i*2) {
				t.Errorf("Run(%s) = %+v", call.Arguments, res)
			}
			if res := r.Run(t.Context(), llm.ToolCall{Name: "calculator", Arguments: `{"expression":1}`}, time.Second); !res.IsError {
				t.Errorf("Run with a number expression = %+v, want an error", res)
			}
		})
	}
	wg.Wait()
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		cut  bool
	}{
		{"OKShort", "hello", false},
		{"OKExactLimit", strings.Repeat("a", maxResultBytes), false},
		{"OKOneOver", strings.Repeat("a", maxResultBytes+1), true},
		{"OKMultibyteBoundary", strings.Repeat("€", maxResultBytes), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := truncate(tt.in)
			if !tt.cut {
				if got != tt.in {
					t.Fatal("truncate changed a string within the limit")
				}
				return
			}
			if len(got) > maxResultBytes || !utf8.ValidString(got) {
				t.Fatalf("truncated to %d bytes (limit %d), valid UTF-8: %t", len(got), maxResultBytes, utf8.ValidString(got))
			}
			marker := fmt.Sprintf(" of %d bytes shown]", len(tt.in))
			if !strings.HasSuffix(got, marker) {
				t.Fatalf("truncated text ends %q, want marker %q", got[len(got)-60:], marker)
			}
		})
	}
}

func newTestRegistry(t *testing.T, tools ...Tool) *Registry {
	t.Helper()
	r, err := NewRegistry(tools...)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	return r
}
