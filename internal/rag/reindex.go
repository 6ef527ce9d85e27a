package rag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// KindReindex rebuilds a knowledge base's index with new settings beside the serving
// one, and swaps them when it is complete.
var KindReindex = jobs.Kind{Name: "rag.reindex", MaxAttempts: 3, Timeout: 2 * time.Hour,
	Backoff: jobs.Backoff{Base: 10 * time.Second, Max: 5 * time.Minute}}

// IndexSettings are what a knowledge base's index is built with.
type IndexSettings struct {
	EmbeddingModel string  `json:"embedding_model"`
	Dimensions     int     `json:"dimensions"`
	Chunking       Chunker `json:"chunking"`
}

// ReindexPayload is the payload of KindReindex.
type ReindexPayload struct {
	Org uuid.UUID `json:"org"`
	KB  uuid.UUID `json:"knowledge_base"`
	// Generation is the index the job builds: the serving one's plus one.
	Generation int           `json:"generation"`
	Settings   IndexSettings `json:"settings"`
}

// ReindexResult is what a reindex job reports.
type ReindexResult struct {
	Generation int `json:"generation"`
	Documents  int `json:"documents"`
	// Redone counts documents built again because they changed during the reindex.
	Redone   int `json:"redone"`
	Chunks   int `json:"chunks"`
	Embedded int `json:"embedded"`
	Reused   int `json:"reused"`
}

// reindexPasses bounds the catch-up passes over documents changed during a reindex that
// run without the knowledge base's lock; what is left is done under it.
const reindexPasses = 3

// Reindex starts rebuilding knowledge base id's index with the settings of change (nil
// fields keep the knowledge base's). It returns the reindex job. Errors: not_found;
// invalid_request for bad settings or a knowledge base whose vectors are not in pgvector;
// conflict while another reindex of it is queued or running.
func (s *Service) Reindex(ctx context.Context, org uuid.UUID, by audit.Actor, id uuid.UUID, model *string, dims *int, chunking *Chunker) (jobs.Job, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var job jobs.Job
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: org, ID: id})
		if err != nil {
			return notFound(err, "knowledge base")
		}
		kb := toKnowledgeBase(row)
		set := IndexSettings{EmbeddingModel: kb.EmbeddingModel, Dimensions: kb.Dimensions, Chunking: kb.Chunking}
		if model != nil {
			set.EmbeddingModel = *model
		}
		if dims != nil {
			set.Dimensions = *dims
		}
		if chunking != nil {
			set.Chunking = *chunking
		}
		if fields := s.checkIndexSettings(set.EmbeddingModel, set.Dimensions, set.Chunking); len(fields) > 0 {
			return errs.InvalidFields("invalid reindex", fields)
		}
		if external(kb.VectorStore) {
			return errs.E(errs.Invalid, "A knowledge base whose vectors are in %s cannot be reindexed yet; only pgvector ones can.", kb.VectorStore)
		}
		if kb.ReindexJobID != nil {
			live, err := q.JobLive(ctx, *kb.ReindexJobID)
			if err != nil {
				return fmt.Errorf("read reindex job: %w", err)
			}
			if live {
				return errs.E(errs.Conflict, "Knowledge base %s is being reindexed (job %s); cancel that job or wait for it to end.", id, *kb.ReindexJobID)
			}
		}
		job, err = s.jobs.Enqueue(ctx, q, s.now(), jobs.New{Kind: KindReindex.Name, OrgID: &org, CreatedBy: by.UserID(), APIKeyID: apiKeyOf(by),
			Payload: ReindexPayload{Org: org, KB: id, Generation: kb.Generation + 1, Settings: set}})
		if err != nil {
			return err
		}
		if err := q.SetKnowledgeBaseReindex(ctx, db.SetKnowledgeBaseReindexParams{ID: id, JobID: uuid.NullUUID{UUID: job.ID, Valid: true}}); err != nil {
			return fmt.Errorf("set reindex job: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "knowledge_base.reindex", TargetType: "knowledge_base", TargetID: id.String(),
			Data: map[string]any{"job_id": job.ID.String(), "from": IndexSettings{EmbeddingModel: kb.EmbeddingModel, Dimensions: kb.Dimensions, Chunking: kb.Chunking}, "to": set}})
	})
	return job, err
}

// reindex is KindReindex's handler. It builds every document into the payload's
// generation while the serving one answers searches, redoes the documents that changed
// meanwhile, and swaps under the knowledge base's lock. Whatever ends it without a swap
// (an error, a cancel, a timeout) deletes the partial generation; a retry starts over.
func (s *Service) reindex(ctx context.Context, run *jobs.Run, p ReindexPayload) (any, error) {
	ctx = withUsageEndpoint(ctx, UsageReindex)
	row, err := s.st.GetKnowledgeBase(ctx, db.GetKnowledgeBaseParams{OrgID: p.Org, ID: p.KB})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil // deleted meanwhile: nothing to rebuild
	}
	if err != nil {
		return nil, fmt.Errorf("read knowledge base: %w", err)
	}
	serving := toKnowledgeBase(row)
	if serving.Generation >= p.Generation {
		return ReindexResult{Generation: serving.Generation}, nil // swapped by an attempt that ended before it could say so
	}
	res, err := s.rebuild(ctx, run, serving, p)
	if err != nil {
		// Not the job's context: a cancel or a timeout must still clean up.
		if _, derr := s.st.DeleteOtherGenerations(context.WithoutCancel(ctx), db.DeleteOtherGenerationsParams{KbID: p.KB, Keep: int32(serving.Generation)}); derr != nil { //nolint:gosec // a small counter
			s.log.ErrorContext(ctx, "delete a failed reindex's chunks", "knowledge_base", p.KB, "error", derr)
		}
		return nil, err
	}
	// The replaced index goes after the swap: no search reads it any more.
	if _, err := s.st.DeleteOtherGenerations(ctx, db.DeleteOtherGenerationsParams{KbID: p.KB, Keep: int32(p.Generation)}); err != nil { //nolint:gosec // a small counter
		return nil, fmt.Errorf("delete the replaced index: %w", err)
	}
	return res, nil
}

// rebuild builds generation p.Generation of the knowledge base and swaps it in.
func (s *Service) rebuild(ctx context.Context, run *jobs.Run, serving KnowledgeBase, p ReindexPayload) (ReindexResult, error) {
	// Left by an earlier attempt or an earlier reindex that could not clean up.
	if _, err := s.st.DeleteOtherGenerations(ctx, db.DeleteOtherGenerationsParams{KbID: p.KB, Keep: int32(serving.Generation)}); err != nil { //nolint:gosec // a small counter
		return ReindexResult{}, fmt.Errorf("delete stale chunks: %w", err)
	}
	target := serving
	target.Generation, target.EmbeddingModel, target.Dimensions, target.Chunking = p.Generation, p.Settings.EmbeddingModel, p.Settings.Dimensions, p.Settings.Chunking
	// Vectors of unchanged chunk text are reused from the serving index when the model
	// and size stay: only a chunking change then embeds just the new chunks.
	reuse := []int32{int32(target.Generation)} //nolint:gosec // a small counter
	if target.EmbeddingModel == serving.EmbeddingModel && target.Dimensions == serving.Dimensions {
		reuse = append(reuse, int32(serving.Generation)) //nolint:gosec // a small counter
	}
	res := ReindexResult{Generation: target.Generation}
	built := map[uuid.UUID][]byte{} // document → the content hash it was built from
	// pending lists the documents not built from their current content.
	pending := func(q *db.Queries) ([]uuid.UUID, int, error) {
		rows, err := q.ListDocumentHashes(ctx, db.ListDocumentHashesParams{OrgID: p.Org, KbID: p.KB})
		if err != nil {
			return nil, 0, fmt.Errorf("list documents: %w", err)
		}
		var out []uuid.UUID
		for _, r := range rows {
			if h, ok := built[r.ID]; !ok || !bytes.Equal(h, r.ContentHash) {
				out = append(out, r.ID)
			}
		}
		return out, len(rows), nil
	}
	build := func(todo []uuid.UUID, total int) error {
		for _, id := range todo {
			if _, again := built[id]; again {
				res.Redone++
			}
			hash, err := s.reindexDocument(ctx, target, reuse, id, &res)
			if err != nil {
				return err
			}
			if hash != nil {
				built[id] = hash
			}
			if err := run.Report(ctx, jobs.Progress{Done: int64(len(built)), Total: int64(total), Message: "reindexing"}); err != nil {
				return fmt.Errorf("report progress: %w", err)
			}
		}
		return nil
	}
	for range reindexPasses {
		todo, total, err := pending(s.st.Queries)
		if err != nil {
			return res, err
		}
		if len(todo) == 0 {
			break
		}
		if err := build(todo, total); err != nil {
			return res, err
		}
	}
	// The swap: under the knowledge base's lock no document is added, changed or
	// deleted, and no ingestion writes (each takes the lock's key share first), so the
	// documents still to build are the last ones.
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		kb, err := q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: p.Org, ID: p.KB})
		if err != nil {
			return notFound(err, "knowledge base")
		}
		if int(kb.Generation) != serving.Generation {
			return jobs.Permanent(errors.New("reindex: the knowledge base's index was replaced meanwhile"))
		}
		todo, total, err := pending(q)
		if err != nil {
			return err
		}
		if err := build(todo, total); err != nil {
			return err
		}
		res.Documents = total
		now := s.now()
		if err := q.SwapKnowledgeBaseGeneration(ctx, db.SwapKnowledgeBaseGenerationParams{
			ID: p.KB, Generation: int32(target.Generation), EmbeddingModel: target.EmbeddingModel, Dimensions: int32(target.Dimensions), //nolint:gosec // validated
			ChunkMaxTokens: int32(target.Chunking.MaxTokens), ChunkOverlap: int32(target.Chunking.Overlap), UpdatedAt: now, //nolint:gosec // validated
		}); err != nil {
			return fmt.Errorf("swap index: %w", err)
		}
		if err := q.FinishReindexedDocuments(ctx, db.FinishReindexedDocumentsParams{KbID: p.KB, Generation: int32(target.Generation), Now: &now}); err != nil { //nolint:gosec // a small counter
			return fmt.Errorf("finish documents: %w", err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	_ = run.Report(ctx, jobs.Progress{Done: int64(res.Documents), Total: int64(res.Documents), Message: "swapped"})
	return res, nil
}

// reindexDocument builds one document into target's generation (replacing what an
// earlier pass built of it) and returns the content hash it was built from; nil when
// the document went or changed meanwhile.
func (s *Service) reindexDocument(ctx context.Context, target KnowledgeBase, reuse []int32, id uuid.UUID, res *ReindexResult) ([]byte, error) {
	doc, err := s.st.GetDocumentForIngestion(ctx, db.GetDocumentForIngestionParams{OrgID: target.OrgID, ID: id})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read document: %w", err)
	}
	chunks, err := s.prepare(doc, target)
	if err != nil {
		return nil, jobs.Permanent(fmt.Errorf("document %s: %w", id, err))
	}
	todo := make([]*prepared, len(chunks))
	for i := range chunks {
		chunks[i].id = uuid.Must(uuid.NewV7())
		todo[i] = &chunks[i]
	}
	var counts IngestResult
	if err := s.vectorsFor(ctx, &jobs.Run{}, target, reuse, todo, &counts); err != nil {
		return nil, fmt.Errorf("document %s: %w", id, err)
	}
	var skipped bool // gone, or changed since it was read (the next pass builds it again)
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		cur, err := q.LockDocumentForIngestion(ctx, db.LockDocumentForIngestionParams{OrgID: target.OrgID, ID: id})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound || (err == nil && !bytes.Equal(cur.ContentHash, doc.ContentHash)) {
			skipped = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock document: %w", err)
		}
		if err := q.DeleteDocumentGeneration(ctx, db.DeleteDocumentGenerationParams{DocumentID: id, Generation: int32(target.Generation)}); err != nil { //nolint:gosec // a small counter
			return fmt.Errorf("delete chunks: %w", err)
		}
		return insertChunks(ctx, q, target, id, todo, s.now())
	})
	if err != nil || skipped {
		return nil, err
	}
	res.Chunks += len(chunks)
	res.Embedded += counts.Embedded
	res.Reused += counts.Reused
	return doc.ContentHash, nil
}
