package rag_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// devEmbedder embeds with the dev provider's offline hashing embedder and counts the
// texts it was asked to embed.
type devEmbedder struct {
	mu    sync.Mutex
	texts int
}

func (e *devEmbedder) Embed(_ context.Context, _ uuid.UUID, _ string, dims int, texts []string) ([][]float32, error) {
	e.mu.Lock()
	e.texts += len(texts)
	e.mu.Unlock()
	out := make([][]float32, len(texts))
	for i, t := range texts {
		out[i] = dev.Embedding(t, dims)
	}
	return out, nil
}

func (e *devEmbedder) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.texts
}

// fixture is a service on a database of the test's own, with an org and a knowledge base.
type fixture struct {
	svc   *rag.Service
	st    *store.Store
	emb   *devEmbedder
	org   uuid.UUID
	kb    rag.KnowledgeBase
	clock *storetest.Clock
}

func newFixture(t testing.TB, cfg func(*rag.Config)) *fixture {
	t.Helper()
	return newFixtureWith(t, cfg, nil)
}

// newFixtureWith is newFixture with vector stores beside pgvector.
func newFixtureWith(t testing.TB, cfg func(*rag.Config), stores map[string]rag.VectorStore) *fixture {
	t.Helper()
	st := storetest.New(t)
	c := rag.DefaultConfig()
	c.ChunkMaxTokens = 60
	c.ChunkOverlap = 10
	if cfg != nil {
		cfg(&c)
	}
	f := &fixture{st: st, emb: &devEmbedder{}, org: storetest.Org(t, st), clock: storetest.NewClock()}
	f.svc = rag.New(c, rag.Deps{Store: st, Embedder: f.emb, Jobs: jobs.NewRegistry(), VectorStores: stores, Log: slog.New(slog.DiscardHandler), Now: f.clock.Now})
	f.kb = f.newKB(t, f.org)
	return f
}

func (f *fixture) newKB(t testing.TB, org uuid.UUID) rag.KnowledgeBase {
	t.Helper()
	kb, err := f.svc.CreateKnowledgeBase(t.Context(), org, audit.Actor{Type: audit.ActorSystem}, rag.NewKnowledgeBase{Name: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

// add stores a document and ingests it at once.
func (f *fixture) add(t testing.TB, org, kb uuid.UUID, n rag.NewDocument) rag.Document {
	t.Helper()
	if n.MediaType == "" {
		n.MediaType = rag.MediaText
	}
	if n.Source == "" {
		n.Source = "text"
	}
	doc, _, err := f.svc.AddDocument(t.Context(), org, audit.Actor{Type: audit.ActorSystem}, kb, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Ingest(t.Context(), org, doc.ID); err != nil {
		t.Fatal(err)
	}
	return doc
}

var corpus = []struct{ id, title, text, product string }{
	{"reset", "Resetting your password", "Open the account page and choose reset password. We email you a link that works for one hour.", "account"},
	{"invoice", "Invoices", "Invoices are emailed on the first day of each month and can be downloaded as PDF from the billing page.", "billing"},
	{"refund", "Refunds", "A refund is possible within 30 days of payment; it goes back to the card you paid with.", "billing"},
	{"keys", "API keys", "Create an API key in the org settings. Each key has scopes such as chat and kb:read.", "account"},
	{"zh-reset", "重置密码", "在账户页面点击重置密码，我们会发送一封邮件，链接在一小时内有效。", "account"},
	{"zh-invoice", "发票", "发票会在每月第一天通过邮件发送，也可以在账单页面下载PDF。", "billing"},
}

func (f *fixture) addCorpus(t testing.TB, org, kb uuid.UUID) map[uuid.UUID]string {
	t.Helper()
	names := map[uuid.UUID]string{}
	for i, d := range corpus {
		doc := f.add(t, org, kb, rag.NewDocument{Title: d.title, Body: []byte(d.text), ExternalID: d.id,
			Metadata: map[string]any{"product": d.product, "year": float64(2020 + i)}})
		names[doc.ID] = d.id
	}
	return names
}

func TestSearchModes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	names := f.addCorpus(t, f.org, f.kb.ID)
	for _, tc := range []struct{ query, want string }{
		{"how do I reset my password", "reset"},
		{"when are invoices sent", "invoice"},
		{"忘记密码怎么重置", "zh-reset"},
		{"发票什么时候发送", "zh-invoice"},
	} {
		for _, mode := range []rag.Mode{rag.ModeVector, rag.ModeFulltext, rag.ModeHybrid} {
			t.Run(string(mode)+"/"+tc.query, func(t *testing.T) {
				hits, err := f.svc.Search(t.Context(), f.org, f.kb.ID, rag.Query{Text: tc.query, K: 3, Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				if len(hits) == 0 || names[hits[0].DocumentID] != tc.want {
					var got []string
					for _, h := range hits {
						got = append(got, names[h.DocumentID])
					}
					t.Fatalf("ranking %v, want %s first", got, tc.want)
				}
				if hits[0].Metadata["source"] != "text" || hits[0].Title == "" {
					t.Fatalf("hit metadata %v, title %q", hits[0].Metadata, hits[0].Title)
				}
			})
		}
	}
}

func TestSearchFilters(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	names := f.addCorpus(t, f.org, f.kb.ID)
	for _, tc := range []struct {
		name   string
		filter map[string]any
		want   []string
	}{
		{"Equality", map[string]any{"product": "billing"}, []string{"invoice", "refund", "zh-invoice"}},
		{"In", map[string]any{"product": map[string]any{"in": []any{"billing", "nothing"}}}, []string{"invoice", "refund", "zh-invoice"}},
		{"Range", map[string]any{"year": map[string]any{"gte": 2022.0, "lt": 2024.0}}, []string{"refund", "keys"}},
		{"Conjunction", map[string]any{"product": "account", "year": map[string]any{"gt": 2021.0}}, []string{"keys", "zh-reset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			filter, err := rag.ParseFilter(tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			for _, mode := range []rag.Mode{rag.ModeVector, rag.ModeHybrid} {
				hits, err := f.svc.Search(t.Context(), f.org, f.kb.ID, rag.Query{Text: "password invoice refund key 密码 发票", K: 10, Mode: mode, Filter: filter})
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]bool{}
				for _, h := range hits {
					got[names[h.DocumentID]] = true
				}
				if len(got) != len(tc.want) {
					t.Fatalf("%s: documents %v, want %v", mode, got, tc.want)
				}
				for _, w := range tc.want {
					if !got[w] {
						t.Fatalf("%s: documents %v, want %v", mode, got, tc.want)
					}
				}
			}
		})
	}
	t.Run("ErrBadFilter", func(t *testing.T) {
		_, err := rag.ParseFilter(map[string]any{"year": map[string]any{"between": 1.0}, "a b": "x", "tags": []any{"x"}})
		e, ok := err.(*errs.Error) //nolint:errorlint // InvalidFields returns the *errs.Error itself
		if !ok || e.Code != errs.Invalid || len(e.Fields) != 3 {
			t.Fatalf("err %v, want invalid_request with 3 fields", err)
		}
	})
}

// TestTenancy: two orgs with identical documents; 1,000 rankings of one (each mode, each
// document's title, text and words of it, k from 1 to 20, with and without a filter)
// return 0 chunks of the other, and the other's knowledge base is not found. The rankings
// are checked before hydration, which reads chunks by org too and would hide a leak.
func TestTenancy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	other := storetest.Org(t, f.st)
	otherKB := f.newKB(t, other)
	mine := f.addCorpus(t, f.org, f.kb.ID)
	f.addCorpus(t, other, otherKB.ID)
	kb, err := f.svc.KnowledgeBase(t.Context(), f.org, f.kb.ID)
	if err != nil {
		t.Fatal(err)
	}
	own := map[uuid.UUID]bool{}
	for doc := range mine {
		_, chunks, err := f.svc.Document(t.Context(), f.org, f.kb.ID, doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range chunks {
			own[c.ID] = true
		}
	}
	modes := []rag.Mode{rag.ModeVector, rag.ModeFulltext, rag.ModeHybrid}
	billing, _ := rag.ParseFilter(map[string]any{"product": "billing"})
	const searches = 1000
	var results, foreign int
	for i := range searches {
		d := corpus[i%len(corpus)]
		words := strings.Fields(d.text)
		query := []string{d.title, d.text, d.product, strings.Join(words[(i/7)%len(words):], " ")}[(i/len(corpus))%4]
		q := rag.Query{Text: query, K: 1 + i%20, Mode: modes[i%3]}
		if i%5 == 0 {
			q.Filter = billing
		}
		ranked, err := f.svc.Rank(t.Context(), kb, q)
		if err != nil {
			t.Fatal(err)
		}
		results += len(ranked)
		for _, r := range ranked {
			if !own[r.ChunkID] {
				foreign++
				t.Errorf("%s %q ranked chunk %s, not the org's", q.Mode, query, r.ChunkID)
			}
		}
	}
	t.Logf("%d searches, %d results, %d of another org", searches, results, foreign)
	if results < searches {
		t.Fatalf("%d results in %d searches: the searches found too little to prove anything", results, searches)
	}
	if _, err := f.svc.Search(t.Context(), f.org, otherKB.ID, rag.Query{Text: "password"}); errs.CodeOf(err) != errs.NotFound {
		t.Fatalf("searching another org's knowledge base: %v, want not_found", err)
	}
}

// TestIncrementalIngestion: an unchanged document is not stored or embedded again; a
// changed one embeds only its changed chunks.
func TestIncrementalIngestion(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	var paras []string
	for i := range 6 {
		paras = append(paras, fmt.Sprintf("Paragraph %d explains feature number %d of the product in enough words to fill a chunk of its own, more or less.", i, i))
	}
	n := rag.NewDocument{Title: "Guide", Body: []byte(strings.Join(paras, "\n\n")), ExternalID: "guide"}
	doc := f.add(t, f.org, f.kb.ID, n)
	first := f.emb.count()
	_, stored, _ := f.svc.Document(t.Context(), f.org, f.kb.ID, doc.ID)
	if first == 0 || len(stored) < 3 {
		t.Fatalf("%d texts embedded into %d chunks", first, len(stored))
	}

	again, created, err := f.svc.AddDocument(t.Context(), f.org, audit.Actor{}, f.kb.ID, rag.NewDocument{Title: "Guide", Body: n.Body, ExternalID: "guide", MediaType: rag.MediaText, Source: "text"})
	if err != nil || created || again.ID != doc.ID {
		t.Fatalf("the same document again: created %v, id %s (first %s), err %v", created, again.ID, doc.ID, err)
	}
	res, err := f.svc.Ingest(t.Context(), f.org, doc.ID)
	if err != nil || res.Embedded != 0 || res.Written != 0 || res.Deleted != 0 || f.emb.count() != first {
		t.Fatalf("re-ingesting an unchanged document: %+v, %d embedded texts (was %d), err %v", res, f.emb.count(), first, err)
	}

	paras[4] = "Paragraph 4 now says something else entirely about billing and refunds, in different words."
	changed := rag.NewDocument{Title: "Guide", Body: []byte(strings.Join(paras, "\n\n")), ExternalID: "guide", MediaType: rag.MediaText, Source: "text"}
	replaced, created, err := f.svc.AddDocument(t.Context(), f.org, audit.Actor{}, f.kb.ID, changed)
	if err != nil || !created || replaced.ID != doc.ID {
		t.Fatalf("a changed document: created %v, id %s, err %v", created, replaced.ID, err)
	}
	res, err = f.svc.Ingest(t.Context(), f.org, doc.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Embedded == 0 || res.Embedded > 2 || f.emb.count() != first+res.Embedded {
		t.Fatalf("a changed paragraph: %+v (%d chunks); want 1 or 2 chunks embedded", res, len(stored))
	}
	kb, _ := f.svc.KnowledgeBase(t.Context(), f.org, f.kb.ID)
	if kb.ChunkCount != res.Chunks || kb.DocumentCount != 1 {
		t.Fatalf("knowledge base counts %d chunks, %d documents; want %d, 1", kb.ChunkCount, kb.DocumentCount, res.Chunks)
	}
	if err := f.svc.DeleteDocument(t.Context(), f.org, audit.Actor{}, f.kb.ID, doc.ID); err != nil {
		t.Fatal(err)
	}
	kb, _ = f.svc.KnowledgeBase(t.Context(), f.org, f.kb.ID)
	var left int
	if err := f.st.Pool.QueryRow(t.Context(), `SELECT count(*) FROM kb_chunks WHERE kb_id = $1`, f.kb.ID).Scan(&left); err != nil || left != 0 || kb.ChunkCount != 0 || kb.DocumentCount != 0 {
		t.Fatalf("after delete: %d chunks stored, %d counted, %d documents counted (err %v)", left, kb.ChunkCount, kb.DocumentCount, err)
	}
}

// TestFilterFillsK: through the HNSW index (exact search off), a filter matching 1 % of
// the chunks still returns k of them (iterative index scan, or the exact fallback).
func TestFilterFillsK(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *rag.Config) { c.ExactSearchBelow = 0; c.EfSearch = 20; c.MaxScanTuples = 500 })
	const n = 1000
	doc := uuid.New()
	for _, sql := range []string{
		`INSERT INTO kb_documents (id, org_id, kb_id, source, media_type, content, content_hash, bytes, status, created_at, updated_at)
		 VALUES ($1, $2, $3, 'text', 'text/plain', 'x', '\x00', 1, 'ready', now(), now())`,
		`INSERT INTO kb_chunks (id, org_id, kb_id, document_id, ordinal, text, tokens, content_hash, metadata, dimensions, embedding, search_tsv, created_at)
		 SELECT gen_random_uuid(), $2, $3, $1, g, 'chunk ' || g, 2, '\x00', jsonb_build_object('rare', g % 100 = 0), 256,
		        (SELECT array_agg(sin(g * 7 + i)::real) FROM generate_series(1, 256) i)::halfvec, to_tsvector('chunk'), now()
		 FROM generate_series(1, $4::int) g`,
		`UPDATE knowledge_bases SET chunk_count = $4 WHERE id = $3 AND $1::uuid IS NOT NULL AND $2::uuid IS NOT NULL`,
	} {
		args := []any{doc, f.org, f.kb.ID, n}
		if strings.HasPrefix(strings.TrimSpace(sql), "INSERT INTO kb_documents") {
			args = args[:3]
		}
		if _, err := f.st.Pool.Exec(t.Context(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	var version string
	if err := f.st.Pool.QueryRow(t.Context(), `SELECT extversion FROM pg_extension WHERE extname = 'vector'`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	t.Logf("pgvector %s", version) // iterative index scans need 0.8; older versions rely on the exact fallback
	if _, err := f.st.Pool.Exec(t.Context(), `ANALYZE kb_chunks`); err != nil {
		t.Fatal(err)
	}
	kb, _ := f.svc.KnowledgeBase(t.Context(), f.org, f.kb.ID)
	filter, _ := rag.ParseFilter(map[string]any{"rare": true})
	hits, err := f.svc.SearchIn(t.Context(), kb, rag.Query{Text: "chunk", K: 10, Mode: rag.ModeVector, Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 10 {
		t.Fatalf("%d results for a filter matching 10 of %d chunks, want 10", len(hits), n)
	}
}
