package tools

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// noLoader refuses every document the compiler asks for: a tool's schema must be
// self-contained, and compiling it must touch neither the network nor the filesystem.
// The JSON Schema meta-schemas are embedded in the library and never reach a loader.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("loading %s: external schema references are not allowed", url)
}

// compileSchema compiles a tool's parameters schema as JSON Schema 2020-12.
func compileSchema(name string, parameters json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(parameters))
	if err != nil {
		return nil, fmt.Errorf("parameters: not valid JSON: %w", err)
	}
	if _, ok := doc.(map[string]any); !ok {
		return nil, fmt.Errorf("parameters: want a JSON Schema object, got %s", jsonKind(doc))
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	url := "kiln:///tools/" + name + ".json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	schema, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	return schema, nil
}

// maxViolations bounds the list describeViolations returns; the first few are enough for
// the model to fix its call.
const maxViolations = 10

// describeViolations lists a validation error's findings one per line as "- <where>:
// <what>", where is a JSON Pointer into the arguments. Wrapper nodes, which only say
// which schema failed, are left out.
func describeViolations(err error) string {
	verr, ok := errors.AsType[*jsonschema.ValidationError](err)
	if !ok {
		return "- " + err.Error()
	}
	var lines []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		switch e.ErrorKind.(type) {
		case *kind.Schema, *kind.Group, *kind.Reference:
		default:
			lines = append(lines, "- "+instancePointer(e.InstanceLocation)+": "+kindMessage(e.ErrorKind))
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(verr)
	if len(lines) > maxViolations {
		lines = append(lines[:maxViolations], fmt.Sprintf("- and %d more", len(lines)-maxViolations))
	}
	return strings.Join(lines, "\n")
}

// kindMessage is the library's English text for one finding. The library exposes it only
// through output units, and sets it only on a unit without causes.
func kindMessage(k jsonschema.ErrorKind) string {
	return (&jsonschema.ValidationError{ErrorKind: k}).BasicOutput().Error.String()
}

// instancePointer formats an instance location as a JSON Pointer, naming the root.
func instancePointer(tokens []string) string {
	if len(tokens) == 0 {
		return "(arguments object)"
	}
	var b strings.Builder
	for _, tok := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(tok))
	}
	return b.String()
}

// jsonKind names the JSON type of a value decoded by jsonschema.UnmarshalJSON.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
