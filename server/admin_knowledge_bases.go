package server

import (
	"context"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/rag"
)

// kbAdmin resolves the caller as a platform admin of a server with knowledge bases.
func (s *Server) kbAdmin(ctx context.Context) (audit.Actor, error) {
	if _, err := s.platformAdmin(ctx); err != nil {
		return audit.Actor{}, err
	}
	if s.rag == nil {
		return audit.Actor{}, errs.E(errs.NotReady, "Knowledge bases are not configured on this server.")
	}
	return actor(ctx), nil
}

// AdminListKnowledgeBases lists every org's knowledge bases with their sizes and failed
// ingestions.
func (s *Server) AdminListKnowledgeBases(ctx context.Context, req api.AdminListKnowledgeBasesRequestObject) (api.AdminListKnowledgeBasesResponseObject, error) {
	if _, err := s.kbAdmin(ctx); err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.rag.AdminKnowledgeBases(ctx, req.Params.OrgId, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(k rag.KnowledgeBaseSummary) uuid.UUID { return k.ID }, toAPIAdminKnowledgeBase)
	return api.AdminListKnowledgeBases200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminListFailedDocuments lists every org's documents whose ingestion failed.
func (s *Server) AdminListFailedDocuments(ctx context.Context, req api.AdminListFailedDocumentsRequestObject) (api.AdminListFailedDocumentsResponseObject, error) {
	if _, err := s.kbAdmin(ctx); err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.rag.FailedDocuments(ctx, req.Params.OrgId, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(d rag.FailedDocument) uuid.UUID { return d.ID }, toAPIAdminDocument)
	return api.AdminListFailedDocuments200JSONResponse{Data: data, NextCursor: next}, nil
}

// AdminRetryDocument ingests a failed document again.
func (s *Server) AdminRetryDocument(ctx context.Context, req api.AdminRetryDocumentRequestObject) (api.AdminRetryDocumentResponseObject, error) {
	by, err := s.kbAdmin(ctx)
	if err != nil {
		return nil, err
	}
	doc, err := s.rag.RetryDocument(ctx, by, req.Id, req.DocId)
	if err != nil {
		return nil, err
	}
	return api.AdminRetryDocument202JSONResponse(toAPIDocument(doc)), nil
}

func toAPIAdminKnowledgeBase(k rag.KnowledgeBaseSummary) api.AdminKnowledgeBase {
	return api.AdminKnowledgeBase{
		Id: k.ID, OrgId: k.OrgID, OrgName: k.OrgName, Name: k.Name, EmbeddingModel: k.EmbeddingModel, Dimensions: api.EmbeddingDimensions(k.Dimensions),
		VectorStore: api.VectorStore(k.VectorStore), Generation: k.Generation, DocumentCount: k.DocumentCount, ChunkCount: k.ChunkCount,
		Bytes: k.Bytes, FailedDocuments: k.FailedDocuments, CreatedAt: k.CreatedAt,
	}
}

func toAPIAdminDocument(d rag.FailedDocument) api.AdminDocument {
	return api.AdminDocument{
		Id: d.ID, OrgId: d.OrgID, KnowledgeBaseId: d.KBID, KnowledgeBaseName: d.KBName, Title: d.Title, Status: api.DocumentStatus(d.Status),
		Error: nonEmpty(d.Error), JobId: d.JobID, Bytes: d.Bytes, UpdatedAt: d.UpdatedAt,
	}
}
