package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"

	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/rag"
)

// BenchmarkKnowledgeBaseSearch100k measures vector search on one knowledge base of
// 100,000 chunks of 768 dimensions (halfvec, HNSW cosine, the migration's m = 16 and
// ef_construction = 64) on this machine: recall@10 of the HNSW search against exact
// search at several ef_search values, latency percentiles and QPS at 4 concurrent
// searches through the pgvector store's SQL, and the same searches through
// POST /v1/knowledge-bases/{id}/search (mode vector; auth, validation, embedding the
// query, reading the chunks), alternating so that the machine's load hits both alike; then
// both one search at a time.
// The chunks are synthetic prose-like texts (2,000 topics over a 20,000-word vocabulary)
// embedded with the offline hashing embedder, as the server embeds the query.
// Loading and building the index takes minutes: it is not part of make test.
//
//	go test ./server -run '^$' -bench KnowledgeBaseSearch100k -benchtime 1x -timeout 60m
//
// KILN_BENCH_RAG_CHUNKS (default 100000), KILN_BENCH_RAG_M and KILN_BENCH_RAG_EF_CONSTRUCTION
// change the corpus size and the index build.
func BenchmarkKnowledgeBaseSearch100k(b *testing.B) {
	const dims, k, queries, workers = 768, 10, 100, 4
	n := envInt(b, "KILN_BENCH_RAG_CHUNKS", 100_000)
	m, efc := envInt(b, "KILN_BENCH_RAG_M", 16), envInt(b, "KILN_BENCH_RAG_EF_CONSTRUCTION", 64)
	ctx := context.Background()
	bd := setup(b)
	bd.srv.log = logging.New(io.Discard, "info")
	token := bd.signUp(b, "rag-bench@example.com").AccessToken
	var kb struct {
		ID uuid.UUID `json:"id"`
	}
	if res := bd.call(b, "POST", "/v1/knowledge-bases", token, map[string]any{"name": "bench", "dimensions": dims}, &kb); res.StatusCode != 201 {
		b.Fatalf("create knowledge base: %d %s", res.StatusCode, readAll(res))
	}
	var org uuid.UUID
	if err := bd.pool.QueryRow(ctx, `SELECT org_id FROM knowledge_bases WHERE id = $1`, kb.ID).Scan(&org); err != nil {
		b.Fatal(err)
	}

	corpus := newBenchCorpus(1)
	texts := make([]string, n)
	for i := range texts {
		texts[i] = corpus.text(24)
	}
	start := time.Now()
	loadChunks(b, bd, org, kb.ID, dims, texts)
	b.Logf("loaded %d chunks in %s (load %s)", n, time.Since(start).Round(time.Second), loadAvg())
	start = time.Now()
	for _, s := range []string{
		`SET maintenance_work_mem = '1GB'`,
		`SET max_parallel_maintenance_workers = 1`,
		fmt.Sprintf(`CREATE INDEX kb_chunks_hnsw_768 ON kb_chunks USING hnsw ((embedding::halfvec(768)) halfvec_cosine_ops)
			WITH (m = %d, ef_construction = %d) WHERE dimensions = 768`, m, efc),
		`ANALYZE kb_chunks`,
	} {
		if _, err := bd.pool.Exec(ctx, s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
	b.Logf("built the HNSW index (m %d, ef_construction %d) in %s (load %s)", m, efc, time.Since(start).Round(time.Second), loadAvg())
	var sizes string
	if err := bd.pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_relation_size('kb_chunks_hnsw_768')) || ' index, '
		|| pg_size_pretty(pg_table_size('kb_chunks')) || ' table, shared_buffers ' || current_setting('shared_buffers')`).Scan(&sizes); err != nil {
		b.Fatal(err)
	}
	b.Logf("sizes: %s", sizes)

	// Queries in the corpus's own words: most of one chunk's words, a few others.
	qs := make([]string, queries)
	vecs := make([][]float32, queries)
	for i := range qs {
		words := strings.Fields(texts[corpus.rng.IntN(n)])
		corpus.rng.Shuffle(len(words), func(a, b int) { words[a], words[b] = words[b], words[a] })
		qs[i] = strings.Join(append(words[:10], corpus.word(), corpus.word()), " ")
		vecs[i] = dev.Embedding(qs[i], dims)
	}
	exact := rag.NewPgvector(bd.pool, rag.PgvectorConfig{ExactBelow: n + 1})
	truth := make([][]rag.Ranked, queries)
	start = time.Now()
	for i, v := range vecs {
		var err error
		if truth[i], err = exact.Nearest(ctx, rag.VectorQuery{Org: org, KB: kb.ID, Dimensions: dims, Vector: v, K: k, Chunks: n}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("exact search: %s per query, sequential (load %s)", (time.Since(start) / queries).Round(time.Microsecond), loadAvg())

	cfg := rag.DefaultConfig()
	for _, ef := range []int{40, 64, 100, 150, 200} {
		store := rag.NewPgvector(bd.pool, rag.PgvectorConfig{EfSearch: ef, MaxScanTuples: cfg.MaxScanTuples, ExactBelow: cfg.ExactSearchBelow})
		var found, total int
		start = time.Now()
		for i, v := range vecs {
			got, err := store.Nearest(ctx, rag.VectorQuery{Org: org, KB: kb.ID, Dimensions: dims, Vector: v, K: k, Chunks: n})
			if err != nil {
				b.Fatal(err)
			}
			found += overlap(got, truth[i])
			total += len(truth[i])
		}
		recall := float64(found) / float64(total)
		b.Logf("ef_search %3d: recall@10 %.4f, %s per query sequential (load %s)", ef, recall, (time.Since(start) / queries).Round(time.Microsecond), loadAvg())
		if ef == cfg.EfSearch {
			b.ReportMetric(recall, "recall@10")
		}
	}

	// The shipped configuration, as the server runs it.
	store := rag.NewPgvector(bd.pool, rag.PgvectorConfig{EfSearch: cfg.EfSearch, MaxScanTuples: cfg.MaxScanTuples, ExactBelow: cfg.ExactSearchBelow})
	sql := func(i int) error {
		got, err := store.Nearest(ctx, rag.VectorQuery{Org: org, KB: kb.ID, Dimensions: dims, Vector: vecs[i], K: k, Chunks: n})
		if err == nil && len(got) != k {
			err = fmt.Errorf("%d results", len(got))
		}
		return err
	}
	path := "/v1/knowledge-bases/" + kb.ID.String() + "/search"
	api := func(i int) error {
		req := httptest.NewRequest("POST", path, strings.NewReader(fmt.Sprintf(`{"query":%q,"k":%d,"mode":"vector"}`, qs[i], k)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		bd.srv.ServeHTTP(rec, req)
		if rec.Code != 200 || strings.Count(rec.Body.String(), `"chunk_id"`) != k {
			return fmt.Errorf("search: %d %.300s", rec.Code, rec.Body)
		}
		return nil
	}
	var sqlLat, apiLat []time.Duration
	var sqlTime, apiTime time.Duration
	for round := range 4 {
		for _, side := range []struct {
			name string
			run  func(int) error
			lat  *[]time.Duration
			busy *time.Duration
		}{{"sql", sql, &sqlLat, &sqlTime}, {"http", api, &apiLat, &apiTime}} {
			lat, took := concurrently(b, workers, 5*time.Second, queries, side.run)
			*side.lat = append(*side.lat, lat...)
			*side.busy += took
			b.Logf("round %d %-4s: %5d searches in %s, p50 %s p95 %s, %.0f/s (load %s)", round+1, side.name, len(lat), took.Round(time.Millisecond),
				pct(lat, 50), pct(lat, 95), float64(len(lat))/took.Seconds(), loadAvg())
		}
	}
	b.Logf("sql : %d searches, p50 %s p95 %s p99 %s, %.0f QPS at %d concurrent", len(sqlLat), pct(sqlLat, 50), pct(sqlLat, 95), pct(sqlLat, 99), float64(len(sqlLat))/sqlTime.Seconds(), workers)
	b.Logf("http: %d searches, p50 %s p95 %s p99 %s, %.0f QPS at %d concurrent", len(apiLat), pct(apiLat, 50), pct(apiLat, 95), pct(apiLat, 99), float64(len(apiLat))/apiTime.Seconds(), workers)
	ratio := float64(pct(apiLat, 50)) / float64(pct(sqlLat, 50))
	b.Logf("http ÷ sql: p50 %.2f, p95 %.2f, mean %.2f", ratio, float64(pct(apiLat, 95))/float64(pct(sqlLat, 95)), float64(mean(apiLat))/float64(mean(sqlLat)))
	// One search at a time: the HTTP layer's own cost, without the queueing for two cores
	// that four concurrent searches add to it.
	var sqlOne, apiOne []time.Duration
	for range 2 {
		lat, _ := concurrently(b, 1, 3*time.Second, queries, sql)
		sqlOne = append(sqlOne, lat...)
		lat, _ = concurrently(b, 1, 3*time.Second, queries, api)
		apiOne = append(apiOne, lat...)
	}
	one := float64(pct(apiOne, 50)) / float64(pct(sqlOne, 50))
	b.Logf("one at a time: sql p50 %s p95 %s, http p50 %s p95 %s; http ÷ sql: p50 %.2f, mean %.2f (load %s)", pct(sqlOne, 50), pct(sqlOne, 95),
		pct(apiOne, 50), pct(apiOne, 95), one, float64(mean(apiOne))/float64(mean(sqlOne)), loadAvg())
	b.ReportMetric(one, "http/sql-p50-sequential")
	b.ReportMetric(float64(pct(sqlLat, 95).Microseconds())/1000, "sql-p95-ms")
	b.ReportMetric(float64(len(sqlLat))/sqlTime.Seconds(), "sql-qps")
	b.ReportMetric(float64(pct(apiLat, 95).Microseconds())/1000, "http-p95-ms")
	b.ReportMetric(ratio, "http/sql-p50")
}

// loadChunks writes the knowledge base's chunks with COPY (100 documents), its HNSW
// index of 768 dimensions dropped so that it is built once, after.
func loadChunks(b *testing.B, bd *bundle, org, kb uuid.UUID, dims int, texts []string) {
	b.Helper()
	ctx := context.Background()
	for _, s := range []string{
		`DROP INDEX kb_chunks_hnsw_768`,
		`ALTER TABLE kb_chunks ALTER COLUMN search_tsv SET DEFAULT ''::tsvector`, // vector search only
	} {
		if _, err := bd.pool.Exec(ctx, s); err != nil {
			b.Fatalf("%s: %v", s, err)
		}
	}
	const docs = 100
	now := time.Now()
	docIDs := make([]uuid.UUID, docs)
	for i := range docIDs {
		docIDs[i] = uuid.Must(uuid.NewV7())
		if _, err := bd.pool.Exec(ctx, `INSERT INTO kb_documents (id, org_id, kb_id, title, source, media_type, content, content_hash, bytes, status, chunk_count, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 'text', 'text/plain', '', $5, 0, 'ready', $6, $7, $7)`,
			docIDs[i], org, kb, "document "+strconv.Itoa(i), docIDs[i][:], len(texts)/docs, now); err != nil {
			b.Fatal(err)
		}
	}
	rows := make([][]any, len(texts))
	for i, t := range texts {
		h := sha256.Sum256([]byte(t))
		rows[i] = []any{uuid.Must(uuid.NewV7()), org, kb, docIDs[i%docs], i / docs, t, len(strings.Fields(t)), h[:], dims,
			pgvector.NewHalfVector(dev.Embedding(t, dims)), now}
	}
	if _, err := bd.pool.CopyFrom(ctx, pgx.Identifier{"kb_chunks"},
		[]string{"id", "org_id", "kb_id", "document_id", "ordinal", "text", "tokens", "content_hash", "dimensions", "embedding", "created_at"},
		pgx.CopyFromRows(rows)); err != nil {
		b.Fatal(err)
	}
	if _, err := bd.pool.Exec(ctx, `UPDATE knowledge_bases SET document_count = $2, chunk_count = $3 WHERE id = $1`, kb, docs, len(texts)); err != nil {
		b.Fatal(err)
	}
}

// concurrently runs search with workers goroutines for d (query i, round robin), and
// returns each search's latency and the time taken.
func concurrently(b *testing.B, workers int, d time.Duration, queries int, search func(i int) error) ([]time.Duration, time.Duration) {
	b.Helper()
	var (
		mu  sync.Mutex
		all []time.Duration
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Go(func() {
			var lat []time.Duration
			for i := w; time.Now().Before(deadline); i += workers {
				t := time.Now()
				if err := search(i % queries); err != nil {
					b.Error(err)
					return
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return all, time.Since(start)
}

func overlap(got, want []rag.Ranked) int {
	n := 0
	for _, g := range got {
		if slices.ContainsFunc(want, func(w rag.Ranked) bool { return w.ChunkID == g.ChunkID }) {
			n++
		}
	}
	return n
}

func pct(lat []time.Duration, p int) time.Duration {
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(10 * time.Microsecond)
}

func mean(lat []time.Duration) time.Duration {
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	return sum / time.Duration(len(lat))
}

// loadAvg is the machine's 1-minute load average, as /proc/loadavg gives it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// benchCorpus writes prose-like texts: each is mostly words of one of 2,000 topics (50
// words each) over a 20,000-word vocabulary, with some words of any topic, so that texts
// of a topic are near each other and the rest are not.
type benchCorpus struct {
	rng    *rand.Rand
	vocab  []string
	topics [][]string
}

func newBenchCorpus(seed uint64) *benchCorpus {
	c := &benchCorpus{rng: rand.New(rand.NewPCG(seed, seed))} //nolint:gosec // a benchmark's corpus, not a secret
	const letters = "abcdefghijklmnoprstuvwy"
	for range 20_000 {
		w := make([]byte, 4+c.rng.IntN(6))
		for i := range w {
			w[i] = letters[c.rng.IntN(len(letters))]
		}
		c.vocab = append(c.vocab, string(w))
	}
	for range 2_000 {
		t := make([]string, 50)
		for i := range t {
			t[i] = c.word()
		}
		c.topics = append(c.topics, t)
	}
	return c
}

// word is a word of the vocabulary, the frequent ones more often.
func (c *benchCorpus) word() string {
	f := c.rng.Float64()
	return c.vocab[int(f*f*float64(len(c.vocab)))]
}

func (c *benchCorpus) text(words int) string {
	t := c.topics[c.rng.IntN(len(c.topics))]
	out := make([]string, words)
	for i := range out {
		if i%3 == 2 {
			out[i] = c.word()
		} else {
			out[i] = t[c.rng.IntN(len(t))]
		}
	}
	return strings.Join(out, " ")
}
