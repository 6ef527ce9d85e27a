package server

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	gojson "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/errs"
)

func init() {
	openapi3filter.RegisterBodyDecoder("application/json", decodeJSONBody)
	// Ids are UUIDs (v7): a malformed one is a field error from the validator, not a
	// parse failure deeper in the generated code.
	openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562))
}

// decodeJSONBody decodes a JSON request body for validation. goccy/go-json decodes a 1 KB
// body into `any` about twice as fast as encoding/json on the same input (see the README's
// performance section); numbers stay json.Number, as kin-openapi expects. Anything after
// the first value is an error, not silently ignored.
func decodeJSONBody(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
	dec := gojson.NewDecoder(body)
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &openapi3filter.ParseError{Kind: openapi3filter.KindInvalidFormat, Cause: err}
	}
	if err := dec.Decode(new(any)); !errors.Is(err, io.EOF) {
		return nil, &openapi3filter.ParseError{Kind: openapi3filter.KindInvalidFormat, Reason: "unexpected data after the JSON value"}
	}
	return v, nil
}

// validateRequests checks every request against the spec before any handler runs.
// Authentication is not checked here: the auth middleware owns it. The spec operation is
// found from the route template the mux already matched (one map lookup), not by a second
// router walking every path. JSON bodies are read and decoded once (jsonBody); parameters,
// and any body that is not JSON, go through openapi3filter.
func (s *Server) validateRequests(spec *openapi3.T) func(http.Handler) http.Handler {
	operations := operationsOf(spec)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				next.ServeHTTP(w, r) // served by the GET route; the spec lists GET only
				return
			}
			op, ok := operations[s.routeOf(r)]
			if !ok {
				s.respondError(w, r, errs.E(errs.NotFound, "no operation matches this request"))
				return
			}
			if err := op.validate(r); err != nil {
				s.respondError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// operationsOf prepares the validation of every operation in spec, keyed by
// "METHOD /path".
func operationsOf(spec *openapi3.T) map[string]*operation {
	bodies := jsonBodies(spec)
	operations := map[string]*operation{}
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			route := method + " " + path
			o := &operation{
				route: &routers.Route{Spec: spec, Path: path, PathItem: item, Method: method, Operation: op},
				body:  bodies[route],
			}
			o.legacyBody = op.RequestBody != nil && (o.body == nil || len(op.RequestBody.Value.Content) > 1)
			// The parameters openapi3filter.ValidateRequest checks, in its order: the
			// path item's, unless the operation overrides them, then the operation's.
			for _, p := range item.Parameters {
				if op.Parameters.GetByInAndName(p.Value.In, p.Value.Name) == nil {
					o.params = append(o.params, p.Value)
				}
			}
			for _, p := range op.Parameters {
				o.params = append(o.params, p.Value)
			}
			for _, p := range o.params {
				o.inPath = o.inPath || p.In == openapi3.ParameterInPath
				o.inQuery = o.inQuery || p.In == openapi3.ParameterInQuery
				if p.In == openapi3.ParameterInHeader {
					o.headers = append(o.headers, p.Name)
				}
			}
			operations[route] = o
		}
	}
	return operations
}

// operation is what validating one operation's requests takes.
type operation struct {
	route           *routers.Route
	params          []*openapi3.Parameter
	inPath, inQuery bool      // some of params are in the path, in the query
	headers         []string  // the names of the header parameters
	body            *jsonBody // a JSON body
	legacyBody      bool      // a body of another media type (too), validated by openapi3filter
}

var (
	paramsOnly = &openapi3filter.Options{MultiError: true, ExcludeRequestBody: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	everything = &openapi3filter.Options{MultiError: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
)

func (o *operation) input(r *http.Request, options *openapi3filter.Options) *openapi3filter.RequestValidationInput {
	in := &openapi3filter.RequestValidationInput{Request: r, Route: o.route, Options: options}
	if o.inPath || o.legacyBody {
		in.PathParams = pathParams(o.route.Path, r.URL.Path)
	}
	if o.inQuery || o.legacyBody {
		in.QueryParams = r.URL.Query()
	}
	return in
}

// validate checks r's parameters and body. A body that cannot be read as JSON of the
// right media type (413, 415, malformed) wins over field errors, as it did when
// kin-openapi checked both; otherwise the parameters' field errors come first.
func (o *operation) validate(r *http.Request) error {
	// An operation that takes JSON or another media type (a document: JSON or a multipart
	// upload) has its JSON bodies validated as JSON, so they are held to the same rules.
	body, legacy := o.body, o.legacyBody
	if legacy && body != nil {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
			legacy = false
		} else {
			body = nil
		}
	}
	var paramErr error
	switch textFields := textParamFields(r, o.headers); {
	case len(textFields) > 0:
		paramErr = &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: textFields}
	case legacy:
		if err := openapi3filter.ValidateRequest(r.Context(), o.input(r, everything)); err != nil {
			paramErr = requestProblem(err)
		}
	case len(o.params) > 0:
		// Parameter by parameter, as ValidateRequest does, without its security check,
		// which with the no-op authentication function only cost allocations.
		input := o.input(r, paramsOnly)
		var me openapi3.MultiError
		for _, p := range o.params {
			if err := openapi3filter.ValidateParameter(r.Context(), input, p); err != nil {
				me = append(me, err)
			}
		}
		if len(me) > 0 {
			paramErr = requestProblem(me)
		}
	}
	if body == nil {
		return paramErr
	}
	bodyErr := body.validate(r)
	fieldsOf := func(err error) ([]errs.FieldError, bool) {
		if e, ok := err.(*errs.Error); ok && e.Code == errs.Invalid { //nolint:errorlint // both are built right here, never wrapped
			return e.Fields, true
		}
		return nil, false
	}
	switch paramFields, paramsInvalid := fieldsOf(paramErr); {
	case bodyErr == nil:
		return paramErr
	case paramErr == nil:
		return bodyErr
	case !paramsInvalid:
		return paramErr
	default:
		bodyFields, ok := fieldsOf(bodyErr)
		if !ok {
			return bodyErr
		}
		return &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema.", Fields: append(paramFields, bodyFields...)}
	}
}

// pathParams pairs the {name} segments of a route template with the segments of a path
// the mux matched to it.
func pathParams(template, path string) map[string]string {
	params := map[string]string{}
	names, values := strings.Split(template, "/"), strings.Split(path, "/")
	for i, n := range names {
		if i < len(values) && strings.HasPrefix(n, "{") && strings.HasSuffix(n, "}") {
			params[n[1:len(n)-1]] = values[i]
		}
	}
	return params
}

// requestProblem turns kin-openapi's validation errors into one domain error with a
// JSON Pointer per invalid field. Malformed JSON, a wrong Content-Type and an oversized
// body get their own codes.
func requestProblem(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return tooLarge
	}
	var reqErrs []*openapi3filter.RequestError
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		for _, e := range multi {
			if re, ok := errors.AsType[*openapi3filter.RequestError](e); ok {
				reqErrs = append(reqErrs, re)
			}
		}
	} else if re, ok := errors.AsType[*openapi3filter.RequestError](err); ok {
		reqErrs = append(reqErrs, re)
	}
	if len(reqErrs) == 0 {
		if errors.Is(err, openapi3filter.ErrAuthenticationServiceMissing) {
			return err
		}
		return errs.E(errs.NotFound, "no operation matches this request")
	}
	out := &errs.Error{Code: errs.Invalid, Message: "The request does not match the API schema."}
	for _, re := range reqErrs {
		if re.RequestBody != nil && strings.HasPrefix(re.Reason, "header Content-Type has unexpected value") {
			return errs.E(errs.UnsupportedMediaType, "Content-Type %q is not accepted here; send application/json.", contentTypeOf(re))
		}
		if _, ok := errors.AsType[*openapi3filter.ParseError](re.Err); ok && re.RequestBody != nil {
			return errs.E(errs.MalformedJSON, "The request body is not valid JSON.")
		}
		out.Fields = append(out.Fields, fieldErrors(re)...)
	}
	return out
}

func contentTypeOf(re *openapi3filter.RequestError) string {
	if re.Input != nil && re.Input.Request != nil {
		return re.Input.Request.Header.Get("Content-Type")
	}
	return ""
}

// fieldErrors lists the invalid fields of one request error; schema errors inside it
// become pointers into the body ("/name"; "" is the whole body) or the parameter
// ("/query/limit").
func fieldErrors(re *openapi3filter.RequestError) []errs.FieldError {
	base := ""
	if re.Parameter != nil {
		base = "/" + re.Parameter.In + "/" + escapePointer(re.Parameter.Name)
	}
	if fields := schemaFields(base, re.Err); len(fields) > 0 {
		return fields
	}
	msg := re.Reason
	if re.Err != nil {
		msg = re.Err.Error()
	}
	if base == "" && errors.Is(re.Err, openapi3filter.ErrInvalidRequired) {
		msg = "a request body is required"
	}
	return []errs.FieldError{{Pointer: base, Message: msg}}
}

// schemaFields turns the schema errors in err into field errors under pointer base.
func schemaFields(base string, err error) []errs.FieldError {
	var schemaErrs []*openapi3.SchemaError
	var multi openapi3.MultiError
	if errors.As(err, &multi) {
		for _, e := range multi {
			if se, ok := errors.AsType[*openapi3.SchemaError](e); ok {
				schemaErrs = append(schemaErrs, se)
			}
		}
	} else if se, ok := errors.AsType[*openapi3.SchemaError](err); ok {
		schemaErrs = append(schemaErrs, se)
	}
	out := make([]errs.FieldError, 0, len(schemaErrs))
	for _, se := range schemaErrs {
		pointer := base
		for _, part := range se.JSONPointer() {
			pointer += "/" + escapePointer(part)
		}
		out = append(out, errs.FieldError{Pointer: pointer, Message: se.Reason})
	}
	return out
}

// pointerEscaper escapes a JSON Pointer token (RFC 6901).
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// escapePointer escapes one JSON Pointer token (RFC 6901).
func escapePointer(s string) string {
	return pointerEscaper.Replace(s)
}
