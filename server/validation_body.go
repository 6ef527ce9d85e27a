package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	gojson "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/errs"
)

// JSON request bodies are read once into one buffer, decoded once (go-json's Unmarshal),
// and checked by kin-openapi's walk of the operation's schema, the same walk as before, so
// verdicts, pointers, messages and defaults stay what they were. What went is
// openapi3filter.ValidateRequestBody around the walk: its growing read of the body, its
// streaming decoder, and the errors built per request, which cost more than the walk (see
// docs/performance.md, which also has why the schemas are not compiled to JSON Schema:
// jsonschema/v6 was up to three times slower than the walk on Kiln's bodies).

// jsonBody is the validation of one operation's application/json request body.
type jsonBody struct {
	required bool
	content  openapi3.Content
	schema   *openapi3.Schema
}

// bodyVisit are the options of the walk: a request (readOnly properties refused), every
// error, and defaults written into the value (setDefaults reports them).
func bodyVisit(setDefaults func()) []openapi3.SchemaValidationOption {
	return []openapi3.SchemaValidationOption{openapi3.VisitAsRequest(), openapi3.MultiErrors(), openapi3.DefaultsSet(setDefaults)}
}

// validatedBody replaces a validated request's body: the bytes for the generated strict
// handlers, and the value they were decoded into for handlers that can take it as it is
// (bodyOf), so such a body is parsed once.
type validatedBody struct {
	*bytes.Reader
	data  []byte
	value any
}

func (*validatedBody) Close() error { return nil }

// bodyOf returns r's JSON body, as bytes and decoded into any (objects map[string]any,
// numbers json.Number): the validator's when r's body is still the one it validated,
// otherwise read and decoded here.
func bodyOf(r *http.Request) (any, []byte, error) {
	if vb, ok := r.Body.(*validatedBody); ok && vb.value != nil && vb.Len() == int(vb.Size()) {
		return vb.value, vb.data, nil
	}
	if r.Body == nil {
		return nil, nil, io.ErrUnexpectedEOF
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	v, err := decodeJSONValue(data)
	return v, data, err
}

// decodeJSONValue decodes one JSON value, numbers kept as json.Number (exact, and
// written back as they came when defaults are added); anything after the value is an
// error. Decoded strings share data's bytes, which nothing modifies.
func decodeJSONValue(data []byte) (any, error) {
	var v any
	if err := gojson.UnmarshalWithOption(data, &v, useNumber, gojson.DecodeNoCopyString()); err != nil {
		return nil, fmt.Errorf("decode JSON body: %w", err)
	}
	return v, nil
}

// useNumber is go-json's UseNumber for Unmarshal, which takes it as an option only through
// a Decoder; Unmarshal is several times faster than a Decoder on a buffered body (see
// docs/performance.md).
var useNumber = func() gojson.DecodeOptionFunc {
	d := gojson.NewDecoder(strings.NewReader("0"))
	d.UseNumber()
	var withNumber gojson.DecodeOption
	if err := d.DecodeWithOption(new(any), func(o *gojson.DecodeOption) { withNumber = *o }); err != nil {
		panic(fmt.Sprintf("go-json: %v", err))
	}
	return func(o *gojson.DecodeOption) { o.Flags |= withNumber.Flags }
}()

// validate reads, decodes and validates r's body, and replaces r.Body with the bytes the
// handler is to read (with the spec's defaults filled in, as kin-openapi did). The error
// is an *http.MaxBytesError or an *errs.Error: UnsupportedMediaType, MalformedJSON, or
// Invalid with a JSON Pointer per invalid field (a string holding U+0000 is one).
func (b *jsonBody) validate(r *http.Request) error {
	var data []byte
	if r.Body != nil && r.Body != http.NoBody {
		var err error
		data, err = readBody(r)
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
	setDefaults := false
	nul := nulFields("", value)
	if err := b.schema.VisitJSON(value, bodyVisit(func() { setDefaults = true })...); err != nil || len(nul) > 0 {
		var fields []errs.FieldError
		if err != nil {
			if fields = schemaFields("", err); len(fields) == 0 {
				fields = []errs.FieldError{{Pointer: "", Message: err.Error()}}
			}
		}
		return &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: append(fields, nul...)}
	}
	if setDefaults {
		// kin-openapi's rewrite, byte for byte: handlers and the idempotency fingerprint
		// see the body with its defaults.
		if data, err = openapi3filter.RegisteredBodyEncoder("application/json")(value); err != nil {
			return invalidBody("", "rewriting failed: "+err.Error())
		}
		r.ContentLength = int64(len(data))
	}
	r.Body = &validatedBody{Reader: bytes.NewReader(data), data: data, value: value}
	return nil
}

// readBody reads r's body into one buffer of its declared length, not io.ReadAll's
// doubling ones.
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength <= 0 {
		return io.ReadAll(r.Body)
	}
	data := make([]byte, r.ContentLength)
	n, err := io.ReadFull(r.Body, data)
	if err != nil {
		return data[:n], err
	}
	var probe [1]byte // the body is longer than it said (limitBody still caps it)
	if m, _ := r.Body.Read(probe[:]); m > 0 {
		rest, err := io.ReadAll(r.Body)
		return append(append(data, probe[0]), rest...), err
	}
	return data, nil
}

func invalidBody(pointer, msg string) *errs.Error {
	return &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: []errs.FieldError{{Pointer: pointer, Message: msg}}}
}

// jsonBodies returns the application/json request body of every operation in spec, keyed
// by "METHOD /path". Operations without one are left out, and a body of another media
// type goes to openapi3filter.
func jsonBodies(spec *openapi3.T) map[string]*jsonBody {
	bodies := map[string]*jsonBody{}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value == nil {
				continue
			}
			rb := op.RequestBody.Value
			mt := rb.Content["application/json"]
			if mt == nil || mt.Schema == nil || mt.Schema.Value == nil {
				continue
			}
			bodies[method+" "+path] = &jsonBody{required: rb.Required, content: rb.Content, schema: mt.Schema.Value}
		}
	}
	return bodies
}
