package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm"
)

// TestPromptModelWhenRequestNamesNone: a request that names a prompt but no model is served
// by the model of the prompt's version, over every transport that takes a prompt; a model
// the request names wins. (The spec once defaulted ChatRequest.model to "default", and the
// validator filled it in, so the prompt's model was never used over REST.)
func TestPromptModelWhenRequestNamesNone(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		models []string // the model of each upstream request
	)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		mu.Lock()
		models = append(models, req.Model)
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		replyWith("hello there")(w, r)
	})
	b := setup(t, withGateway(t, map[string]llm.Provider{"up": up.provider(t, "up")}, map[string][]llm.Target{
		"default": {{Provider: "up", Model: "model-default"}},
		"tuned":   {{Provider: "up", Model: "model-tuned"}},
	}))
	owner := b.signUp(t, "owner@example.com").AccessToken
	p := promptBody("support")
	p["version"].(map[string]any)["model"] = "tuned"
	wantStatus(t, b.call(t, "POST", "/v1/prompts", owner, p, nil), 201)
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)

	prompt := map[string]any{"name": "support", "label": "latest", "variables": map[string]any{"topic": "kilns"}}
	promptJSON, _ := json.Marshal(prompt)
	messages := []map[string]any{{"role": "user", "content": "hello"}}
	conversation := func(t *testing.T) string {
		var c api.Conversation
		wantStatus(t, b.call(t, "POST", "/v1/conversations", owner, map[string]any{}, &c), 201)
		return c.Id.String()
	}
	for _, tt := range []struct {
		name, want string
		send       func(t *testing.T)
	}{
		{"RESTBlocking", "model-tuned", func(t *testing.T) {
			wantStatus(t, b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{"messages": messages, "prompt": prompt}, nil), 200)
		}},
		{"RESTStream", "model-tuned", func(t *testing.T) {
			res := b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{"messages": messages, "prompt": prompt, "stream": true}, nil)
			wantStatus(t, res, 200)
			readAll(res)
		}},
		{"RESTNamedModelWins", "model-default", func(t *testing.T) {
			wantStatus(t, b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{"model": "default", "messages": messages, "prompt": prompt}, nil), 200)
		}},
		{"WebSocketChat", "model-tuned", func(t *testing.T) {
			ws := dialChat(t, ts, owner)
			ws.send(`{"type":"chat","data":{"messages":[{"role":"user","content":"hello"}],"prompt":` + string(promptJSON) + `}}`)
			doneOf(t, ws.untilEnd())
		}},
		{"ConversationMessage", "model-tuned", func(t *testing.T) {
			wantStatus(t, b.call(t, "POST", "/v1/conversations/"+conversation(t)+"/messages", owner,
				map[string]any{"content": "hello", "options": map[string]any{"prompt": prompt}}, nil), 200)
		}},
		{"ConversationMessageStream", "model-tuned", func(t *testing.T) {
			res := b.call(t, "POST", "/v1/conversations/"+conversation(t)+"/messages", owner,
				map[string]any{"content": "hello", "stream": true, "options": map[string]any{"prompt": prompt}}, nil)
			wantStatus(t, res, 200)
			readAll(res)
		}},
		{"WebSocketConversationMessage", "model-tuned", func(t *testing.T) {
			ws := dialChat(t, ts, owner)
			ws.send(`{"type":"conversation.message","data":{"conversation_id":"` + conversation(t) + `","content":"hello","options":{"prompt":` + string(promptJSON) + `}}}`)
			doneOf(t, ws.untilEnd())
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			before := len(models)
			mu.Unlock()
			tt.send(t)
			mu.Lock()
			defer mu.Unlock()
			if got := models[before:]; len(got) == 0 || got[len(got)-1] != tt.want {
				t.Errorf("upstream models %v, want the last %s", got, tt.want)
			}
		})
	}
}
