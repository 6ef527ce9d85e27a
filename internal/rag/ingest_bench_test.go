package rag_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/rag"
)

// BenchmarkIngest measures ingestion of short documents (one chunk of about 40 words each)
// with the offline embedder: adding them (one transaction each, with its ingestion job),
// then ingesting them with 4 concurrent workers as the job runner would, in documents per
// minute over both; then the same corpus again, which must embed nothing and write no
// chunk (each chunk row's xmin is compared).
//
//	go test ./internal/rag -run '^$' -bench Ingest -benchtime 1x
func BenchmarkIngest(b *testing.B) {
	const n, workers = 3000, 4
	f := newFixture(b, nil)
	rng := rand.New(rand.NewPCG(7, 7)) //nolint:gosec // a benchmark's corpus
	words := strings.Fields(`account password invoice refund billing card payment month link email page settings key scope
		chat model token limit plan seat org member role admin search document chunk vector index query answer source`)
	docs := make([]rag.NewDocument, n)
	for i := range docs {
		w := make([]string, 40)
		for j := range w {
			w[j] = words[rng.IntN(len(words))]
		}
		docs[i] = rag.NewDocument{Title: fmt.Sprintf("Note %d", i), Body: []byte(strings.Join(w, " ") + "."), MediaType: rag.MediaText, Source: "text"}
	}
	ctx := b.Context()
	by := audit.Actor{Type: audit.ActorSystem}
	var added time.Duration // the adding part of the last run
	run := func() (ids []uuid.UUID, created int, res rag.IngestResult, took time.Duration) {
		start := time.Now()
		ids = make([]uuid.UUID, n)
		for i, d := range docs {
			doc, c, err := f.svc.AddDocument(ctx, f.org, by, f.kb.ID, d)
			if err != nil {
				b.Fatal(err)
			}
			ids[i] = doc.ID
			if c {
				created++
			}
		}
		added = time.Since(start)
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		next := make(chan uuid.UUID)
		for range workers {
			wg.Go(func() {
				for id := range next {
					r, err := f.svc.Ingest(ctx, f.org, id)
					if err != nil {
						b.Error(err)
						continue
					}
					mu.Lock()
					res.Chunks, res.Embedded, res.Written, res.Deleted = res.Chunks+r.Chunks, res.Embedded+r.Embedded, res.Written+r.Written, res.Deleted+r.Deleted
					mu.Unlock()
				}
			})
		}
		for _, id := range ids {
			next <- id
		}
		close(next)
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		return ids, created, res, time.Since(start)
	}
	chunkRows := func() map[string]string {
		rows, err := f.st.Pool.Query(ctx, `SELECT id::text, xmin::text FROM kb_chunks WHERE kb_id = $1`, f.kb.ID)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var id, xmin string
			if err := rows.Scan(&id, &xmin); err != nil {
				b.Fatal(err)
			}
			out[id] = xmin
		}
		return out
	}

	_, created, res, took := run()
	rate := float64(n) / took.Minutes()
	b.Logf("first ingestion: %d documents (%d created), %d chunks, %d embedded in %s (added in %s, ingested in %s): %.0f documents/minute (load %s)",
		n, created, res.Chunks, res.Embedded, took.Round(time.Millisecond), added.Round(time.Millisecond), (took - added).Round(time.Millisecond), rate, loadAvg())
	if created != n || res.Embedded == 0 {
		b.Fatalf("first ingestion created %d documents and embedded %d chunks", created, res.Embedded)
	}
	before, embeds := chunkRows(), f.emb.count()
	_, created, res, took = run()
	after := chunkRows()
	changed := 0
	for id, x := range before {
		if after[id] != x {
			changed++
		}
	}
	changed += len(after) - len(before)
	b.Logf("same corpus again: %d created, %d embedding calls' texts, %d chunks written, %d deleted, %d chunk rows changed, in %s (load %s)",
		created, f.emb.count()-embeds, res.Written, res.Deleted, changed, took.Round(time.Millisecond), loadAvg())
	if created != 0 || f.emb.count() != embeds || res.Written != 0 || res.Deleted != 0 || changed != 0 {
		b.Fatal("re-ingesting an unchanged corpus embedded or wrote chunks")
	}
	b.ReportMetric(rate, "docs/min")
}

// loadAvg is the machine's 1-minute load average, as /proc/loadavg gives it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
