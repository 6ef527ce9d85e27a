package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkAuthenticate measures the auth middleware alone: an operation that needs no
// credentials (the baseline), a user's access token (JWT), and a cached API key, in one run.
//
//	go test ./server -run '^$' -bench Authenticate -benchmem -count 6
func BenchmarkAuthenticate(b *testing.B) {
	bd := setup(b)
	pair := bd.signUp(b, "bench@example.com")
	key := bd.createKey(b, pair.AccessToken, []string{"admin"})
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := bd.srv.authenticate(ok)
	run := func(b *testing.B, path, credential string) {
		req := httptest.NewRequest("GET", path, nil)
		if credential != "" {
			req.Header.Set("Authorization", "Bearer "+credential)
		}
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNoContent {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	}
	b.Run("public", func(b *testing.B) { run(b, "/health", "") })
	b.Run("jwt", func(b *testing.B) { run(b, "/v1/api-keys", pair.AccessToken) })
	b.Run("api_key_warm", func(b *testing.B) { run(b, "/v1/api-keys", key.Key) })
}
