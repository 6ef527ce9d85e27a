package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
)

// nulText is a text holding U+0000, which PostgreSQL refuses in text and jsonb.
const nulText = "a\x00b"

// nulBody builds a JSON value for schema with every string in it (every property, not only
// the required ones, one item per array, one entry per map) set to nulText, and returns the
// JSON Pointers of those strings.
func nulBody(schema *openapi3.Schema, pointer string, depth int) (any, []string) {
	if schema == nil || depth > 6 {
		return nil, nil
	}
	switch {
	case len(schema.AllOf) > 0:
		merged := map[string]any{}
		var ptrs []string
		for _, s := range schema.AllOf {
			v, p := nulBody(s.Value, pointer, depth+1)
			if m, ok := v.(map[string]any); ok {
				for k, e := range m {
					merged[k] = e
				}
				ptrs = append(ptrs, p...)
			}
		}
		return merged, ptrs
	case len(schema.OneOf) > 0:
		return nulBody(schema.OneOf[0].Value, pointer, depth+1)
	case len(schema.AnyOf) > 0:
		return nulBody(schema.AnyOf[0].Value, pointer, depth+1)
	}
	switch {
	case schema.Type.Is("string"):
		return nulText, []string{pointer}
	case schema.Type.Is("array") && schema.Items != nil:
		v, p := nulBody(schema.Items.Value, pointer+"/0", depth+1)
		if v == nil {
			return []any{}, nil
		}
		return []any{v}, p
	case schema.Type.Is("object") || len(schema.Properties) > 0:
		out := map[string]any{}
		var ptrs []string
		for name, prop := range schema.Properties {
			if prop.Value.ReadOnly {
				continue
			}
			if v, p := nulBody(prop.Value, pointer+"/"+escapePointer(name), depth+1); v != nil {
				out[name] = v
				ptrs = append(ptrs, p...)
			}
		}
		if ap := schema.AdditionalProperties.Schema; ap != nil && len(schema.Properties) == 0 {
			if v, p := nulBody(ap.Value, pointer+"/k", depth+1); v != nil {
				out["k"] = v
				ptrs = append(ptrs, p...)
			}
		}
		return out, ptrs
	case schema.Type.Is("integer") || schema.Type.Is("number"):
		return 1, nil
	case schema.Type.Is("boolean"):
		return true, nil
	}
	return nil, nil
}

// TestNULRefusedEverywhere sends U+0000 in every text input of every operation of the spec
// (every string of its JSON body, every query parameter, every path parameter) and in the
// WebSocket's frames, so an
// operation added later is covered without a change here: each must be a 400 naming the
// field, before any handler or the database sees it (PostgreSQL refused it with a 500).
func TestNULRefusedEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user := b.signUp(t, "nul@example.com").AccessToken
	key := b.createKey(t, user, apikey.Scopes).Key
	spec := testSpec(t)
	type probe struct {
		name, method, target string
		body                 any
		want                 []string // pointers that must be named
	}
	var probes []probe
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			route := method + " " + path
			params := slices.Concat(item.Parameters, op.Parameters)
			target, pathWant := path, []string(nil)
			for _, p := range params {
				if p.Value.In == openapi3.ParameterInPath {
					target = strings.ReplaceAll(target, "{"+p.Value.Name+"}", url.PathEscape(nulText))
					pathWant = []string{"/path"}
				}
			}
			if pathWant == nil {
				target = strings.NewReplacer("{", "", "}", "").Replace(target)
			}
			if pathWant != nil {
				probes = append(probes, probe{name: route + " path", method: method, target: target, want: pathWant})
			}
			for _, p := range params {
				if p.Value.In == openapi3.ParameterInQuery {
					probes = append(probes, probe{name: route + " query " + p.Value.Name, method: method,
						target: target + "?" + url.QueryEscape(p.Value.Name) + "=" + url.QueryEscape(nulText),
						want:   []string{"/query/" + p.Value.Name}})
				}
			}
			if op.RequestBody == nil {
				continue
			}
			mt := op.RequestBody.Value.Content.Get("application/json")
			if mt == nil {
				continue
			}
			body, ptrs := nulBody(mt.Schema.Value, "", 0)
			if len(ptrs) > 0 {
				sort.Strings(ptrs)
				bodyTarget := path
				for _, p := range params {
					if p.Value.In == openapi3.ParameterInPath {
						bodyTarget = strings.ReplaceAll(bodyTarget, "{"+p.Value.Name+"}", "0190a1b2-0000-7000-8000-000000000001")
					}
				}
				probes = append(probes, probe{name: route + " body", method: method, target: bodyTarget, body: body, want: ptrs})
			}
		}
	}
	// The WebSocket's frames are validated like request bodies, so U+0000 in a frame's text
	// is a field error too, not a reply that cannot be stored.
	t.Run("WebSocketFrames", func(t *testing.T) {
		t.Parallel()
		ts := httptest.NewServer(b.srv)
		t.Cleanup(ts.Close)
		ws := dialChat(t, ts, user)
		for frame, pointer := range map[string]string{
			`{"type":"chat","data":` + chatJSON(nulText) + `}`: "/data/messages/0/content",
			`{"type":"conversation.message","data":{"conversation_id":"0190a1b2-0000-7000-8000-000000000001","content":` + jsonString(nulText) + `}}`: "/data/content",
		} {
			ws.send(frame)
			p := ws.readProblem(errs.Invalid)
			if p.Errors == nil || !slices.ContainsFunc(*p.Errors, func(f api.FieldError) bool { return f.Pointer == pointer && f.Message == nulMessage }) {
				t.Errorf("frame %s: problem %+v does not name %s", frame, p, pointer)
			}
		}
	})
	if len(probes) < 100 {
		t.Fatalf("only %d probes: the walk of the spec is broken", len(probes))
	}
	for _, pr := range probes {
		t.Run(pr.name, func(t *testing.T) {
			t.Parallel()
			var req *http.Request
			if pr.body != nil {
				raw, err := json.Marshal(pr.body)
				if err != nil {
					t.Fatal(err)
				}
				req = jsonRequest(pr.method, pr.target, string(raw))
			} else {
				req = httptest.NewRequest(pr.method, pr.target, nil)
			}
			req.Header.Set("Authorization", "Bearer "+user)
			if route := pr.method + " " + routeTemplate(b, req); b.srv.auth.requirements[route].apiKey && !b.srv.auth.requirements[route].userToken {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			var res *http.Response
			if isOpenAIRoute(req) { // OpenAI's error shape, which b.do would take for a broken problem
				rec := httptest.NewRecorder()
				b.srv.ServeHTTP(rec, req)
				res = rec.Result()
			} else {
				res = b.do(t, req)
			}
			raw := readAll(res)
			if res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", res.StatusCode, raw)
			}
			if isOpenAIRoute(req) {
				var e openAIError
				if err := json.Unmarshal([]byte(raw), &e); err != nil || e.Error.Code != "invalid_request" {
					t.Fatalf("OpenAI error %s (%v)", raw, err)
				}
				for _, p := range pr.want {
					if !strings.Contains(e.Error.Message, strings.TrimPrefix(p, "/")+": must") {
						t.Errorf("message %q does not name %s", e.Error.Message, p)
					}
				}
				return
			}
			var p api.Problem
			if err := json.Unmarshal([]byte(raw), &p); err != nil || p.Errors == nil {
				t.Fatalf("problem %s (%v)", raw, err)
			}
			named := map[string]bool{}
			for _, f := range *p.Errors {
				if strings.Contains(f.Message, "NUL character") {
					named[f.Pointer] = true
				}
			}
			for _, want := range pr.want {
				if !named[want] {
					t.Errorf("no NUL field error at %q: %s", want, raw)
				}
			}
		})
	}
}

// routeTemplate is the path template the server routes req to.
func routeTemplate(b *bundle, req *http.Request) string {
	_, pattern := b.srv.mux.Handler(req)
	_, path, _ := strings.Cut(pattern, " ")
	return path
}
