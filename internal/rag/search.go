package rag

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
)

// Mode is how a search ranks chunks.
type Mode string

// The search modes.
const (
	ModeVector   Mode = "vector"
	ModeFulltext Mode = "fulltext"
	ModeHybrid   Mode = "hybrid"
)

// Query is a search.
type Query struct {
	Text   string
	K      int
	Mode   Mode
	Filter Filter
	// VectorWeight and FulltextWeight weigh a hybrid search's rankings; nil: configured.
	VectorWeight, FulltextWeight *float64
}

// Ranked is a chunk's place in a ranking, best first.
type Ranked struct {
	ChunkID uuid.UUID
	Score   float64
	// VectorRank and FulltextRank are its ranks (from 1) in a hybrid search's two
	// rankings; 0 when absent from one.
	VectorRank, FulltextRank int
}

// Retriever ranks a knowledge base's chunks for a query.
type Retriever interface {
	Retrieve(ctx context.Context, kb KnowledgeBase, q Query) ([]Ranked, error)
}

func scanRanked(rows pgx.Rows) ([]Ranked, error) {
	var out []Ranked
	for rows.Next() {
		var r Ranked
		if err := rows.Scan(&r.ChunkID, &r.Score); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// VectorRetriever ranks by the cosine similarity of chunk and query embeddings.
type VectorRetriever struct {
	// Stores are the vector stores by name (a knowledge base's VectorStore).
	Stores   map[string]VectorStore
	Embedder Embedder
}

// Retrieve embeds the query with the knowledge base's model and asks its store.
func (r *VectorRetriever) Retrieve(ctx context.Context, kb KnowledgeBase, q Query) ([]Ranked, error) {
	store, ok := r.Stores[kb.VectorStore]
	if !ok {
		return nil, errs.E(errs.NotReady, "The knowledge base's vector store %q is not configured on this server.", kb.VectorStore)
	}
	vecs, err := r.Embedder.Embed(ctx, kb.OrgID, kb.EmbeddingModel, kb.Dimensions, []string{q.Text})
	if err != nil {
		return nil, err
	}
	if len(vecs) != 1 || len(vecs[0]) != kb.Dimensions {
		return nil, errs.E(errs.UpstreamError, "The embedding model %q did not return one vector of %d dimensions.", kb.EmbeddingModel, kb.Dimensions)
	}
	return store.Nearest(ctx, VectorQuery{Org: kb.OrgID, KB: kb.ID, Generation: kb.Generation, Dimensions: kb.Dimensions, Vector: vecs[0], K: q.K, Filter: q.Filter, Chunks: kb.ChunkCount})
}

// FulltextRetriever ranks by Postgres full-text rank over the chunks' search vectors:
// any of the query's words (English, stemmed) or Chinese bigrams matches, and chunks
// with more of them, and rarer ones nearer together, rank higher (ts_rank_cd).
type FulltextRetriever struct {
	Pool *pgxpool.Pool
}

// Retrieve runs the full-text query.
func (r *FulltextRetriever) Retrieve(ctx context.Context, kb KnowledgeBase, q Query) ([]Ranked, error) {
	args := []any{kb.OrgID, kb.ID, SearchText(q.Text), q.K, kb.Generation}
	where, args := q.Filter.sql(args)
	rows, err := r.Pool.Query(ctx, `SELECT c.id, ts_rank_cd(c.search_tsv, t.q, 1) AS score
		FROM kb_chunks c, (SELECT replace(plainto_tsquery('english', $3)::text, ' & ', ' | ')::tsquery AS q) t
		WHERE c.org_id = $1 AND c.kb_id = $2 AND c.generation = $5 AND c.search_tsv @@ t.q`+where+`
		ORDER BY score DESC, c.id LIMIT $4`, args...)
	if err != nil {
		return nil, fmt.Errorf("full-text search: %w", err)
	}
	defer rows.Close()
	return scanRanked(rows)
}

// HybridRetriever fuses a vector and a full-text ranking by weighted reciprocal rank
// fusion: a chunk scores Σ weight / (K + rank) over the rankings it is in. Each ranking
// contributes Candidates results (at least 4·k).
type HybridRetriever struct {
	Vector, Fulltext Retriever
	K                float64
	Candidates       int
	// VectorWeight and FulltextWeight are the default weights.
	VectorWeight, FulltextWeight float64
}

// Retrieve runs both rankings and fuses them.
func (r *HybridRetriever) Retrieve(ctx context.Context, kb KnowledgeBase, q Query) ([]Ranked, error) {
	sub := q
	sub.K = max(r.Candidates, 4*q.K)
	vec, err := r.Vector.Retrieve(ctx, kb, sub)
	if err != nil {
		return nil, err
	}
	ft, err := r.Fulltext.Retrieve(ctx, kb, sub)
	if err != nil {
		return nil, err
	}
	wv, wf := r.VectorWeight, r.FulltextWeight
	if q.VectorWeight != nil {
		wv = *q.VectorWeight
	}
	if q.FulltextWeight != nil {
		wf = *q.FulltextWeight
	}
	return Fuse(q.K, r.K, wv, wf, vec, ft), nil
}

// Fuse is weighted reciprocal rank fusion of a vector and a full-text ranking, keeping k.
// Ties keep the vector ranking's order, then the full-text one's.
func Fuse(k int, rrfK, vectorWeight, fulltextWeight float64, vector, fulltext []Ranked) []Ranked {
	byID := map[uuid.UUID]*Ranked{}
	var order []*Ranked
	add := func(list []Ranked, w float64, rank func(*Ranked, int)) {
		for i, c := range list {
			r, ok := byID[c.ChunkID]
			if !ok {
				r = &Ranked{ChunkID: c.ChunkID}
				byID[c.ChunkID] = r
				order = append(order, r)
			}
			rank(r, i+1)
			r.Score += w / (rrfK + float64(i+1))
		}
	}
	add(vector, vectorWeight, func(r *Ranked, n int) { r.VectorRank = n })
	add(fulltext, fulltextWeight, func(r *Ranked, n int) { r.FulltextRank = n })
	sort.SliceStable(order, func(i, j int) bool { return order[i].Score > order[j].Score })
	out := make([]Ranked, 0, min(k, len(order)))
	for _, r := range order[:min(k, len(order))] {
		out = append(out, *r)
	}
	return out
}

// Hit is a search result.
type Hit struct {
	Ranked
	KnowledgeBaseID uuid.UUID
	DocumentID      uuid.UUID
	// ExternalID is the document's external id ("" when none).
	ExternalID string
	Title      string
	Ordinal    int
	Text       string
	Metadata   map[string]any
	Highlight  string
}

// Search runs q on knowledge base kb of org.
func (s *Service) Search(ctx context.Context, org, kbID uuid.UUID, q Query) ([]Hit, error) {
	kb, err := s.KnowledgeBase(ctx, org, kbID)
	if err != nil {
		return nil, err
	}
	return s.SearchIn(ctx, kb, q)
}

// SearchIn runs q on a knowledge base already read (evaluations run many queries).
func (s *Service) SearchIn(ctx context.Context, kb KnowledgeBase, q Query) ([]Hit, error) {
	ranked, err := s.Rank(ctx, kb, q)
	if err != nil {
		return nil, err
	}
	return s.hydrate(ctx, kb, q.Text, ranked)
}

// Rank is a search without reading the chunks: their ids and scores, best first.
func (s *Service) Rank(ctx context.Context, kb KnowledgeBase, q Query) ([]Ranked, error) {
	if q.Mode == "" {
		q.Mode = ModeHybrid
	}
	if q.K <= 0 {
		q.K = 10
	}
	r, ok := s.retrieval[q.Mode]
	if !ok {
		return nil, errs.InvalidFields("invalid search", []errs.FieldError{{Pointer: "/mode", Message: "must be vector, fulltext or hybrid"}})
	}
	return r.Retrieve(ctx, kb, q)
}

// hydrate reads the ranked chunks with their documents, in rank order.
func (s *Service) hydrate(ctx context.Context, kb KnowledgeBase, query string, ranked []Ranked) ([]Hit, error) {
	if len(ranked) == 0 {
		return []Hit{}, nil
	}
	ids := make([]uuid.UUID, len(ranked))
	for i, r := range ranked {
		ids[i] = r.ChunkID
	}
	rows, err := s.st.GetChunksByID(ctx, db.GetChunksByIDParams{OrgID: kb.OrgID, KbID: kb.ID, Ids: ids})
	if err != nil {
		return nil, fmt.Errorf("read chunks: %w", err)
	}
	byID := make(map[uuid.UUID]db.GetChunksByIDRow, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	out := make([]Hit, 0, len(ranked))
	hl := newHighlighter(query)
	for _, r := range ranked {
		row, ok := byID[r.ChunkID]
		if !ok { // deleted between ranking and reading
			continue
		}
		h := Hit{Ranked: r, KnowledgeBaseID: kb.ID, DocumentID: row.DocumentID, ExternalID: row.ExternalID.String, Title: row.Title, Ordinal: int(row.Ordinal),
			Text: row.Text, Metadata: map[string]any{}, Highlight: hl.passage(row.Text, 240)}
		if err := json.Unmarshal(row.Metadata, &h.Metadata); err != nil {
			return nil, fmt.Errorf("read chunk metadata: %w", err)
		}
		out = append(out, h)
	}
	return out, nil
}
