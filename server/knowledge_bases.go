package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"strings"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/rag"
)

// kbFor resolves the caller's org for the knowledge-base operations.
func (s *Server) kbFor(ctx context.Context, requested *uuid.UUID) (uuid.UUID, error) {
	if s.rag == nil {
		return uuid.Nil, errs.E(errs.NotReady, "Knowledge bases are not configured on this server.")
	}
	who, err := s.callerOf(ctx, requested)
	return who.org, err
}

// ListKnowledgeBases lists the org's knowledge bases, newest first.
func (s *Server) ListKnowledgeBases(ctx context.Context, req api.ListKnowledgeBasesRequestObject) (api.ListKnowledgeBasesResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.rag.KnowledgeBases(ctx, org, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(k rag.KnowledgeBase) uuid.UUID { return k.ID }, toAPIKnowledgeBase)
	return api.ListKnowledgeBases200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateKnowledgeBase creates a knowledge base.
func (s *Server) CreateKnowledgeBase(ctx context.Context, req api.CreateKnowledgeBaseRequestObject) (api.CreateKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	n := rag.NewKnowledgeBase{Name: req.Body.Name, Description: deref(req.Body.Description), EmbeddingModel: deref(req.Body.EmbeddingModel),
		Dimensions: int(deref(req.Body.Dimensions)), VectorStore: string(deref(req.Body.VectorStore))}
	if c := req.Body.Chunking; c != nil {
		n.Chunking = &rag.Chunker{MaxTokens: c.MaxTokens, Overlap: c.OverlapTokens}
	}
	kb, err := s.rag.CreateKnowledgeBase(ctx, org, actor(ctx), n)
	if err != nil {
		return nil, err
	}
	return api.CreateKnowledgeBase201JSONResponse(toAPIKnowledgeBase(kb)), nil
}

// GetKnowledgeBase returns one knowledge base.
func (s *Server) GetKnowledgeBase(ctx context.Context, req api.GetKnowledgeBaseRequestObject) (api.GetKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	kb, err := s.rag.KnowledgeBase(ctx, org, req.Id)
	if err != nil {
		return nil, err
	}
	return api.GetKnowledgeBase200JSONResponse(toAPIKnowledgeBase(kb)), nil
}

// UpdateKnowledgeBase renames a knowledge base or changes its description.
func (s *Server) UpdateKnowledgeBase(ctx context.Context, req api.UpdateKnowledgeBaseRequestObject) (api.UpdateKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	kb, err := s.rag.UpdateKnowledgeBase(ctx, org, actor(ctx), req.Id, req.Body.Name, req.Body.Description)
	if err != nil {
		return nil, err
	}
	return api.UpdateKnowledgeBase200JSONResponse(toAPIKnowledgeBase(kb)), nil
}

// DeleteKnowledgeBase deletes a knowledge base with everything in it.
func (s *Server) DeleteKnowledgeBase(ctx context.Context, req api.DeleteKnowledgeBaseRequestObject) (api.DeleteKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.rag.DeleteKnowledgeBase(ctx, org, actor(ctx), req.Id); err != nil {
		return nil, err
	}
	return api.DeleteKnowledgeBase204Response{}, nil
}

// ReindexKnowledgeBase starts rebuilding a knowledge base's index with new settings.
func (s *Server) ReindexKnowledgeBase(ctx context.Context, req api.ReindexKnowledgeBaseRequestObject) (api.ReindexKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	var dims *int
	if req.Body.Dimensions != nil {
		d := int(*req.Body.Dimensions)
		dims = &d
	}
	var chunking *rag.Chunker
	if c := req.Body.Chunking; c != nil {
		chunking = &rag.Chunker{MaxTokens: c.MaxTokens, Overlap: c.OverlapTokens}
	}
	j, err := s.rag.Reindex(ctx, org, actor(ctx), req.Id, req.Body.EmbeddingModel, dims, chunking)
	if err != nil {
		return nil, err
	}
	return api.ReindexKnowledgeBase202JSONResponse(toAPIJob(j)), nil
}

// ListDocuments lists a knowledge base's documents.
func (s *Server) ListDocuments(ctx context.Context, req api.ListDocumentsRequestObject) (api.ListDocumentsResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.rag.Documents(ctx, org, req.Id, limit+1, after, rag.Status(deref(req.Params.Status)))
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(d rag.Document) uuid.UUID { return d.ID }, toAPIDocument)
	return api.ListDocuments200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateDocument adds a document from a JSON body or a multipart upload.
func (s *Server) CreateDocument(ctx context.Context, req api.CreateDocumentRequestObject) (api.CreateDocumentResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	var n rag.NewDocument
	switch {
	case req.JSONBody != nil:
		b := req.JSONBody
		n = rag.NewDocument{Title: deref(b.Title), Source: "text", MediaType: rag.MediaText, Body: []byte(b.Text),
			Metadata: deref(b.Metadata), ExternalID: deref(b.ExternalId)}
		if b.MediaType != nil {
			n.MediaType = string(*b.MediaType)
		}
	case req.MultipartBody != nil:
		if n, err = readUpload(req.MultipartBody, s.rag.MaxDocumentBytes()); err != nil {
			return nil, err
		}
	}
	doc, created, err := s.rag.AddDocument(ctx, org, actor(ctx), req.Id, n)
	if err != nil {
		return nil, err
	}
	if !created {
		return api.CreateDocument200JSONResponse(toAPIDocument(doc)), nil
	}
	return api.CreateDocument202JSONResponse(toAPIDocument(doc)), nil
}

// readUpload reads the parts of a multipart document upload.
func readUpload(mr *multipart.Reader, limit int64) (rag.NewDocument, error) {
	n := rag.NewDocument{Source: "upload"}
	var sawFile bool
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, errs.InvalidFields("unreadable upload", []errs.FieldError{{Pointer: "", Message: "is not a readable multipart body: " + err.Error()}})
		}
		value, err := io.ReadAll(io.LimitReader(part, limit+1))
		if err != nil {
			return n, errs.InvalidFields("unreadable upload", []errs.FieldError{{Pointer: "/" + part.FormName(), Message: err.Error()}})
		}
		switch part.FormName() {
		case "file":
			sawFile = true
			n.Body, n.Filename = value, part.FileName()
			n.MediaType = rag.MediaTypeOf(part.Header.Get("Content-Type"), part.FileName())
			if n.MediaType == "" {
				return n, errs.E(errs.UnsupportedMediaType, "The file %q is not plain text, Markdown, HTML, PDF or DOCX (by its Content-Type %q or its extension).", part.FileName(), part.Header.Get("Content-Type"))
			}
		case "title":
			n.Title = string(value)
		case "external_id":
			n.ExternalID = string(value)
		case "metadata":
			d := json.NewDecoder(strings.NewReader(string(value)))
			d.UseNumber()
			if err := d.Decode(&n.Metadata); err != nil {
				return n, errs.InvalidFields("invalid metadata", []errs.FieldError{{Pointer: "/metadata", Message: "must be a JSON object"}})
			}
		}
	}
	if !sawFile {
		return n, errs.InvalidFields("no file", []errs.FieldError{{Pointer: "/file", Message: "is required"}})
	}
	if n.Title == "" {
		n.Title = n.Filename
	}
	return n, nil
}

// GetDocument returns a document with its chunks.
func (s *Server) GetDocument(ctx context.Context, req api.GetDocumentRequestObject) (api.GetDocumentResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	doc, chunks, err := s.rag.Document(ctx, org, req.Id, req.DocId)
	if err != nil {
		return nil, err
	}
	d := toAPIDocument(doc)
	out := api.GetDocument200JSONResponse{
		Id: d.Id, KnowledgeBaseId: d.KnowledgeBaseId, Title: d.Title, Source: api.DocumentWithChunksSource(d.Source), Filename: d.Filename,
		MediaType: d.MediaType, ExternalId: d.ExternalId, Metadata: d.Metadata, Bytes: d.Bytes, Status: d.Status, Error: d.Error,
		ChunkCount: d.ChunkCount, JobId: d.JobId, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, IndexedAt: d.IndexedAt,
		Chunks: make([]api.Chunk, len(chunks)),
	}
	for i, c := range chunks {
		out.Chunks[i] = api.Chunk{Id: c.ID, Ordinal: c.Ordinal, Text: c.Text, Tokens: c.Tokens, Metadata: c.Metadata}
	}
	return out, nil
}

// DeleteDocument deletes a document with its chunks.
func (s *Server) DeleteDocument(ctx context.Context, req api.DeleteDocumentRequestObject) (api.DeleteDocumentResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.rag.DeleteDocument(ctx, org, actor(ctx), req.Id, req.DocId); err != nil {
		return nil, err
	}
	return api.DeleteDocument204Response{}, nil
}

// SearchKnowledgeBase searches a knowledge base.
func (s *Server) SearchKnowledgeBase(ctx context.Context, req api.SearchKnowledgeBaseRequestObject) (api.SearchKnowledgeBaseResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	filter, err := rag.ParseFilter(deref(req.Body.Filter))
	if err != nil {
		return nil, err
	}
	q := rag.Query{Text: req.Body.Query, K: deref(req.Body.K), Mode: rag.Mode(deref(req.Body.Mode)), Filter: filter}
	if w := req.Body.Weights; w != nil {
		q.VectorWeight, q.FulltextWeight = float64p(w.Vector), float64p(w.Fulltext)
	}
	hits, err := s.rag.Search(ctx, org, req.Id, q)
	if err != nil {
		return nil, err
	}
	out := api.SearchKnowledgeBase200JSONResponse{Data: make([]api.SearchHit, len(hits)), Mode: api.SearchHybrid}
	if q.Mode != "" {
		out.Mode = api.SearchMode(q.Mode)
	}
	for i, h := range hits {
		out.Data[i] = api.SearchHit{ChunkId: h.ChunkID, DocumentId: h.DocumentID, Title: h.Title, Ordinal: h.Ordinal, Text: h.Text,
			Score: float32(h.Score), Metadata: h.Metadata, Highlight: h.Highlight, VectorRank: nonZero(h.VectorRank), FulltextRank: nonZero(h.FulltextRank)}
	}
	return out, nil
}

func float64p(p *float32) *float64 {
	if p == nil {
		return nil
	}
	v := float64(*p)
	return &v
}

func nonZero(n int) *int {
	if n == 0 {
		return nil
	}
	return &n
}

func toAPIKnowledgeBase(k rag.KnowledgeBase) api.KnowledgeBase {
	return api.KnowledgeBase{
		Id: k.ID, Name: k.Name, Description: k.Description, EmbeddingModel: k.EmbeddingModel, Dimensions: api.EmbeddingDimensions(k.Dimensions),
		Chunking:    api.ChunkingSettings{MaxTokens: k.Chunking.MaxTokens, OverlapTokens: k.Chunking.Overlap},
		VectorStore: api.VectorStore(k.VectorStore), DocumentCount: k.DocumentCount, ChunkCount: k.ChunkCount,
		Generation: k.Generation, ReindexJobId: k.ReindexJobID, CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt,
	}
}

func toAPIDocument(d rag.Document) api.Document {
	return api.Document{
		Id: d.ID, KnowledgeBaseId: d.KBID, Title: d.Title, Source: api.DocumentSource(d.Source), Filename: nonEmpty(d.Filename),
		MediaType: d.MediaType, ExternalId: nonEmpty(d.ExternalID), Metadata: d.Metadata, Bytes: d.Bytes, Status: api.DocumentStatus(d.Status),
		Error: nonEmpty(d.Error), ChunkCount: d.ChunkCount, JobId: d.JobID, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, IndexedAt: d.IndexedAt,
	}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
