// Package openai is Kiln's adapter for the OpenAI Chat Completions wire format. One
// implementation serves three provider types: openai (api.openai.com), openai_compatible
// (DeepSeek, DashScope, vLLM, llama.cpp, OpenRouter and others at any base URL) and
// azure_openai (deployments addressed by path, api-key auth, api-version query).
package openai

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	json "github.com/goccy/go-json"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/sse"
)

// The provider types New accepts.
const (
	typeOpenAI     = "openai"
	typeCompatible = "openai_compatible"
	typeAzure      = "azure_openai"
)

const (
	defaultBaseURL         = "https://api.openai.com/v1"
	defaultAzureAPIVersion = "2024-10-21"
	// maxBody bounds a blocking reply or a model list read into memory.
	maxBody = 64 << 20
)

var _ llm.Provider = (*Provider)(nil)

// Provider speaks Chat Completions to one configured upstream. It is safe for concurrent
// use.
type Provider struct {
	name    string
	typ     string
	client  *http.Client
	base    string            // without trailing slash
	version string            // azure api-version
	headers map[string]string // cfg.Headers plus auth, canonical keys
	// maxCompletionTokens says to send max tokens as max_completion_tokens: OpenAI's
	// reasoning models refuse max_tokens, while most compatible servers know only
	// max_tokens.
	maxCompletionTokens bool
	// base64Embeddings asks for base64 vectors (a quarter of the bytes and no float
	// parsing); only the first-party APIs document it.
	base64Embeddings bool
}

// New builds the adapter for cfg.Type openai, openai_compatible or azure_openai. A nil
// client gets llm.NewHTTPClient(). It returns an error naming the offending field when cfg
// is incomplete.
func New(cfg llm.ProviderConfig, client *http.Client) (*Provider, error) {
	name := cfg.Name
	if name == "" {
		name = cfg.Type
	}
	if client == nil {
		client = llm.NewHTTPClient()
	}
	p := &Provider{name: name, typ: cfg.Type, client: client}
	fail := func(format string, args ...any) (*Provider, error) {
		return nil, fmt.Errorf("llm provider %q (%s): "+format, append([]any{name, cfg.Type}, args...)...)
	}
	base := cfg.BaseURL
	switch cfg.Type {
	case typeOpenAI:
		if cfg.APIKey == "" {
			return fail("api_key is required")
		}
		if base == "" {
			base = defaultBaseURL
		}
		p.maxCompletionTokens, p.base64Embeddings = true, true
	case typeCompatible:
		if base == "" {
			return fail("base_url is required")
		}
	case typeAzure:
		if base == "" {
			return fail("base_url is required (https://<resource>.openai.azure.com)")
		}
		if cfg.APIKey == "" && cfg.BearerToken == "" {
			return fail("api_key or bearer_token is required")
		}
		p.version = cfg.APIVersion
		if p.version == "" {
			p.version = defaultAzureAPIVersion
		}
		// The 2024-10-21 GA spec knows only max_tokens; later versions (previews, v1)
		// add max_completion_tokens, which the reasoning deployments require.
		p.maxCompletionTokens = p.version > defaultAzureAPIVersion
		p.base64Embeddings = true
	default:
		return fail("type must be %s, %s or %s", typeOpenAI, typeCompatible, typeAzure)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail("base_url must be an absolute http(s) URL")
	}
	p.base = strings.TrimRight(base, "/")
	if cfg.Type == typeAzure {
		// Accept the endpoint copied with its /openai suffix, as some portals show it.
		p.base = strings.TrimSuffix(p.base, "/openai")
	}

	p.headers = make(map[string]string, len(cfg.Headers)+1)
	for k, v := range cfg.Headers {
		p.headers[http.CanonicalHeaderKey(k)] = v
	}
	switch {
	case cfg.Type == typeAzure && cfg.BearerToken != "":
		p.headers["Authorization"] = "Bearer " + cfg.BearerToken
	case cfg.Type == typeAzure:
		p.headers["Api-Key"] = cfg.APIKey
	case cfg.APIKey != "":
		p.headers["Authorization"] = "Bearer " + cfg.APIKey
	}
	return p, nil
}

// Chat runs a blocking (non-streaming) completion. Errors are *llm.Error: the upstream's
// status mapped to a Kind, KindProtocol for an undecodable or choiceless reply.
func (p *Provider) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, err := p.chatBody(req, false)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.url(req.Model, "/chat/completions"), p.headers, body, decodeError)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := readReply(res)
	if err != nil {
		return nil, llm.TransportError(ctx, p.name, err)
	}
	var wire chatResponse
	// The reply's strings (content, ids) share b, which nothing else holds or changes.
	if err := json.UnmarshalWithOption(b, &wire, json.DecodeNoCopyString()); err != nil {
		return nil, llm.ProtocolError(p.name, "decode chat completion: %v", err)
	}
	if wire.Error != nil {
		// OpenRouter reports failures that happen after it accepted the request in a
		// 200 body.
		return nil, bodyError(p.name, wire.Error)
	}
	return p.toResponse(&wire)
}

// ChatStream starts a streaming completion with usage reporting on. Errors before the
// first byte are returned here as *llm.Error; later ones come from Stream.Next.
func (p *Provider) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	body, err := p.chatBody(req, true)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.url(req.Model, "/chat/completions"), p.headers, body, decodeError) //nolint:bodyclose // the stream owns the body; its Close closes it
	if err != nil {
		return nil, err
	}
	return newStream(ctx, p.name, res.Body), nil
}

// Embed returns one vector per input, in input order. KindProtocol reports a reply whose
// vectors do not match the inputs.
func (p *Provider) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	if req.Model == "" {
		return nil, p.invalid("model is required")
	}
	if len(req.Input) == 0 {
		return nil, p.invalid("embedding input is empty")
	}
	body := embedRequest{Input: req.Input, Dimensions: req.Dimensions, User: req.User}
	if p.typ != typeAzure {
		body.Model = req.Model
	}
	if p.base64Embeddings {
		body.EncodingFormat = "base64"
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.url(req.Model, "/embeddings"), p.headers, body, decodeError)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return nil, llm.TransportError(ctx, p.name, err)
	}
	var wire embedResponse
	if err := json.Unmarshal(b, &wire); err != nil {
		return nil, llm.ProtocolError(p.name, "decode embeddings: %v", err)
	}
	if wire.Error != nil {
		return nil, bodyError(p.name, wire.Error)
	}
	vectors, err := wire.vectors(len(req.Input))
	if err != nil {
		return nil, llm.ProtocolError(p.name, "decode embeddings: %v", err)
	}
	model := wire.Model
	if model == "" {
		model = req.Model
	}
	return &llm.EmbedResponse{Model: model, Vectors: vectors, Usage: llm.Usage{PromptTokens: wire.Usage.PromptTokens}}, nil
}

// Models lists the upstream's models (for Azure, the resource's base and fine-tuned
// models, not its deployments).
func (p *Provider) Models(ctx context.Context) ([]llm.Model, error) {
	u := p.base + "/models"
	if p.typ == typeAzure {
		u = p.base + "/openai/models?api-version=" + url.QueryEscape(p.version)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", p.name, err)
	}
	res, err := llm.Do(ctx, p.client, p.name, hreq, p.headers, decodeError)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var wire struct {
		Data []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"owned_by"`
		} `json:"data"`
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return nil, llm.TransportError(ctx, p.name, err)
	}
	if err := json.Unmarshal(b, &wire); err != nil {
		return nil, llm.ProtocolError(p.name, "decode model list: %v", err)
	}
	models := make([]llm.Model, 0, len(wire.Data))
	for _, m := range wire.Data {
		models = append(models, llm.Model{ID: m.ID, OwnedBy: m.OwnedBy})
	}
	return models, nil
}

// url is the endpoint for op (/chat/completions or /embeddings); Azure addresses the
// deployment, which Kiln's targets name as the model, in the path.
func (p *Provider) url(model, op string) string {
	if p.typ != typeAzure {
		return p.base + op
	}
	return p.base + "/openai/deployments/" + url.PathEscape(model) + op + "?api-version=" + url.QueryEscape(p.version)
}

func (p *Provider) invalid(msg string) *llm.Error {
	return &llm.Error{Provider: p.name, Kind: llm.KindInvalid, Message: msg}
}

// bodyError turns an error object found in a 2xx body or a stream event into an
// *llm.Error; there is no HTTP status to classify by, so the code and type decide.
func bodyError(provider string, e *wireError) *llm.Error {
	typ, msg := e.typeAndMessage()
	if msg == "" {
		msg = "the upstream reported an error"
	}
	return &llm.Error{Provider: provider, Kind: e.kind(), Type: typ, Message: msg}
}

// cutStream is the error for a body that ended before data: [DONE]. It wraps
// io.ErrUnexpectedEOF, never io.EOF, so errors.Is(err, io.EOF) cannot mistake it for a
// complete stream.
func cutStream(provider string) *llm.Error {
	return &llm.Error{Provider: provider, Kind: llm.KindConnection, Message: "the stream ended before [DONE]", Err: io.ErrUnexpectedEOF}
}

// readError classifies a failure to read the event stream.
func readError(ctx context.Context, provider string, err error) error {
	switch {
	case ctx.Err() != nil:
		return llm.TransportError(ctx, provider, err)
	case errors.Is(err, sse.ErrTooLarge):
		return llm.ProtocolError(provider, "stream event over %d bytes", sse.MaxEventBytes)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return cutStream(provider)
	default:
		return llm.TransportError(ctx, provider, err)
	}
}

// readReply reads a reply of up to maxBody bytes: into one buffer of its declared length
// when it has one, instead of io.ReadAll's doubling ones.
func readReply(res *http.Response) ([]byte, error) {
	if n := res.ContentLength; n > 0 && n <= maxBody {
		b := make([]byte, n)
		if _, err := io.ReadFull(res.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(res.Body, maxBody))
}
