package errs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	domain := errs.E(errs.NotFound, "no such prompt")
	tests := []struct {
		name    string
		err     error
		code    errs.Code
		message string
		known   bool
	}{
		{"Domain", fmt.Errorf("get prompt: %w", domain), errs.NotFound, "no such prompt", true},
		{"Upstream", fmt.Errorf("chat: %w", &llm.Error{Provider: "openai", Kind: llm.KindRateLimited, Status: 429, Message: "slow down"}),
			errs.UpstreamRateLimited, "The provider openai answered HTTP 429: slow down", true},
		{"UpstreamAuthHidesText", &llm.Error{Provider: "openai", Kind: llm.KindAuth, Status: 401, Message: "bad key sk-123"},
			errs.UpstreamError, "The provider openai refused Kiln's credentials (HTTP 401); the operator must fix its key.", true},
		{"NoTarget", fmt.Errorf("model %q: %w", "default", llm.ErrNoTarget), errs.ModelUnavailable,
			"Every target of the model is unavailable right now (circuit open or at its concurrency limit); retry shortly.", true},
		{"Deadline", fmt.Errorf("store reply: %w", context.DeadlineExceeded), errs.Timeout, "The request did not complete within its deadline.", true},
		{"Cancelled", fmt.Errorf("store reply: %w", context.Canceled), errs.Timeout, "The request was cancelled.", true},
		{"Unknown", errors.New("pq: connection reset with secret detail"), errs.Internal,
			"An internal error occurred; quote the request id when reporting it.", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, known := errs.Classify(tt.err)
			if e.Code != tt.code || e.Message != tt.message || known != tt.known {
				t.Fatalf("Classify = (%s, %q, %v), want (%s, %q, %v)", e.Code, e.Message, known, tt.code, tt.message, tt.known)
			}
		})
	}
}
