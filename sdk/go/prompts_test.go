package kiln_test

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

// TestE2EPrompts drives the prompt store through the SDK against the real server: create
// with a first version, add a second, publish it, render it, and chat with it (the dev
// provider).
func TestE2EPrompts(t *testing.T) {
	baseURL := startKiln(t)
	anonymous, err := kiln.NewClientWithResponses(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	email := fmt.Sprintf("sdk-go-prompts-%d-%s@example.com", time.Now().UnixNano(), strings.ToLower(rand.Text()[:8]))
	signup, err := kiln.CheckResponse(anonymous.SignUpWithResponse(t.Context(),
		kiln.SignUpRequest{Email: email, Password: "correct horse battery staple 9", Name: "SDK Go prompts"}))
	if err != nil {
		t.Fatal(err)
	}
	client, err := kiln.NewClientWithResponses(baseURL, kiln.WithRequestEditorFn(kiln.WithBearer(signup.JSON201.AccessToken)))
	if err != nil {
		t.Fatal(err)
	}
	required := true
	version := func(greeting string) kiln.PromptVersionInput {
		return kiln.PromptVersionInput{
			Messages:  []kiln.PromptMessage{{Role: kiln.PromptMessageRoleSystem, Content: greeting + " Talk about {{ topic }}."}},
			Variables: &[]kiln.PromptVariable{{Name: "topic", Type: kiln.String, Required: &required}},
		}
	}

	if _, err := kiln.CheckResponse(client.CreatePromptWithResponse(t.Context(), nil, kiln.CreatePromptRequest{Name: "greeter", Version: version("Hello.")})); err != nil {
		t.Fatal(err)
	}
	v2, err := kiln.CheckResponse(client.CreatePromptVersionWithResponse(t.Context(), "greeter", nil, version("Good evening.")))
	if err != nil || v2.JSON201.Version != 2 {
		t.Fatalf("second version: %v", err)
	}
	two := 2
	if _, err := kiln.CheckResponse(client.SetPromptLabelWithResponse(t.Context(), "greeter", "production", nil, kiln.SetPromptLabelRequest{Version: &two})); err != nil {
		t.Fatal(err)
	}

	production := "production"
	vars := kiln.PromptVariables{"topic": "tea"}
	rendered, err := kiln.CheckResponse(client.RenderPromptWithResponse(t.Context(), "greeter", nil, kiln.RenderPromptRequest{Label: &production, Variables: &vars}))
	if err != nil {
		t.Fatal(err)
	}
	if r := rendered.JSON200; r.Version != 2 || len(r.Messages) != 1 || r.Messages[0].Content != "Good evening. Talk about tea." {
		t.Fatalf("rendered %+v", r)
	}

	missing := kiln.PromptVariables{}
	resp, err := kiln.CheckResponse(client.RenderPromptWithResponse(t.Context(), "greeter", nil, kiln.RenderPromptRequest{Label: &production, Variables: &missing}))
	_ = requireProblem(t, err, kiln.InvalidRequest, 400, resp.HTTPResponse.Header)

	text := "hi"
	stream, err := client.StreamChatCompletion(t.Context(), nil, kiln.ChatRequest{
		Prompt:   &kiln.ChatPromptRef{Name: "greeter", Variables: &vars},
		Messages: []kiln.ChatMessage{{Role: kiln.ChatRoleUser, Content: &text}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stream.Close() }()
	result, err := stream.Collect()
	if err != nil {
		t.Fatal(err)
	}
	if result.Usage == nil || result.Usage.PromptTokens < 10 { // the rendered system message counts too
		t.Errorf("usage %+v: the prompt's messages were not sent", result.Usage)
	}
}
