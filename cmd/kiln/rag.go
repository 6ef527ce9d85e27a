package main

import (
	"time"

	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/server"
)

// newRAG builds the knowledge-base service from rag.* config, embedding through the LLM
// gateway, and declares its ingestion job kind on the one registry (every process: an
// API replica creates ingestion jobs, a worker runs them).
func (a *app) newRAG(d *deps, llmDeps server.LLM) *rag.Service {
	c := a.cfg.RAG
	return rag.New(rag.Config{
		EmbeddingModel: c.EmbeddingModel, Dimensions: c.Dimensions, ChunkMaxTokens: c.ChunkMaxTokens, ChunkOverlap: c.ChunkOverlap,
		MaxDocumentBytes: c.MaxDocumentBytes, EmbedBatch: c.EmbedBatch, EfSearch: c.HNSWEfSearch, MaxScanTuples: c.HNSWMaxScanTuples,
		ExactSearchBelow: c.ExactSearchBelow, RRFK: c.RRFK, VectorWeight: c.HybridVectorWeight, FulltextWeight: c.HybridFulltextWeight,
		Candidates: c.HybridCandidates,
	}, rag.Deps{
		Store: store.New(d.pool), Embedder: rag.GatewayEmbedder{Gateway: llmDeps.Runner.Gateway}, Jobs: d.jobs,
		HasModel: llmDeps.Runner.Gateway.Has, Log: a.log, Now: time.Now,
	})
}
