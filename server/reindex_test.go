package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/dev"
)

// gatedEmbedder is the dev provider whose embeddings of one size wait until the test
// opens its gate (or the call's context ends): a slow embedding model, held as long as
// the test needs, while embeddings of other sizes (a search's) pass.
type gatedEmbedder struct {
	*dev.Provider
	mu      sync.Mutex
	dims    int
	gate    chan struct{}
	entered chan struct{} // a call is waiting at the gate
}

func newGatedEmbedder(dims int) *gatedEmbedder {
	return &gatedEmbedder{Provider: dev.New(llm.ProviderConfig{Name: "gated"}), dims: dims, gate: make(chan struct{}), entered: make(chan struct{}, 1)}
}

func (g *gatedEmbedder) Embed(ctx context.Context, req *llm.EmbedRequest) (*llm.EmbedResponse, error) {
	g.mu.Lock()
	gate, dims := g.gate, g.dims
	g.mu.Unlock()
	if req.Dimensions == nil || *req.Dimensions != dims {
		return g.Provider.Embed(ctx, req)
	}
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Provider.Embed(ctx, req)
}

// open lets every call through; close makes the next ones of dims wait again.
func (g *gatedEmbedder) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
}

func (g *gatedEmbedder) close(dims int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate, g.dims = make(chan struct{}), dims
}

// waitEntered waits for a call at the gate.
func (g *gatedEmbedder) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no embedding call reached the gate")
	}
}

// TestReindex rebuilds a knowledge base with another embedding model (held at a gate),
// other dimensions and other chunking: until the swap, searches answer from the old
// index and a document added meanwhile is ingested into it; a second reindex is a
// conflict; after the swap the new index serves, with the new settings, the document
// added meanwhile in it, and the old chunks gone; the embedding calls are usage under
// rag.reindex. A cancelled reindex leaves the index it started from serving and
// deletes its partial one.
func TestReindex(t *testing.T) {
	t.Parallel()
	slow := newGatedEmbedder(384)
	b := setup(t, withGateway(t, map[string]llm.Provider{"dev": dev.New(llm.ProviderConfig{Name: "dev"}), "gated": slow},
		map[string][]llm.Target{"default": {{Provider: "dev", Model: dev.Model}}, "slow": {{Provider: "gated", Model: dev.Model}}}))
	b.runJobs(t)
	owner := b.signUp(t, "reindex@example.com").AccessToken
	var kb api.KnowledgeBase
	b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": "Reindexed"}, &kb)
	base := "/v1/knowledge-bases/" + kb.Id.String()
	add := func(id, text string) uuid.UUID {
		t.Helper()
		var d api.Document
		if res := b.call(t, "POST", base+"/documents", owner, map[string]any{"text": text, "title": id, "external_id": id}, &d); res.StatusCode != 202 {
			t.Fatalf("add %s: %d %s", id, res.StatusCode, readAll(res))
		}
		waitFor(t, "document "+id+" ready", func() bool {
			var got api.DocumentWithChunks
			b.call(t, "GET", base+"/documents/"+d.Id.String(), owner, nil, &got)
			return got.Status == api.DocumentReady
		})
		return d.Id
	}
	chunkIDs := func(doc uuid.UUID) []uuid.UUID {
		t.Helper()
		var d api.DocumentWithChunks
		b.call(t, "GET", base+"/documents/"+doc.String(), owner, nil, &d)
		var out []uuid.UUID
		for _, c := range d.Chunks {
			out = append(out, c.Id)
		}
		return out
	}
	search := func(mode, query string) []api.SearchHit {
		t.Helper()
		var out api.SearchResults
		if res := b.call(t, "POST", base+"/search", owner, map[string]any{"query": query, "k": 5, "mode": mode}, &out); res.StatusCode != 200 {
			t.Fatalf("search: %d %s", res.StatusCode, readAll(res))
		}
		return out.Data
	}
	docs := []uuid.UUID{
		add("reset", "Open the account page and choose reset password; the emailed link works for one hour. "+
			"If the link expired, ask for another one. Support cannot reset a password for you, "+
			"because only the owner of the email address may choose a new password for the account."),
		add("invoice", "Invoices are emailed on the first day of each month as PDF. Older invoices are on the billing page."),
		add("refund", "Refunds are possible within 30 days of payment and go back to the card you paid with."),
	}
	var oldChunks []uuid.UUID
	for _, d := range docs {
		oldChunks = append(oldChunks, chunkIDs(d)...)
	}
	getKB := func() api.KnowledgeBase {
		t.Helper()
		var out api.KnowledgeBase
		b.call(t, "GET", base, owner, nil, &out)
		return out
	}
	getJob := func(id uuid.UUID) api.Job {
		t.Helper()
		var j api.Job
		b.call(t, "GET", "/v1/jobs/"+id.String(), owner, nil, &j)
		return j
	}

	var job api.Job
	res := b.call(t, "POST", base+"/reindex", owner, map[string]any{"embedding_model": "slow", "dimensions": 384,
		"chunking": map[string]int{"max_tokens": 32, "overlap_tokens": 4}}, &job)
	if res.StatusCode != 202 || job.Kind != "rag.reindex" {
		t.Fatalf("reindex: %d %+v", res.StatusCode, job)
	}
	slow.waitEntered(t)

	// While the new index is built (its embeddings held at the gate): a second reindex
	// is refused, searches answer from the old index, and a new document goes into it.
	res = b.call(t, "POST", base+"/reindex", owner, map[string]any{"dimensions": 512}, nil)
	if p := decodeProblem(t, res); res.StatusCode != 409 || p.Code != api.ErrorCode(errs.Conflict) {
		t.Fatalf("second reindex: %d %+v", res.StatusCode, p)
	}
	during := getKB()
	if during.Generation != 0 || during.EmbeddingModel != "default" || during.Dimensions != 256 || during.ReindexJobId == nil || *during.ReindexJobId != job.Id {
		t.Fatalf("knowledge base during the reindex: %+v", during)
	}
	for _, mode := range []string{"vector", "fulltext", "hybrid"} {
		hits := search(mode, "how do I reset my password")
		if len(hits) == 0 {
			t.Fatalf("%s search during the reindex found nothing", mode)
		}
		for _, h := range hits {
			if !slices.Contains(oldChunks, h.ChunkId) {
				t.Fatalf("%s search during the reindex returned chunk %s, not of the old index", mode, h.ChunkId)
			}
		}
	}
	added := add("keys", "Create an API key in the org settings; each key has scopes such as chat and kb:read.")
	if hits := search("fulltext", "API key scopes"); len(hits) == 0 || hits[0].DocumentId != added {
		t.Fatalf("a document added during the reindex is not searchable at once: %+v", hits)
	}
	slow.open()
	waitFor(t, "reindex done", func() bool {
		st := getJob(job.Id).State
		return st == api.JobSucceeded || st == api.JobFailed || st == api.JobCancelled
	})
	if j := getJob(job.Id); j.State != api.JobSucceeded {
		t.Fatalf("reindex job %+v", j)
	}

	after := getKB()
	if after.Generation != 1 || after.EmbeddingModel != "slow" || after.Dimensions != 384 || after.Chunking.MaxTokens != 32 || after.Chunking.OverlapTokens != 4 {
		t.Fatalf("knowledge base after the reindex: %+v", after)
	}
	var newChunks []uuid.UUID
	for _, d := range append(docs, added) {
		ids := chunkIDs(d)
		if len(ids) == 0 {
			t.Fatalf("document %s has no chunks in the new index", d)
		}
		newChunks = append(newChunks, ids...)
	}
	if after.ChunkCount != len(newChunks) || len(newChunks) <= len(oldChunks)+1 {
		t.Fatalf("chunk count %d; %d new chunks (smaller ones), %d old", after.ChunkCount, len(newChunks), len(oldChunks))
	}
	for _, mode := range []string{"vector", "hybrid"} {
		hits := search(mode, "how do I reset my password")
		if len(hits) == 0 || hits[0].DocumentId != docs[0] {
			t.Fatalf("%s search after the reindex: %+v", mode, hits)
		}
		for _, h := range hits {
			if !slices.Contains(newChunks, h.ChunkId) {
				t.Fatalf("%s search after the reindex returned chunk %s, not of the new index", mode, h.ChunkId)
			}
		}
	}
	var stale, dims int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE generation <> 1), count(*) FILTER (WHERE dimensions <> 384)
		FROM kb_chunks WHERE kb_id = $1`, kb.Id).Scan(&stale, &dims); err != nil || stale != 0 || dims != 0 {
		t.Fatalf("chunks of the old index left: %d, of other sizes: %d (%v)", stale, dims, err)
	}
	waitFor(t, "usage recorded as rag.reindex", func() bool {
		var n int
		_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM llm_usage WHERE endpoint = 'rag.reindex' AND alias = 'slow' AND status = 'ok'`).Scan(&n)
		return n > 0
	})

	// A cancelled reindex: the index it started from keeps serving.
	{
		slow.close(512)
		var again api.Job
		if res := b.call(t, "POST", base+"/reindex", owner, map[string]any{"dimensions": 512}, &again); res.StatusCode != 202 {
			t.Fatalf("reindex: %d %s", res.StatusCode, readAll(res))
		}
		slow.waitEntered(t)
		if res := b.call(t, "POST", "/v1/jobs/"+again.Id.String()+"/cancel", owner, nil, nil); res.StatusCode >= 300 {
			t.Fatalf("cancel: %d %s", res.StatusCode, readAll(res))
		}
		waitFor(t, "reindex cancelled", func() bool { return getJob(again.Id).State == api.JobCancelled })
		if k := getKB(); k.Generation != 1 || k.Dimensions != 384 || k.ChunkCount != len(newChunks) {
			t.Fatalf("knowledge base after a cancelled reindex: %+v", k)
		}
		waitFor(t, "partial index deleted", func() bool {
			var n int
			_ = b.pool.QueryRow(t.Context(), `SELECT count(*) FROM kb_chunks WHERE kb_id = $1 AND generation <> 1`, kb.Id).Scan(&n)
			return n == 0
		})
		if hits := search("vector", "when are invoices emailed"); len(hits) == 0 || hits[0].DocumentId != docs[1] || !slices.Contains(newChunks, hits[0].ChunkId) {
			t.Fatalf("search after a cancelled reindex: %+v", hits)
		}
		slow.open()
	}
	t.Run("ErrBadSettings", func(t *testing.T) {
		res := b.call(t, "POST", base+"/reindex", owner, map[string]any{"embedding_model": "nope"}, nil)
		if p := decodeProblem(t, res); res.StatusCode != 400 || p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Pointer != "/embedding_model" {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
		stranger := b.signUp(t, "reindex-stranger@example.com").AccessToken
		if res := b.call(t, "POST", base+"/reindex", stranger, map[string]any{}, nil); res.StatusCode != 404 {
			t.Fatalf("another org reindexes: %d", res.StatusCode)
		}
	})
}
