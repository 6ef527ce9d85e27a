package rag

import (
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestPgvectorHNSWOptions: the HNSW options reach the index scan (they are set in the
// search's own batch, whose implicit transaction they last for). A filter matching 10 of
// 1,000 chunks, searched through the index only (no exact fallback) with ef_search 20:
// the iterative scan, allowed past every chunk, finds all 10; without the options the
// scan stops at its 40 default candidates.
func TestPgvectorHNSWOptions(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	ctx := t.Context()
	org, kb, doc := storetest.Org(t, st), uuid.New(), uuid.New()
	const n = 1000
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO knowledge_bases (id, org_id, name, embedding_model, dimensions, chunk_max_tokens, chunk_overlap, created_at, updated_at)
		  VALUES ($2, $1, 'kb', 'hash', 256, 512, 64, now(), now())`, []any{org, kb}},
		{`INSERT INTO kb_documents (id, org_id, kb_id, source, media_type, content, content_hash, bytes, status, created_at, updated_at)
		  VALUES ($3, $1, $2, 'text', 'text/plain', 'x', '\x00', 1, 'ready', now(), now())`, []any{org, kb, doc}},
		{`INSERT INTO kb_chunks (id, org_id, kb_id, document_id, ordinal, text, tokens, content_hash, metadata, dimensions, embedding, search_tsv, created_at)
		  SELECT gen_random_uuid(), $1, $2, $3, g, 'chunk ' || g, 2, '\x00', jsonb_build_object('rare', g % 100 = 0), 256,
		         (SELECT array_agg(sin(g * 7 + i)::real) FROM generate_series(1, 256) i)::halfvec, to_tsvector('chunk'), now()
		  FROM generate_series(1, $4::int) g`, []any{org, kb, doc, n}},
		{`ANALYZE kb_chunks`, nil},
		// A thousand rows are cheaper to read and sort than to find through the HNSW
		// index: the planner must take the index, as it does for a large knowledge base.
		{`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET enable_seqscan = off', current_database());
		  EXECUTE format('ALTER DATABASE %I SET enable_sort = off', current_database()); END $$`, nil},
	} {
		if _, err := st.Pool.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("%.40s: %v", stmt.sql, err)
		}
	}
	st.Pool.Reset() // new connections, with the database's settings
	filter, err := ParseFilter(map[string]any{"rare": true})
	if err != nil {
		t.Fatal(err)
	}
	vec := make([]float32, 256)
	for i := range vec {
		vec[i] = float32(i%7) - 3
	}
	p := NewPgvector(st.Pool, PgvectorConfig{EfSearch: 20, MaxScanTuples: 10 * n})
	got, err := p.nearest(ctx, VectorQuery{Org: org, KB: kb, Dimensions: 256, Vector: vec, K: 10, Filter: filter, Chunks: n}, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Fatalf("the index scan found %d of the 10 chunks the filter matches: the HNSW options were not in effect", len(got))
	}
}
