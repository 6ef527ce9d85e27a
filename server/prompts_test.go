package server

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// promptBody is a create request with one system message using {{tone}} and a required {{topic}}.
func promptBody(name string) map[string]any {
	return map[string]any{"name": name, "description": "support", "version": map[string]any{
		"messages": []map[string]any{
			{"role": "system", "content": "Be {{ tone }}."},
			{"role": "user", "content": "Tell me about {{topic}}."},
		},
		"variables": []map[string]any{
			{"name": "tone", "type": "string", "default": "kind"},
			{"name": "topic", "type": "string", "required": true},
			{"name": "words", "type": "integer"},
		},
		"model":      "default",
		"parameters": map[string]any{"temperature": 0.2},
		"tools":      []map[string]any{{"name": "lookup", "parameters": map[string]any{"type": "object"}}},
		"note":       "first",
	}}
}

func wantStatus(t *testing.T, res *http.Response, status int) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, readAll(res))
	}
}

func problemPointers(t *testing.T, res *http.Response) []string {
	t.Helper()
	p := decodeProblem(t, res)
	var out []string
	if p.Errors != nil {
		for _, e := range *p.Errors {
			out = append(out, e.Pointer)
		}
	}
	slices.Sort(out)
	return out
}

func TestPromptStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken

	var p api.Prompt
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), &p), 201)
	if p.Name != "support" || p.LatestVersion != 1 || len(p.Labels) != 0 {
		t.Fatalf("created %+v", p)
	}

	t.Run("ErrConflictDuplicateName", func(t *testing.T) {
		wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), nil), 409)
	})
	t.Run("ErrInvalidUndeclaredPlaceholder", func(t *testing.T) {
		body := promptBody("bad")
		body["version"].(map[string]any)["messages"] = []map[string]any{{"role": "user", "content": "{{nope}}"}}
		res := b.call(t, "POST", "/v1/prompts", owner, body, nil)
		wantStatus(t, res, 400)
		if got := problemPointers(t, res); !slices.Equal(got, []string{"/version/messages/0/content"}) {
			t.Errorf("pointers %v", got)
		}
	})
	t.Run("ErrInvalidUnknownModel", func(t *testing.T) {
		body := promptBody("bad")
		body["version"].(map[string]any)["model"] = "nope"
		wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, body, nil), 400)
	})

	t.Run("OKDiffSkipsUnchangedLines", func(t *testing.T) {
		lines := make([]string, 20)
		for i := range lines {
			lines[i] = strconv.Itoa(i + 1)
		}
		body := promptBody("long")
		body["version"].(map[string]any)["messages"] = []map[string]any{{"role": "system", "content": strings.Join(lines, "\n")}}
		wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, body, nil), 201)
		lines[9] = "ten"
		v2 := promptBody("")["version"].(map[string]any)
		v2["messages"] = []map[string]any{{"role": "system", "content": strings.Join(lines, "\n")}}
		wantStatus(t, b.call(t, "POST", "/v1/prompts/long/versions", owner, v2, nil), 201)
		var d api.PromptDiff
		wantStatus(t, b.call(t, "GET", "/v1/prompts/long/diff?from=1&to=2", owner, nil, &d), 200)
		l := d.Messages[0].Lines
		if d.Truncated || len(l) != 10 || l[0].Op != api.Skip || l[0].Count == nil || *l[0].Count != 6 || l[4].Text != "10" || l[9].Op != api.Skip {
			t.Errorf("diff %+v", d)
		}
	})
	t.Run("OKVersionsLabelsAudit", func(t *testing.T) {
		var v api.PromptVersion
		v2 := promptBody("")["version"].(map[string]any)
		v2["messages"] = []map[string]any{{"role": "system", "content": "Be {{ tone }}.\nBe brief."}, {"role": "user", "content": "Tell me about {{topic}}."}}
		v2["note"] = "brief"
		wantStatus(t, b.call(t, "POST", "/v1/prompts/support/versions", owner, v2, &v), 201)
		if v.Version != 2 || v.Note != "brief" || v.Model == nil || *v.Model != "default" {
			t.Fatalf("version %+v", v)
		}
		var got api.PromptVersion
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support/versions/1", owner, nil, &got), 200)
		if got.Version != 1 || got.Messages[0].Content != "Be {{ tone }}." || len(got.Tools) != 1 {
			t.Errorf("version 1 %+v", got)
		}
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support/versions/3", owner, nil, nil), 404)

		var label api.PromptLabel
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner, map[string]any{"version": 2}, &label), 200)
		if label.Version == nil || *label.Version != 2 || label.Split != nil {
			t.Errorf("label %+v", label)
		}
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner, map[string]any{"version": 1}, nil), 200)
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/latest", owner, map[string]any{"version": 1}, nil), 400)
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner, map[string]any{"version": 1, "split": []map[string]any{{"version": 1, "weight": 1}, {"version": 2, "weight": 1}}}, nil), 400)
		if n := b.auditCount(t, "prompt.label_publish", "support"); n != 1 {
			t.Errorf("%d publish events", n)
		}
		if n := b.auditCount(t, "prompt.label_rollback", "support"); n != 1 {
			t.Errorf("%d rollback events", n)
		}

		var got2 api.Prompt
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support", owner, nil, &got2), 200)
		if got2.LatestVersion != 2 || len(got2.Labels) != 1 || *got2.Labels[0].Version != 1 {
			t.Errorf("prompt %+v", got2)
		}

		var d api.PromptDiff
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support/diff?from=1&to=2", owner, nil, &d), 200)
		if !slices.Equal(d.Changed, []string{"messages", "note"}) || len(d.Messages) != 2 || d.Messages[0].Change != "changed" {
			t.Errorf("diff %+v", d)
		}
		if l := d.Messages[0].Lines; len(l) != 2 || l[1].Op != api.Insert || l[1].Text != "Be brief." {
			t.Errorf("lines %+v", l)
		}

		var versions api.PromptVersionList
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support/versions?limit=1", owner, nil, &versions), 200)
		if len(versions.Data) != 1 || versions.Data[0].Version != 2 || versions.NextCursor == nil {
			t.Fatalf("page 1 %+v", versions)
		}
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support/versions?limit=1&cursor="+*versions.NextCursor, owner, nil, &versions), 200)
		if len(versions.Data) != 1 || versions.Data[0].Version != 1 || versions.NextCursor != nil {
			t.Fatalf("page 2 %+v", versions)
		}
	})

	t.Run("Render", func(t *testing.T) {
		var r api.RenderedPrompt
		wantStatus(t, b.call(t, "POST", "/v1/prompts/support/render", owner, map[string]any{"variables": map[string]any{"topic": "kilns"}}, &r), 200)
		if r.Version != 1 || r.Label == nil || *r.Label != "production" || r.Messages[1].Content != "Tell me about kilns." || r.Messages[0].Content != "Be kind." {
			t.Errorf("rendered %+v", r)
		}
		res := b.call(t, "POST", "/v1/prompts/support/render", owner, map[string]any{"label": "latest", "variables": map[string]any{"words": "ten", "extra": 1}}, nil)
		wantStatus(t, res, 400)
		if got, want := problemPointers(t, res), []string{"/variables/extra", "/variables/topic", "/variables/words"}; !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
		wantStatus(t, b.call(t, "POST", "/v1/prompts/support/render", owner, map[string]any{"label": "staging"}, nil), 404)
	})

	t.Run("ErrNotFoundOtherOrg", func(t *testing.T) {
		other := b.signUp(t, "other@example.com").AccessToken
		for _, path := range []string{"/v1/prompts/support", "/v1/prompts/support/versions/1", "/v1/prompts/support/diff?from=1&to=1"} {
			wantStatus(t, b.call(t, "GET", path, other, nil, nil), 404)
		}
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", other, map[string]any{"version": 1}, nil), 404)
		var list api.PromptList
		wantStatus(t, b.call(t, "GET", "/v1/prompts", other, nil, &list), 200)
		if len(list.Data) != 0 {
			t.Errorf("other org lists %+v", list.Data)
		}
	})

	t.Run("ErrPermissionDeniedChatKeyWrites", func(t *testing.T) {
		key := b.createKey(t, owner, []string{"chat"}).Key
		wantStatus(t, b.call(t, "GET", "/v1/prompts/support", key, nil, nil), 200)
		wantStatus(t, b.call(t, "POST", "/v1/prompts/support/render", key, map[string]any{"version": 2, "variables": map[string]any{"topic": "x"}}, nil), 200)
		wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", key, map[string]any{"version": 2}, nil), 403)
	})
}

func TestPromptListAndDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken
	for i := range 3 {
		wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody(fmt.Sprintf("p%d", i)), nil), 201)
	}
	var names []string
	cursor := ""
	for {
		var page api.PromptList
		wantStatus(t, b.call(t, "GET", "/v1/prompts?limit=2"+cursor, owner, nil, &page), 200)
		for _, p := range page.Data {
			names = append(names, p.Name)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = "&cursor=" + *page.NextCursor
	}
	if !slices.Equal(names, []string{"p2", "p1", "p0"}) {
		t.Fatalf("names %v", names)
	}
	wantStatus(t, b.call(t, "DELETE", "/v1/prompts/p1", owner, nil, nil), 204)
	wantStatus(t, b.call(t, "GET", "/v1/prompts/p1", owner, nil, nil), 404)
	wantStatus(t, b.call(t, "GET", "/v1/prompts/p1/versions", owner, nil, nil), 404)
	wantStatus(t, b.call(t, "DELETE", "/v1/prompts/p1", owner, nil, nil), 404)
	if n := b.auditCount(t, "prompt.delete", "p1"); n != 1 {
		t.Errorf("%d delete events", n)
	}
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("p1"), nil), 201)
}

// TestPromptChatAndExperiment applies a split prompt to chat calls the way the chat
// handler does, records their usage and reads the experiment report.
func TestPromptChatAndExperiment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), nil), 201)
	wantStatus(t, b.call(t, "POST", "/v1/prompts/support/versions", owner, promptBody("")["version"], nil), 201)
	var label api.PromptLabel
	wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner,
		map[string]any{"split": []map[string]any{{"version": 1, "weight": 1}, {"version": 2, "weight": 1}}}, &label), 200)
	if label.ExperimentId == nil || b.auditCount(t, "prompt.label_split", "support") != 1 {
		t.Fatalf("split %+v", label)
	}
	var me api.Me
	b.call(t, "GET", "/v1/me", owner, nil, &me)
	who := caller{org: me.PersonalOrgId, user: me.Id}

	t.Run("ErrInvalidVariablesUnderPrompt", func(t *testing.T) {
		body := api.ChatRequest{Prompt: &api.ChatPromptRef{Name: "support"}}
		_, err := b.srv.applyPrompt(t.Context(), who, &body, &chat.Call{Alias: "default"})
		if err == nil || err.Error() != "invalid_request: invalid prompt variables: prompt/variables/topic is required" {
			t.Fatalf("error %v", err)
		}
	})

	counts := map[int]int{}
	for i := range 6 {
		user := fmt.Sprintf("end-user-%d", i)
		temp := 0.9
		body := api.ChatRequest{
			Messages: []api.ChatMessage{{Role: api.ChatRoleUser, Content: new("hello")}}, User: &user, Temperature: &temp,
			Tools:  &[]api.ToolDefinition{{Name: "lookup", Description: new("the request's own"), Parameters: map[string]any{"type": "object"}}},
			Prompt: &api.ChatPromptRef{Name: "support", Variables: &api.PromptVariables{"topic": "kilns"}},
		}
		call, err := toChatCall(body)
		if err != nil {
			t.Fatal(err)
		}
		use, err := b.srv.applyPrompt(t.Context(), who, &body, &call)
		if err != nil {
			t.Fatal(err)
		}
		req := call.Request
		if len(req.Messages) != 3 || req.Messages[0].Text() != "Be kind." || req.Messages[1].Text() != "Tell me about kilns." || req.Messages[2].Text() != "hello" {
			t.Fatalf("messages %+v", req.Messages)
		}
		if *req.Temperature != 0.9 || len(req.Tools) != 1 || req.Tools[0].Description != "the request's own" || call.Alias != "default" {
			t.Fatalf("request %+v", req)
		}
		if *use.ExperimentID != *label.ExperimentId {
			t.Fatalf("experiment %v", use.ExperimentID)
		}
		again, _ := b.srv.applyPrompt(t.Context(), who, &body, &chat.Call{})
		if again.Version != use.Version {
			t.Fatalf("%s got versions %d and %d", user, use.Version, again.Version)
		}
		counts[use.Version]++
		status := usage.StatusOK
		if i == 0 {
			status = usage.StatusError
		}
		b.srv.llm.Usage.Record(usage.Record{
			OrgID: who.org, UserID: who.user, RequestID: "r", Endpoint: "chat", Alias: call.Alias, Provider: "dev", Model: "dev-echo",
			Status: status, Usage: llm.Usage{PromptTokens: 10, CompletionTokens: 4}, CostUSD: 0.001,
			Latency: time.Duration(10*(i+1)) * time.Millisecond, Attempts: 1, At: time.Now(), Prompt: use.usage(),
		})
	}

	var report api.PromptExperimentReport
	waitFor(t, "the experiment's usage rows", func() bool {
		b.call(t, "GET", "/v1/prompts/support/experiments/"+label.ExperimentId.String(), owner, nil, &report)
		var n int64
		for _, v := range report.Versions {
			n += v.Requests
		}
		return n == 6
	})
	if len(report.Versions) != 2 || report.Label != "production" || report.EndedAt != nil {
		t.Fatalf("report %+v", report)
	}
	for _, v := range report.Versions {
		if v.Requests != int64(counts[v.Version]) || v.PromptTokens != 10*v.Requests || v.CompletionTokens != 4*v.Requests {
			t.Errorf("version %d: %+v, want %d requests", v.Version, v, counts[v.Version])
		}
		if v.Requests > 0 && (v.LatencyMsP50 <= 0 || v.LatencyMsP95 < v.LatencyMsP50) {
			t.Errorf("version %d latencies %+v", v.Version, v)
		}
	}
	wantStatus(t, b.call(t, "GET", "/v1/prompts/support/experiments/"+uuid.Must(uuid.NewV7()).String(), owner, nil, nil), 404)
}

func TestPromptLabelDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), nil), 201)
	wantStatus(t, b.call(t, "POST", "/v1/prompts/support/versions", owner, promptBody("")["version"], nil), 201)
	var label api.PromptLabel
	wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/staging", owner,
		map[string]any{"split": []map[string]any{{"version": 1, "weight": 1}, {"version": 2, "weight": 1}}}, &label), 200)
	wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner, map[string]any{"version": 1}, nil), 200)
	key := b.createKey(t, owner, []string{"chat"}).Key
	problemIs(t, b.call(t, "DELETE", "/v1/prompts/support/labels/staging", key, nil, nil), 403, errs.PermissionDenied)

	wantStatus(t, b.call(t, "DELETE", "/v1/prompts/support/labels/staging", owner, nil, nil), 204)
	var p api.Prompt
	wantStatus(t, b.call(t, "GET", "/v1/prompts/support", owner, nil, &p), 200)
	if len(p.Labels) != 1 || p.Labels[0].Label != "production" {
		t.Errorf("labels %+v", p.Labels)
	}
	var report api.PromptExperimentReport
	wantStatus(t, b.call(t, "GET", "/v1/prompts/support/experiments/"+label.ExperimentId.String(), owner, nil, &report), 200)
	if report.EndedAt == nil {
		t.Error("the deleted label's experiment did not end")
	}
	problemIs(t, b.call(t, "POST", "/v1/prompts/support/render", owner, map[string]any{"label": "staging", "variables": map[string]any{"topic": "x"}}, nil), 404, errs.NotFound)
	problemIs(t, b.call(t, "DELETE", "/v1/prompts/support/labels/staging", owner, nil, nil), 404, errs.NotFound)
	problemIs(t, b.call(t, "DELETE", "/v1/prompts/nope/labels/staging", owner, nil, nil), 404, errs.NotFound)
	if n := b.auditCount(t, "prompt.label_delete", "support"); n != 1 {
		t.Errorf("%d audit events, want 1", n)
	}
}
