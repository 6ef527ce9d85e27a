// Package tools is Kiln's registry of server-side tools: functions the gateway itself runs
// when the model calls them, as opposed to client tools whose calls go back to the caller.
//
// A [Registry] turns a request's server_tools list into [llm.Tool] definitions for the
// provider, and runs the calls the model makes. Run never fails: every problem (unknown
// tool, arguments that are not JSON or break the tool's schema, a handler error, panic or
// timeout) becomes an error [Result] worded for the model, so it can correct itself.
package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

// maxResultBytes bounds a result's Content, marker included, so one tool call cannot flood
// the model's context.
const maxResultBytes = 32 << 10

// Tool is a server-side tool.
type Tool struct {
	Name        string          // ^[a-zA-Z0-9_-]{1,64}$
	Description string          // what the tool does, for the model
	Parameters  json.RawMessage // JSON Schema of the arguments object; nil: any object
	// Handler runs one call with arguments already validated against Parameters. It must
	// return when ctx is done; its error text is shown to the model.
	Handler func(ctx context.Context, args json.RawMessage) (string, error)
}

// Result is the outcome of one tool call, to feed back to the model as a tool message.
type Result struct {
	Content string
	IsError bool // Content describes a failure rather than the tool's output
}

// Registry holds tools by name; safe for concurrent use after construction.
type Registry struct {
	tools map[string]*registered
	names []string // sorted
}

type registered struct {
	Tool
	schema *jsonschema.Schema
}

// NewRegistry validates the tools and compiles each one's Parameters schema once. It
// fails, naming the tool, on an invalid or duplicate name, a missing handler, or a
// schema that is not a valid JSON Schema object (references to other documents are not
// loaded). The errors are configuration errors and carry no errs code.
func NewRegistry(tools ...Tool) (*Registry, error) {
	r := &Registry{tools: make(map[string]*registered, len(tools))}
	for _, t := range tools {
		if !validName(t.Name) {
			return nil, fmt.Errorf("new tool registry: tool %q: name must match ^[a-zA-Z0-9_-]{1,64}$", t.Name)
		}
		if _, dup := r.tools[t.Name]; dup {
			return nil, fmt.Errorf("new tool registry: tool %q: registered twice", t.Name)
		}
		if t.Handler == nil {
			return nil, fmt.Errorf("new tool registry: tool %q: no handler", t.Name)
		}
		if len(t.Parameters) == 0 {
			t.Parameters = json.RawMessage(`{"type":"object"}`)
		} else {
			t.Parameters = slices.Clone(t.Parameters)
		}
		schema, err := compileSchema(t.Name, t.Parameters)
		if err != nil {
			return nil, fmt.Errorf("new tool registry: tool %q: %w", t.Name, err)
		}
		r.tools[t.Name] = &registered{Tool: t, schema: schema}
		r.names = append(r.names, t.Name)
	}
	slices.Sort(r.names)
	return r, nil
}

func validName(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Has reports whether a tool is registered under name.
func (r *Registry) Has(name string) bool {
	_, ok := r.tools[name]
	return ok
}

// Names returns the registered tool names, sorted.
func (r *Registry) Names() []string { return slices.Clone(r.names) }

// Definitions returns the definitions of the named tools, in order, for a request's
// server_tools list. An unknown or repeated name is an errs.Invalid error with a field
// /server_tools/<i> per offending entry. The Parameters of the returned tools are shared
// and must not be modified.
func (r *Registry) Definitions(names []string) ([]llm.Tool, error) {
	if len(names) == 0 {
		return nil, nil
	}
	defs := make([]llm.Tool, 0, len(names))
	var fields []errs.FieldError
	seen := make(map[string]bool, len(names))
	for i, name := range names {
		pointer := fmt.Sprintf("/server_tools/%d", i)
		t, ok := r.tools[name]
		switch {
		case !ok:
			fields = append(fields, errs.FieldError{Pointer: pointer, Message: fmt.Sprintf("unknown tool %q (known tools: %s)", name, r.known())})
		case seen[name]:
			fields = append(fields, errs.FieldError{Pointer: pointer, Message: fmt.Sprintf("tool %q listed twice", name)})
		default:
			seen[name] = true
			defs = append(defs, llm.Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters})
		}
	}
	if err := errs.InvalidFields("invalid server_tools", fields); err != nil {
		return nil, err
	}
	return defs, nil
}

func (r *Registry) known() string {
	if len(r.names) == 0 {
		return "none"
	}
	return strings.Join(r.names, ", ")
}

// errTimedOut is the cause of a call's context when its own timeout, not the caller's
// context, ended it.
var errTimedOut = errors.New("tool call timed out")

// errPanicked stands for a handler that panicked or exited its goroutine.
var errPanicked = errors.New("tool handler panicked")

// Run runs one call the model made and always returns a Result for the model. Arguments
// are checked to be a JSON object (empty means {}) valid against the tool's schema before
// the handler is called. The handler runs under ctx with timeout added (none when timeout
// ≤ 0); Run returns when the handler does or ctx is done, whichever is first, so a
// handler that ignores ctx is abandoned, not waited for. Content longer than 32 KiB is
// truncated with a marker.
func (r *Registry) Run(ctx context.Context, call llm.ToolCall, timeout time.Duration) Result {
	t, ok := r.tools[call.Name]
	if !ok {
		return failure(fmt.Sprintf("unknown tool %q; available tools: %s", call.Name, r.known()))
	}
	args, problem := t.check(call.Arguments)
	if problem != "" {
		return failure(problem)
	}
	content, err := t.call(ctx, args, timeout)
	switch {
	case errors.Is(err, errTimedOut):
		return failure(fmt.Sprintf("tool %q timed out after %s", t.Name, timeout))
	case errors.Is(err, errPanicked):
		// The panic value may hold internals, so the model only learns that it happened.
		return failure(fmt.Sprintf("tool %q failed with an internal error", t.Name))
	case err != nil:
		return failure(err.Error())
	}
	return Result{Content: truncate(content)}
}

func failure(msg string) Result { return Result{Content: truncate(msg), IsError: true} }

// check parses and validates arguments, returning them as the handler receives them, or a
// description of the problem for the model.
func (t *registered) check(arguments string) (json.RawMessage, string) {
	raw := strings.TrimSpace(arguments)
	if raw == "" {
		raw = "{}"
	}
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(raw))
	if err != nil {
		return nil, fmt.Sprintf("invalid arguments for tool %q: not valid JSON (%v); send the arguments as one JSON object", t.Name, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, fmt.Sprintf("invalid arguments for tool %q: want a JSON object, got %s", t.Name, jsonKind(v))
	}
	if err := t.schema.Validate(v); err != nil {
		return nil, fmt.Sprintf("invalid arguments for tool %q:\n%s\nFix the arguments and call the tool again.", t.Name, describeViolations(err))
	}
	return json.RawMessage(raw), ""
}

// call runs the handler in its own goroutine so that a panic is contained and a handler
// that ignores ctx cannot hold Run past the deadline.
func (t *registered) call(ctx context.Context, args json.RawMessage, timeout time.Duration) (string, error) {
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, errTimedOut)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()

	type outcome struct {
		content string
		err     error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		returned := false
		defer func() {
			if !returned {
				_ = recover()
				o = outcome{err: errPanicked}
			}
			done <- o
		}()
		o.content, o.err = t.Handler(ctx, args)
		returned = true
	}()

	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		select {
		case o = <-done: // finished just in time
		default:
			o.err = fmt.Errorf("tool %q stopped: %w", t.Name, context.Cause(ctx))
		}
	}
	if o.err != nil && errors.Is(context.Cause(ctx), errTimedOut) {
		// Whatever the handler said, it most likely failed because its time ran out.
		return "", errTimedOut
	}
	return o.content, o.err
}

// truncate cuts s to maxResultBytes at a rune boundary, ending in a marker.
func truncate(s string) string {
	if len(s) <= maxResultBytes {
		return s
	}
	const marker = "\n[truncated: %d of %d bytes shown]"
	// The shown count is below maxResultBytes, so this reserves enough for its digits.
	cut := maxResultBytes - len(fmt.Sprintf(marker, maxResultBytes, len(s)))
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf(marker, cut, len(s))
}
