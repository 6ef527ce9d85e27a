package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/alipay/alipaytest"
	"github.com/kilnhq/kiln/internal/billing/stripetest"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/billing/wechatpay/wechatpaytest"
)

// TestOperationsBesideTheStrictHandler keeps the operations the generator leaves out of the
// strict server (gen/api/cfg.yaml), the README's list of them and the routes server.New
// mounts in step, and calls each one through the whole stack: its answer is checked
// against the spec like every other.
func TestOperationsBesideTheStrictHandler(t *testing.T) {
	t.Parallel()
	excluded := excludedOperations(t)
	if listed := readmeOperations(t); !slices.Equal(listed, excluded) {
		t.Fatalf("README lists %v beside the strict handler; gen/api/cfg.yaml excludes %v", listed, excluded)
	}

	f := newConvFixture(t)
	spec := testSpec(t)
	calls := map[string]func(t *testing.T){
		"createChatCompletion": func(t *testing.T) {
			wantStatus(t, f.b.call(t, "POST", "/v1/chat/completions", f.key,
				map[string]any{"messages": []map[string]any{{"role": "user", "content": "hello"}}}, nil), 200)
		},
		"chatWebSocket": func(t *testing.T) {
			ws := dialChat(t, f.ts, f.key)
			ws.send(`{"type":"chat","data":` + chatJSON("hello") + `}`)
			if types := frameTypes(ws.untilEnd()); types[len(types)-1] != "done" {
				t.Fatalf("frames %v", types)
			}
		},
		"createConversationMessage": func(t *testing.T) {
			c := f.create(t, f.alice, nil)
			f.send(t, f.alice, c.Id, map[string]any{"content": "hi"})
		},
		"submitToolResults": func(t *testing.T) {
			c := f.create(t, f.alice, nil)
			tools := []map[string]any{{"name": "get_weather", "parameters": map[string]any{"type": "object"}}}
			out := f.send(t, f.alice, c.Id, map[string]any{"content": "call get_weather for Paris", "options": map[string]any{"tools": tools}})
			if out.Messages[1].ToolCalls == nil {
				t.Fatalf("no tool call in %+v", out.Messages[1])
			}
			wantStatus(t, f.b.call(t, "POST", "/v1/conversations/"+c.Id.String()+"/tool-results", f.alice, map[string]any{
				"results": []map[string]any{{"tool_call_id": (*out.Messages[1].ToolCalls)[0].Id, "content": "sunny"}},
				"options": map[string]any{"tools": tools},
			}, nil), 200)
		},
		"streamMessageEvents": func(t *testing.T) {
			c := f.create(t, f.alice, nil)
			reply := f.send(t, f.alice, c.Id, map[string]any{"content": "hi"}).Messages[1]
			res, events := f.events(t, f.alice, c.Id, reply.Id.String())
			wantStatus(t, res, 200)
			var last sseEvent
			for ev := range events {
				last = ev
			}
			if last.event != "done" {
				t.Fatalf("the replayed stream ends with %+v", last)
			}
		},
		"streamJobEvents": func(t *testing.T) {
			var me api.Me
			wantStatus(t, f.b.call(t, "GET", "/v1/me", f.alice, nil, &me), 200)
			id := uuid.Must(uuid.NewV7())
			if _, err := f.b.pool.Exec(t.Context(), `INSERT INTO jobs (id, org_id, kind, queue, state, payload, max_attempts, created_by,
				run_at, task_id, created_at, updated_at, finished_at) VALUES ($1, $2, 'test.done', 'default', 'succeeded', '{}', 1, $3, now(), $4, now(), now(), now())`,
				id, me.PersonalOrgId, me.Id, id.String()); err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequestWithContext(t.Context(), "GET", f.ts.URL+"/v1/jobs/"+id.String()+"/events", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+f.alice)
			res, err := f.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = res.Body.Close() }()
			wantStatus(t, res, 200)
			for ev := range readEvents(t, res) {
				if !ev.comment {
					if ev.event != "job.succeeded" {
						t.Fatalf("first event %+v", ev)
					}
					return
				}
			}
			t.Fatal("the stream ended before its final event")
		},
		"streamNotifications": func(t *testing.T) {
			ctx, hangUp := context.WithCancel(t.Context())
			defer hangUp()
			req, err := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/v1/notifications/stream", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+f.alice)
			res, err := f.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = res.Body.Close() }()
			wantStatus(t, res, 200)
			for ev := range readEvents(t, res) {
				if !ev.comment {
					if ev.event != "notification.unread_count" {
						t.Fatalf("first event %+v", ev)
					}
					return
				}
			}
			t.Fatal("the stream ended before its first event")
		},
		"openaiCreateChatCompletion": func(t *testing.T) {
			var out map[string]any
			f.b.openAIOK(t, openAIRequest("POST", "/openai/v1/chat/completions", f.key, `{"model":"default","messages":[{"role":"user","content":"hi"}]}`), &out)
		},
		"openaiCreateResponse": func(t *testing.T) {
			var out map[string]any
			f.b.openAIOK(t, openAIRequest("POST", "/openai/v1/responses", f.key, `{"model":"default","input":"hi"}`), &out)
		},
		"openaiGetResponse": func(t *testing.T) {
			var created, got map[string]any
			f.b.openAIOK(t, openAIRequest("POST", "/openai/v1/responses", f.key, `{"model":"default","input":"hi"}`), &created)
			f.b.openAIOK(t, openAIRequest("GET", "/openai/v1/responses/"+created["id"].(string), f.key, ""), &got)
		},
		"openaiDeleteResponse": func(t *testing.T) {
			var created, got map[string]any
			f.b.openAIOK(t, openAIRequest("POST", "/openai/v1/responses", f.key, `{"model":"default","input":"hi"}`), &created)
			f.b.openAIOK(t, openAIRequest("DELETE", "/openai/v1/responses/"+created["id"].(string), f.key, ""), &got)
		},
		"openaiCreateEmbeddings": func(t *testing.T) {
			var out map[string]any
			f.b.openAIOK(t, openAIRequest("POST", "/openai/v1/embeddings", f.key, `{"model":"default","input":"hi"}`), &out)
		},
		"openaiListModels": func(t *testing.T) {
			var out map[string]any
			f.b.openAIOK(t, openAIRequest("GET", "/openai/v1/models", f.key, ""), &out)
		},
		"wechatpayNotify": func(t *testing.T) {
			wx := wechatpaytest.New(t)
			b := setup(t, withChinaPayments(t, wx, nil))
			n := wx.Notify("EV-beside-1", "TRANSACTION.SUCCESS", wechatpay.Transaction{OutTradeNo: "no-such-order", TradeState: "SUCCESS"})
			wantStatus(t, b.postWeChatNotify(t, n), 204)
		},
		"alipayNotify": func(t *testing.T) {
			ali := alipaytest.New(t)
			b := setup(t, withChinaPayments(t, nil, ali))
			n := ali.Notify(ali.NotifyParams("beside-1", alipay.Trade{OutTradeNo: "no-such-order", TradeStatus: "TRADE_SUCCESS", TotalAmount: "1.00"}))
			wantStatus(t, b.postAlipayNotify(t, n.Body), 200)
		},
		"exportOrgUsage": func(t *testing.T) {
			var me api.Me
			wantStatus(t, f.b.call(t, "GET", "/v1/me", f.alice, nil, &me), 200)
			res := f.b.call(t, "GET", "/v1/orgs/"+me.PersonalOrgId.String()+"/usage/export", f.alice, nil, nil)
			wantStatus(t, res, 200)
			if body := readAll(res); !strings.HasPrefix(body, "id,created_at,user_id,") {
				t.Fatalf("export %q", body)
			}
		},
		"adminExportUsage": func(t *testing.T) {
			admin, _ := f.b.signUpAdmin(t, "beside-admin@example.com")
			res := f.b.call(t, "GET", "/v1/admin/usage/export?format=json", admin.AccessToken, nil, nil)
			wantStatus(t, res, 200)
			if res.Header.Get("Content-Type") != "application/x-ndjson" {
				t.Fatalf("content type %q", res.Header.Get("Content-Type"))
			}
		},
		"stripeWebhook": func(t *testing.T) {
			b := setup(t, withStripe(t))
			body := stripetest.Event(t, "evt_beside_1", "invoice.created", time.Now(), map[string]any{"id": "in_1", "object": "invoice"})
			wantStatus(t, b.postStripe(t, stripetest.Sign(body, stripetest.WebhookSecret, time.Now()), body), 204)
		},
		"getMetrics":     func(t *testing.T) { wantStatus(t, f.b.do(t, httptest.NewRequest("GET", "/metrics", nil)), 200) },
		"getOpenAPIJSON": func(t *testing.T) { wantStatus(t, f.b.do(t, httptest.NewRequest("GET", "/openapi.json", nil)), 200) },
		"getOpenAPIYAML": func(t *testing.T) { wantStatus(t, f.b.do(t, httptest.NewRequest("GET", "/openapi.yaml", nil)), 200) },
		"getDocs":        func(t *testing.T) { wantStatus(t, f.b.do(t, httptest.NewRequest("GET", "/docs", nil)), 200) },
		"getDocsAsset": func(t *testing.T) {
			wantStatus(t, f.b.do(t, httptest.NewRequest("GET", "/docs/assets/init.js", nil)), 200)
		},
	}
	for _, op := range excluded {
		t.Run(op, func(t *testing.T) {
			method, path := operationRoute(t, spec.Paths, op)
			if _, pattern := f.b.srv.mux.Handler(httptest.NewRequest(method, strings.NewReplacer("{", "", "}", "").Replace(path), nil)); pattern == "" {
				t.Fatalf("%s %s is not mounted", method, path)
			}
			call, ok := calls[op]
			if !ok {
				t.Fatalf("no call of %s: add one to this test", op)
			}
			call(t)
		})
	}
}

// excludedOperations returns the operation ids gen/api/cfg.yaml keeps out of the strict
// server, sorted.
func excludedOperations(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../gen/api/cfg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*exclude-operation-ids:\s*\[(.*)\]`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("gen/api/cfg.yaml has no exclude-operation-ids")
	}
	var ids []string
	for id := range strings.SplitSeq(string(m[1]), ",") {
		ids = append(ids, strings.TrimSpace(id))
	}
	slices.Sort(ids)
	return ids
}

// readmeOperations returns the operation ids of the README's table of operations beside the
// strict handler, sorted.
func readmeOperations(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "### Operations beside the strict handler\n")
	if !ok {
		t.Fatal("README.md has no section on the operations beside the strict handler")
	}
	section, _, _ = strings.Cut(section, "\n#")
	var ids []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\|").FindAllStringSubmatch(section, -1) {
		ids = append(ids, m[1])
	}
	slices.Sort(ids)
	return ids
}

// operationRoute returns the method and path of the spec's operation id.
func operationRoute(t *testing.T, paths *openapi3.Paths, id string) (string, string) {
	t.Helper()
	for path, item := range paths.Map() {
		for method, op := range item.Operations() {
			if strings.EqualFold(op.OperationID, id) { // the embedded spec capitalises ids
				return method, path
			}
		}
	}
	t.Fatalf("the spec has no operation %s", id)
	return "", ""
}
