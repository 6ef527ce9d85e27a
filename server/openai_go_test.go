package server

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/openai/openai-go/v3"
	oaioption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/kilnhq/kiln/internal/llm"
)

// TestOpenAIGoSDK drives the Responses API through OpenAI's official Go SDK (openai-go):
// it decodes every answer and streamed event into its own types, so a field it needs that
// Kiln names or shapes otherwise fails here.
func TestOpenAIGoSDK(t *testing.T) {
	t.Parallel()
	b := setup(t, withGateway(t, devProviders(nil), map[string][]llm.Target{"default": {devTarget}}))
	key := b.createKey(t, b.signUp(t, "alice@example.com").AccessToken, []string{"chat"}).Key
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	client := openai.NewClient(oaioption.WithBaseURL(ts.URL+"/openai/v1/"), oaioption.WithAPIKey(key), oaioption.WithMaxRetries(0), oaioption.WithHTTPClient(ts.Client()))
	input := func(text string) responses.ResponseNewParamsInputUnion {
		return responses.ResponseNewParamsInputUnion{OfString: openai.String(text)}
	}
	weather := responses.ToolParamOfFunction("get_weather", map[string]any{
		"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []string{"city"},
	}, false)

	t.Run("OKCreateGetDelete", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		res, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "default", Input: input("hello from openai-go"), Instructions: openai.String("Be brief."),
			Metadata: map[string]string{"team": "docs"}, Temperature: openai.Float(0.2),
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != responses.ResponseStatusCompleted || res.OutputText() != "[dev] You said: hello from openai-go" ||
			res.Instructions.OfString != "Be brief." || res.Metadata["team"] != "docs" || res.Temperature != 0.2 ||
			res.Usage.InputTokens == 0 || res.Usage.TotalTokens != res.Usage.InputTokens+res.Usage.OutputTokens {
			t.Fatalf("response %s", res.RawJSON())
		}
		got, err := client.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
		if err != nil || got.ID != res.ID || got.OutputText() != res.OutputText() {
			t.Fatalf("get: %v %+v", err, got)
		}
		if err := client.Responses.Delete(ctx, res.ID); err != nil {
			t.Fatal(err)
		}
		_, err = client.Responses.Get(ctx, res.ID, responses.ResponseGetParams{})
		if apiErr, ok := errors.AsType[*openai.Error](err); !ok || apiErr.StatusCode != 404 || apiErr.Type != "not_found_error" {
			t.Fatalf("get after delete: %v", err)
		}
	})

	t.Run("OKStreamed", func(t *testing.T) {
		t.Parallel()
		stream := client.Responses.NewStreaming(t.Context(), responses.ResponseNewParams{Model: "default", Input: input("stream this reply please")})
		var types []string
		var text string
		var final responses.Response
		for stream.Next() {
			ev := stream.Current()
			if ev.SequenceNumber != int64(len(types)) {
				t.Errorf("event %d has sequence_number %d", len(types), ev.SequenceNumber)
			}
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				text += ev.AsResponseOutputTextDelta().Delta
			case "response.completed":
				final = ev.AsResponseCompleted().Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if len(types) < 9 || types[0] != "response.created" || types[1] != "response.in_progress" ||
			text != "[dev] You said: stream this reply please" || final.OutputText() != text || final.Status != responses.ResponseStatusCompleted {
			t.Fatalf("events %v, text %q, final %s", types, text, final.RawJSON())
		}
	})

	t.Run("OKToolsRoundTrip", func(t *testing.T) {
		t.Parallel()
		ctx := t.Context()
		first, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "default", Input: input("Please call get_weather: Paris"), Tools: []responses.ToolUnionParam{weather},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Output) != 1 || first.Output[0].Type != "function_call" {
			t.Fatalf("output %s", first.RawJSON())
		}
		call := first.Output[0].AsFunctionCall()
		var args map[string]string
		if call.Name != "get_weather" || json.Unmarshal([]byte(call.Arguments), &args) != nil || args["city"] != "Paris" || call.CallID == "" {
			t.Fatalf("call %+v", call)
		}
		out := responses.ResponseInputItemParamOfFunctionCallOutput("sunny, 21 °C")
		out.OfFunctionCallOutput.CallID = openai.String(call.CallID)
		next, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "default", PreviousResponseID: openai.String(first.ID), Tools: []responses.ToolUnionParam{weather},
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{out}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if next.OutputText() != "[dev] The tool get_weather returned: sunny, 21 °C" || next.PreviousResponseID != first.ID {
			t.Fatalf("follow-up %s", next.RawJSON())
		}
	})

	t.Run("ErrUnknownPrevious", func(t *testing.T) {
		t.Parallel()
		_, err := client.Responses.New(t.Context(), responses.ResponseNewParams{Model: "default", Input: input("hi"), PreviousResponseID: openai.String("resp_00")})
		if apiErr, ok := errors.AsType[*openai.Error](err); !ok || apiErr.StatusCode != 404 || apiErr.Param != "previous_response_id" {
			t.Fatalf("error %v", err)
		}
	})
}
