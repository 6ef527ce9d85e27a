package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/openai"
)

// keyRecorder is an OpenAI-compatible upstream that answers every chat and remembers the
// bearer token of the last one.
type keyRecorder struct {
	mu   sync.Mutex
	last string
}

func (k *keyRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	k.last = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`))
}

func (k *keyRecorder) lastKey() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.last
}

func TestProviderKeys(t *testing.T) {
	t.Parallel()
	up := &keyRecorder{}
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	build := func(_ string, key string) (llm.Provider, error) {
		return openai.New(llm.ProviderConfig{Name: "up", Type: "openai_compatible", BaseURL: ts.URL, APIKey: key}, nil)
	}
	deployment, err := build("up", "deployment-key")
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, withGateway(t, map[string]llm.Provider{"up": deployment}, map[string][]llm.Target{"default": {{Provider: "up", Model: "m"}}}, build))
	owner := b.signUp(t, "owner@example.com").AccessToken
	other := b.signUp(t, "other@example.com").AccessToken
	chatKey := b.createKey(t, owner, []string{"chat"}).Key

	chat := func(t *testing.T, credential string) api.ChatCompletion {
		t.Helper()
		var out api.ChatCompletion
		res := b.call(t, "POST", "/v1/chat/completions", credential, map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}}, &out)
		if res.StatusCode != 200 {
			t.Fatalf("chat: %d %s", res.StatusCode, readAll(res))
		}
		return out
	}

	if chat(t, owner); up.lastKey() != "deployment-key" {
		t.Fatalf("before: upstream saw %q", up.lastKey())
	}
	var stored api.ProviderKey
	if res := b.call(t, "PUT", "/v1/provider-keys/up", owner, map[string]string{"api_key": "org-secret-1234"}, &stored); res.StatusCode != 200 {
		t.Fatalf("set: %d %s", res.StatusCode, readAll(res))
	}
	if stored.Provider != "up" || stored.Hint != "…1234" {
		t.Errorf("stored %+v", stored)
	}
	var sealed []byte
	if err := b.pool.QueryRow(context.Background(), "SELECT key_sealed FROM org_provider_keys").Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("org-secret-1234")) {
		t.Error("the key is stored in clear")
	}

	t.Run("OKTheOrgsCallsUseItsKey", func(t *testing.T) {
		out := chat(t, chatKey) // an API key of the same org
		if up.lastKey() != "org-secret-1234" {
			t.Fatalf("upstream saw %q", up.lastKey())
		}
		if len(out.Attempts) != 1 || !strings.HasSuffix(out.Attempts[0].Target, "(org key)") {
			t.Errorf("attempts %+v", out.Attempts)
		}
	})
	t.Run("OKOtherOrgsUseTheDeploymentKey", func(t *testing.T) {
		chat(t, other)
		if up.lastKey() != "deployment-key" {
			t.Fatalf("upstream saw %q", up.lastKey())
		}
	})
	t.Run("OKListedWithoutTheSecret", func(t *testing.T) {
		var list api.ProviderKeyList
		res := b.call(t, "GET", "/v1/provider-keys", owner, nil, &list)
		if res.StatusCode != 200 || len(list.Data) != 1 || list.Data[0].Hint != "…1234" {
			t.Fatalf("list: %d %+v", res.StatusCode, list)
		}
	})
	t.Run("ErrPermissionDeniedWithoutAdminScope", func(t *testing.T) {
		res := b.call(t, "PUT", "/v1/provider-keys/up", chatKey, map[string]string{"api_key": "another-secret"}, nil)
		if res.StatusCode != 403 {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
	t.Run("OKAudited", func(t *testing.T) {
		var n int
		if err := b.pool.QueryRow(context.Background(), "SELECT count(*) FROM audit_events WHERE action = 'provider_key.set'").Scan(&n); err != nil || n != 1 {
			t.Fatalf("audit events %d, %v", n, err)
		}
	})
}

func TestProviderKeysDelete(t *testing.T) {
	t.Parallel()
	up := &keyRecorder{}
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	build := func(_ string, key string) (llm.Provider, error) {
		return openai.New(llm.ProviderConfig{Name: "up", Type: "openai_compatible", BaseURL: ts.URL, APIKey: key}, nil)
	}
	deployment, err := build("up", "deployment-key")
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, withGateway(t, map[string]llm.Provider{"up": deployment}, map[string][]llm.Target{"default": {{Provider: "up", Model: "m"}}}, build))
	owner := b.signUp(t, "owner@example.com").AccessToken
	if res := b.call(t, "PUT", "/v1/provider-keys/up", owner, map[string]string{"api_key": "org-secret-1234"}, nil); res.StatusCode != 200 {
		t.Fatalf("set: %d", res.StatusCode)
	}
	if res := b.call(t, "DELETE", "/v1/provider-keys/up", owner, nil, nil); res.StatusCode != 204 {
		t.Fatalf("delete: %d %s", res.StatusCode, readAll(res))
	}
	if res := b.call(t, "DELETE", "/v1/provider-keys/up", owner, nil, nil); res.StatusCode != 404 {
		t.Fatalf("second delete: %d", res.StatusCode)
	}
	res := b.call(t, "POST", "/v1/chat/completions", owner, map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}}, nil)
	if res.StatusCode != 200 || up.lastKey() != "deployment-key" {
		t.Fatalf("after delete: %d, upstream saw %q", res.StatusCode, up.lastKey())
	}
}
