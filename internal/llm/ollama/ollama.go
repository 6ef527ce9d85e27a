// Package ollama is Kiln's adapter for Ollama's native API (/api/chat, /api/embed,
// /api/tags), not its OpenAI-compatible shim: the native API is the one every Ollama
// version serves, and it carries images and tool calls in its own shapes.
package ollama

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

// Type is the provider type this package implements in llm.providers.
const Type = "ollama"

// DefaultBaseURL is where a local Ollama listens unless told otherwise.
const DefaultBaseURL = "http://127.0.0.1:11434"

// drainLimit bounds how much of a body is read after its JSON value, so the connection
// can be reused without letting a misbehaving upstream hold the call.
const drainLimit = 64 << 10

// Provider talks to one Ollama server (or ollama.com, or a proxy in front of either).
// It is safe for concurrent use.
type Provider struct {
	name     string
	client   *http.Client
	headers  map[string]string
	chatURL  string
	embedURL string
	tagsURL  string
}

var _ llm.Provider = (*Provider)(nil)

// New builds a Provider from cfg. BaseURL defaults to DefaultBaseURL; APIKey is optional
// and sent as a bearer token (ollama.com and authenticating proxies need one). A nil
// client means llm.NewHTTPClient. The error names the offending field.
func New(cfg llm.ProviderConfig, client *http.Client) (*Provider, error) {
	if strings.TrimSpace(cfg.Name) == "" {
		return nil, errors.New("ollama provider: name is required")
	}
	if cfg.Type != "" && cfg.Type != Type {
		return nil, fmt.Errorf("ollama provider %q: type is %q, want %q", cfg.Name, cfg.Type, Type)
	}
	base := strings.TrimSpace(cfg.BaseURL)
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ollama provider %q: base_url must be an http(s) URL without query, e.g. %s", cfg.Name, DefaultBaseURL)
	}
	base = strings.TrimRight(base, "/")

	headers := make(map[string]string, len(cfg.Headers)+1)
	maps.Copy(headers, cfg.Headers)
	if cfg.APIKey != "" {
		// Do sets headers from a map in random order: drop any other spelling of
		// Authorization so the key always wins.
		for k := range headers {
			if strings.EqualFold(k, "Authorization") {
				delete(headers, k)
			}
		}
		headers["Authorization"] = "Bearer " + cfg.APIKey
	}
	if client == nil {
		client = llm.NewHTTPClient()
	}
	return &Provider{
		name:     cfg.Name,
		client:   client,
		headers:  headers,
		chatURL:  base + "/api/chat",
		embedURL: base + "/api/embed",
		tagsURL:  base + "/api/tags",
	}, nil
}

// Chat runs req with stream false and returns the whole reply. Errors are *llm.Error
// (or ctx's own cancellation): KindInvalid for a request Ollama cannot express or
// rejects (400, 404 unknown model), KindAuth, KindRateLimited, KindOverloaded, KindTimeout,
// KindConnection, KindProtocol for a reply that cannot be decoded.
func (p *Provider) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, err := p.toChatRequest(req, false)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.chatURL, p.headers, body, decodeError)
	if err != nil {
		return nil, err
	}
	var out chatResponse
	if err := p.decodeBody(ctx, res, &out); err != nil {
		return nil, err
	}
	if _, msg := errorMessage(out.Error); msg != "" {
		return nil, replyError(p.name, msg)
	}

	resp := &llm.Response{
		Model:   out.Model,
		Message: llm.Message{Role: llm.RoleAssistant},
		Usage:   llm.Usage{PromptTokens: out.PromptEvalCount, CompletionTokens: out.EvalCount},
	}
	if out.Message.Content != "" {
		resp.Message.Content = []llm.Part{{Type: llm.PartText, Text: out.Message.Content}}
	}
	if n := len(out.Message.ToolCalls); n > 0 {
		resp.Message.ToolCalls = make([]llm.ToolCall, n)
		for i := range out.Message.ToolCalls {
			resp.Message.ToolCalls[i] = toolCallFrom(&out.Message.ToolCalls[i], i)
		}
	}
	resp.FinishReason = finishReason(out.DoneReason, len(resp.Message.ToolCalls) > 0)
	return resp, nil
}

// ChatStream runs req with stream true and returns its events as NDJSON lines arrive.
// Errors before the first line are returned here, as for Chat; later ones from Next.
func (p *Provider) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	body, err := p.toChatRequest(req, true)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.chatURL, p.headers, body, decodeError) //nolint:bodyclose // the stream owns the body; its Close releases it
	if err != nil {
		return nil, err
	}
	return newStream(ctx, p.name, res.Body), nil
}

// Embed returns one vector per input, in input order, from /api/embed. An empty input
// is KindInvalid; a reply with a different number of vectors is KindProtocol.
func (p *Provider) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	if len(req.Input) == 0 {
		return nil, p.invalid("embeddings need at least one input")
	}
	// User has no Ollama counterpart; truncate keeps Ollama's default (true).
	res, err := llm.PostJSON(ctx, p.client, p.name, p.embedURL, p.headers,
		&embedRequest{Model: req.Model, Input: req.Input, Dimensions: req.Dimensions}, decodeError)
	if err != nil {
		return nil, err
	}
	var out embedResponse
	if err := p.decodeBody(ctx, res, &out); err != nil {
		return nil, err
	}
	if len(out.Embeddings) != len(req.Input) {
		return nil, llm.ProtocolError(p.name, "embeddings: got %d vectors for %d inputs", len(out.Embeddings), len(req.Input))
	}
	model := out.Model
	if model == "" {
		model = req.Model
	}
	return &llm.EmbedResponse{Model: model, Vectors: out.Embeddings, Usage: llm.Usage{PromptTokens: out.PromptEvalCount}}, nil
}

// Models lists the models the server has pulled (/api/tags). OwnedBy is the model's
// namespace, "library" for Ollama's own, as Ollama's OpenAI shim reports it.
func (p *Provider) Models(ctx context.Context) ([]llm.Model, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.tagsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", p.name, err)
	}
	res, err := llm.Do(ctx, p.client, p.name, req, p.headers, decodeError)
	if err != nil {
		return nil, err
	}
	var out tagsResponse
	if err := p.decodeBody(ctx, res, &out); err != nil {
		return nil, err
	}
	models := make([]llm.Model, 0, len(out.Models))
	for _, m := range out.Models {
		if m.Name != "" {
			models = append(models, llm.Model{ID: m.Name, OwnedBy: namespace(m.Name)})
		}
	}
	return models, nil
}

// namespace is the owner part of a model name: "library" for "llama3.2:latest",
// "user" for "user/model" and "hf.co/user/model".
func namespace(name string) string {
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return "library"
	}
	return parts[len(parts)-2]
}

// decodeBody decodes one JSON value from res and closes it, draining a little so the
// connection goes back to the pool.
func (p *Provider) decodeBody(ctx context.Context, res *http.Response, v any) error {
	defer res.Body.Close()
	err := json.NewDecoder(res.Body).Decode(v)
	if err == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, drainLimit))
		return nil
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return llm.ProtocolError(p.name, "empty response body")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &llm.Error{Provider: p.name, Kind: llm.KindConnection, Message: "the response ended before its JSON was complete", Err: err}
	case errors.As(err, &syntax), errors.As(err, &typ):
		return llm.ProtocolError(p.name, "undecodable response: %v", err)
	}
	return llm.TransportError(ctx, p.name, err)
}

func (p *Provider) invalid(format string, args ...any) *llm.Error {
	return &llm.Error{Provider: p.name, Kind: llm.KindInvalid, Message: fmt.Sprintf(format, args...)}
}

// replyError classifies an error Ollama reports inside a 200 reply (mid-stream, after the
// status line was sent). Its status is gone, so the text decides: request problems are
// not retried, rate limits are retried later, anything else is taken as the server
// failing to generate and may succeed at another target.
func replyError(provider, msg string) *llm.Error {
	lower := strings.ToLower(msg)
	kind := llm.KindOverloaded
	switch {
	case containsAny(lower, "rate limit", "too many requests", "usage limit"):
		kind = llm.KindRateLimited
	case containsAny(lower, "invalid", "not found", "does not support", "not supported", "is required", "must be", "cannot unmarshal"):
		kind = llm.KindInvalid
	}
	return &llm.Error{Provider: provider, Kind: kind, Message: msg}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
