package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
)

// TestChatWithPrompt sends chat completions naming a split prompt (dev provider) and reads
// the experiment report: every call is counted under the version it used.
func TestChatWithPrompt(t *testing.T) {
	t.Parallel()
	b := setup(t)
	owner := b.signUp(t, "owner@example.com").AccessToken
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, promptBody("support"), nil), 201)
	v2 := promptBody("")["version"].(map[string]any)
	v2["messages"] = []map[string]any{{"role": "user", "content": "Version two on {{topic}}."}}
	wantStatus(t, b.call(t, "POST", "/v1/prompts/support/versions", owner, v2, nil), 201)
	var label api.PromptLabel
	wantStatus(t, b.call(t, "PUT", "/v1/prompts/support/labels/production", owner,
		map[string]any{"split": []map[string]any{{"version": 1, "weight": 1}, {"version": 2, "weight": 1}}}, &label), 200)

	t.Run("ErrInvalidVariables", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{
			"messages": []map[string]any{{"role": "user", "content": "hi"}}, "prompt": map[string]any{"name": "support"},
		}, nil)
		wantStatus(t, res, 400)
		if got := problemPointers(t, res); len(got) != 1 || got[0] != "/prompt/variables/topic" {
			t.Errorf("pointers %v", got)
		}
	})
	t.Run("ErrNotFoundPrompt", func(t *testing.T) {
		wantStatus(t, b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{
			"messages": []map[string]any{{"role": "user", "content": "hi"}}, "prompt": map[string]any{"name": "nope"},
		}, nil), 404)
	})

	const calls = 8
	for i := range calls {
		var out api.ChatCompletion
		wantStatus(t, b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{
			"messages": []map[string]any{{"role": "user", "content": "hello"}},
			"user":     fmt.Sprintf("end-user-%d", i),
			"prompt":   map[string]any{"name": "support", "variables": map[string]any{"topic": "kilns"}},
		}, &out), 200)
		if out.Message.Content == nil || !strings.HasPrefix(*out.Message.Content, "[dev]") {
			t.Fatalf("reply %+v", out.Message)
		}
	}
	var report api.PromptExperimentReport
	waitFor(t, "the experiment's usage rows", func() bool {
		b.call(t, "GET", "/v1/prompts/support/experiments/"+label.ExperimentId.String(), owner, nil, &report)
		var n int64
		for _, v := range report.Versions {
			n += v.Requests
		}
		return n == calls
	})
	for _, v := range report.Versions {
		if v.Requests > 0 && (v.PromptTokens == 0 || v.CompletionTokens == 0 || v.Errors != 0) {
			t.Errorf("version %d: %+v", v.Version, v)
		}
	}
	t.Logf("report: %+v", report.Versions)
}
