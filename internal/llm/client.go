package llm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	json "github.com/goccy/go-json"
)

// ProviderConfig is what an adapter is built from; it mirrors one entry of llm.providers in
// the configuration (or an org's own key).
type ProviderConfig struct {
	Name    string
	Type    string // openai, azure_openai, gemini, ollama, anthropic, openai_compatible, dev
	BaseURL string // empty: the provider's public endpoint
	APIKey  string
	// BearerToken authenticates to Azure OpenAI with a Microsoft Entra token instead of
	// an api-key.
	BearerToken string
	APIVersion  string            // azure_openai (default 2024-10-21), anthropic (anthropic-version, default 2023-06-01)
	Headers     map[string]string // sent with every request, e.g. an OpenRouter HTTP-Referer
}

// NewHTTPClient returns the client the adapters share: connection pools sized for a
// gateway, bounded dial/TLS/header waits, and no overall timeout (streams are bounded by
// their context instead).
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute, // a blocking chat call may think for minutes before its headers
		ExpectContinueTimeout: time.Second,
	}}
}

// PostJSON sends body as JSON to url with headers and returns the 2xx response for the
// caller to read and close. Transport failures become TransportError; non-2xx answers
// become StatusError with decode extracting the provider's error type and message.
func PostJSON(ctx context.Context, client *http.Client, provider, url string, headers map[string]string, body any, decode func([]byte) (string, string)) (*http.Response, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", provider, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: build request: %w", provider, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return Do(ctx, client, provider, req, headers, decode)
}

// Do sends req with headers added and returns the 2xx response, with errors as PostJSON.
func Do(ctx context.Context, client *http.Client, provider string, req *http.Request, headers map[string]string, decode func([]byte) (string, string)) (*http.Response, error) {
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req) //nolint:gosec // G704: upstream URLs come from the operator's configuration, not from callers
	if err != nil {
		return nil, TransportError(ctx, provider, err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return nil, StatusError(provider, res, decode)
	}
	return res, nil
}
