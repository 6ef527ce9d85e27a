package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/errs"
)

// outcome is what a client sees of a request's validation: the problem code and the
// pointers and messages of its field errors, or the body the handler reads.
type outcome struct {
	code     errs.Code // "" when valid
	pointers []string  // sorted, unique
	messages []string  // "pointer: message", sorted, unique
	body     string    // what the handler reads, when valid
}

func outcomeOf(t testing.TB, op *operation, method, path, contentType, body string) outcome {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	err := op.validate(req)
	if err == nil {
		var got []byte
		if req.Body != nil {
			got, _ = io.ReadAll(req.Body)
		}
		return outcome{body: string(got)}
	}
	var e *errs.Error
	if !errors.As(err, &e) {
		return outcome{code: errs.RequestTooLarge}
	}
	out := outcome{code: e.Code}
	for _, f := range e.Fields {
		out.pointers = append(out.pointers, f.Pointer)
		out.messages = append(out.messages, f.Pointer+": "+f.Message)
	}
	slices.Sort(out.pointers)
	slices.Sort(out.messages)
	out.pointers, out.messages = slices.Compact(out.pointers), slices.Compact(out.messages)
	return out
}

// kinOperations returns the operations of the test spec twice: as the validator checks
// them, and as openapi3filter.ValidateRequest checked them before, bodies included.
func kinOperations(t testing.TB) (fast, kin map[string]*operation) {
	t.Helper()
	spec := testSpec(t)
	fast = operationsOf(spec)
	kin = map[string]*operation{}
	for route, op := range fast {
		legacy := *op
		legacy.legacyBody, legacy.body = op.body != nil || op.legacyBody, nil
		kin[route] = &legacy
	}
	return fast, kin
}

// pathOf fills a route template's parameters with a valid id.
func pathOf(template string) string {
	parts := strings.Split(template, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") {
			parts[i] = "0190a1d2-0000-7000-8000-000000000001"
			if p == "{name}" || p == "{label}" || p == "{provider}" || p == "{key}" {
				parts[i] = "abc"
			}
		}
	}
	return strings.Join(parts, "/")
}

// bodyCases are representative bodies of several operations: valid ones, ones that get
// defaults, and each kind of rule broken.
var bodyCases = []struct{ route, body string }{
	{"POST /test/echo", `{"name":"x"}`},
	{"POST /test/echo", `{"name":"a name that is far too long","count":0,"tags":["ok","toolong"]}`},
	{"POST /test/echo", `{"name":"x","extra":1}`},
	{"POST /test/echo", `[1, 2]`},
	{"POST /test/echo", `null`},
	{"POST /test/echo", `"text"`},
	{"POST /test/echo", `{"name":null}`},
	{"POST /test/echo", `{"name":"x","count":1.5}`},
	{"POST /test/echo", `{"name":"x","count":"3"}`},
	{"POST /test/echo", `{"name": "x",`},
	{"POST /test/echo", `{"name": "x"} {"name": "y"}`},
	{"POST /test/echo", ``},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"model":null,"stream":null}`},
	{"POST /v1/chat/completions", `{"messages":[]}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"robot","content":"hi","mood":"sunny"}],"temperature":3,"temprature":1}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","parts":[{"type":"image","image_data":"not base64!","media_type":"image/tiff"}]}]}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"server_tools":["a","a","b c"],"stop":["", "x"],"seed":1e30}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"tool_choice":{"mode":"tool"},"max_tokens":0,"top_p":-0.5}`},
	{"POST /v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"seed":9223372036854775807,"max_tokens":1.0}`},
	{"POST /v1/chat/completions", `{"messages":{"role":"user"}}`},
	{"POST /v1/api-keys", `{"name":"k","scopes":["chat"]}`},
	{"POST /v1/api-keys", `{"name":"k","scopes":["chat","chat","nope"],"expires_at":"tomorrow"}`},
	{"POST /v1/api-keys", `{"name":"","scopes":[],"expires_at":null}`},
	{"POST /v1/api-keys", `{"name":"k","scopes":["chat"],"expires_at":"2030-01-02T03:04:05Z"}`},
	{"POST /v1/api-keys/{id}/rotate", ``},
	{"POST /v1/api-keys/{id}/rotate", `{}`},
	{"POST /v1/api-keys/{id}/rotate", `{"grace_seconds":-1}`},
	{"PUT /v1/admin/feature-flags/{key}", `{"enabled":true}`},
	{"PUT /v1/admin/feature-flags/{key}", `{"enabled":true,"rollout_percent":null,"sticky_by":"team"}`},
	{"POST /v1/conversations/{id}/tool-results", `{"results":[{"tool_call_id":"c1","content":"42"},{"tool_call_id":"","content":"x","is_error":"no"}]}`},
	{"POST /v1/conversations/{id}/tool-results", `{"results":[{"tool_call_id":"c1","content":"42"}]}`},
	{"PATCH /v1/conversations/{id}", `{}`},
	{"PATCH /v1/conversations/{id}", `{"metadata":{"a":"b","c":1,"d":null}}`},
	{"POST /v1/orgs/{id}/transfer-ownership", `{"user_id":"not-a-uuid"}`},
	{"POST /v1/orgs/{id}/transfer-ownership", `{"user_id":"0190a1d2-0000-7000-8000-000000000001"}`},
	{"POST /v1/prompts", `{"name":"Bad Name","version":{"messages":[{"role":"user","content":"hi"}],"variables":[{"name":"1x","type":"date","default":null}]}}`},
	{"POST /v1/prompts", `{"name":"ok","version":{"messages":[{"role":"user","content":"hi"}],"variables":[{"name":"x","type":"string"}]}}`},
	{"POST /v1/auth/signup", `{"email":"a@example.com","password":"p","name":"n"}`},
	{"POST /v1/auth/signup", `{"email":1,"password":"","name":true}`},
	{"POST /openai/v1/chat/completions", `{"model":"default","messages":[{"role":"user","content":"hello"}]}`},
	{"POST /openai/v1/chat/completions", `{"model":"","messages":[{"content":"x"}],"n":2,"temperature":"hot","anything":{"else":1}}`},
	{"POST /openai/v1/embeddings", `{"model":"m","input":"hello"}`},
	{"POST /openai/v1/embeddings", `{"model":"m","input":["a",1]}`},
	{"POST /openai/v1/embeddings", `{"model":"m","input":[]}`},
	{"POST /openai/v1/embeddings", `{"model":"m","input":null,"dimensions":0}`},
}

// TestBodyValidatorMatchesRequestFilter holds the body validator to what
// openapi3filter.ValidateRequest answered: the same verdict and problem code, the same
// field pointers and messages, the same body (defaults included) for the handler.
func TestBodyValidatorMatchesRequestFilter(t *testing.T) {
	t.Parallel()
	fast, kin := kinOperations(t)
	for _, tc := range bodyCases {
		t.Run(tc.route+" "+tc.body, func(t *testing.T) {
			method, template, _ := strings.Cut(tc.route, " ")
			if fast[tc.route] == nil || fast[tc.route].body == nil {
				t.Fatalf("%s has no fast JSON body", tc.route)
			}
			got := outcomeOf(t, fast[tc.route], method, pathOf(template), "application/json", tc.body)
			want := outcomeOf(t, kin[tc.route], method, pathOf(template), "application/json", tc.body)
			if got.code != want.code || !slices.Equal(got.pointers, want.pointers) || got.body != want.body {
				t.Fatalf("validator: %+v\nopenapi3filter: %+v", got, want)
			}
			for _, m := range got.messages {
				if !slices.Contains(want.messages, m) {
					t.Errorf("message %q is not among %q", m, want.messages)
				}
			}
		})
	}
}

// TestBodyValidatorMediaTypes checks the body-level refusals: another media type, an
// absent body, one too large.
func TestBodyValidatorMediaTypes(t *testing.T) {
	t.Parallel()
	fast, kin := kinOperations(t)
	op, legacy := fast["POST /test/echo"], kin["POST /test/echo"]
	for _, tc := range []struct{ name, contentType, body string }{
		{"ErrForm", "application/x-www-form-urlencoded", "name=x"},
		{"ErrNoContentType", "", `{"name":"x"}`},
		{"OKCharset", "application/json; charset=utf-8", `{"name":"x"}`},
		{"ErrEmpty", "application/json", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := outcomeOf(t, op, "POST", "/test/echo", tc.contentType, tc.body)
			want := outcomeOf(t, legacy, "POST", "/test/echo", tc.contentType, tc.body)
			if got.code != want.code || !slices.Equal(got.pointers, want.pointers) || got.body != want.body {
				t.Fatalf("validator: %+v\nopenapi3filter: %+v", got, want)
			}
		})
	}
	t.Run("ErrTooLarge", func(t *testing.T) {
		req := httptest.NewRequest("POST", "/test/echo", strings.NewReader(`{"name":"`+strings.Repeat("x", 100)+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Body = http.MaxBytesReader(httptest.NewRecorder(), req.Body, 10)
		if _, ok := errors.AsType[*http.MaxBytesError](op.validate(req)); !ok {
			t.Fatal("a body over the limit is not a MaxBytesError")
		}
	})
}

// TestBodyValueIsTheValidatedOne checks that a handler reading bodyOf gets the value
// the validator decoded (defaults in), and a decoded copy once the body was replaced.
func TestBodyValueIsTheValidatedOne(t *testing.T) {
	t.Parallel()
	fast, _ := kinOperations(t)
	op := fast["PUT /v1/admin/feature-flags/{key}"]
	req := httptest.NewRequest("PUT", "/v1/admin/feature-flags/abc", strings.NewReader(`{"enabled":true}`))
	req.Header.Set("Content-Type", "application/json")
	if err := op.validate(req); err != nil {
		t.Fatal(err)
	}
	v, _, err := bodyOf(req)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := v.(map[string]any); !ok || m["sticky_by"] != "org" || m["enabled"] != true {
		t.Fatalf("value %#v", v)
	}
	if vb, ok := req.Body.(*validatedBody); !ok || vb.value == nil {
		t.Fatalf("body %T is not the validated one", req.Body)
	}
	raw, _ := io.ReadAll(req.Body)
	req.Body = io.NopCloser(bytes.NewReader(raw))
	again, _, err := bodyOf(req)
	if err != nil || again.(map[string]any)["sticky_by"] != "org" {
		t.Fatalf("decoded again: %#v, %v", again, err)
	}
}

// FuzzBodyValidator feeds arbitrary bodies to the body validator and to
// openapi3filter.ValidateRequest: both must accept or refuse alike, with the same problem
// code, pointers, and body for the handler.
//
//	go test ./server -run '^$' -fuzz FuzzBodyValidator -fuzztime 60s
func FuzzBodyValidator(f *testing.F) {
	routes := []string{}
	for _, tc := range bodyCases {
		if !slices.Contains(routes, tc.route) {
			routes = append(routes, tc.route)
		}
	}
	for _, tc := range bodyCases {
		f.Add(uint8(slices.Index(routes, tc.route)), tc.body)
	}
	fast, kin := kinOperations(f)
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		route := routes[int(which)%len(routes)]
		method, template, _ := strings.Cut(route, " ")
		got := outcomeOf(t, fast[route], method, pathOf(template), "application/json", body)
		want := outcomeOf(t, kin[route], method, pathOf(template), "application/json", body)
		if got.code != want.code || !slices.Equal(got.pointers, want.pointers) || got.body != want.body {
			t.Fatalf("%s %q\nvalidator: %+v\nopenapi3filter: %+v", route, body, got, want)
		}
	})
}

// TestDecodeJSONValueKeepsNumbers checks that bodies decode with json.Number, as
// kin-openapi's decoder did, and refuse data after the value.
func TestDecodeJSONValueKeepsNumbers(t *testing.T) {
	t.Parallel()
	v, err := decodeJSONValue([]byte(`{"seed":9007199254740993,"t":0.1}`))
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := v.(map[string]any)["seed"].(json.Number); !ok || n.String() != "9007199254740993" {
		t.Fatalf("seed %#v", v.(map[string]any)["seed"])
	}
	if _, err := decodeJSONValue([]byte(`{} {}`)); err == nil {
		t.Fatal("data after the value was accepted")
	}
}

// TestNULCheckAllocatesNothingOnCleanBodies: every JSON body is searched for U+0000, so the
// search of one without it must cost no allocation (it once built a pointer and a
// strings.Replacer per field, which made validation three times what it is); one with it
// is still named field by field.
func TestNULCheckAllocatesNothingOnCleanBodies(t *testing.T) {
	clean, err := decodeJSONValue([]byte(`{"model":"default","messages":[{"role":"user","content":"hi"},{"role":"user","content":"a/b~c"}],"metadata":{"a/b":"x","n":[1,2,{"k":"v"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = nulFields("", clean) }); n != 0 {
		t.Errorf("nulFields on a body without U+0000: %v allocations, want 0", n)
	}
	dirty, err := decodeJSONValue([]byte(`{"messages":[{"content":"ok"},{"content":"a\u0000b"}],"metadata":{"a/b":"\u0000"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range nulFields("", dirty) {
		got = append(got, f.Pointer)
	}
	if want := []string{"/messages/1/content", "/metadata/a~1b"}; !slices.Equal(got, want) {
		t.Errorf("pointers %q, want %q", got, want)
	}
}
