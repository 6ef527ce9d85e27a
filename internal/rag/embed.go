package rag

import (
	"context"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/llm"
)

// GatewayEmbedder embeds through the LLM gateway, with the org's own provider keys when
// it has them.
type GatewayEmbedder struct {
	Gateway *llm.Gateway
}

// Embed asks model (an alias) for vectors of dims dimensions.
func (e GatewayEmbedder) Embed(ctx context.Context, org uuid.UUID, model string, dims int, texts []string) ([][]float32, error) {
	res, _, err := e.Gateway.Embed(llm.WithOrg(ctx, org), model, &llm.EmbedRequest{Input: texts, Dimensions: &dims})
	if err != nil {
		return nil, err
	}
	return res.Vectors, nil
}
