// Package gemini is Kiln's adapter for Google's Gemini API (the Generative Language API,
// v1beta): generateContent for chat, streamGenerateContent over SSE for streams,
// batchEmbedContents for embeddings and models.list for the model catalogue.
package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
)

// DefaultBaseURL is the Gemini API's public endpoint.
const DefaultBaseURL = "https://generativelanguage.googleapis.com"

// maxEmbedBatch is the most requests Gemini takes in one batchEmbedContents call (it
// answers 400 "at most 100 requests can be in one batch"); larger inputs are sent in
// several calls.
const maxEmbedBatch = 100

// maxModelPages bounds the models.list walk, in case an upstream keeps handing out
// page tokens.
const maxModelPages = 100

// Provider talks to one Gemini API endpoint with one key. It is safe for concurrent use.
type Provider struct {
	name    string
	base    string // scheme://host[/prefix]/v1beta
	headers map[string]string
	client  *http.Client
}

var _ llm.Provider = (*Provider)(nil)

// New returns a Provider for cfg. cfg.Name is required, and so is cfg.APIKey unless
// cfg.BaseURL points at a proxy that authenticates itself (cfg.Headers then carries what
// it needs). A nil client means llm.NewHTTPClient().
func New(cfg llm.ProviderConfig, client *http.Client) (*Provider, error) {
	if cfg.Name == "" {
		return nil, errors.New("gemini: provider config: Name is required")
	}
	if cfg.Type != "" && cfg.Type != "gemini" {
		return nil, fmt.Errorf("gemini: provider %s: Type is %q, want gemini", cfg.Name, cfg.Type)
	}
	base := strings.TrimSpace(cfg.BaseURL)
	if base == "" {
		base = DefaultBaseURL
		if cfg.APIKey == "" {
			return nil, fmt.Errorf("gemini: provider %s: APIKey is required", cfg.Name)
		}
	}
	// The URL is not quoted in the error: a misplaced ?key= would leak with it.
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("gemini: provider %s: BaseURL is not an http(s) URL without query or fragment", cfg.Name)
	}
	// Accept the base with or without the version, as both appear in Google's docs.
	base = strings.TrimSuffix(strings.TrimRight(base, "/"), "/v1beta") + "/v1beta"

	headers := make(map[string]string, len(cfg.Headers)+1)
	for k, v := range cfg.Headers {
		headers[k] = v
	}
	if cfg.APIKey != "" {
		headers["x-goog-api-key"] = cfg.APIKey
	}
	if client == nil {
		client = llm.NewHTTPClient()
	}
	return &Provider{name: cfg.Name, base: base, headers: headers, client: client}, nil
}

// Chat calls generateContent and returns the first candidate. A prompt Gemini blocks, or
// an answer without candidates, is a reply with no content that finishes with
// content_filter. Failures are *llm.Error.
func (p *Provider) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, err := p.toGenerateRequest(req)
	if err != nil {
		return nil, err
	}
	u, err := p.modelURL(req.Model, ":generateContent")
	if err != nil {
		return nil, err
	}
	res, err := p.post(ctx, u, body)
	if err != nil {
		return nil, err
	}
	var gr generateResponse
	if err := p.readJSON(ctx, res, &gr); err != nil {
		return nil, err
	}
	out := &llm.Response{ID: gr.ResponseID, Model: gr.ModelVersion, Message: llm.Message{Role: llm.RoleAssistant}}
	if gr.UsageMetadata != nil {
		out.Usage = gr.UsageMetadata.usage()
	}
	if (gr.PromptFeedback != nil && gr.PromptFeedback.BlockReason != "") || len(gr.Candidates) == 0 {
		out.FinishReason = llm.FinishContentFilter
		return out, nil
	}
	c := &gr.Candidates[0]
	var text strings.Builder
	for i := range c.Content.Parts {
		pt := &c.Content.Parts[i]
		switch {
		case pt.Thought:
		case pt.FunctionCall != nil:
			out.Message.ToolCalls = append(out.Message.ToolCalls, toolCall(pt, len(out.Message.ToolCalls)))
		case pt.Text != "":
			text.WriteString(pt.Text)
		}
	}
	if text.Len() > 0 {
		out.Message.Content = []llm.Part{{Type: llm.PartText, Text: text.String()}}
	}
	out.FinishReason = finishReason(c.FinishReason, len(out.Message.ToolCalls) > 0)
	return out, nil
}

// toolCall converts the index-th function call of a reply.
func toolCall(pt *part, index int) llm.ToolCall {
	fc := pt.FunctionCall
	args := "{}"
	if a := strings.TrimSpace(string(fc.Args)); a != "" && a != "null" {
		args = a
	}
	return llm.ToolCall{ID: callID(fc.ID, index, pt.ThoughtSignature), Name: fc.Name, Arguments: args}
}

// ChatStream calls streamGenerateContent with alt=sse. Errors before the first byte
// (bad status, refused connection) are returned here as *llm.Error; later ones come from
// Stream.Next.
func (p *Provider) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	body, err := p.toGenerateRequest(req)
	if err != nil {
		return nil, err
	}
	u, err := p.modelURL(req.Model, ":streamGenerateContent?alt=sse")
	if err != nil {
		return nil, err
	}
	res, err := p.post(ctx, u, body) //nolint:bodyclose // the stream owns the body; Stream.Close closes it
	if err != nil {
		return nil, err
	}
	return newStream(ctx, p.name, res.Body), nil
}

// Embed calls batchEmbedContents, at most 100 inputs a call, and returns the vectors in
// input order. Gemini reports no token usage for embeddings.
func (p *Provider) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	if len(req.Input) == 0 {
		return nil, p.invalid("embeddings need at least one input")
	}
	u, err := p.modelURL(req.Model, ":batchEmbedContents")
	if err != nil {
		return nil, err
	}
	model := modelName(req.Model)
	out := &llm.EmbedResponse{Model: strings.TrimPrefix(model, "models/"), Vectors: make([][]float32, 0, len(req.Input))}
	for start := 0; start < len(req.Input); start += maxEmbedBatch {
		batch := req.Input[start:min(start+maxEmbedBatch, len(req.Input))]
		body := embedRequest{Requests: make([]embedContentRequest, len(batch))}
		for i, text := range batch {
			body.Requests[i] = embedContentRequest{Model: model, Content: content{Parts: []part{{Text: text}}}, OutputDimensionality: req.Dimensions}
		}
		res, err := p.post(ctx, u, &body)
		if err != nil {
			return nil, err
		}
		var er embedResponse
		if err := p.readJSON(ctx, res, &er); err != nil {
			return nil, err
		}
		if len(er.Embeddings) != len(batch) {
			return nil, llm.ProtocolError(p.name, "got %d embeddings for %d inputs", len(er.Embeddings), len(batch))
		}
		for _, e := range er.Embeddings {
			out.Vectors = append(out.Vectors, e.Values)
		}
	}
	return out, nil
}

// Models walks models.list to its last page. IDs lose the "models/" prefix, so they can
// be used as llm.Request.Model as they are.
func (p *Provider) Models(ctx context.Context) ([]llm.Model, error) {
	var out []llm.Model
	token := ""
	for range maxModelPages {
		u := p.base + "/models?pageSize=1000"
		if token != "" {
			u += "&pageToken=" + url.QueryEscape(token)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: build request: %w", p.name, err)
		}
		res, err := p.send(ctx, req)
		if err != nil {
			return nil, err
		}
		var page listModelsResponse
		if err := p.readJSON(ctx, res, &page); err != nil {
			return nil, err
		}
		for _, m := range page.Models {
			out = append(out, llm.Model{ID: strings.TrimPrefix(m.Name, "models/"), OwnedBy: "google"})
		}
		if page.NextPageToken == "" || page.NextPageToken == token {
			return out, nil
		}
		token = page.NextPageToken
	}
	return out, nil
}

// modelName is the model's resource name: "models/<id>", or a tuned model's name as is.
func modelName(model string) string {
	if strings.HasPrefix(model, "models/") || strings.HasPrefix(model, "tunedModels/") {
		return model
	}
	return "models/" + model
}

func (p *Provider) modelURL(model, method string) (string, error) {
	if model == "" {
		return "", p.invalid("no model given")
	}
	collection, id, _ := strings.Cut(modelName(model), "/")
	return p.base + "/" + collection + "/" + url.PathEscape(id) + method, nil
}

// post sends body as JSON to u.
func (p *Provider) post(ctx context.Context, u string, body any) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", p.name, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", p.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return p.send(ctx, req)
}

// send returns req's 2xx response, or the *llm.Error for its failure. Gemini says when to
// retry a 429 in a google.rpc.RetryInfo detail, not a Retry-After header, so that is read
// too, and a wrong key comes as a 400 that is really an auth failure.
func (p *Provider) send(ctx context.Context, req *http.Request) (*http.Response, error) {
	var retry time.Duration
	var badKey bool
	res, err := llm.Do(ctx, p.client, p.name, req, p.headers, func(body []byte) (string, string) {
		e := decodeError(body)
		if e == nil {
			return "", ""
		}
		retry, badKey = e.retryDelay(), e.badKey()
		return e.Status, e.Message
	})
	if err != nil {
		var e *llm.Error
		if errors.As(err, &e) {
			if e.RetryAfter == 0 {
				e.RetryAfter = retry
			}
			if badKey {
				e.Kind = llm.KindAuth
			}
		}
		return nil, err
	}
	return res, nil
}

// readJSON decodes a 2xx body and closes it: a failed read is a transport error, a
// body that is not the documented JSON a protocol error.
func (p *Provider) readJSON(ctx context.Context, res *http.Response, v any) error {
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return llm.TransportError(ctx, p.name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return llm.ProtocolError(p.name, "decode response: %v", err)
	}
	return nil
}
