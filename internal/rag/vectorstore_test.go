package rag_test

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/rag/qdrant"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestVectorStoreContract runs one suite against every vector store: pgvector always,
// Qdrant when KILN_TEST_QDRANT_URL names a server (http://localhost:6334). Documents go
// in through ingestion (which writes the store), then the store is driven through the
// interface: nearest with k and filters, tenancy, upsert replacing a vector, and deletes
// by chunks, by document (keeping some) and by knowledge base; the service's document
// and knowledge-base deletes take the vectors with them.
func TestVectorStoreContract(t *testing.T) {
	t.Parallel()
	t.Run(rag.StorePgvector, func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		testVectorStore(t, f, rag.StorePgvector, rag.NewPgvector(f.st.Pool, rag.PgvectorConfig{EfSearch: 40, MaxScanTuples: 20000, ExactBelow: 20000}))
	})
	t.Run(rag.StoreQdrant, func(t *testing.T) {
		t.Parallel()
		addr := os.Getenv("KILN_TEST_QDRANT_URL")
		if addr == "" {
			t.Skip("KILN_TEST_QDRANT_URL is not set: no Qdrant server to run the contract against (docker run -p 6334:6334 qdrant/qdrant, then KILN_TEST_QDRANT_URL=http://localhost:6334)")
		}
		// A collection prefix of the test's own: runs never see each other's points.
		qs, err := qdrant.New(qdrant.Config{URL: addr, CollectionPrefix: "kiln_test_" + uuid.NewString()[:8], EfSearch: 40, ExactBelow: 20000})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = qs.Close() })
		if err := qs.Ping(t.Context()); err != nil {
			t.Fatalf("KILN_TEST_QDRANT_URL=%s: %v", addr, err)
		}
		f := newFixtureWith(t, nil, map[string]rag.VectorStore{rag.StoreQdrant: qs})
		testVectorStore(t, f, rag.StoreQdrant, qs)
	})
}

func testVectorStore(t *testing.T, f *fixture, name string, vs rag.VectorStore) {
	ctx := t.Context()
	by := audit.Actor{Type: audit.ActorSystem}
	newKB := func(org uuid.UUID) rag.KnowledgeBase {
		kb, err := f.svc.CreateKnowledgeBase(ctx, org, by, rag.NewKnowledgeBase{Name: "contract", VectorStore: name})
		if err != nil {
			t.Fatal(err)
		}
		if kb.VectorStore != name {
			t.Fatalf("knowledge base's vector store %q, want %q", kb.VectorStore, name)
		}
		return kb
	}
	kb := newKB(f.org)
	other := storetest.Org(t, f.st)
	otherKB := newKB(other)
	docs := f.addCorpus(t, f.org, kb.ID)
	f.addCorpus(t, other, otherKB.ID)
	byName := map[string]uuid.UUID{}
	for id, n := range docs {
		byName[n] = id
	}
	// chunks maps each of the org's chunks to its document.
	chunks := map[uuid.UUID]uuid.UUID{}
	for doc := range docs {
		_, cs, err := f.svc.Document(ctx, f.org, kb.ID, doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			chunks[c.ID] = doc
		}
	}
	nearest := func(text string, k int, filter map[string]any) []rag.Ranked {
		t.Helper()
		fl, err := rag.ParseFilter(filter)
		if err != nil {
			t.Fatal(err)
		}
		got, err := vs.Nearest(ctx, rag.VectorQuery{Org: f.org, KB: kb.ID, Dimensions: kb.Dimensions, Vector: dev.Embedding(text, kb.Dimensions), K: k, Filter: fl, Chunks: len(chunks)})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range got {
			if _, ok := chunks[r.ChunkID]; !ok {
				t.Fatalf("%q: result %d is chunk %s, not one of the knowledge base's", text, i, r.ChunkID)
			}
			if i > 0 && r.Score > got[i-1].Score+1e-6 {
				t.Fatalf("%q: scores not in descending order: %v", text, got)
			}
		}
		return got
	}

	t.Run("OKNearestWithinK", func(t *testing.T) {
		got := nearest("Open the account page and choose reset password", 3, nil)
		if len(got) != 3 || chunks[got[0].ChunkID] != byName["reset"] || got[0].Score < 0.5 {
			t.Fatalf("top 3 %+v, want the reset document's chunk first with a high score", got)
		}
		if all := nearest("anything", 100, nil); len(all) != len(chunks) {
			t.Fatalf("k = 100 returned %d of the %d chunks", len(all), len(chunks))
		}
	})
	t.Run("OKFilters", func(t *testing.T) {
		for _, tc := range []struct {
			filter map[string]any
			want   []string
		}{
			{map[string]any{"product": "billing"}, []string{"invoice", "refund", "zh-invoice"}},
			{map[string]any{"product": map[string]any{"in": []any{"account"}}, "year": map[string]any{"gte": 2023.0}}, []string{"keys", "zh-reset"}},
			{map[string]any{"year": map[string]any{"gt": 2020.0, "lt": 2022.0}}, []string{"invoice"}},
			{map[string]any{"year": 2025.0}, []string{"zh-invoice"}},
			{map[string]any{"document_id": map[string]any{"in": []any{byName["refund"].String(), byName["keys"].String()}}}, []string{"refund", "keys"}},
		} {
			got := nearest("password invoice refund key", 10, tc.filter)
			var names []string
			for _, r := range got {
				if n := docs[chunks[r.ChunkID]]; !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
			slices.Sort(names)
			slices.Sort(tc.want)
			if !slices.Equal(names, tc.want) {
				t.Fatalf("filter %v: documents %v, want %v", tc.filter, names, tc.want)
			}
		}
	})
	t.Run("OKTenancy", func(t *testing.T) {
		for _, d := range corpus {
			nearest(d.text, 50, nil) // nearest fails on any chunk not of the org's knowledge base
		}
	})
	t.Run("OKUpsertReplaces", func(t *testing.T) {
		var target uuid.UUID
		for c, doc := range chunks {
			if docs[doc] == "keys" {
				target = c
			}
		}
		const text = "marmalade zeppelin quartz"
		if err := vs.Upsert(ctx, f.org, kb.ID, kb.Dimensions, []rag.VectorPoint{{ChunkID: target, DocumentID: byName["keys"],
			Vector: dev.Embedding(text, kb.Dimensions), Metadata: map[string]any{"product": "account", "year": 2023.0}}}); err != nil {
			t.Fatal(err)
		}
		if got := nearest(text, 1, nil); len(got) != 1 || got[0].ChunkID != target || got[0].Score < 0.99 {
			t.Fatalf("after upsert %+v, want chunk %s at score 1", got, target)
		}
		if all := nearest("anything", 100, nil); len(all) != len(chunks) {
			t.Fatalf("after upsert, %d vectors for %d chunks: upsert must replace", len(all), len(chunks))
		}
	})
	t.Run("OKDeletes", func(t *testing.T) {
		count := func() int { return len(nearest("anything", 100, nil)) }
		var refundChunks []uuid.UUID
		for c, doc := range chunks {
			if doc == byName["refund"] {
				refundChunks = append(refundChunks, c)
			}
		}
		before := count()
		if err := vs.Delete(ctx, rag.VectorSelector{Org: f.org, KB: kb.ID, Dimensions: kb.Dimensions, Chunks: refundChunks[:1]}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != before-1 {
			t.Fatalf("delete one chunk: %d vectors left of %d", n, before)
		}
		if err := vs.Delete(ctx, rag.VectorSelector{Org: f.org, KB: kb.ID, Dimensions: kb.Dimensions, Chunks: []uuid.UUID{}}); err != nil || count() != before-1 {
			t.Fatalf("delete an empty list of chunks: %v, %d left (want %d)", err, count(), before-1)
		}
		// Another org's selector deletes nothing of this one.
		if err := vs.Delete(ctx, rag.VectorSelector{Org: other, KB: kb.ID, Dimensions: kb.Dimensions}); err != nil || count() != before-1 {
			t.Fatalf("delete with another org: %v, %d left (want %d)", err, count(), before-1)
		}
		var invoiceChunks []uuid.UUID
		for c, doc := range chunks {
			if doc == byName["invoice"] {
				invoiceChunks = append(invoiceChunks, c)
			}
		}
		if err := vs.Delete(ctx, rag.VectorSelector{Org: f.org, KB: kb.ID, Dimensions: kb.Dimensions, Document: byName["invoice"], Except: invoiceChunks[:1]}); err != nil {
			t.Fatal(err)
		}
		got := nearest("Invoices are emailed on the first day of each month", 100, map[string]any{"document_id": byName["invoice"].String()})
		if len(got) != 1 || got[0].ChunkID != invoiceChunks[0] {
			t.Fatalf("delete a document's vectors except one: %+v left, want %s", got, invoiceChunks[0])
		}
		// The service's delete of a document takes its vectors.
		if err := f.svc.DeleteDocument(ctx, f.org, by, kb.ID, byName["reset"]); err != nil {
			t.Fatal(err)
		}
		if got := nearest("reset password", 100, map[string]any{"document_id": byName["reset"].String()}); len(got) != 0 {
			t.Fatalf("vectors of a deleted document: %+v", got)
		}
		if err := vs.Delete(ctx, rag.VectorSelector{Org: f.org, KB: kb.ID, Dimensions: kb.Dimensions}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 0 {
			t.Fatalf("delete a knowledge base's vectors: %d left", n)
		}
		// The other org's knowledge base kept all of its own.
		otherChunks, err := vs.Nearest(ctx, rag.VectorQuery{Org: other, KB: otherKB.ID, Dimensions: otherKB.Dimensions, Vector: dev.Embedding("anything", otherKB.Dimensions), K: 100, Chunks: len(chunks)})
		if err != nil || len(otherChunks) != len(chunks) {
			t.Fatalf("the other org's knowledge base: %d vectors (want %d), err %v", len(otherChunks), len(chunks), err)
		}
		if err := f.svc.DeleteKnowledgeBase(ctx, other, by, otherKB.ID); err != nil {
			t.Fatal(err)
		}
		otherChunks, err = vs.Nearest(ctx, rag.VectorQuery{Org: other, KB: otherKB.ID, Dimensions: otherKB.Dimensions, Vector: dev.Embedding("anything", otherKB.Dimensions), K: 100, Chunks: len(chunks)})
		if err != nil || len(otherChunks) != 0 {
			t.Fatalf("vectors of a deleted knowledge base: %d, err %v", len(otherChunks), err)
		}
	})
}

// TestVectorStoreNotConfigured: a knowledge base cannot ask for a store the server does
// not have.
func TestVectorStoreNotConfigured(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	_, err := f.svc.CreateKnowledgeBase(t.Context(), f.org, audit.Actor{Type: audit.ActorSystem}, rag.NewKnowledgeBase{Name: "q", VectorStore: rag.StoreQdrant})
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Pointer != "/vector_store" {
		t.Fatalf("qdrant without rag.qdrant.url: %v, want a field error on /vector_store", err)
	}
}
