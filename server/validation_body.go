package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	gojson "github.com/goccy/go-json"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/kilnhq/kiln/internal/errs"
)

// Request bodies are validated by JSON Schemas compiled once at start from the spec's
// OpenAPI 3.0 schemas, instead of kin-openapi walking the OpenAPI schema on every request
// (about half of what the middleware stack used to add; see docs/performance.md). The
// conversion keeps kin-openapi's 3.0 semantics, which differ from JSON Schema's: null is
// valid only where `nullable` says so, formats are the ones kin-openapi checks, and
// defaults are written into the body before it is validated. Field errors keep
// kin-openapi's pointers and wording; TestBodyValidatorMatchesKinOpenAPI holds the two
// side by side.

// bodySchemaBase names the one in-memory document that holds every converted schema.
const bodySchemaBase = "kiln:///openapi/request-bodies.json"

// jsonBody is the compiled validation of one operation's application/json request body.
type jsonBody struct {
	required bool
	content  openapi3.Content
	schema   *jsonschema.Schema
	defaults *defaultsPlan // nil: no default below this schema
}

// validatedBody replaces a validated request's body: the bytes for the generated strict
// handlers, and the value they were decoded into for handlers that can take it as it is
// (bodyValue), so such a body is parsed once.
type validatedBody struct {
	*bytes.Reader
	value any
}

func (*validatedBody) Close() error { return nil }

// bodyValue returns r's JSON body decoded into any (objects map[string]any, numbers
// json.Number): the validator's value when r's body is still the one it validated,
// otherwise the body decoded here.
func bodyValue(r *http.Request) (any, error) {
	if vb, ok := r.Body.(*validatedBody); ok && vb.Reader.Len() == int(vb.Reader.Size()) {
		return vb.value, nil
	}
	if r.Body == nil {
		return nil, io.ErrUnexpectedEOF
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return decodeJSONValue(data)
}

// decodeJSONValue decodes one JSON value, numbers kept as json.Number; anything after the
// value is an error.
func decodeJSONValue(data []byte) (any, error) {
	dec := gojson.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode JSON body: %w", err)
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode JSON body: unexpected data after the JSON value")
	}
	return v, nil
}

// validate reads, decodes and validates r's body, and replaces r.Body with the bytes the
// handler is to read (with the spec's defaults filled in, as kin-openapi did). The error
// is an *http.MaxBytesError or an *errs.Error: UnsupportedMediaType, MalformedJSON, or
// Invalid with a JSON Pointer per invalid field.
func (b *jsonBody) validate(r *http.Request) error {
	var data []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		data, err = io.ReadAll(r.Body)
		_ = r.Body.Close()
		if err != nil {
			if tooLarge, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return tooLarge
			}
			return invalidBody("", err.Error())
		}
		r.Body, r.ContentLength = &validatedBody{Reader: bytes.NewReader(data)}, int64(len(data))
	}
	if len(data) == 0 {
		if b.required {
			return invalidBody("", "a request body is required")
		}
		return nil
	}
	if mt := b.content.Get(r.Header.Get("Content-Type")); mt == nil {
		return errs.E(errs.UnsupportedMediaType, "Content-Type %q is not accepted here; send application/json.", r.Header.Get("Content-Type"))
	}
	value, err := decodeJSONValue(data)
	if err != nil {
		return errs.E(errs.MalformedJSON, "The request body is not valid JSON.")
	}
	setDefaults := b.defaults.apply(value)
	if err := b.schema.Validate(value); err != nil {
		return &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: bodyFieldErrors(err)}
	}
	if setDefaults {
		// kin-openapi's rewrite, byte for byte: handlers and the idempotency fingerprint
		// see the body with its defaults.
		if data, err = openapi3filter.RegisteredBodyEncoder("application/json")(value); err != nil {
			return invalidBody("", "rewriting failed: "+err.Error())
		}
		r.ContentLength = int64(len(data))
	}
	r.Body = &validatedBody{Reader: bytes.NewReader(data), value: value}
	return nil
}

func invalidBody(pointer, msg string) *errs.Error {
	return &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: []errs.FieldError{{Pointer: pointer, Message: msg}}}
}

// bodyFieldErrors lists the findings of a validation error, sorted by pointer, in
// kin-openapi's words. A failed anyOf/oneOf/allOf is one finding at its value, as it was.
func bodyFieldErrors(err error) []errs.FieldError {
	verr, ok := errors.AsType[*jsonschema.ValidationError](err)
	if !ok {
		return []errs.FieldError{{Pointer: "", Message: err.Error()}}
	}
	var out []errs.FieldError
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		at := pointerOf(e.InstanceLocation)
		add := func(pointer, msg string) { out = append(out, errs.FieldError{Pointer: pointer, Message: msg}) }
		switch k := e.ErrorKind.(type) {
		case *kind.Schema, *kind.Group, *kind.Reference:
			for _, c := range e.Causes {
				walk(c)
			}
		case *kind.AnyOf:
			add(at, `doesn't match any schema from "anyOf"`)
		case *kind.AllOf:
			add(at, `doesn't match all schemas from "allOf"`)
		case *kind.OneOf:
			if len(k.Subschemas) > 1 {
				add(at, fmt.Sprintf(`value matches more than one schema from "oneOf" (matches schemas at indices %v)`, k.Subschemas))
			} else {
				add(at, `value doesn't match any schema from "oneOf"`)
			}
		case *kind.Not: // only the converter writes `not`: {"not": {"type": "null"}}
			add(at, "Value is not nullable")
		case *kind.Type:
			add(at, typeMessage(k))
		case *kind.Required:
			for _, name := range k.Missing {
				add(at+"/"+escapePointer(name), fmt.Sprintf("property %q is missing", name))
			}
		case *kind.AdditionalProperties:
			for _, name := range k.Properties {
				add(at, fmt.Sprintf("property %q is unsupported", name))
			}
		case *kind.Enum:
			allowed, _ := json.Marshal(slices.DeleteFunc(slices.Clone(k.Want), func(v any) bool { return v == nil }))
			add(at, "value is not one of the allowed values "+string(allowed))
		case *kind.Format:
			add(at, formatMessage(k))
		case *kind.MinLength:
			add(at, fmt.Sprintf("minimum string length is %d", k.Want))
		case *kind.MaxLength:
			add(at, fmt.Sprintf("maximum string length is %d", k.Want))
		case *kind.Pattern:
			add(at, fmt.Sprintf(`string doesn't match the regular expression "%s"`, k.Want))
		case *kind.Minimum:
			add(at, fmt.Sprintf("number must be at least %g", ratFloat(k.Want)))
		case *kind.Maximum:
			add(at, fmt.Sprintf("number must be at most %g", ratFloat(k.Want)))
		case *kind.ExclusiveMinimum:
			add(at, fmt.Sprintf("number must be more than %g", ratFloat(k.Want)))
		case *kind.ExclusiveMaximum:
			add(at, fmt.Sprintf("number must be less than %g", ratFloat(k.Want)))
		case *kind.MultipleOf:
			add(at, fmt.Sprintf("number must be a multiple of %g", ratFloat(k.Want)))
		case *kind.MinItems:
			add(at, fmt.Sprintf("minimum number of items is %d", k.Want))
		case *kind.MaxItems:
			add(at, fmt.Sprintf("maximum number of items is %d", k.Want))
		case *kind.UniqueItems:
			add(at, "duplicate items found")
		case *kind.MinProperties:
			add(at, fmt.Sprintf("there must be at least %d properties", k.Want))
		case *kind.MaxProperties:
			add(at, fmt.Sprintf("there must be at most %d properties", k.Want))
		default:
			add(at, e.Error())
		}
	}
	walk(verr)
	slices.SortStableFunc(out, func(a, b errs.FieldError) int { return strings.Compare(a.Pointer, b.Pointer) })
	return out
}

func pointerOf(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escapePointer(t))
	}
	return b.String()
}

// typeMessage words a type mismatch as kin-openapi does; null where null is not allowed
// is "not nullable".
func typeMessage(k *kind.Type) string {
	if k.Got == "null" {
		return "Value is not nullable"
	}
	want := slices.DeleteFunc(slices.Clone(k.Want), func(t string) bool { return t == "null" })
	if len(want) == 1 && want[0] == "integer" && k.Got == "number" {
		return "value must be an integer"
	}
	if len(want) != 1 {
		return "value must be one of " + strings.Join(want, ", ")
	}
	switch want[0] {
	case "array", "object", "integer":
		return "value must be an " + want[0]
	}
	return "value must be a " + want[0]
}

// ratFloat converts a keyword's bound back to the float64 kin-openapi printed.
func ratFloat(r interface{ Float64() (float64, bool) }) float64 {
	f, _ := r.Float64()
	return f
}

func formatMessage(k *kind.Format) string {
	typ, name, _ := strings.Cut(strings.TrimPrefix(k.Want, "openapi-"), "-")
	prefix := fmt.Sprintf("%s doesn't match the format %q", typ, name)
	if k.Err == nil {
		return prefix
	}
	return fmt.Sprintf("%s (%v)", prefix, k.Err)
}

// defaultsPlan is where a schema's defaults go: kin-openapi sets the default of every
// property that is missing or null in an object it validates, before validating it.
type defaultsPlan struct {
	defaults   []propertyDefault
	properties map[string]*defaultsPlan
	additional *defaultsPlan
	items      *defaultsPlan
}

type propertyDefault struct {
	name  string
	value any
}

// apply fills in v's defaults and reports whether it set any.
func (p *defaultsPlan) apply(v any) bool {
	if p == nil {
		return false
	}
	set := false
	switch v := v.(type) {
	case map[string]any:
		for _, d := range p.defaults {
			if v[d.name] == nil {
				v[d.name] = deepCopyJSON(d.value)
				set = true
			}
		}
		for k, child := range v {
			if cp, ok := p.properties[k]; ok {
				set = cp.apply(child) || set
			} else if p.additional != nil {
				set = p.additional.apply(child) || set
			}
		}
	case []any:
		for _, child := range v {
			set = p.items.apply(child) || set
		}
	}
	return set
}

func deepCopyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = deepCopyJSON(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = deepCopyJSON(x)
		}
		return out
	}
	return v
}

// bodyCompiler converts the spec's schemas to JSON Schema 2020-12 and compiles them.
// Components become $defs of one document, so a schema used by many bodies is converted
// and compiled once.
type bodyCompiler struct {
	defs     map[string]any
	plans    map[*openapi3.Schema]*defaultsPlan
	planning map[*openapi3.Schema]bool
}

// compileJSONBodies compiles the application/json request body of every operation in
// spec, keyed by "METHOD /path". Operations with another kind of body are left out (the
// validator hands them to kin-openapi). An error names a schema the converter cannot
// carry over faithfully.
func compileJSONBodies(spec *openapi3.T) (map[string]*jsonBody, error) {
	bc := &bodyCompiler{defs: map[string]any{}, plans: map[*openapi3.Schema]*defaultsPlan{}, planning: map[*openapi3.Schema]bool{}}
	bodies := map[string]*jsonBody{}
	roots := map[string]string{}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			rb := op.RequestBody.Value
			mt := rb.Content.Get("application/json")
			if len(rb.Content) != 1 || mt == nil || mt.Schema == nil {
				continue
			}
			route := method + " " + path
			root, err := bc.convertRef(mt.Schema, route)
			if err != nil {
				return nil, fmt.Errorf("request body of %s: %w", route, err)
			}
			def := "body " + route
			bc.defs[def] = root
			roots[route] = def
			plan, err := bc.plan(mt.Schema.Value)
			if err != nil {
				return nil, fmt.Errorf("request body of %s: %w", route, err)
			}
			bodies[route] = &jsonBody{required: rb.Required, content: rb.Content, defaults: plan}
		}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noSchemaLoader{})
	c.AssertFormat()
	for _, f := range openAPIFormats() {
		c.RegisterFormat(f)
	}
	// Through JSON, so the compiler reads the numbers and lists it expects.
	raw, err := json.Marshal(map[string]any{"$defs": bc.defs})
	if err != nil {
		return nil, fmt.Errorf("request body schemas: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("request body schemas: %w", err)
	}
	if err := c.AddResource(bodySchemaBase, doc); err != nil {
		return nil, fmt.Errorf("request body schemas: %w", err)
	}
	for route, def := range roots {
		sch, err := c.Compile(bodySchemaBase + "#/$defs/" + escapePointer(def))
		if err != nil {
			return nil, fmt.Errorf("request body of %s: %w", route, err)
		}
		bodies[route].schema = sch
	}
	return bodies, nil
}

// noSchemaLoader refuses every external document: the converted spec is self-contained.
type noSchemaLoader struct{}

func (noSchemaLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("loading %s: request body schemas are self-contained", url)
}

const componentPrefix = "#/components/schemas/"

// convertRef converts a schema reference: a component becomes a $ref to its $defs entry.
func (bc *bodyCompiler) convertRef(ref *openapi3.SchemaRef, at string) (any, error) {
	if ref == nil || ref.Value == nil {
		return nil, fmt.Errorf("%s: unresolved schema", at)
	}
	if ref.Ref == "" {
		return bc.convert(ref.Value, at)
	}
	name, ok := strings.CutPrefix(ref.Ref, componentPrefix)
	if !ok {
		return nil, fmt.Errorf("%s: $ref %q: only %s… references are supported", at, ref.Ref, componentPrefix)
	}
	if _, done := bc.defs[name]; !done {
		bc.defs[name] = true // placeholder: a schema that refers to itself
		s, err := bc.convert(ref.Value, name)
		if err != nil {
			return nil, err
		}
		bc.defs[name] = s
	}
	return map[string]any{"$ref": "#/$defs/" + escapePointer(name)}, nil
}

// convert turns one OpenAPI 3.0 schema into JSON Schema 2020-12.
func (bc *bodyCompiler) convert(s *openapi3.Schema, at string) (any, error) {
	if s.ReadOnly || s.Discriminator != nil || s.Not != nil {
		return nil, fmt.Errorf("%s: readOnly, discriminator and not are not converted; extend compileJSONBodies first", at)
	}
	out := map[string]any{}
	var types []string
	if s.Type != nil {
		types = slices.Clone([]string(*s.Type))
	}
	xOf := len(s.AnyOf) > 0 || len(s.OneOf) > 0 || len(s.AllOf) > 0
	switch {
	case len(types) > 0 && s.Nullable:
		out["type"] = append(types, "null")
	case len(types) > 0:
		out["type"] = types
	case !s.Nullable && !xOf:
		// OpenAPI 3.0: null is valid only where nullable says so, typed or not.
		out["not"] = map[string]any{"type": "null"}
	}
	if len(s.Enum) > 0 {
		enum := slices.Clone(s.Enum)
		if s.Nullable {
			enum = append(enum, nil)
		}
		out["enum"] = enum
	}
	if s.Format != "" {
		if f := formatFor(types, s.Format); f != "" {
			out["format"] = f
		}
	}
	// Numbers.
	if s.Min != nil {
		if s.ExclusiveMin.Bool != nil && *s.ExclusiveMin.Bool {
			out["exclusiveMinimum"] = *s.Min
		} else {
			out["minimum"] = *s.Min
		}
	}
	if s.Max != nil {
		if s.ExclusiveMax.Bool != nil && *s.ExclusiveMax.Bool {
			out["exclusiveMaximum"] = *s.Max
		} else {
			out["maximum"] = *s.Max
		}
	}
	if s.ExclusiveMin.Value != nil || s.ExclusiveMax.Value != nil {
		return nil, fmt.Errorf("%s: numeric exclusiveMinimum/exclusiveMaximum are OpenAPI 3.1", at)
	}
	if s.MultipleOf != nil {
		out["multipleOf"] = *s.MultipleOf
	}
	// Strings.
	if s.MinLength != 0 {
		out["minLength"] = s.MinLength
	}
	if s.MaxLength != nil {
		out["maxLength"] = *s.MaxLength
	}
	if s.Pattern != "" {
		out["pattern"] = s.Pattern
	}
	// Arrays.
	if s.Items != nil {
		items, err := bc.convertRef(s.Items, at+"/items")
		if err != nil {
			return nil, err
		}
		out["items"] = items
	}
	if s.MinItems != 0 {
		out["minItems"] = s.MinItems
	}
	if s.MaxItems != nil {
		out["maxItems"] = *s.MaxItems
	}
	if s.UniqueItems {
		out["uniqueItems"] = true
	}
	// Objects.
	if len(s.Properties) > 0 {
		props := map[string]any{}
		for name, p := range s.Properties {
			if p != nil && p.Value != nil && p.Value.ReadOnly {
				return nil, fmt.Errorf("%s/properties/%s: readOnly properties are not converted; extend compileJSONBodies first", at, name)
			}
			c, err := bc.convertRef(p, at+"/properties/"+name)
			if err != nil {
				return nil, err
			}
			props[name] = c
		}
		out["properties"] = props
	}
	if len(s.Required) > 0 {
		out["required"] = slices.Clone(s.Required)
	}
	switch ap := s.AdditionalProperties; {
	case ap.Has != nil && !*ap.Has:
		out["additionalProperties"] = false
	case ap.Schema != nil:
		c, err := bc.convertRef(ap.Schema, at+"/additionalProperties")
		if err != nil {
			return nil, err
		}
		out["additionalProperties"] = c
	}
	if s.MinProps != 0 {
		out["minProperties"] = s.MinProps
	}
	if s.MaxProps != nil {
		out["maxProperties"] = *s.MaxProps
	}
	for kw, list := range map[string]openapi3.SchemaRefs{"anyOf": s.AnyOf, "oneOf": s.OneOf, "allOf": s.AllOf} {
		if len(list) == 0 {
			continue
		}
		var subs []any
		for i, sub := range list {
			c, err := bc.convertRef(sub, fmt.Sprintf("%s/%s/%d", at, kw, i))
			if err != nil {
				return nil, err
			}
			subs = append(subs, c)
		}
		out[kw] = subs
	}
	return out, nil
}

// plan builds the defaults plan of s; nil when nothing below s has a default.
func (bc *bodyCompiler) plan(s *openapi3.Schema) (*defaultsPlan, error) {
	if s == nil {
		return nil, nil
	}
	if p, ok := bc.plans[s]; ok || bc.planning[s] {
		return p, nil // a recursive schema's defaults are found on the way down
	}
	bc.planning[s] = true
	defer delete(bc.planning, s)
	p := &defaultsPlan{properties: map[string]*defaultsPlan{}}
	for _, name := range sortedKeys(s.Properties) {
		prop := s.Properties[name].Value
		if prop.Default != nil {
			p.defaults = append(p.defaults, propertyDefault{name: name, value: prop.Default})
		}
		child, err := bc.plan(prop)
		if err != nil {
			return nil, err
		}
		if child != nil {
			p.properties[name] = child
		}
	}
	var err error
	if ap := s.AdditionalProperties.Schema; ap != nil {
		if p.additional, err = bc.plan(ap.Value); err != nil {
			return nil, err
		}
	}
	if s.Items != nil {
		if p.items, err = bc.plan(s.Items.Value); err != nil {
			return nil, err
		}
	}
	for _, list := range []openapi3.SchemaRefs{s.AnyOf, s.OneOf, s.AllOf} {
		for _, sub := range list {
			if sp, err := bc.plan(sub.Value); err != nil || sp != nil {
				return nil, errors.New("a default under anyOf/oneOf/allOf is not carried over; extend compileJSONBodies first")
			}
		}
	}
	if len(p.defaults) == 0 && len(p.properties) == 0 && p.additional == nil && p.items == nil {
		p = nil
	}
	bc.plans[s] = p
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// formatFor names the converted format of an OpenAPI format on a schema of types: the
// formats kin-openapi checks, and no other (JSON Schema's own "uuid" or "email" would
// accept or refuse differently). "" leaves the format out.
func formatFor(types []string, format string) string {
	isType := func(t string) bool { return len(types) == 0 || slices.Contains(types, t) }
	switch {
	case isType("string") && openapi3.SchemaStringFormats[format] != nil:
		return "openapi-string-" + format
	case isType("integer") && !isType("number") && openapi3.SchemaIntegerFormats[format] != nil:
		return "openapi-integer-" + format
	case isType("number") && openapi3.SchemaNumberFormats[format] != nil:
		return "openapi-number-" + format
	}
	return ""
}

// openAPIFormats wraps kin-openapi's format validators (with Kiln's uuid) as JSON Schema
// formats, so a value passes or fails a format exactly as it did.
func openAPIFormats() []*jsonschema.Format {
	var out []*jsonschema.Format
	for name, f := range openapi3.SchemaStringFormats {
		out = append(out, &jsonschema.Format{Name: "openapi-string-" + name, Validate: func(v any) error {
			if s, ok := v.(string); ok {
				return f.Validate(s)
			}
			return nil
		}})
	}
	for name, f := range openapi3.SchemaIntegerFormats {
		out = append(out, &jsonschema.Format{Name: "openapi-integer-" + name, Validate: func(v any) error {
			n, ok := jsonFloat(v)
			switch {
			case !ok:
				return nil
			case n == float64(math.MaxInt64): // MaxInt64 rounds up to 2^63 as a float64
				return f.Validate(math.MaxInt64)
			case n >= float64(math.MinInt64) && n < float64(math.MaxInt64):
				return f.Validate(int64(n))
			}
			return fmt.Errorf("value should be between %v and %v", int64(math.MinInt64), int64(math.MaxInt64))
		}})
	}
	for name, f := range openapi3.SchemaNumberFormats {
		out = append(out, &jsonschema.Format{Name: "openapi-number-" + name, Validate: func(v any) error {
			if n, ok := jsonFloat(v); ok {
				return f.Validate(n)
			}
			return nil
		}})
	}
	return out
}

// jsonFloat reads a decoded JSON number as kin-openapi did: json.Number to float64.
func jsonFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case gojson.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	}
	return 0, false
}
