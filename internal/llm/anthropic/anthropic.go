// Package anthropic is Kiln's adapter for Anthropic's Messages API (provider type
// "anthropic"): chat, streamed chat and model listing. Anthropic offers no embeddings.
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kilnhq/kiln/internal/llm"
)

// DefaultBaseURL is Anthropic's public endpoint, used when ProviderConfig.BaseURL is empty.
const DefaultBaseURL = "https://api.anthropic.com"

// DefaultAPIVersion is the anthropic-version header sent when ProviderConfig.APIVersion is
// empty. Every Messages API feature Kiln uses (tools, tool_choice none, output_config) is
// available under it: Anthropic adds features without bumping the version.
const DefaultAPIVersion = "2023-06-01"

// DefaultMaxTokens fills the Messages API's required max_tokens when a request has none.
const DefaultMaxTokens = 4096

// maxResponseBody bounds a blocking reply (a 128k-token answer is well under 4 MiB).
const maxResponseBody = 32 << 20

// modelsPageLimit is the largest page GET /v1/models allows, so most accounts need one call.
const modelsPageLimit = 1000

// maxModelPages stops a listing whose cursor never ends.
const maxModelPages = 100

// Provider talks to one Anthropic endpoint with one key. It is safe for concurrent use.
type Provider struct {
	name      string
	client    *http.Client
	headers   map[string]string
	messages  string // {base}/v1/messages
	modelsURL string // {base}/v1/models
}

var _ llm.Provider = (*Provider)(nil)

// New builds a Provider from cfg. It needs cfg.Name and cfg.APIKey; cfg.BaseURL, when set,
// must be an absolute http(s) URL without the /v1 suffix. A nil client means
// llm.NewHTTPClient().
func New(cfg llm.ProviderConfig, client *http.Client) (*Provider, error) {
	if cfg.Name == "" {
		return nil, errors.New("anthropic: ProviderConfig.Name is required")
	}
	if cfg.Type != "" && cfg.Type != "anthropic" {
		return nil, fmt.Errorf("anthropic: provider %s: ProviderConfig.Type is %q, want anthropic", cfg.Name, cfg.Type)
	}
	if cfg.APIKey == "" {
		return nil, fmt.Errorf("anthropic: provider %s: ProviderConfig.APIKey is required", cfg.Name)
	}
	base := DefaultBaseURL
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("anthropic: provider %s: ProviderConfig.BaseURL %q is not an absolute http(s) URL", cfg.Name, cfg.BaseURL)
		}
		base = strings.TrimRight(cfg.BaseURL, "/")
	}
	version := cfg.APIVersion
	if version == "" {
		version = DefaultAPIVersion
	}
	if client == nil {
		client = llm.NewHTTPClient()
	}
	// Canonical keys, so a configured "X-Api-Key" cannot race ours in llm.Do's map walk;
	// the key and version are set last so configured headers never replace them.
	headers := make(map[string]string, len(cfg.Headers)+2)
	for k, v := range cfg.Headers {
		headers[http.CanonicalHeaderKey(k)] = v
	}
	headers["X-Api-Key"] = cfg.APIKey
	headers["Anthropic-Version"] = version
	return &Provider{
		name:      cfg.Name,
		client:    client,
		headers:   headers,
		messages:  base + "/v1/messages",
		modelsURL: base + "/v1/models",
	}, nil
}

// Chat runs req with a blocking POST /v1/messages. Failures are *llm.Error: the upstream's
// status kinds, KindInvalid for a request Anthropic cannot express, KindProtocol for an
// undecodable reply.
func (p *Provider) Chat(ctx context.Context, req *llm.Request) (*llm.Response, error) {
	body, jsonTool, err := p.buildRequest(req, false)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.messages, p.headers, body, decodeError)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody+1))
	if err != nil {
		return nil, llm.TransportError(ctx, p.name, err)
	}
	if len(data) > maxResponseBody {
		return nil, llm.ProtocolError(p.name, "reply larger than %d bytes", maxResponseBody)
	}
	var msg messageResponse
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, llm.ProtocolError(p.name, "decode reply: %v", err)
	}
	return msg.toResponse(jsonTool), nil
}

// ChatStream runs req with "stream": true. A bad status or refused connection is returned
// here; failures after the first byte come from the stream's Next.
func (p *Provider) ChatStream(ctx context.Context, req *llm.Request) (llm.Stream, error) {
	body, jsonTool, err := p.buildRequest(req, true)
	if err != nil {
		return nil, err
	}
	res, err := llm.PostJSON(ctx, p.client, p.name, p.messages, p.headers, body, decodeError) //nolint:bodyclose // the stream owns the body; its Close closes it
	if err != nil {
		return nil, err
	}
	return newStream(ctx, p.name, res.Body, jsonTool), nil
}

// Embed always fails with KindUnsupported: Anthropic has no embeddings endpoint.
func (p *Provider) Embed(context.Context, *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	return nil, llm.Unsupported(p.name, "embeddings")
}

// Models lists the models the key may use, following the after_id cursor across pages.
// Retired models are left out: requests naming them fail.
func (p *Provider) Models(ctx context.Context) ([]llm.Model, error) {
	var out []llm.Model
	after := ""
	for range maxModelPages {
		q := url.Values{"limit": {fmt.Sprint(modelsPageLimit)}}
		if after != "" {
			q.Set("after_id", after)
		}
		httpReq, err := http.NewRequestWithContext(ctx, http.MethodGet, p.modelsURL+"?"+q.Encode(), nil)
		if err != nil {
			return nil, fmt.Errorf("%s: build request: %w", p.name, err)
		}
		res, err := llm.Do(ctx, p.client, p.name, httpReq, p.headers, decodeError)
		if err != nil {
			return nil, err
		}
		var page modelsPage
		data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBody))
		_ = res.Body.Close()
		if err != nil {
			return nil, llm.TransportError(ctx, p.name, err)
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, llm.ProtocolError(p.name, "decode model list: %v", err)
		}
		for _, m := range page.Data {
			if m.ID == "" || m.Lifecycle == "retired" {
				continue
			}
			out = append(out, llm.Model{ID: m.ID, OwnedBy: "anthropic"})
		}
		if !page.HasMore || page.LastID == "" || page.LastID == after {
			return out, nil
		}
		after = page.LastID
	}
	return out, nil
}

type modelsPage struct {
	Data []struct {
		ID        string `json:"id"`
		Lifecycle string `json:"lifecycle"`
	} `json:"data"`
	HasMore bool   `json:"has_more"`
	LastID  string `json:"last_id"`
}

// errorBody is Anthropic's error object, in an error response and in a stream's error event.
type errorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// decodeError reads {"type":"error","error":{"type","message"}}.
func decodeError(body []byte) (typ, message string) {
	var e struct {
		Error errorBody `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	return e.Error.Type, e.Error.Message
}

// kindForType classifies an error event, which arrives after a 200 and so has no status.
func kindForType(typ string) llm.ErrorKind {
	switch typ {
	case "rate_limit_error":
		return llm.KindRateLimited
	case "timeout_error":
		return llm.KindTimeout
	case "authentication_error", "permission_error", "billing_error":
		return llm.KindAuth
	case "invalid_request_error", "not_found_error", "request_too_large":
		return llm.KindInvalid
	default: // overloaded_error, api_error and types added later: the upstream's fault
		return llm.KindOverloaded
	}
}
