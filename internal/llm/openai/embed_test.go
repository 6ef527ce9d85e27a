package openai_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"reflect"
	"testing"

	"github.com/kilnhq/kiln/internal/llm"
)

// b64 encodes v as the API's base64 embedding: little-endian float32s.
func b64(v ...float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestEmbed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		cfg       llm.ProviderConfig
		req       *llm.EmbedRequest
		reply     string
		wantPath  string
		wantQuery string
		wantBody  string
		want      *llm.EmbedResponse
		wantKind  llm.ErrorKind
	}{
		{
			name:     "OpenAIBase64OutOfOrder",
			cfg:      llm.ProviderConfig{Type: "openai", APIKey: "k"},
			req:      &llm.EmbedRequest{Model: "text-embedding-3-small", Input: []string{"first", "second"}, Dimensions: ptr(2), User: "u1"},
			wantPath: "/embeddings",
			wantBody: `{"model":"text-embedding-3-small","input":["first","second"],"dimensions":2,"user":"u1","encoding_format":"base64"}`,
			reply: `{"object":"list","data":[
			  {"object":"embedding","index":1,"embedding":"` + b64(0.5, -1) + `"},
			  {"object":"embedding","index":0,"embedding":"` + b64(0.25, 2) + `"}],
			  "model":"text-embedding-3-small","usage":{"prompt_tokens":4,"total_tokens":4}}`,
			want: &llm.EmbedResponse{Model: "text-embedding-3-small", Vectors: [][]float32{{0.25, 2}, {0.5, -1}}, Usage: llm.Usage{PromptTokens: 4}},
		},
		{
			name:     "CompatibleFloats",
			cfg:      llm.ProviderConfig{Type: "openai_compatible", BaseURL: "/v1"},
			req:      &llm.EmbedRequest{Model: "bge-m3", Input: []string{"a", "b"}},
			wantPath: "/v1/embeddings",
			wantBody: `{"model":"bge-m3","input":["a","b"]}`,
			reply: `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0023064255,-0.009327292]},
			  {"object":"embedding","index":1,"embedding":[-0.0028842222,0.5]}],"model":"bge-m3","usage":{"prompt_tokens":2,"total_tokens":2}}`,
			want: &llm.EmbedResponse{Model: "bge-m3", Vectors: [][]float32{{0.0023064255, -0.009327292}, {-0.0028842222, 0.5}}, Usage: llm.Usage{PromptTokens: 2}},
		},
		{
			name:      "AzureDeploymentPath",
			cfg:       llm.ProviderConfig{Type: "azure_openai", APIKey: "k"},
			req:       &llm.EmbedRequest{Model: "embed-deploy", Input: []string{"this is a test"}},
			wantPath:  "/openai/deployments/embed-deploy/embeddings",
			wantQuery: "api-version=2024-10-21",
			wantBody:  `{"input":["this is a test"],"encoding_format":"base64"}`,
			reply:     `{"data":[{"index":0,"embedding":[-0.012838088,-0.007421397],"object":"embedding"}],"usage":{"prompt_tokens":4,"total_tokens":4},"object":"list"}`,
			want:      &llm.EmbedResponse{Model: "embed-deploy", Vectors: [][]float32{{-0.012838088, -0.007421397}}, Usage: llm.Usage{PromptTokens: 4}},
		},
		{
			name:     "ErrVectorCountMismatch",
			cfg:      llm.ProviderConfig{Type: "openai", APIKey: "k"},
			req:      &llm.EmbedRequest{Model: "m", Input: []string{"a", "b"}},
			wantPath: "/embeddings",
			reply:    `{"data":[{"index":0,"embedding":[1]}]}`,
			wantKind: llm.KindProtocol,
		},
		{
			name:     "ErrRepeatedIndex",
			cfg:      llm.ProviderConfig{Type: "openai", APIKey: "k"},
			req:      &llm.EmbedRequest{Model: "m", Input: []string{"a", "b"}},
			wantPath: "/embeddings",
			reply:    `{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}`,
			wantKind: llm.KindProtocol,
		},
		{
			name:     "ErrEmptyInput",
			cfg:      llm.ProviderConfig{Type: "openai", APIKey: "k"},
			req:      &llm.EmbedRequest{Model: "m"},
			wantKind: llm.KindInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := setup(t, tt.cfg, jsonReply(http.StatusOK, tt.reply))
			got, err := p.Embed(context.Background(), tt.req)
			if tt.wantKind != "" {
				requireKind(t, err, tt.wantKind)
				return
			}
			if err != nil {
				t.Fatalf("Embed: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("embeddings:\n got %+v\nwant %+v", got, tt.want)
			}
			sent := up.last(t)
			if sent.Path != tt.wantPath || sent.Query != tt.wantQuery {
				t.Errorf("request = %s?%s, want %s?%s", sent.Path, sent.Query, tt.wantPath, tt.wantQuery)
			}
			assertJSON(t, sent.Body, tt.wantBody)
		})
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cfg        llm.ProviderConfig
		reply      string
		wantPath   string
		wantQuery  string
		wantHeader [2]string
		want       []llm.Model
	}{
		{
			name:       "OpenAI",
			cfg:        llm.ProviderConfig{Type: "openai", BaseURL: "/v1", APIKey: "sk-test"},
			wantPath:   "/v1/models",
			wantHeader: [2]string{"Authorization", "Bearer sk-test"},
			reply: `{"object":"list","data":[{"id":"gpt-4.1","object":"model","created":1686935002,"owned_by":"system"},
			  {"id":"ft:gpt-4o-mini:acme::abc","object":"model","created":1686935003,"owned_by":"user-abc"}]}`,
			want: []llm.Model{{ID: "gpt-4.1", OwnedBy: "system"}, {ID: "ft:gpt-4o-mini:acme::abc", OwnedBy: "user-abc"}},
		},
		{
			name:       "Azure",
			cfg:        llm.ProviderConfig{Type: "azure_openai", APIKey: "azure-key", APIVersion: "2024-10-21"},
			wantPath:   "/openai/models",
			wantQuery:  "api-version=2024-10-21",
			wantHeader: [2]string{"Api-Key", "azure-key"},
			reply: `{"data":[{"status":"succeeded","capabilities":{"chat_completion":true},"lifecycle_status":"generally-available",
			  "id":"gpt-4o-2024-08-06","created_at":1722988800,"object":"model"}],"object":"list"}`,
			want: []llm.Model{{ID: "gpt-4o-2024-08-06"}},
		},
		{
			name:     "CompatibleEmpty",
			cfg:      llm.ProviderConfig{Type: "openai_compatible"},
			wantPath: "/models",
			reply:    `{"object":"list","data":[]}`,
			want:     []llm.Model{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, up := setup(t, tt.cfg, jsonReply(http.StatusOK, tt.reply))
			got, err := p.Models(context.Background())
			if err != nil {
				t.Fatalf("Models: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("models = %+v, want %+v", got, tt.want)
			}
			sent := up.last(t)
			if sent.Method != http.MethodGet || sent.Path != tt.wantPath || sent.Query != tt.wantQuery {
				t.Errorf("request = %s %s?%s, want GET %s?%s", sent.Method, sent.Path, sent.Query, tt.wantPath, tt.wantQuery)
			}
			if k := tt.wantHeader[0]; k != "" && sent.Header.Get(k) != tt.wantHeader[1] {
				t.Errorf("header %s = %q, want %q", k, sent.Header.Get(k), tt.wantHeader[1])
			}
		})
	}
}
