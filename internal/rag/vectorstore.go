package rag

import (
	"context"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
)

// The vector stores a knowledge base can keep its vectors in (its vector_store).
const (
	StorePgvector = "pgvector"
	StoreQdrant   = "qdrant"
)

// VectorStore keeps the vectors of knowledge bases' chunks and finds the nearest ones.
// The chunks themselves (text, metadata, full-text index) are always in Postgres; a store
// holds each chunk's vector under the chunk's id, with what searches filter on: its org,
// knowledge base, document and metadata. Every operation is scoped to one org and one
// knowledge base. pgvector is the default; Qdrant is the adapter in internal/rag/qdrant,
// and another engine (Milvus) would be one more package behind this interface.
type VectorStore interface {
	// Upsert stores the points' vectors in knowledge base kb of org, replacing those
	// already stored under the same chunk ids.
	Upsert(ctx context.Context, org, kb uuid.UUID, dims int, points []VectorPoint) error
	// Delete removes the vectors the selector names; deleting what is not there is no
	// error.
	Delete(ctx context.Context, sel VectorSelector) error
	// Nearest returns the K chunks nearest to the query's vector (cosine similarity as
	// the score, best first) that meet its filter.
	Nearest(ctx context.Context, q VectorQuery) ([]Ranked, error)
}

// VectorPoint is one chunk's vector, with its document and metadata for filters.
type VectorPoint struct {
	ChunkID    uuid.UUID
	DocumentID uuid.UUID
	Vector     []float32
	Metadata   map[string]any
}

// VectorSelector names vectors of one knowledge base: all of them, or only those of
// Document, and of those only Chunks (when set), less Except.
type VectorSelector struct {
	Org, KB    uuid.UUID
	Dimensions int
	Document   uuid.UUID // uuid.Nil: every document
	Chunks     []uuid.UUID
	Except     []uuid.UUID
}

// VectorQuery asks a vector store for the K chunks of a knowledge base nearest to Vector
// (cosine) that meet Filter.
type VectorQuery struct {
	Org uuid.UUID
	KB  uuid.UUID
	// Generation is the knowledge base's serving index: pgvector keeps a reindex's new
	// chunks beside the old ones until the swap. (A knowledge base in another store is
	// never reindexed: it has one generation.)
	Generation int
	Dimensions int
	Vector     []float32
	K          int
	Filter     Filter
	// Chunks is how many chunks the knowledge base has: small ones are searched exactly.
	Chunks int
}

// PgvectorConfig tunes the pgvector store.
type PgvectorConfig struct {
	EfSearch      int
	MaxScanTuples int
	ExactBelow    int
}

// Pgvector is the VectorStore over kb_chunks' halfvec column and its HNSW indexes (one
// per vector size). Its vectors live in the chunk rows: ingestion writes them with the
// chunks, in one transaction, and a chunk's vector goes with its row; Upsert and Delete
// set and clear the column of rows already there.
type Pgvector struct {
	pool *pgxpool.Pool
	cfg  PgvectorConfig
}

var _ VectorStore = (*Pgvector)(nil)

// NewPgvector returns the pgvector store on pool.
func NewPgvector(pool *pgxpool.Pool, cfg PgvectorConfig) *Pgvector {
	return &Pgvector{pool: pool, cfg: cfg}
}

// Upsert sets the vectors of the knowledge base's chunk rows named by the points; a
// point whose chunk row is not there is an error (pgvector keeps no vector without its
// chunk).
func (p *Pgvector) Upsert(ctx context.Context, org, kb uuid.UUID, dims int, points []VectorPoint) error {
	if len(points) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, len(points))
	vecs := make([]pgvector.HalfVector, len(points))
	for i, pt := range points {
		if len(pt.Vector) != dims {
			return fmt.Errorf("upsert vectors: chunk %s has %d dimensions, want %d", pt.ChunkID, len(pt.Vector), dims)
		}
		ids[i], vecs[i] = pt.ChunkID, pgvector.NewHalfVector(pt.Vector)
	}
	tag, err := p.pool.Exec(ctx, `UPDATE kb_chunks c SET embedding = v.embedding, dimensions = $3
		FROM unnest($4::uuid[], $5::halfvec[]) AS v(id, embedding)
		WHERE c.org_id = $1 AND c.kb_id = $2 AND c.id = v.id`, org, kb, dims, ids, vecs)
	if err != nil {
		return fmt.Errorf("upsert vectors: %w", err)
	}
	if n := tag.RowsAffected(); n != int64(len(points)) {
		return fmt.Errorf("upsert vectors: %d of %d chunks are not in knowledge base %s", int64(len(points))-n, len(points), kb)
	}
	return nil
}

// Delete clears the vectors the selector names; their chunks stay, out of vector search.
func (p *Pgvector) Delete(ctx context.Context, sel VectorSelector) error {
	args := []any{sel.Org, sel.KB}
	sql := `UPDATE kb_chunks SET embedding = NULL WHERE org_id = $1 AND kb_id = $2 AND embedding IS NOT NULL`
	if sel.Document != uuid.Nil {
		args = append(args, sel.Document)
		sql += ` AND document_id = $` + strconv.Itoa(len(args))
	}
	if sel.Chunks != nil {
		args = append(args, sel.Chunks)
		sql += ` AND id = ANY($` + strconv.Itoa(len(args)) + `::uuid[])`
	}
	if len(sel.Except) > 0 {
		args = append(args, sel.Except)
		sql += ` AND id <> ALL($` + strconv.Itoa(len(args)) + `::uuid[])`
	}
	if _, err := p.pool.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("delete vectors: %w", err)
	}
	return nil
}

// Nearest searches a small knowledge base exactly and a large one through the HNSW
// index of its vector size, with pgvector's iterative index scan so that a selective
// filter still fills k results; when the index scan still comes back short (past
// max_scan_tuples), the search is done again exactly.
func (p *Pgvector) Nearest(ctx context.Context, q VectorQuery) ([]Ranked, error) {
	if q.Chunks >= p.cfg.ExactBelow {
		out, err := p.nearest(ctx, q, false)
		if err != nil || len(out) >= q.K {
			return out, err
		}
	}
	return p.nearest(ctx, q, true)
}

func (p *Pgvector) nearest(ctx context.Context, q VectorQuery, exact bool) ([]Ranked, error) {
	dims := strconv.Itoa(q.Dimensions) // one of Dimensions: safe in the text
	args := []any{q.Org, q.KB, pgvector.NewHalfVector(q.Vector), q.K, q.Generation}
	where, args := q.Filter.sql(args)
	dist := "c.embedding::halfvec(" + dims + ") <=> $3::halfvec(" + dims + ")"
	var sql string
	if exact {
		// A materialized set of the knowledge base's chunks: the planner cannot take the
		// approximate index for it.
		sql = `WITH c AS MATERIALIZED (SELECT c.id, c.embedding FROM kb_chunks c
			WHERE c.org_id = $1 AND c.kb_id = $2 AND c.generation = $5 AND c.dimensions = ` + dims + ` AND c.embedding IS NOT NULL` + where + `)
			SELECT c.id, 1 - (` + dist + `) AS score FROM c ORDER BY ` + dist + `, c.id LIMIT $4`
	} else {
		sql = `SELECT id, 1 - d FROM (SELECT c.id, ` + dist + ` AS d FROM kb_chunks c
			WHERE c.org_id = $1 AND c.kb_id = $2 AND c.generation = $5 AND c.dimensions = ` + dims + ` AND c.embedding IS NOT NULL` + where + `
			ORDER BY ` + dist + ` LIMIT $4) s ORDER BY d, id`
	}
	// One round trip: the statements of a batch run in one implicit transaction, which
	// the HNSW options set for (is_local) and end with.
	var out []Ranked
	b := &pgx.Batch{}
	if !exact {
		b.Queue(`SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true),
			set_config('hnsw.max_scan_tuples', $2, true)`, strconv.Itoa(max(p.cfg.EfSearch, q.K)), strconv.Itoa(p.cfg.MaxScanTuples))
	}
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		var err error
		out, err = scanRanked(rows)
		return err
	})
	if err := p.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("vector search: %w", err)
	}
	return out, nil
}
