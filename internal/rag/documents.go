package rag

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/pgvector/pgvector-go"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// Status is where a document is in its ingestion.
type Status string

// The document statuses.
const (
	StatusQueued     Status = "queued"
	StatusProcessing Status = "processing"
	StatusReady      Status = "ready"
	StatusFailed     Status = "failed"
)

// Document is a document as stored, without its text.
type Document struct {
	ID          uuid.UUID
	KBID        uuid.UUID
	Title       string
	Source      string // "text" or "upload"
	Filename    string
	MediaType   string
	ExternalID  string
	Metadata    map[string]any
	Bytes       int
	Status      Status
	Error       string
	ChunkCount  int
	JobID       *uuid.UUID
	CreatedAt   time.Time
	UpdatedAt   time.Time
	IndexedAt   *time.Time
	ContentHash []byte
}

// Chunk is a stored chunk, without its vector.
type Chunk struct {
	ID       uuid.UUID
	Ordinal  int
	Text     string
	Tokens   int
	Metadata map[string]any
}

func toDocument(d db.KbDocument, jobState, jobError string) Document {
	out := Document{
		ID: d.ID, KBID: d.KbID, Title: d.Title, Source: d.Source, Filename: d.Filename.String, MediaType: d.MediaType,
		ExternalID: d.ExternalID.String, Bytes: int(d.Bytes), Status: Status(d.Status), Error: d.Error.String,
		ChunkCount: int(d.ChunkCount), JobID: store.UUIDPtr(d.JobID), CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
		IndexedAt: d.IndexedAt, ContentHash: d.ContentHash, Metadata: map[string]any{},
	}
	_ = json.Unmarshal(d.Metadata, &out.Metadata)
	// A job that ended without finishing its document (cancelled, or failed in a way the
	// handler could not record) fails it.
	if (out.Status == StatusQueued || out.Status == StatusProcessing) && (jobState == string(jobs.Cancelled) || jobState == string(jobs.Failed)) {
		out.Status = StatusFailed
		out.Error = "ingestion " + jobState
		if jobError != "" && jobState == string(jobs.Failed) {
			out.Error += ": " + jobError
		}
	}
	return out
}

// NewDocument is a document to add: its raw body and how to read it.
type NewDocument struct {
	Title      string
	Source     string // "text" or "upload"
	Filename   string
	MediaType  string
	Body       []byte
	Metadata   map[string]any
	ExternalID string
}

// reservedKeys are the metadata keys Kiln sets on every chunk.
var reservedKeys = []string{"source", "section", "title", "page", "document_id"}

var metadataKey = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validateMetadata allows string, number and boolean values under plain keys.
func validateMetadata(m map[string]any) error {
	var fields []errs.FieldError
	for k, v := range m {
		p := "/metadata/" + pointerEscaper.Replace(k)
		switch {
		case !metadataKey.MatchString(k):
			fields = append(fields, errs.FieldError{Pointer: p, Message: "keys are 1 to 64 letters, digits, '_', '.' or '-'"})
		case slices.Contains(reservedKeys, k):
			fields = append(fields, errs.FieldError{Pointer: p, Message: "is set by Kiln on every chunk"})
		default:
			switch x := v.(type) {
			case string:
				if len(x) > 1000 {
					fields = append(fields, errs.FieldError{Pointer: p, Message: "is longer than 1000 bytes"})
				}
			case bool, float64, json.Number, int, int64:
			default:
				fields = append(fields, errs.FieldError{Pointer: p, Message: "must be a string, a number or a boolean"})
			}
		}
	}
	if len(fields) > 0 {
		slices.SortFunc(fields, func(a, b errs.FieldError) int { return strings.Compare(a.Pointer, b.Pointer) })
		return errs.InvalidFields("invalid metadata", fields)
	}
	return nil
}

// IngestPayload is the payload of KindIngest.
type IngestPayload struct {
	Org      uuid.UUID `json:"org"`
	Document uuid.UUID `json:"document"`
	// Hash is the content hash the job was created for: a job for replaced content ends
	// at once.
	Hash []byte `json:"hash"`
}

// KindIngest chunks, embeds and indexes one document.
var KindIngest = jobs.Kind{Name: "rag.ingest", MaxAttempts: 5, Timeout: 30 * time.Minute,
	Backoff: jobs.Backoff{Base: 5 * time.Second, Max: 5 * time.Minute}}

// ContentHash is the hash AddDocument stores for n (Document.ContentHash): equal hashes
// are the same document, so adding it again changes nothing.
func (n NewDocument) ContentHash() ([]byte, error) {
	d := DefaultConfig()
	_, _, hash, err := n.content(Limits{MaxPages: d.MaxDocumentPages, MaxTextBytes: d.MaxDocumentBytes})
	return hash, err
}

// content extracts n's text and hashes it with its title, media type and metadata.
func (n NewDocument) content(lim Limits) (text string, meta, hash []byte, err error) {
	if n.Metadata == nil {
		n.Metadata = map[string]any{}
	}
	if text, _, err = Extract(n.MediaType, n.Body, lim); err != nil {
		return "", nil, nil, err
	}
	if meta, err = json.Marshal(n.Metadata); err != nil { // map keys sorted: a canonical form
		return "", nil, nil, errs.InvalidFields("invalid metadata", []errs.FieldError{{Pointer: "/metadata", Message: err.Error()}})
	}
	h := sha256.New()
	for _, part := range []string{n.Title, n.MediaType, string(meta), text} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return text, meta, h.Sum(nil), nil
}

// AddDocument stores a document of knowledge base kb and creates its ingestion job in
// the same transaction. created is false when an identical document (same title,
// metadata and text) was already there: that one is returned, and nothing is queued.
// A document with an external id already used replaces that document's content.
func (s *Service) AddDocument(ctx context.Context, org uuid.UUID, by audit.Actor, kb uuid.UUID, n NewDocument) (doc Document, created bool, err error) {
	if int64(len(n.Body)) > s.cfg.MaxDocumentBytes {
		return Document{}, false, errs.E(errs.RequestTooLarge, "The document is %d bytes; a knowledge base takes documents of at most %d bytes (rag.max_document_bytes).", len(n.Body), s.cfg.MaxDocumentBytes)
	}
	if n.Metadata == nil {
		n.Metadata = map[string]any{}
	}
	if err := validateMetadata(n.Metadata); err != nil {
		return Document{}, false, err
	}
	text, meta, hash, err := n.content(s.limits())
	if err != nil {
		return Document{}, false, err
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		if _, err := q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: org, ID: kb}); err != nil {
			return notFound(err, "knowledge base")
		}
		now := s.now()
		// The document's ingestion job first, so that the document is written with it.
		enqueue := func(id uuid.UUID) (uuid.NullUUID, error) {
			j, err := s.jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindIngest.Name, OrgID: &org, CreatedBy: by.UserID(), APIKeyID: apiKeyOf(by),
				Payload: IngestPayload{Org: org, Document: id, Hash: hash}})
			return uuid.NullUUID{UUID: j.ID, Valid: err == nil}, err
		}
		var row db.KbDocument
		if n.ExternalID != "" {
			prev, err := q.FindDocumentByExternalID(ctx, db.FindDocumentByExternalIDParams{KbID: kb, ExternalID: store.Text(n.ExternalID)})
			switch {
			case err == nil && bytes.Equal(prev.ContentHash, hash):
				doc = toDocument(prev, "", "")
				return nil
			case err == nil:
				if err := s.admit(ctx, q, org, billing.Use{Limit: billing.LimitStorageBytes, Amount: int64(len(text)) - int64(prev.Bytes)}); err != nil {
					return err
				}
				job, err := enqueue(prev.ID)
				if err != nil {
					return err
				}
				row, err = q.ReplaceDocumentContent(ctx, db.ReplaceDocumentContentParams{
					ID: prev.ID, Title: n.Title, Source: n.Source, Filename: store.Text(n.Filename), MediaType: n.MediaType,
					Metadata: meta, Content: text, ContentHash: hash, Bytes: int32(len(text)), JobID: job, UpdatedAt: now, //nolint:gosec // bounded by MaxDocumentBytes
				})
				if err != nil {
					return fmt.Errorf("replace document: %w", err)
				}
			case errs.CodeOf(store.Translate(err)) != errs.NotFound:
				return fmt.Errorf("find document: %w", err)
			}
		}
		if row.ID == uuid.Nil {
			prev, err := q.FindDocumentByHash(ctx, db.FindDocumentByHashParams{KbID: kb, ContentHash: hash})
			if err == nil && (n.ExternalID == "" || prev.ExternalID.String == n.ExternalID) {
				doc = toDocument(prev, "", "")
				return nil
			}
			if err := s.admit(ctx, q, org, billing.Use{Limit: billing.LimitDocuments, Amount: 1},
				billing.Use{Limit: billing.LimitStorageBytes, Amount: int64(len(text))}); err != nil {
				return err
			}
			id := uuid.Must(uuid.NewV7())
			job, err := enqueue(id)
			if err != nil {
				return err
			}
			row, err = q.CreateDocument(ctx, db.CreateDocumentParams{
				ID: id, OrgID: org, KbID: kb, Title: n.Title, Source: n.Source, Filename: store.Text(n.Filename),
				MediaType: n.MediaType, ExternalID: store.Text(n.ExternalID), Metadata: meta, Content: text, ContentHash: hash,
				Bytes: int32(len(text)), JobID: job, CreatedAt: now, //nolint:gosec // bounded by MaxDocumentBytes
			})
			if err != nil {
				return fmt.Errorf("create document: %w", store.Translate(err))
			}
		}
		doc, created = toDocument(row, "", ""), true
		return nil
	})
	return doc, created, err
}

// Documents lists a knowledge base's documents, newest first (status "": all).
func (s *Service) Documents(ctx context.Context, org, kb uuid.UUID, limit int, after *uuid.UUID, status Status) ([]Document, error) {
	if _, err := s.KnowledgeBase(ctx, org, kb); err != nil {
		return nil, err
	}
	rows, err := s.st.ListDocuments(ctx, db.ListDocumentsParams{OrgID: org, KbID: kb, After: store.NullUUID(after), Status: store.Text(string(status)), MaxRows: int32(limit)}) //nolint:gosec // bounded by the spec
	if err != nil {
		return nil, fmt.Errorf("list documents: %w", err)
	}
	out := make([]Document, len(rows))
	for i, r := range rows {
		out[i] = toDocument(r.KbDocument, r.JobState.String, r.JobError.String)
	}
	return out, nil
}

// Document returns one document with its chunks in order.
func (s *Service) Document(ctx context.Context, org, kb, id uuid.UUID) (Document, []Chunk, error) {
	row, err := s.st.GetDocument(ctx, db.GetDocumentParams{OrgID: org, KbID: kb, ID: id})
	if err != nil {
		return Document{}, nil, notFound(err, "document")
	}
	base, err := s.KnowledgeBase(ctx, org, kb)
	if err != nil {
		return Document{}, nil, err
	}
	rows, err := s.st.ListDocumentChunks(ctx, db.ListDocumentChunksParams{OrgID: org, DocumentID: id, Generation: int32(base.Generation)}) //nolint:gosec // a small counter
	if err != nil {
		return Document{}, nil, fmt.Errorf("list chunks: %w", err)
	}
	chunks := make([]Chunk, len(rows))
	for i, r := range rows {
		chunks[i] = Chunk{ID: r.ID, Ordinal: int(r.Ordinal), Text: r.Text, Tokens: int(r.Tokens), Metadata: map[string]any{}}
		_ = json.Unmarshal(r.Metadata, &chunks[i].Metadata)
	}
	return toDocument(row.KbDocument, row.JobState.String, row.JobError.String), chunks, nil
}

// DeleteDocument deletes a document with its chunks and vectors.
func (s *Service) DeleteDocument(ctx context.Context, org uuid.UUID, by audit.Actor, kb, id uuid.UUID) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var row db.KnowledgeBase
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		if row, err = q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: org, ID: kb}); err != nil {
			return notFound(err, "document")
		}
		n, err := q.DeleteDocument(ctx, db.DeleteDocumentParams{OrgID: org, KbID: kb, ID: id})
		if err != nil {
			return notFound(err, "document")
		}
		if err := q.CountKnowledgeBase(ctx, db.CountKnowledgeBaseParams{ID: kb, Documents: -1, Chunks: -n}); err != nil {
			return fmt.Errorf("count chunks: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "document.delete", TargetType: "document", TargetID: id.String(),
			Data: map[string]any{"knowledge_base_id": kb.String()}})
	})
	if err != nil {
		return err
	}
	s.dropVectors(ctx, row.VectorStore, VectorSelector{Org: org, KB: kb, Dimensions: int(row.Dimensions), Document: id})
	return nil
}

// prepared is a chunk ready to store.
type prepared struct {
	Piece
	id       uuid.UUID
	ordinal  int
	metadata []byte
	hash     []byte
	embedIn  string
	vector   []float32
}

// ingest is KindIngest's handler: it cuts the document into chunks, embeds those whose
// text is new to the knowledge base (a chunk hash already there reuses its vector), and
// replaces the document's changed chunks in one transaction.
func (s *Service) ingest(ctx context.Context, run *jobs.Run, p IngestPayload) (any, error) {
	ctx = withUsageEndpoint(ctx, UsageIngest)
	res, err := s.ingestDocument(ctx, run, p)
	if err == errSuperseded { //nolint:errorlint // a sentinel of this package, never wrapped
		return map[string]any{"superseded": true}, nil
	}
	if err != nil && ctx.Err() == nil && (jobs.IsPermanent(err) || run.Attempts >= run.MaxAttempts) {
		fail := context.WithoutCancel(ctx)
		if ferr := s.st.FailDocument(fail, db.FailDocumentParams{ID: p.Document, Error: store.Text(err.Error()), Now: s.now()}); ferr != nil {
			s.log.ErrorContext(fail, "record failed ingestion", "document", p.Document, "error", ferr)
		}
	}
	return res, err
}

// IngestResult is what an ingestion job reports.
type IngestResult struct {
	Chunks   int `json:"chunks"`
	Embedded int `json:"embedded"`
	Reused   int `json:"reused"`
	Written  int `json:"written"`
	Deleted  int `json:"deleted"`
}

// errGenerationChanged tells an ingestion that a reindex swapped the knowledge base's
// index after the ingestion read its settings: it starts again with the new ones.
var errGenerationChanged = errors.New("knowledge base reindexed")

// ingestDocument ingests into the index that serves; when a reindex swaps the index
// under it, it starts again (a reindex is rare: a few restarts at most).
func (s *Service) ingestDocument(ctx context.Context, run *jobs.Run, p IngestPayload) (IngestResult, error) {
	for range 3 {
		res, err := s.ingestOnce(ctx, run, p)
		if err != errGenerationChanged { //nolint:errorlint // a sentinel of this package, never wrapped
			return res, err
		}
	}
	return IngestResult{}, errors.New("ingest: the knowledge base was reindexed three times meanwhile")
}

func (s *Service) ingestOnce(ctx context.Context, run *jobs.Run, p IngestPayload) (IngestResult, error) {
	doc, err := s.st.GetDocumentForIngestion(ctx, db.GetDocumentForIngestionParams{OrgID: p.Org, ID: p.Document})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound || (err == nil && !bytes.Equal(doc.ContentHash, p.Hash)) {
		return IngestResult{}, errSuperseded
	}
	if err != nil {
		return IngestResult{}, fmt.Errorf("read document: %w", err)
	}
	kbRow, err := s.st.GetKnowledgeBase(ctx, db.GetKnowledgeBaseParams{OrgID: p.Org, ID: doc.KbID})
	if err != nil {
		return IngestResult{}, errSuperseded // deleted with its knowledge base
	}
	kb := toKnowledgeBase(kbRow)
	if err := s.st.SetDocumentProcessing(ctx, db.SetDocumentProcessingParams{ID: doc.ID, UpdatedAt: s.now()}); err != nil {
		return IngestResult{}, fmt.Errorf("mark document processing: %w", err)
	}
	chunks, err := s.prepare(doc, kb)
	if err != nil {
		return IngestResult{}, jobs.Permanent(err)
	}
	existing, err := s.st.ListDocumentChunks(ctx, db.ListDocumentChunksParams{OrgID: p.Org, DocumentID: doc.ID, Generation: int32(kb.Generation)}) //nolint:gosec // a small counter
	if err != nil {
		return IngestResult{}, fmt.Errorf("list chunks: %w", err)
	}
	// A chunk unchanged at its position (same hash and metadata) stays as it is.
	keep := map[int]bool{}
	var stale []uuid.UUID
	for _, e := range existing {
		i := int(e.Ordinal)
		if i < len(chunks) && bytes.Equal(e.ContentHash, chunks[i].hash) && jsonEqual(e.Metadata, chunks[i].metadata) {
			keep[i] = true
			continue
		}
		stale = append(stale, e.ID)
	}
	var todo []*prepared
	for i := range chunks {
		if !keep[i] {
			todo = append(todo, &chunks[i])
		}
	}
	res := IngestResult{Chunks: len(chunks), Written: len(todo), Deleted: len(stale)}
	if err := s.vectorsFor(ctx, run, kb, []int32{int32(kb.Generation)}, todo, &res); err != nil { //nolint:gosec // a small counter
		return res, err
	}
	for _, c := range todo {
		c.id = uuid.Must(uuid.NewV7())
	}
	// An external store gets the new vectors before the chunks are committed (a search
	// finding a vector whose chunk is not there yet skips it), and loses the document's
	// other vectors after: a retry after any failure converges.
	vs := s.vectors[kb.VectorStore]
	if external(kb.VectorStore) {
		if vs == nil {
			return res, errs.E(errs.NotReady, "The knowledge base's vector store %q is not configured on this server.", kb.VectorStore)
		}
		if err := vs.Upsert(ctx, p.Org, kb.ID, kb.Dimensions, points(doc.ID, todo)); err != nil {
			return res, err
		}
	}
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		// The knowledge base first, as every writer of it takes it: then the document.
		gen, err := q.LockKnowledgeBaseGeneration(ctx, kb.ID)
		if err != nil {
			return errSuperseded // deleted with its knowledge base
		}
		if int(gen) != kb.Generation {
			return errGenerationChanged
		}
		cur, err := q.LockDocumentForIngestion(ctx, db.LockDocumentForIngestionParams{OrgID: p.Org, ID: doc.ID})
		if err != nil || !bytes.Equal(cur.ContentHash, p.Hash) {
			return errSuperseded
		}
		if len(stale) > 0 {
			if _, err := q.DeleteChunks(ctx, db.DeleteChunksParams{DocumentID: doc.ID, Ids: stale}); err != nil {
				return fmt.Errorf("delete chunks: %w", err)
			}
		}
		now := s.now()
		if err := insertChunks(ctx, q, kb, doc.ID, todo, now); err != nil {
			return err
		}
		if err := q.FinishDocument(ctx, db.FinishDocumentParams{ID: doc.ID, ChunkCount: int32(len(chunks)), Now: &now}); err != nil { //nolint:gosec // small
			return fmt.Errorf("finish document: %w", err)
		}
		// Last: the knowledge base's row stays locked until the commit, and every
		// ingestion of the knowledge base counts its chunks there.
		if d := len(todo) - len(stale); d != 0 {
			if err := q.CountKnowledgeBase(ctx, db.CountKnowledgeBaseParams{ID: kb.ID, Chunks: int32(d)}); err != nil { //nolint:gosec // small
				return fmt.Errorf("count chunks: %w", err)
			}
		}
		return nil
	})
	if external(kb.VectorStore) {
		err = s.syncVectors(ctx, vs, kb, doc.ID, todo, err)
	}
	if err == nil {
		_ = run.Report(ctx, jobs.Progress{Done: int64(len(chunks)), Total: int64(len(chunks)), Message: "indexed"})
	}
	return res, err
}

// insertChunks writes a document's new chunks into kb's generation, with their vectors
// when kb keeps them in pgvector.
func insertChunks(ctx context.Context, q *db.Queries, kb KnowledgeBase, doc uuid.UUID, todo []*prepared, now time.Time) error {
	params := make([]db.InsertChunkParams, len(todo))
	for i, c := range todo {
		var embedding *pgvector.HalfVector
		if !external(kb.VectorStore) {
			v := pgvector.NewHalfVector(c.vector)
			embedding = &v
		}
		params[i] = db.InsertChunkParams{
			ID: c.id, OrgID: kb.OrgID, KbID: kb.ID, DocumentID: doc, Generation: int32(kb.Generation), Ordinal: int32(c.ordinal), //nolint:gosec // small
			Text: c.Text, Tokens: int32(c.Tokens), ContentHash: c.hash, Metadata: c.metadata, Dimensions: int32(kb.Dimensions), //nolint:gosec // small
			Embedding: embedding, SearchText: SearchText(c.embedIn), CreatedAt: now,
		}
	}
	var batchErr error
	q.InsertChunk(ctx, params).Exec(func(_ int, err error) {
		if err != nil && batchErr == nil {
			batchErr = err
		}
	})
	if batchErr != nil {
		return fmt.Errorf("insert chunks: %w", batchErr)
	}
	return nil
}

// points are the vector store's points of a document's new chunks.
func points(doc uuid.UUID, chunks []*prepared) []VectorPoint {
	out := make([]VectorPoint, len(chunks))
	for i, c := range chunks {
		meta := map[string]any{}
		_ = json.Unmarshal(c.metadata, &meta) // marshalled by prepare
		out[i] = VectorPoint{ChunkID: c.id, DocumentID: doc, Vector: c.vector, Metadata: meta}
	}
	return out
}

// syncVectors follows an ingestion's transaction in an external store: after a failure
// (txErr) the vectors upserted for it go; after a commit, the document's vectors of
// chunks no longer there go. It returns txErr, or the store's error after a commit.
func (s *Service) syncVectors(ctx context.Context, vs VectorStore, kb KnowledgeBase, doc uuid.UUID, todo []*prepared, txErr error) error {
	ctx = context.WithoutCancel(ctx)
	sel := VectorSelector{Org: kb.OrgID, KB: kb.ID, Dimensions: kb.Dimensions, Document: doc}
	if txErr != nil {
		sel.Chunks = make([]uuid.UUID, len(todo))
		for i, c := range todo {
			sel.Chunks[i] = c.id
		}
		if err := vs.Delete(ctx, sel); err != nil {
			s.log.ErrorContext(ctx, "delete vectors of a failed ingestion", "document", doc, "error", err)
		}
		return txErr
	}
	rows, err := s.st.ListDocumentChunks(ctx, db.ListDocumentChunksParams{OrgID: kb.OrgID, DocumentID: doc, Generation: int32(kb.Generation)}) //nolint:gosec // a small counter
	if err != nil {
		return fmt.Errorf("list chunks: %w", err)
	}
	sel.Except = make([]uuid.UUID, len(rows))
	for i, r := range rows {
		sel.Except[i] = r.ID
	}
	return vs.Delete(ctx, sel)
}

// prepare cuts a document into chunks with their metadata, hashes and embedding input.
func (s *Service) prepare(doc db.KbDocument, kb KnowledgeBase) ([]prepared, error) {
	var meta map[string]any
	if err := json.Unmarshal(doc.Metadata, &meta); err != nil {
		return nil, fmt.Errorf("read document metadata: %w", err)
	}
	if meta == nil {
		meta = map[string]any{}
	}
	source := doc.Filename.String
	if source == "" {
		source = doc.Source
	}
	pieces := kb.Chunking.Split(Sections(doc.MediaType, doc.Content))
	out := make([]prepared, len(pieces))
	for i, pc := range pieces {
		m := make(map[string]any, len(meta)+3)
		for k, v := range meta {
			m[k] = v
		}
		m["source"], m["title"] = source, doc.Title
		section := strings.Join(pc.Section, " > ")
		if section != "" {
			m["section"] = section
		}
		if pc.Page > 0 {
			m["page"] = pc.Page
		}
		mb, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode chunk metadata: %w", err)
		}
		// What is embedded and indexed: the chunk in its context (title and headings).
		in := strings.TrimSpace(strings.Join(nonEmpty(doc.Title, section, pc.Text), "\n"))
		h := sha256.Sum256([]byte(in))
		out[i] = prepared{Piece: pc, ordinal: i, metadata: mb, hash: h[:], embedIn: in}
	}
	return out, nil
}

// vectorsFor fills the chunks' vectors: hashes known in the generations (those embedded
// with kb's model and size) reuse a stored vector, the rest are embedded in batches,
// reporting progress after each.
func (s *Service) vectorsFor(ctx context.Context, run *jobs.Run, kb KnowledgeBase, generations []int32, todo []*prepared, res *IngestResult) error {
	if len(todo) == 0 {
		return nil
	}
	hashes := make([][]byte, len(todo))
	for i, c := range todo {
		hashes[i] = c.hash
	}
	known, err := s.st.FindChunkEmbeddings(ctx, db.FindChunkEmbeddingsParams{KbID: kb.ID, Hashes: hashes, Generations: generations})
	if err != nil {
		return fmt.Errorf("find embeddings: %w", err)
	}
	byHash := make(map[string][]float32, len(known))
	for _, k := range known {
		if k.Embedding != nil {
			byHash[string(k.ContentHash)] = k.Embedding.Slice()
		}
	}
	var missing []*prepared
	for _, c := range todo {
		if v, ok := byHash[string(c.hash)]; ok {
			c.vector = v
			res.Reused++
			continue
		}
		missing = append(missing, c)
	}
	batch := max(1, s.cfg.EmbedBatch)
	for start := 0; start < len(missing); start += batch {
		part := missing[start:min(start+batch, len(missing))]
		in := make([]string, len(part))
		for i, c := range part {
			in[i] = c.embedIn
		}
		vecs, err := s.embed.Embed(ctx, kb.OrgID, kb.EmbeddingModel, kb.Dimensions, in)
		if err != nil {
			return fmt.Errorf("embed chunks: %w", err)
		}
		if len(vecs) != len(part) {
			return jobs.Permanent(fmt.Errorf("embed chunks: %d vectors for %d inputs", len(vecs), len(part)))
		}
		for i, c := range part {
			if len(vecs[i]) != kb.Dimensions {
				return jobs.Permanent(fmt.Errorf("embed chunks: model %q returned %d dimensions, the knowledge base has %d", kb.EmbeddingModel, len(vecs[i]), kb.Dimensions))
			}
			c.vector = vecs[i]
		}
		res.Embedded += len(part)
		if err := run.Report(ctx, jobs.Progress{Done: int64(start + len(part)), Total: int64(len(missing)), Message: "embedding"}); err != nil {
			return fmt.Errorf("report progress: %w", err)
		}
	}
	return nil
}

func nonEmpty(parts ...string) []string {
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// jsonEqual compares two JSON documents by value (jsonb reorders keys).
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// pointerEscaper escapes a key as a JSON Pointer token.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// Ingest indexes a document at once, outside the job system (kiln rag eval, tests): the
// work its ingestion job would do. The job, when it runs, then finds nothing to change.
func (s *Service) Ingest(ctx context.Context, org, document uuid.UUID) (IngestResult, error) {
	doc, err := s.st.GetDocumentForIngestion(ctx, db.GetDocumentForIngestionParams{OrgID: org, ID: document})
	if err != nil {
		return IngestResult{}, notFound(err, "document")
	}
	res, err := s.ingestDocument(withUsageEndpoint(ctx, UsageIngest), &jobs.Run{}, IngestPayload{Org: org, Document: document, Hash: doc.ContentHash})
	if err == errSuperseded { //nolint:errorlint // a sentinel of this package, never wrapped
		return res, nil
	}
	return res, err
}
