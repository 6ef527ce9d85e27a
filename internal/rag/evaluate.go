package rag

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/rag/eval"
)

// AddCorpus adds a dataset's documents to knowledge base kb (each under its dataset id as
// external id, its language in the metadata) and indexes them at once, four at a time,
// without waiting for the ingestion jobs (which then find nothing to change).
func (s *Service) AddCorpus(ctx context.Context, org uuid.UUID, by audit.Actor, kb uuid.UUID, docs []eval.Document) error {
	var todo []uuid.UUID
	for _, d := range docs {
		meta := map[string]any{"lang": d.Lang}
		for k, v := range d.Metadata {
			meta[k] = v
		}
		doc, created, err := s.AddDocument(ctx, org, by, kb, NewDocument{Title: d.Title, Source: "text", MediaType: MediaMarkdown,
			Body: []byte(d.Text), Metadata: meta, ExternalID: d.ID})
		if err != nil {
			return fmt.Errorf("document %s: %w", d.ID, err)
		}
		if created || doc.Status != StatusReady {
			todo = append(todo, doc.ID)
		}
	}
	ids := make(chan uuid.UUID)
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for id := range ids {
				if _, err := s.Ingest(ctx, org, id); err != nil {
					errc <- fmt.Errorf("ingest document %s: %w", id, err)
					return
				}
			}
		})
	}
	func() {
		defer close(ids)
		for _, id := range todo {
			select {
			case ids <- id:
			case err := <-errc:
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	return <-errc
}

// Searcher is an evaluation's view of searching knowledge base kb: it ranks documents
// (by external id) by their best chunk among the first chunks chunks. It ranks without
// reading the chunks' text (Rank), so an evaluation's latencies are the retrieval's.
func (s *Service) Searcher(ctx context.Context, kb KnowledgeBase, q Query, chunks int) (eval.Searcher, error) {
	rows, err := s.st.ListChunkExternalIDs(ctx, db.ListChunkExternalIDsParams{OrgID: kb.OrgID, KbID: kb.ID})
	if err != nil {
		return nil, fmt.Errorf("list chunks: %w", err)
	}
	docOf := make(map[uuid.UUID]string, len(rows))
	for _, r := range rows {
		docOf[r.ID] = r.ExternalID
	}
	return func(ctx context.Context, query eval.Query) ([]string, error) {
		qq := q
		qq.Text, qq.K = query.Query, chunks
		ranked, err := s.Rank(ctx, kb, qq)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(ranked))
		for _, r := range ranked {
			out = append(out, docOf[r.ChunkID])
		}
		return out, nil
	}, nil
}
