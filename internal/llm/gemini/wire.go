package gemini

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
)

// The wire types of the Generative Language API (v1beta), as documented for
// models.generateContent, models.streamGenerateContent, models.batchEmbedContents and
// models.list. One part struct serves requests and responses: unknown fields are ignored
// on decode and empty ones omitted on encode.

type generateRequest struct {
	Contents          []content         `json:"contents"`
	SystemInstruction *content          `json:"systemInstruction,omitempty"`
	Tools             []tool            `json:"tools,omitempty"`
	ToolConfig        *toolConfig       `json:"toolConfig,omitempty"`
	GenerationConfig  *generationConfig `json:"generationConfig,omitempty"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

type part struct {
	Text             string            `json:"text,omitempty"`
	InlineData       *blob             `json:"inlineData,omitempty"`
	FileData         *fileData         `json:"fileData,omitempty"`
	FunctionCall     *functionCall     `json:"functionCall,omitempty"`
	FunctionResponse *functionResponse `json:"functionResponse,omitempty"`
	// Thought marks a thinking summary, never part of the reply text.
	Thought bool `json:"thought,omitempty"`
	// ThoughtSignature is the opaque token Gemini 3 requires back on the function calls
	// of earlier turns (see ids.go).
	ThoughtSignature string `json:"thoughtSignature,omitempty"`
}

type blob struct {
	MimeType string `json:"mimeType"`
	Data     string `json:"data"` // base64
}

type fileData struct {
	MimeType string `json:"mimeType,omitempty"`
	FileURI  string `json:"fileUri"`
}

type functionCall struct {
	ID   string          `json:"id,omitempty"`
	Name string          `json:"name"`
	Args json.RawMessage `json:"args,omitempty"`
}

type functionResponse struct {
	Name     string          `json:"name"`
	Response json.RawMessage `json:"response"`
}

type tool struct {
	FunctionDeclarations []functionDeclaration `json:"functionDeclarations"`
}

// functionDeclaration sends the tool's JSON Schema as parametersJsonSchema (documented
// for v1beta, exclusive with parameters), which takes JSON Schema as is; parameters takes
// only an OpenAPI subset and answers 400 to keywords generated schemas are full of
// ($schema, $ref, additionalProperties).
type functionDeclaration struct {
	Name                 string          `json:"name"`
	Description          string          `json:"description,omitempty"`
	ParametersJSONSchema json.RawMessage `json:"parametersJsonSchema,omitempty"`
}

type toolConfig struct {
	FunctionCallingConfig functionCallingConfig `json:"functionCallingConfig"`
}

type functionCallingConfig struct {
	Mode                 string   `json:"mode"`
	AllowedFunctionNames []string `json:"allowedFunctionNames,omitempty"`
}

type generationConfig struct {
	CandidateCount     int             `json:"candidateCount"`
	Temperature        *float64        `json:"temperature,omitempty"`
	TopP               *float64        `json:"topP,omitempty"`
	MaxOutputTokens    *int            `json:"maxOutputTokens,omitempty"`
	StopSequences      []string        `json:"stopSequences,omitempty"`
	Seed               *int64          `json:"seed,omitempty"`
	ResponseMimeType   string          `json:"responseMimeType,omitempty"`
	ResponseJSONSchema json.RawMessage `json:"responseJsonSchema,omitempty"`
}

type generateResponse struct {
	Candidates     []candidate     `json:"candidates"`
	PromptFeedback *promptFeedback `json:"promptFeedback"`
	UsageMetadata  *usageMetadata  `json:"usageMetadata"`
	ModelVersion   string          `json:"modelVersion"`
	ResponseID     string          `json:"responseId"`
	// Error is how a stream reports a failure after its 200 status.
	Error *apiError `json:"error"`
}

type candidate struct {
	Content      content `json:"content"`
	FinishReason string  `json:"finishReason"`
}

type promptFeedback struct {
	BlockReason string `json:"blockReason"`
}

type usageMetadata struct {
	PromptTokenCount        int `json:"promptTokenCount"`
	CandidatesTokenCount    int `json:"candidatesTokenCount"`
	CachedContentTokenCount int `json:"cachedContentTokenCount"`
	ThoughtsTokenCount      int `json:"thoughtsTokenCount"`
	ToolUsePromptTokenCount int `json:"toolUsePromptTokenCount"`
}

// usage counts thoughts as completion and tool-use prompts (search results and the
// like) as prompt, so that Total matches Gemini's totalTokenCount.
func (u *usageMetadata) usage() llm.Usage {
	return llm.Usage{
		PromptTokens:     u.PromptTokenCount + u.ToolUsePromptTokenCount,
		CompletionTokens: u.CandidatesTokenCount + u.ThoughtsTokenCount,
		CachedTokens:     u.CachedContentTokenCount,
	}
}

type embedRequest struct {
	Requests []embedContentRequest `json:"requests"`
}

type embedContentRequest struct {
	Model                string  `json:"model"`
	Content              content `json:"content"`
	OutputDimensionality *int    `json:"outputDimensionality,omitempty"`
}

type embedResponse struct {
	Embeddings []struct {
		Values []float32 `json:"values"`
	} `json:"embeddings"`
}

type listModelsResponse struct {
	Models []struct {
		Name string `json:"name"`
	} `json:"models"`
	NextPageToken string `json:"nextPageToken"`
}

// apiError is the body of a failed call: {"error": {"code", "message", "status",
// "details"}}.
type apiError struct {
	Code    int           `json:"code"`
	Message string        `json:"message"`
	Status  string        `json:"status"`
	Details []errorDetail `json:"details"`
}

type errorDetail struct {
	Type       string `json:"@type"`
	RetryDelay string `json:"retryDelay"` // google.rpc.RetryInfo
	Reason     string `json:"reason"`     // google.rpc.ErrorInfo
}

// badKey reports Gemini's answer to a wrong API key: HTTP 400 INVALID_ARGUMENT with
// ErrorInfo reason API_KEY_INVALID. Kiln treats it as the auth failure it is, so the
// Gateway tries another target instead of blaming the caller's request.
func (e *apiError) badKey() bool {
	for _, d := range e.Details {
		if d.Reason == "API_KEY_INVALID" {
			return true
		}
	}
	return false
}

// retryDelay reads google.rpc.RetryInfo, which is how Gemini says when to retry a 429:
// it sends no Retry-After header.
func (e *apiError) retryDelay() time.Duration {
	for _, d := range e.Details {
		if d.RetryDelay == "" || !strings.HasSuffix(d.Type, "google.rpc.RetryInfo") {
			continue
		}
		if v, err := time.ParseDuration(d.RetryDelay); err == nil && v > 0 {
			return v
		}
	}
	return 0
}

// decodeError reads an error body; Google fronts sometimes wrap it in an array.
func decodeError(body []byte) *apiError {
	var one struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(body, &one); err == nil && one.Error != nil {
		return one.Error
	}
	var many []struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(body, &many); err == nil && len(many) > 0 && many[0].Error != nil {
		return many[0].Error
	}
	return nil
}

// kindForStatus classifies an error that carries no HTTP status (one sent inside a
// stream) by its google.rpc.Code name.
func kindForStatus(status string) llm.ErrorKind {
	switch status {
	case "RESOURCE_EXHAUSTED":
		return llm.KindRateLimited
	case "UNAUTHENTICATED", "PERMISSION_DENIED":
		return llm.KindAuth
	case "DEADLINE_EXCEEDED":
		return llm.KindTimeout
	case "UNAVAILABLE", "INTERNAL", "UNKNOWN", "ABORTED", "CANCELLED", "DATA_LOSS":
		return llm.KindOverloaded
	default:
		return llm.KindInvalid
	}
}

// finishReason normalises Gemini's finishReason. A reply that calls functions finishes
// with STOP, so hasCalls turns that into tool_calls.
func finishReason(reason string, hasCalls bool) llm.FinishReason {
	switch reason {
	case "MAX_TOKENS":
		return llm.FinishLength
	case "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
		"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION":
		return llm.FinishContentFilter
	}
	if hasCalls {
		return llm.FinishToolCalls
	}
	return llm.FinishStop
}
