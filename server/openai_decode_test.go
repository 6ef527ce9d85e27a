package server

import (
	"fmt"
	"io"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/chat"
)

// openAIChatCases are chat bodies the OpenAI SDKs and odd clients send.
var openAIChatCases = []string{
	`{"model":"default","messages":[{"role":"user","content":"hello"}]}`,
	`{"model":"default","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}}]}],"stream":true,"stream_options":{"include_usage":true}}`,
	`{"model":"default","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"42"}],"tool_choice":"auto","stop":"END","seed":9007199254740993,"temperature":0.25,"top_p":1,"max_tokens":64,"max_completion_tokens":32,"user":"u","cache":false}`,
	`{"model":"default","messages":[{"role":"user","content":"x"}],"stop":["a","b"],"tool_choice":{"type":"function","function":{"name":"f"}},"cache":null,"n":1,"logprobs":false}`,
	`{"Model":"default","MESSAGES":[{"Role":"user","Content":"case"}],"Stream":true}`,
	`{"model":"default","messages":[{"role":"user","content":5}],"stop":7}`,
	`{"model":"default","messages":[{"role":"user","content":[1]}]}`,
	`{"model":"default","messages":[{"role":"user","content":"x","name":5}]}`,
	`{"model":"default","messages":[{"role":"user","content":"x"}],"max_tokens":1.0}`,
	`{"model":"default","messages":[{"role":"user","content":"x"}],"cache":"yes"}`,
	`{"model":"default","messages":[{"role":"user","content":"x"}],"stream_options":null}`,
	`{"model":"default","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}]}`,
}

// chatOutcome is what the handler makes of a decoded request: the call, or the error.
type chatOutcome struct {
	Call          chat.Call
	Err           string
	Stream, Usage bool
}

func chatOutcomeOf(body oaiChatRequest, err error) chatOutcome {
	if err != nil {
		return chatOutcome{Err: "decode error"}
	}
	call, err := toOpenAICall(&body)
	return chatOutcome{Call: call, Err: fmt.Sprint(err), Stream: body.Stream, Usage: body.StreamOptions != nil && body.StreamOptions.IncludeUsage}
}

// TestOpenAIChatRequestDecodesOnce checks that the chat request read from the validated
// value makes the same runner call (or the same refusal) as decoding the body's bytes
// into the request type did. One difference is left: a field sent twice under spellings
// that differ in case is taken from the exact spelling, not from the last one.
func TestOpenAIChatRequestDecodesOnce(t *testing.T) {
	t.Parallel()
	fast, _ := kinOperations(t)
	op := fast["POST /openai/v1/chat/completions"]
	for _, body := range openAIChatCases {
		t.Run(body, func(t *testing.T) {
			checkOpenAIChatDecode(t, op, body)
		})
	}
}

func checkOpenAIChatDecode(t *testing.T, op *operation, body string) {
	t.Helper()
	req := httptest.NewRequest("POST", "/openai/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if err := op.validate(req); err != nil {
		t.Skipf("refused by the spec: %v", err)
	}
	var want oaiChatRequest
	wantErr := json.Unmarshal([]byte(body), &want)
	got, gotErr := openAIChatRequest(req)
	if g, w := chatOutcomeOf(got, gotErr), chatOutcomeOf(want, wantErr); !reflect.DeepEqual(g, w) {
		t.Fatalf("from the value: %+v\nfrom the bytes: %+v", g, w)
	}
	// A body another middleware read and put back (idempotency) is decoded here.
	again := httptest.NewRequest("POST", "/openai/v1/chat/completions", io.NopCloser(strings.NewReader(body)))
	got, gotErr = openAIChatRequest(again)
	if g, w := chatOutcomeOf(got, gotErr), chatOutcomeOf(want, wantErr); !reflect.DeepEqual(g, w) {
		t.Fatalf("from a replaced body: %+v\nfrom the bytes: %+v", g, w)
	}
}

// FuzzOpenAIChatRequest holds the decode-once path to decoding the bytes on arbitrary
// bodies the spec accepts.
//
//	go test ./server -run '^$' -fuzz FuzzOpenAIChatRequest -fuzztime 60s
func FuzzOpenAIChatRequest(f *testing.F) {
	for _, body := range openAIChatCases {
		f.Add(body)
	}
	fast, _ := kinOperations(f)
	op := fast["POST /openai/v1/chat/completions"]
	f.Fuzz(func(t *testing.T, body string) { checkOpenAIChatDecode(t, op, body) })
}
