package ollama

import (
	"context"
	"io"

	"github.com/kilnhq/kiln/internal/llm"
)

// NewStream exposes the NDJSON decoder to the fuzz test without an HTTP round trip.
func NewStream(ctx context.Context, provider string, body io.ReadCloser) llm.Stream {
	return newStream(ctx, provider, body)
}
