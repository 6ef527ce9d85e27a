package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// onTinyPlan signs a user up with an API key (scope chat) and puts their org on the tiny
// plan (50 tokens a period, blocking); it returns the user's access token, the key and
// the period's end.
func onTinyPlan(t *testing.T, b *bundle, email string) (token, key string, resetsAt time.Time) {
	t.Helper()
	admin, _ := b.signUpAdmin(t, "root-"+email)
	pair := b.signUp(t, email)
	org := b.currentUser(t, pair.AccessToken).PersonalOrgId
	var sub api.Subscription
	if res := b.call(t, "PUT", fmt.Sprintf("/v1/admin/orgs/%s/subscription", org), admin.AccessToken, map[string]any{"plan": "tiny"}, &sub); res.StatusCode != 200 {
		t.Fatalf("put on tiny: %d", res.StatusCode)
	}
	return pair.AccessToken, b.createKey(t, pair.AccessToken, []string{"chat"}).Key, sub.CurrentPeriodEnd
}

// quotaIs requires p to be the tiny plan's refusal of a call: quota_exceeded with the
// limit's members, nothing spent or held yet.
func quotaIs(t *testing.T, p api.Problem, resetsAt time.Time) {
	t.Helper()
	if p.Code != api.ErrorCode(errs.QuotaExceeded) || p.Status != 429 || p.LimitName == nil || *p.LimitName != api.ProblemLimitNameTokens ||
		p.Limit == nil || *p.Limit != 50 || p.Used == nil || *p.Used != 0 || p.Reserved == nil || *p.Reserved != 0 ||
		p.ResetsAt == nil || !p.ResetsAt.Equal(resetsAt) {
		raw, _ := json.Marshal(p)
		t.Fatalf("problem %s, want quota_exceeded on tokens: limit 50, used 0, reserved 0, resets at %s", raw, resetsAt)
	}
}

// quotaHeadersAre requires the RateLimit headers to list the tokens quota (beside any API
// rate limit) with its 50 tokens left (the call asked for more), and Retry-After to wait
// until the period's end.
func quotaHeadersAre(t *testing.T, h http.Header, resetsAt time.Time) {
	t.Helper()
	if !regexp.MustCompile(`(^|, )"tokens";q=50;w=\d+$`).MatchString(h.Get("RateLimit-Policy")) {
		t.Errorf("RateLimit-Policy %q, want the tokens quota's item", h.Get("RateLimit-Policy"))
	}
	m := regexp.MustCompile(`(^|, )"tokens";r=50;t=(\d+)$`).FindStringSubmatch(h.Get("RateLimit"))
	retry, err := strconv.Atoi(h.Get("Retry-After"))
	until := time.Until(resetsAt).Seconds()
	if m == nil || err != nil || m[2] != h.Get("Retry-After") || float64(retry) < until-5 || float64(retry) > until+5 {
		t.Errorf("RateLimit %q, Retry-After %q: want the tokens quota's item and the %0.fs to the period's end", h.Get("RateLimit"), h.Get("Retry-After"), until)
	}
}

// TestQuotaExceededTransports: every transport that can refuse a model call for quota says
// which limit refused it, its usage and its reset, in the problem's members (or OpenAI's
// insufficient_quota), with the RateLimit headers and Retry-After on its 429.
func TestQuotaExceededTransports(t *testing.T) {
	t.Parallel()
	b := setup(t)
	token, key, resetsAt := onTinyPlan(t, b, "quota@example.com")
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	// max_tokens past the limit: refused before any token is spent, whatever the prompt.
	const chatBody = `{"messages":[{"role":"user","content":"Hello, quota"}],"max_tokens":100%s}`

	t.Run("Chat", func(t *testing.T) {
		for _, stream := range []string{"", `,"stream":true`} {
			res := b.do(t, openAIRequest("POST", "/v1/chat/completions", token, fmt.Sprintf(chatBody, stream)))
			if res.StatusCode != 429 {
				t.Fatalf("stream %q: %d %s", stream, res.StatusCode, readAll(res))
			}
			quotaIs(t, decodeProblem(t, res), resetsAt)
			quotaHeadersAre(t, res.Header, resetsAt)
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		ws := dialChat(t, ts, token)
		ws.send(`{"type":"chat","data":` + fmt.Sprintf(chatBody, "") + `}`)
		quotaIs(t, ws.readProblem(errs.QuotaExceeded), resetsAt)
	})

	t.Run("ConversationMessages", func(t *testing.T) {
		var conv api.Conversation
		wantStatus(t, b.call(t, "POST", "/v1/conversations", token, map[string]any{}, &conv), 201)
		path := "/v1/conversations/" + conv.Id.String() + "/messages"
		res := b.do(t, openAIRequest("POST", path, token, `{"content":"Hello, quota","options":{"max_tokens":100}}`))
		if res.StatusCode != 429 {
			t.Fatalf("%d %s", res.StatusCode, readAll(res))
		}
		quotaIs(t, decodeProblem(t, res), resetsAt)
		quotaHeadersAre(t, res.Header, resetsAt)

		_, events := postStream(t.Context(), t, ts, path, token, `{"content":"Hello again","options":{"max_tokens":100},"stream":true}`)
		all := drain(t, events)
		last := all[len(all)-1]
		var p api.Problem
		if last.event != "error" || json.Unmarshal([]byte(last.data), &p) != nil {
			t.Fatalf("the stream ends with %s %s, want an error", last.event, last.data)
		}
		matchSchema(t, "Problem", []byte(last.data))
		quotaIs(t, p, resetsAt)
	})

	t.Run("OpenAIChat", func(t *testing.T) {
		for _, stream := range []string{"", `,"stream":true`} {
			body := fmt.Sprintf(`{"model":"default","messages":[{"role":"user","content":"Hello, quota"}],"max_tokens":100%s}`, stream)
			res := b.doOpenAI(t, openAIRequest("POST", "/openai/v1/chat/completions", key, body))
			msg := openAIErrorIs(t, res, 429, "insufficient_quota", "insufficient_quota", nil)
			if !strings.Contains(msg, "limit of 50") || !strings.Contains(msg, "0 used, 0 held") || !strings.Contains(msg, resetsAt.UTC().Format(time.RFC3339)) {
				t.Errorf("message %q does not give the limit, the usage and the reset", msg)
			}
			quotaHeadersAre(t, res.Header, resetsAt)
		}
	})

	t.Run("OpenAIResponses", func(t *testing.T) {
		for _, extra := range []string{"", `,"store":false`, `,"store":false,"stream":true`} {
			body := `{"model":"default","input":"Hello, quota","max_output_tokens":100` + extra + `}`
			res := b.doOpenAI(t, openAIRequest("POST", "/openai/v1/responses", key, body))
			msg := openAIErrorIs(t, res, 429, "insufficient_quota", "insufficient_quota", nil)
			if !strings.Contains(msg, "limit of 50") || !strings.Contains(msg, resetsAt.UTC().Format(time.RFC3339)) {
				t.Errorf("%s: message %q does not give the limit and the reset", extra, msg)
			}
			quotaHeadersAre(t, res.Header, resetsAt)
		}
	})
}

// TestAPIKeyTokenBudgetTransports: a key created with a token budget is held to it on
// every transport that calls a model with it (chat, /openai/v1, conversation replies):
// 429 quota_exceeded naming api_key_tokens with the budget's figures; a rotated key keeps
// the budget; the org's other keys and its users are not held by it.
func TestAPIKeyTokenBudgetTransports(t *testing.T) {
	t.Parallel()
	b := setup(t)
	user := b.signUp(t, "budget@example.com").AccessToken
	res := b.call(t, "POST", "/v1/api-keys", user, map[string]any{"name": "zero", "scopes": []string{"chat"}, "token_budget": 0}, nil)
	wantStatus(t, res, 400)

	var created api.APIKeyWithSecret
	if res := b.call(t, "POST", "/v1/api-keys", user, map[string]any{"name": "capped", "scopes": []string{"chat"}, "token_budget": 40}, &created); res.StatusCode != 201 ||
		created.TokenBudget == nil || *created.TokenBudget != 40 {
		t.Fatalf("create a key with a budget: %d %+v", res.StatusCode, created.TokenBudget)
	}
	var rotated api.APIKeyWithSecret
	if res := b.call(t, "POST", "/v1/api-keys/"+created.Id.String()+"/rotate", user, map[string]int{"grace_seconds": 0}, &rotated); res.StatusCode != 201 ||
		rotated.TokenBudget == nil || *rotated.TokenBudget != 40 {
		t.Fatalf("rotate: %d, budget %v", res.StatusCode, rotated.TokenBudget)
	}
	key := rotated.Key
	refused := func(t *testing.T, p api.Problem) {
		t.Helper()
		if p.Code != api.ErrorCode(errs.QuotaExceeded) || p.LimitName == nil || *p.LimitName != api.ProblemLimitNameApiKeyTokens ||
			p.Limit == nil || *p.Limit != 40 || p.Used == nil || *p.Used != 0 || p.Detail == nil || !strings.Contains(*p.Detail, "API key past its token budget") {
			raw, _ := json.Marshal(p)
			t.Fatalf("problem %s, want quota_exceeded on api_key_tokens, limit 40", raw)
		}
	}
	const chatBody = `{"messages":[{"role":"user","content":"Hello, budget"}],"max_tokens":100}`

	t.Run("Chat", func(t *testing.T) {
		res := b.do(t, openAIRequest("POST", "/v1/chat/completions", key, chatBody))
		if res.StatusCode != 429 || !strings.Contains(res.Header.Get("RateLimit-Policy"), `"api_key_tokens";q=40;`) {
			t.Fatalf("%d, RateLimit-Policy %q", res.StatusCode, res.Header.Get("RateLimit-Policy"))
		}
		refused(t, decodeProblem(t, res))
	})
	t.Run("OpenAIChat", func(t *testing.T) {
		res := b.doOpenAI(t, openAIRequest("POST", "/openai/v1/chat/completions", key, `{"model":"default","messages":[{"role":"user","content":"Hello"}],"max_tokens":100}`))
		if msg := openAIErrorIs(t, res, 429, "insufficient_quota", "insufficient_quota", nil); !strings.Contains(msg, "API key past its token budget of 40") {
			t.Errorf("message %q", msg)
		}
	})
	t.Run("ConversationMessages", func(t *testing.T) {
		var conv api.Conversation
		wantStatus(t, b.call(t, "POST", "/v1/conversations", key, map[string]any{}, &conv), 201)
		res := b.do(t, openAIRequest("POST", "/v1/conversations/"+conv.Id.String()+"/messages", key, `{"content":"Hello, budget","options":{"max_tokens":100}}`))
		if res.StatusCode != 429 {
			t.Fatalf("%d %s", res.StatusCode, readAll(res))
		}
		refused(t, decodeProblem(t, res))
	})
	t.Run("OKOtherCallers", func(t *testing.T) {
		other := b.createKey(t, user, []string{"chat"}).Key
		for name, credential := range map[string]string{"KeyWithoutBudget": other, "User": user} {
			if res := b.do(t, openAIRequest("POST", "/v1/chat/completions", credential, chatBody)); res.StatusCode != 200 {
				t.Errorf("%s: %d %s", name, res.StatusCode, readAll(res))
			}
		}
	})
}
