package server

import (
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
)

// What an OpenAI SDK decodes of a response; declared apart from the server's types, so the
// tests hold the server to OpenAI's wire format rather than to itself.
type (
	sdkResponseItem struct {
		Type    string `json:"type"`
		ID      string `json:"id"`
		Status  string `json:"status"`
		Role    string `json:"role"`
		Content []struct {
			Type        string            `json:"type"`
			Text        string            `json:"text"`
			Annotations []json.RawMessage `json:"annotations"`
		} `json:"content"`
		CallID    string `json:"call_id"`
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	sdkResponse struct {
		ID                 string            `json:"id"`
		Object             string            `json:"object"`
		CreatedAt          int64             `json:"created_at"`
		Status             string            `json:"status"`
		Model              string            `json:"model"`
		Instructions       *string           `json:"instructions"`
		PreviousResponseID *string           `json:"previous_response_id"`
		Metadata           map[string]string `json:"metadata"`
		Temperature        *float64          `json:"temperature"`
		MaxOutputTokens    *int              `json:"max_output_tokens"`
		ToolChoice         json.RawMessage   `json:"tool_choice"`
		Tools              []struct {
			Type string `json:"type"`
			Name string `json:"name"`
		} `json:"tools"`
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		IncompleteDetails *struct {
			Reason string `json:"reason"`
		} `json:"incomplete_details"`
		Output []sdkResponseItem `json:"output"`
		Usage  *struct {
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
			TotalTokens  int `json:"total_tokens"`
		} `json:"usage"`
	}
	// sdkResponseEvent is a streamed event: the members every event type uses.
	sdkResponseEvent struct {
		Type           string           `json:"type"`
		SequenceNumber int              `json:"sequence_number"`
		Response       *sdkResponse     `json:"response"`
		OutputIndex    *int             `json:"output_index"`
		ContentIndex   *int             `json:"content_index"`
		ItemID         string           `json:"item_id"`
		Item           *sdkResponseItem `json:"item"`
		Delta          string           `json:"delta"`
		Text           string           `json:"text"`
		Arguments      string           `json:"arguments"`
	}
)

// outputText is the text of a response's message items.
func (r sdkResponse) outputText() string {
	var b strings.Builder
	for _, it := range r.Output {
		for _, c := range it.Content {
			b.WriteString(c.Text)
		}
	}
	return b.String()
}

func (r sdkResponse) calls() []sdkResponseItem {
	var out []sdkResponseItem
	for _, it := range r.Output {
		if it.Type == "function_call" {
			out = append(out, it)
		}
	}
	return out
}

const weatherTool = `{"type":"function","name":"get_weather","description":"The weather of a city.","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}`

func TestOpenAIResponses(t *testing.T) {
	t.Parallel()
	b := setup(t, withGateway(t, devProviders(nil), map[string][]llm.Target{"default": {devTarget}}))
	alice := b.signUp(t, "alice@example.com")
	key := b.createKey(t, alice.AccessToken, []string{"chat"}).Key
	bobKey := b.createKey(t, b.signUp(t, "bob@example.com").AccessToken, []string{"chat"}).Key
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range strings.Split(b.logs.String(), "\n") {
				if strings.Contains(l, "ERROR") {
					t.Log(l)
				}
			}
		}
	})

	create := func(t *testing.T, body string) sdkResponse {
		t.Helper()
		var out sdkResponse
		b.openAIOK(t, openAIRequest("POST", "/openai/v1/responses", key, body), &out)
		return out
	}
	get := func(t *testing.T, id string) sdkResponse {
		t.Helper()
		var out sdkResponse
		b.openAIOK(t, openAIRequest("GET", "/openai/v1/responses/"+id, key, ""), &out)
		return out
	}
	// stream posts a streamed request and checks what every stream must hold: event: lines
	// naming each data's type, sequence numbers from 0 without a gap, and the first two
	// and the last events.
	stream := func(t *testing.T, body string) []sdkResponseEvent {
		t.Helper()
		_, events := postStream(t.Context(), t, ts, "/openai/v1/responses", key, body)
		var out []sdkResponseEvent
		for _, ev := range drain(t, events) {
			var e sdkResponseEvent
			if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
				t.Fatalf("event %+v: %v", ev, err)
			}
			if e.Type != ev.event || e.SequenceNumber != len(out) {
				t.Fatalf("event %d is %q (event: %q) with sequence_number %d", len(out), e.Type, ev.event, e.SequenceNumber)
			}
			out = append(out, e)
		}
		types := make([]string, len(out))
		for i, e := range out {
			types[i] = e.Type
		}
		if len(out) < 3 || types[0] != "response.created" || types[1] != "response.in_progress" ||
			out[0].Response == nil || out[0].Response.Status != "in_progress" || len(out[0].Response.Output) != 0 {
			t.Fatalf("stream %v", types)
		}
		return out
	}
	types := func(events []sdkResponseEvent) string {
		var names []string
		for _, e := range events {
			if n := len(names); n == 0 || names[n-1] != e.Type {
				names = append(names, e.Type)
			}
		}
		return strings.Join(names, " ")
	}

	t.Run("OKBlocking", func(t *testing.T) {
		t.Parallel()
		got := create(t, `{"model":"default","input":"hi","instructions":"Be brief.","temperature":0.5,"max_output_tokens":100,"metadata":{"team":"docs"}}`)
		if !strings.HasPrefix(got.ID, "resp_") || got.Object != "response" || got.Status != "completed" || got.Model != "default" ||
			time.Since(time.Unix(got.CreatedAt, 0)) > time.Minute || got.Error != nil || got.PreviousResponseID != nil {
			t.Errorf("response %+v", got)
		}
		if deref(got.Instructions) != "Be brief." || got.Metadata["team"] != "docs" || deref(got.Temperature) != 0.5 ||
			deref(got.MaxOutputTokens) != 100 || string(got.ToolChoice) != `"auto"` {
			t.Errorf("echo %+v", got)
		}
		want := "[dev] You said: hi"
		if len(got.Output) != 1 || got.Output[0].Type != "message" || got.Output[0].Role != "assistant" || got.Output[0].Status != "completed" ||
			!strings.HasPrefix(got.Output[0].ID, "msg_") || len(got.Output[0].Content) != 1 || got.Output[0].Content[0].Type != "output_text" ||
			got.outputText() != want || got.Output[0].Content[0].Annotations == nil {
			t.Errorf("output %+v", got.Output)
		}
		prompt := 4 + dev.CountTokens("Be brief.") + 4 + dev.CountTokens("hi")
		if u := got.Usage; u == nil || u.InputTokens != prompt || u.OutputTokens != dev.CountTokens(want) || u.TotalTokens != u.InputTokens+u.OutputTokens {
			t.Errorf("usage %+v, want %d input tokens", got.Usage, prompt)
		}
		if again := get(t, got.ID); !jsonEqual(t, again, got) {
			t.Errorf("GET %+v\nwant %+v", again, got)
		}
		var n int
		waitFor(t, "the usage record", func() bool {
			err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM llm_usage WHERE endpoint = 'openai.responses' AND prompt_tokens = $1`, prompt).Scan(&n)
			return err == nil && n == 1
		})
	})

	t.Run("OKInputItems", func(t *testing.T) {
		t.Parallel()
		got := create(t, `{"model":"default","input":[{"role":"developer","content":"Answer in English."},
			{"role":"user","content":"my name is Ada"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello Ada"}]},
			{"type":"message","role":"user","content":[{"type":"input_text","text":"what is in this image?"},{"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo=","detail":"low"}]}]}`)
		if got.Status != "completed" || got.outputText() != "[dev] You said: what is in this image?" || got.Instructions != nil {
			t.Errorf("response %+v", got)
		}
		// The earlier turns are the conversation's: a follow-up is generated from them too.
		next := create(t, `{"model":"default","input":"and now?","previous_response_id":"`+got.ID+`"}`)
		history := 4 + dev.CountTokens("my name is Ada") + 4 + dev.CountTokens("Hello Ada") + 4 + dev.CountTokens("what is in this image?") +
			4 + dev.CountTokens(got.outputText()) + 4 + dev.CountTokens("and now?")
		if next.Usage == nil || next.Usage.InputTokens != history || deref(next.PreviousResponseID) != got.ID {
			t.Errorf("follow-up %+v, want %d input tokens (the history without the developer message)", next, history)
		}
	})

	t.Run("OKStreamed", func(t *testing.T) {
		t.Parallel()
		events := stream(t, `{"model":"default","input":"stream this reply please","stream":true}`)
		want := "response.created response.in_progress response.output_item.added response.content_part.added " +
			"response.output_text.delta response.output_text.done response.content_part.done response.output_item.done response.completed"
		if got := types(events); got != want {
			t.Fatalf("events %s\nwant %s", got, want)
		}
		var deltas strings.Builder
		for _, e := range events {
			if e.Type == "response.output_text.delta" {
				deltas.WriteString(e.Delta)
				if e.ItemID != events[2].Item.ID || deref(e.OutputIndex) != 0 || deref(e.ContentIndex) != 0 {
					t.Errorf("delta %+v", e)
				}
			}
		}
		final := events[len(events)-1].Response
		text := "[dev] You said: stream this reply please"
		if deltas.String() != text || final.outputText() != text || final.Status != "completed" || final.Usage == nil || final.Output[0].ID != events[2].Item.ID {
			t.Errorf("deltas %q, final %+v", deltas.String(), final)
		}
		if done := events[len(events)-4]; done.Text != text {
			t.Errorf("output_text.done %+v", done)
		}
		if again := get(t, final.ID); !jsonEqual(t, again, *final) {
			t.Errorf("GET %+v\nwant %+v", again, *final)
		}
	})

	t.Run("OKToolsRoundTrip", func(t *testing.T) {
		t.Parallel()
		for _, streamed := range []bool{false, true} {
			body := `{"model":"default","input":"call get_weather: Paris","tools":[` + weatherTool + `],"stream":` + strconv.FormatBool(streamed) + `}`
			var first sdkResponse
			if streamed {
				events := stream(t, body)
				want := "response.created response.in_progress response.output_item.added response.function_call_arguments.delta " +
					"response.function_call_arguments.done response.output_item.done response.completed"
				if got := types(events); got != want {
					t.Fatalf("events %s\nwant %s", got, want)
				}
				first = *events[len(events)-1].Response
				if done := events[len(events)-3]; done.Arguments != `{"city":"Paris"}` || done.ItemID != first.Output[0].ID {
					t.Errorf("arguments done %+v", done)
				}
			} else {
				first = create(t, body)
			}
			calls := first.calls()
			if first.Status != "completed" || len(calls) != 1 || calls[0].Name != "get_weather" || calls[0].Arguments != `{"city":"Paris"}` ||
				!strings.HasPrefix(calls[0].CallID, "call_") || calls[0].Status != "completed" || len(first.Tools) != 1 || first.Tools[0].Name != "get_weather" {
				t.Fatalf("streamed %t: response %+v", streamed, first)
			}
			next := create(t, `{"model":"default","previous_response_id":"`+first.ID+`","tools":[`+weatherTool+`],
				"input":[{"type":"function_call_output","call_id":"`+calls[0].CallID+`","output":"sunny, 21 °C"}]}`)
			if next.outputText() != "[dev] The tool get_weather returned: sunny, 21 °C" || deref(next.PreviousResponseID) != first.ID {
				t.Errorf("streamed %t: follow-up %+v", streamed, next)
			}
		}
	})

	t.Run("OKClientHistoryWithFunctionCalls", func(t *testing.T) {
		t.Parallel()
		got := create(t, `{"model":"default","tools":[`+weatherTool+`],"input":[{"role":"user","content":"call get_weather: Oslo"},
			{"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Oslo\"}"},
			{"type":"function_call_output","call_id":"call_1","output":"snow"},{"role":"user","content":"thanks"}]}`)
		if got.outputText() != "[dev] You said: thanks" {
			t.Errorf("response %+v", got)
		}
	})

	t.Run("OKNotStored", func(t *testing.T) {
		t.Parallel()
		first := create(t, `{"model":"default","input":"remember me"}`)
		got := create(t, `{"model":"default","input":"hi","store":false,"previous_response_id":"`+first.ID+`"}`)
		history := 4 + dev.CountTokens("remember me") + 4 + dev.CountTokens(first.outputText()) + 4 + dev.CountTokens("hi")
		if got.Status != "completed" || got.outputText() != "[dev] You said: hi" || got.Usage == nil || got.Usage.InputTokens != history {
			t.Errorf("response %+v, want %d input tokens", got, history)
		}
		openAIErrorIs(t, b.doOpenAI(t, openAIRequest("GET", "/openai/v1/responses/"+got.ID, key, "")), 404, "not_found_error", errs.NotFound, nil)
		events := stream(t, `{"model":"default","input":"hi","store":false,"stream":true}`)
		if final := events[len(events)-1]; final.Type != "response.completed" || final.Response.outputText() != "[dev] You said: hi" {
			t.Errorf("last event %+v", final)
		}
	})

	t.Run("OKIncomplete", func(t *testing.T) {
		t.Parallel()
		got := create(t, `{"model":"default","input":"a reply far longer than two tokens","max_output_tokens":2}`)
		if got.Status != "incomplete" || got.IncompleteDetails == nil || got.IncompleteDetails.Reason != "max_output_tokens" {
			t.Errorf("response %+v", got)
		}
	})

	t.Run("OKDelete", func(t *testing.T) {
		t.Parallel()
		got := create(t, `{"model":"default","input":"forget me"}`)
		var deleted struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Deleted bool   `json:"deleted"`
		}
		b.openAIOK(t, openAIRequest("DELETE", "/openai/v1/responses/"+got.ID, key, ""), &deleted)
		if deleted.ID != got.ID || deleted.Object != "response.deleted" || !deleted.Deleted {
			t.Errorf("deletion %+v", deleted)
		}
		for _, method := range []string{"GET", "DELETE"} {
			openAIErrorIs(t, b.doOpenAI(t, openAIRequest(method, "/openai/v1/responses/"+got.ID, key, "")), 404, "not_found_error", errs.NotFound, nil)
		}
		param := "previous_response_id"
		openAIErrorIs(t, b.doOpenAI(t, openAIRequest("POST", "/openai/v1/responses", key, `{"model":"default","input":"hi","previous_response_id":"`+got.ID+`"}`)),
			404, "not_found_error", errs.NotFound, &param)
	})

	t.Run("Errors", func(t *testing.T) {
		t.Parallel()
		mine := create(t, `{"model":"default","input":"mine"}`)
		ptr := func(s string) *string { return &s }
		for _, tt := range []struct {
			name, credential, method, path, body string
			status                               int
			typ                                  string
			code                                 errs.Code
			param                                *string
		}{
			{"ErrUnauthenticated", "", "POST", "/openai/v1/responses", `{"model":"default","input":"hi"}`, 401, "authentication_error", errs.Unauthenticated, nil},
			{"ErrOtherOrg", bobKey, "GET", "/openai/v1/responses/" + mine.ID, "", 404, "not_found_error", errs.NotFound, nil},
			{"ErrOtherOrgFollowUp", bobKey, "POST", "/openai/v1/responses", `{"model":"default","input":"hi","previous_response_id":"` + mine.ID + `"}`, 404, "not_found_error", errs.NotFound, ptr("previous_response_id")},
			{"ErrMalformedID", key, "GET", "/openai/v1/responses/resp_nothex", "", 404, "not_found_error", errs.NotFound, nil},
			{"ErrMalformedPrevious", key, "POST", "/openai/v1/responses", `{"model":"default","input":"hi","previous_response_id":"resp_x"}`, 404, "not_found_error", errs.NotFound, ptr("previous_response_id")},
			{"ErrUnknownModel", key, "POST", "/openai/v1/responses", `{"model":"nope","input":"hi"}`, 404, "not_found_error", errs.NotFound, nil},
			{"ErrInputType", key, "POST", "/openai/v1/responses", `{"model":"default","input":[{"type":"item_reference","id":"msg_1"}]}`, 400, "invalid_request_error", errs.Invalid, ptr("input.0.type")},
			{"ErrEmptyInput", key, "POST", "/openai/v1/responses", `{"model":"default","input":[]}`, 400, "invalid_request_error", errs.Invalid, ptr("input")},
			{"ErrHostedTool", key, "POST", "/openai/v1/responses", `{"model":"default","input":"hi","tools":[{"type":"web_search"}]}`, 400, "invalid_request_error", errs.Invalid, ptr("tools.0")},
			{"ErrToolChoice", key, "POST", "/openai/v1/responses", `{"model":"default","input":"hi","tool_choice":"sometimes"}`, 400, "invalid_request_error", errs.Invalid, ptr("tool_choice")},
			{"ErrEndsWithAssistant", key, "POST", "/openai/v1/responses", `{"model":"default","input":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`, 400, "invalid_request_error", errs.Invalid, ptr("input")},
			{"ErrNoWaitingCall", key, "POST", "/openai/v1/responses", `{"model":"default","previous_response_id":"` + mine.ID + `","input":[{"type":"function_call_output","call_id":"call_x","output":"1"}]}`, 409, "invalid_request_error", errs.Conflict, nil},
			{"ErrSpecBounds", key, "POST", "/openai/v1/responses", `{"model":"default","input":"hi","temperature":3}`, 400, "invalid_request_error", errs.Invalid, ptr("temperature")},
		} {
			t.Run(tt.name, func(t *testing.T) {
				res := b.doOpenAI(t, openAIRequest(tt.method, tt.path, tt.credential, tt.body))
				openAIErrorIs(t, res, tt.status, tt.typ, tt.code, tt.param)
			})
		}
	})
}

// jsonEqual reports whether a and b encode to the same JSON.
func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return slices.Equal(ja, jb)
}
