package rag

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// What platform admins see of every org's knowledge bases; the callers check that they
// are platform admins.

// KnowledgeBaseSummary is a knowledge base as an operator sees it across orgs.
type KnowledgeBaseSummary struct {
	ID             uuid.UUID
	OrgID          uuid.UUID
	OrgName        string
	Name           string
	EmbeddingModel string
	Dimensions     int
	VectorStore    string
	Generation     int
	DocumentCount  int
	ChunkCount     int
	// Bytes is the extracted text of its documents.
	Bytes int64
	// FailedDocuments counts documents whose ingestion failed (FailedDocuments lists them).
	FailedDocuments int
	CreatedAt       time.Time
}

// FailedDocument is a document whose ingestion failed, in any org.
type FailedDocument struct {
	Document
	OrgID  uuid.UUID
	KBName string
}

// AdminKnowledgeBases lists every org's knowledge bases (org nil) or one org's, newest
// first, after the cursor id.
func (s *Service) AdminKnowledgeBases(ctx context.Context, org *uuid.UUID, limit int, after *uuid.UUID) ([]KnowledgeBaseSummary, error) {
	rows, err := s.st.AdminListKnowledgeBases(ctx, db.AdminListKnowledgeBasesParams{OrgID: store.NullUUID(org), After: store.NullUUID(after), MaxRows: int32(limit)}) //nolint:gosec // bounded by the spec
	if err != nil {
		return nil, fmt.Errorf("list knowledge bases: %w", err)
	}
	out := make([]KnowledgeBaseSummary, len(rows))
	for i, r := range rows {
		out[i] = KnowledgeBaseSummary{
			ID: r.ID, OrgID: r.OrgID, OrgName: r.OrgName, Name: r.Name, EmbeddingModel: r.EmbeddingModel, Dimensions: int(r.Dimensions),
			VectorStore: r.VectorStore, Generation: int(r.Generation), DocumentCount: int(r.DocumentCount), ChunkCount: int(r.ChunkCount),
			Bytes: r.Bytes, FailedDocuments: int(r.FailedDocuments), CreatedAt: r.CreatedAt,
		}
	}
	return out, nil
}

// FailedDocuments lists the documents whose ingestion failed (their status failed, or
// their job failed or was cancelled before it finished) in every org (org nil) or one,
// newest first, after the cursor id.
func (s *Service) FailedDocuments(ctx context.Context, org *uuid.UUID, limit int, after *uuid.UUID) ([]FailedDocument, error) {
	rows, err := s.st.AdminListFailedDocuments(ctx, db.AdminListFailedDocumentsParams{OrgID: store.NullUUID(org), After: store.NullUUID(after), MaxRows: int32(limit)}) //nolint:gosec // bounded by the spec
	if err != nil {
		return nil, fmt.Errorf("list failed documents: %w", err)
	}
	out := make([]FailedDocument, len(rows))
	for i, r := range rows {
		out[i] = FailedDocument{Document: toDocument(r.KbDocument, r.JobState.String, r.JobError.String), OrgID: r.KbDocument.OrgID, KBName: r.KbName}
	}
	return out, nil
}

// RetryDocument ingests a failed document of knowledge base kb (any org) again: a new
// ingestion job in the document's org, the document queued, audited as document.retry.
// Errors: not_found; conflict when its ingestion did not fail.
func (s *Service) RetryDocument(ctx context.Context, by audit.Actor, kb, id uuid.UUID) (Document, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var out Document
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		row, err := q.AdminGetDocument(ctx, db.AdminGetDocumentParams{KbID: kb, ID: id})
		if err != nil {
			return notFound(err, "document")
		}
		org := row.KbDocument.OrgID
		// The knowledge base's lock, as every writer of its documents takes it first.
		if _, err := q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: org, ID: kb}); err != nil {
			return notFound(err, "document")
		}
		cur := toDocument(row.KbDocument, row.JobState.String, row.JobError.String)
		if cur.Status != StatusFailed {
			return errs.E(errs.Conflict, "Document %s is %s; only a failed ingestion is retried.", id, cur.Status)
		}
		now := s.now()
		j, err := s.jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindIngest.Name, OrgID: &org, CreatedBy: by.UserID(),
			Payload: IngestPayload{Org: org, Document: id, Hash: row.KbDocument.ContentHash}})
		if err != nil {
			return err
		}
		doc, err := q.RequeueDocument(ctx, db.RequeueDocumentParams{ID: id, JobID: uuid.NullUUID{UUID: j.ID, Valid: true}, UpdatedAt: now})
		if err != nil {
			return fmt.Errorf("requeue document: %w", err)
		}
		out = toDocument(doc, "", "")
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "document.retry", TargetType: "document", TargetID: id.String(),
			Data: map[string]any{"knowledge_base_id": kb.String(), "job_id": j.ID.String(), "error": cur.Error}})
	})
	return out, err
}
