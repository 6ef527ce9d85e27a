package server

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/gen/api"
)

// TestRequestBudgetInSpec: every string and array a client sends (request bodies, query
// and path parameters) has a bound in the spec, so validation refuses oversized input
// before a handler spends work on it (issue 12). A free-form JSON value (no type: a tool's
// parameters schema, a job's payload) is bounded by the body limit only.
func TestRequestBudgetInSpec(t *testing.T) {
	t.Parallel()
	doc, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	var unbounded []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
				if p.Value.In == "header" || p.Value.Schema == nil {
					continue
				}
				unbounded = append(unbounded, unboundedIn(where+" "+p.Value.In+" "+p.Value.Name, p.Value.Schema, map[*openapi3.Schema]bool{})...)
			}
			if op.RequestBody == nil {
				continue
			}
			for media, c := range op.RequestBody.Value.Content {
				if c.Schema != nil && media == "application/json" {
					unbounded = append(unbounded, unboundedIn(where+" body", c.Schema, map[*openapi3.Schema]bool{})...)
				}
			}
		}
	}
	slices.Sort(unbounded)
	for _, u := range unbounded {
		if !boundedElsewhere[u] {
			t.Errorf("unbounded: %s", u)
		}
	}
}

// boundedElsewhere are the unbounded values with a bound that the spec cannot state.
var boundedElsewhere = map[string]bool{
	// rag.max_document_bytes (10 MiB by default, configurable) is the route's body limit.
	"POST /v1/knowledge-bases/{id}/documents body/text: string without maxLength": true,
}

// boundedPattern is a pattern anchored at both ends whose every repetition is bounded.
var boundedPattern = regexp.MustCompile(`^\^[^*+]*\$$`)

// unboundedIn lists the strings, arrays and maps under s without a bound.
func unboundedIn(where string, ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) []string {
	s := ref.Value
	if s == nil || seen[s] {
		return nil
	}
	seen[s] = true
	defer delete(seen, s)
	var out []string
	for _, sub := range slices.Concat(s.AllOf, s.OneOf, s.AnyOf) {
		out = append(out, unboundedIn(where, sub, seen)...)
	}
	switch {
	case s.Type.Is(openapi3.TypeString):
		bounded := s.MaxLength != nil || len(s.Enum) > 0 || slices.Contains([]string{"uuid", "date-time", "date"}, s.Format) ||
			s.Pattern != "" && boundedPattern.MatchString(s.Pattern) && !strings.Contains(s.Pattern, ",}")
		if !bounded {
			out = append(out, where+": string without maxLength")
		}
	case s.Type.Is(openapi3.TypeArray):
		if s.MaxItems == nil {
			out = append(out, where+": array without maxItems")
		}
		if s.Items != nil {
			out = append(out, unboundedIn(where+"/items", s.Items, seen)...)
		}
	case s.Type.Is(openapi3.TypeObject) || len(s.Properties) > 0:
		for name, p := range s.Properties {
			out = append(out, unboundedIn(where+"/"+name, p, seen)...)
		}
		if ap := s.AdditionalProperties.Schema; ap != nil {
			if s.MaxProps == nil {
				out = append(out, where+": map without maxProperties")
			}
			out = append(out, unboundedIn(where+"/*", ap, seen)...)
		} else if s.AdditionalProperties.Has != nil && *s.AdditionalProperties.Has && s.MaxProps == nil && len(s.Properties) > 0 {
			out = append(out, fmt.Sprintf("%s: open object without maxProperties", where))
		}
	}
	return out
}

// TestListsPagedInSpec: every list that answers a next_cursor takes limit and cursor, so
// no list answers every row at once (issue 12: sessions, orgs, members and invitations
// did), except the few whose size is bounded otherwise, each with its reason.
func TestListsPagedInSpec(t *testing.T) {
	t.Parallel()
	doc, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	boundedOtherwise := map[string]string{
		"GET /v1/admin/feature-flags":  "what platform admins create",
		"GET /v1/auth/oauth/providers": "the configured providers",
		"GET /v1/me/identities":        "one per configured provider",
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ok := op.Responses.Value("200")
			if ok == nil || ok.Value.Content["application/json"] == nil {
				continue
			}
			schema := ok.Value.Content["application/json"].Schema.Value
			if schema == nil || schema.Properties["next_cursor"] == nil {
				continue
			}
			params := map[string]bool{}
			for _, p := range op.Parameters {
				params[p.Value.In+" "+p.Value.Name] = true
			}
			where := method + " " + path
			if paged := params["query limit"] && params["query cursor"]; paged == (boundedOtherwise[where] != "") {
				t.Errorf("%s: paged %v; want limit and cursor unless bounded otherwise", where, paged)
			}
		}
	}
}

// TestRequestDefaultsAreConstants: the validator writes a request's defaults into its body
// and parameters before a handler runs, so a `default:` in a request schema must be a
// constant. A field whose absence means "take it from elsewhere" (a prompt version's model,
// a knowledge base's setting, the config) has none, and its description says where it
// comes from: ChatRequest.model once defaulted to "default", and the prompt's model was
// never used over REST (TestPromptModelWhenRequestNamesNone). Each default below was
// checked to be a constant; a new one fails until it is checked and listed.
func TestRequestDefaultsAreConstants(t *testing.T) {
	t.Parallel()
	doc, err := api.GetSpec()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string][]string{} // name=default → where
	var walk func(where, name string, ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool)
	walk = func(where, name string, ref *openapi3.SchemaRef, seen map[*openapi3.Schema]bool) {
		s := ref.Value
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		defer delete(seen, s)
		if s.Default != nil {
			v, _ := json.Marshal(s.Default)
			found[name+"="+string(v)] = append(found[name+"="+string(v)], where)
		}
		for _, sub := range slices.Concat(s.AllOf, s.OneOf, s.AnyOf) {
			walk(where, name, sub, seen)
		}
		if s.Items != nil {
			walk(where+"/items", name, s.Items, seen)
		}
		for prop, p := range s.Properties {
			walk(where+"/"+prop, prop, p, seen)
		}
		if ap := s.AdditionalProperties.Schema; ap != nil {
			walk(where+"/*", name, ap, seen)
		}
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			for _, p := range append(slices.Clone(item.Parameters), op.Parameters...) {
				if p.Value.Schema != nil {
					walk(where+" "+p.Value.In+" "+p.Value.Name, p.Value.Name, p.Value.Schema, map[*openapi3.Schema]bool{})
				}
			}
			if op.RequestBody != nil {
				for _, c := range op.RequestBody.Value.Content {
					if c.Schema != nil {
						walk(where+" body", "", c.Schema, map[*openapi3.Schema]bool{})
					}
				}
			}
		}
	}
	for _, frame := range []string{"WSConversationMessage", "WSConversationToolResults"} { // frames beside ChatRequest
		walk(frame, "", doc.Components.Schemas[frame], map[*openapi3.Schema]bool{})
	}
	constants := map[string]bool{
		`limit=20`: true, `stream=false`: true, `is_error=false`: true, `media_type="text/plain"`: true,
		`chunks=30`: true, `k=10`: true, `paused=false`: true, `required=false`: true, `grace_seconds=0`: true,
		`description=""`: true, `rollout_percent=100`: true, `sticky_by="org"`: true,
		`interval="month"`: true, `currency="USD"`: true, `unread=false`: true, `discarded=false`: true,
		`group_by="day"`: true, `format="json"`: true, `format="csv"`: true,
	}
	for d, where := range found {
		if !constants[d] {
			slices.Sort(where)
			t.Errorf("request default %s (at %s) is not known to be a constant: if the value can come from elsewhere (a prompt, a knowledge base, the config), drop the default and say so in the description; else list it here", d, strings.Join(where, ", "))
		}
	}
}
