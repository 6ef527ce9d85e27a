package server

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/errs"
)

// TestOpenAIErrorShape: every error under /openai is in OpenAI's body, so OpenAI SDKs show
// it: a wrong method on every route, unknown paths, bad credentials on every operation, and
// bad bodies on every operation that takes one. Routes are read from the spec, so an
// operation added under /openai is covered without touching this test.
func TestOpenAIErrorShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pair := b.signUp(t, "openai-errors@example.com")
	key := b.createKey(t, pair.AccessToken, []string{"chat"}).Key

	type operation struct{ method, path string }
	var ops []operation
	routes := map[string][]string{} // path → its methods
	for path, item := range b.spec.Paths.Map() {
		if !strings.HasPrefix(path, "/openai/") {
			continue
		}
		concrete := strings.NewReplacer("{", "x", "}", "").Replace(path)
		for method := range item.Operations() {
			ops = append(ops, operation{method, concrete})
			routes[concrete] = append(routes[concrete], method)
		}
	}
	if len(ops) < 3 {
		t.Fatalf("only %d operations under /openai", len(ops))
	}

	t.Run("ErrWrongMethod", func(t *testing.T) {
		t.Parallel()
		for path, methods := range routes {
			for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
				if slices.Contains(methods, m) {
					continue
				}
				res := b.do(t, openAIRequest(m, path, key, ""))
				msg := openAIErrorIs(t, res, http.StatusMethodNotAllowed, "invalid_request_error", errs.MethodNotAllowed, nil)
				for _, allowed := range methods {
					if !strings.Contains(res.Header.Get("Allow"), allowed) {
						t.Errorf("%s %s: Allow %q lacks %s", m, path, res.Header.Get("Allow"), allowed)
					}
				}
				if !strings.Contains(msg, m) {
					t.Errorf("%s %s: message %q", m, path, msg)
				}
			}
		}
	})

	t.Run("ErrUnknownPath", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/openai", "/openai/", "/openai/v1", "/openai/v1/nope", "/openai/v2/models", "/openai/v1/chat/completions/extra", "/openai/v1/models/x/y"} {
			for _, m := range []string{"GET", "POST"} {
				res := b.do(t, openAIRequest(m, path, key, ""))
				openAIErrorIs(t, res, http.StatusNotFound, "not_found_error", errs.NotFound, nil)
			}
		}
	})

	t.Run("ErrBadCredentials", func(t *testing.T) {
		t.Parallel()
		for _, op := range ops {
			for _, credential := range []string{"", "kiln_test_nope", pair.AccessToken, "not-a-token"} {
				res := b.do(t, openAIRequest(op.method, op.path, credential, `{}`))
				openAIErrorIs(t, res, http.StatusUnauthorized, "authentication_error", errs.Unauthenticated, nil)
				if res.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s %s: 401 without WWW-Authenticate", op.method, op.path)
				}
			}
		}
	})

	t.Run("ErrBadBody", func(t *testing.T) {
		t.Parallel()
		for _, op := range ops {
			if op.method != http.MethodPost {
				continue
			}
			res := b.do(t, openAIRequest(op.method, op.path, key, `{"model":`))
			openAIErrorIs(t, res, http.StatusBadRequest, "invalid_request_error", errs.MalformedJSON, nil)

			req := openAIRequest(op.method, op.path, key, `{"model":"default"}`)
			req.Header.Set("Content-Type", "text/plain")
			openAIErrorIs(t, b.do(t, req), http.StatusUnsupportedMediaType, "invalid_request_error", errs.UnsupportedMediaType, nil)

			big := `{"model":"default","input":"` + strings.Repeat("a", 2<<20) + `"}`
			openAIErrorIs(t, b.do(t, openAIRequest(op.method, op.path, key, big)), http.StatusRequestEntityTooLarge, "invalid_request_error", errs.RequestTooLarge, nil)
		}
	})

	t.Run("ErrUnknownModelPointsAtTheOpenAIList", func(t *testing.T) {
		t.Parallel()
		for path, body := range map[string]string{
			"/openai/v1/chat/completions": `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`,
			"/openai/v1/embeddings":       `{"model":"nope","input":"hi"}`,
			"/openai/v1/responses":        `{"model":"nope","input":"hi"}`,
		} {
			msg := openAIErrorIs(t, b.do(t, openAIRequest("POST", path, key, body)), http.StatusNotFound, "not_found_error", errs.NotFound, nil)
			if !strings.Contains(msg, "GET /openai/v1/models") {
				t.Errorf("%s: %q does not point at GET /openai/v1/models", path, msg)
			}
		}
	})
}
