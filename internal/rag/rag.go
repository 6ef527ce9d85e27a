// Package rag is Kiln's retrieval-augmented generation: knowledge bases of documents,
// cut into chunks (Chunker), embedded through the LLM gateway (Embedder) and indexed for
// vector search (VectorStore, pgvector by default) and full-text search in English and
// Chinese; retrievers (vector, full-text, and their reciprocal rank fusion) answer
// searches. Ingestion runs as a job (KindIngest) created in the transaction that stores
// the document.
package rag

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// Dimensions lists the vector sizes a knowledge base may have (one HNSW index each).
var Dimensions = []int{256, 384, 512, 768, 1024, 1536, 3072}

// Config is the knowledge bases' configuration (config's rag.*).
type Config struct {
	// EmbeddingModel, Dimensions, ChunkMaxTokens and ChunkOverlap are a new knowledge
	// base's defaults.
	EmbeddingModel string
	Dimensions     int
	ChunkMaxTokens int
	ChunkOverlap   int
	// MaxDocumentBytes bounds a document's upload and the text extracted from it;
	// MaxDocumentPages a PDF's pages.
	MaxDocumentBytes int64
	MaxDocumentPages int
	// EmbedBatch is how many chunks one embedding call carries.
	EmbedBatch int
	// EfSearch is HNSW's candidate list size (hnsw.ef_search); MaxScanTuples bounds an
	// iterative index scan (hnsw.max_scan_tuples).
	EfSearch      int
	MaxScanTuples int
	// ExactSearchBelow: a knowledge base with fewer chunks is searched exactly (a
	// sequential scan of its chunks beats an approximate index there, and is exact).
	ExactSearchBelow int
	// RRFK is reciprocal rank fusion's k; VectorWeight and FulltextWeight weigh the two
	// rankings in hybrid search.
	RRFK           float64
	VectorWeight   float64
	FulltextWeight float64
	// Candidates is how many results each ranking contributes to a hybrid search, at
	// least (k·4 when larger).
	Candidates int
	// AnswerK is how many chunks chat retrieves for a question (Ground); AnswerMode
	// ranks them.
	AnswerK    int
	AnswerMode Mode
}

// DefaultConfig is the configuration's built-in values.
func DefaultConfig() Config {
	return Config{
		EmbeddingModel: "default", Dimensions: 256, ChunkMaxTokens: 300, ChunkOverlap: 40,
		MaxDocumentBytes: 10 << 20, MaxDocumentPages: 2000, EmbedBatch: 64, EfSearch: 100, MaxScanTuples: 20000, ExactSearchBelow: 20000,
		RRFK: 60, VectorWeight: 1, FulltextWeight: 1, Candidates: 40, AnswerK: 8, AnswerMode: ModeHybrid,
	}
}

// Embedder embeds texts with a model alias.
type Embedder interface {
	Embed(ctx context.Context, org uuid.UUID, model string, dims int, texts []string) ([][]float32, error)
}

// Deps are the service's collaborators.
type Deps struct {
	Store    *store.Store
	Embedder Embedder
	// Jobs is the one job registry; New declares KindIngest on it.
	Jobs *jobs.Registry
	// HasModel reports whether a model alias exists (the gateway's catalog).
	HasModel func(alias string) bool
	// VectorStores are the vector stores beside pgvector on Store (which is always
	// there), by the name a knowledge base's vector_store gives: StoreQdrant when
	// configured.
	VectorStores map[string]VectorStore
	// Composer makes retrieved chunks a chat's context (Ground); nil: FencedComposer.
	Composer Composer
	// Models answers and judges an evaluation's questions; nil: evaluations cannot
	// evaluate answers.
	Models AnswerModels
	// PlanLimits holds new knowledge bases and documents to the org's plan; nil: no
	// plan limits (billing off).
	PlanLimits PlanLimits
	Log        *slog.Logger
	Now        func() time.Time
}

// PlanLimits admits what a change adds to an org's plan limits, in the change's
// transaction (billing.Service): plan_limit_reached past a limit that blocks,
// payment_required for documents of a frozen org.
type PlanLimits interface {
	Admit(ctx context.Context, q *db.Queries, org uuid.UUID, uses ...billing.Use) error
}

// Service manages knowledge bases, their documents and searches.
type Service struct {
	cfg       Config
	st        *store.Store
	embed     Embedder
	jobs      *jobs.Registry
	hasModel  func(string) bool
	vectors   map[string]VectorStore
	retrieval map[Mode]Retriever
	grounding Grounding
	models    AnswerModels
	plan      PlanLimits
	log       *slog.Logger
	now       func() time.Time
}

// New builds the service and declares its job kinds on d.Jobs.
func New(cfg Config, d Deps) *Service {
	s := &Service{cfg: cfg, st: d.Store, embed: d.Embedder, jobs: d.Jobs, hasModel: d.HasModel, models: d.Models, plan: d.PlanLimits, log: d.Log, now: d.Now,
		vectors: map[string]VectorStore{StorePgvector: NewPgvector(d.Store.Pool, PgvectorConfig{EfSearch: cfg.EfSearch, MaxScanTuples: cfg.MaxScanTuples, ExactBelow: cfg.ExactSearchBelow})}}
	for name, vs := range d.VectorStores {
		s.vectors[name] = vs
	}
	if s.hasModel == nil {
		s.hasModel = func(string) bool { return true }
	}
	vec := &VectorRetriever{Stores: s.vectors, Embedder: d.Embedder}
	ft := &FulltextRetriever{Pool: d.Store.Pool}
	s.retrieval = map[Mode]Retriever{
		ModeVector: vec, ModeFulltext: ft,
		ModeHybrid: &HybridRetriever{Vector: vec, Fulltext: ft, K: cfg.RRFK, Candidates: cfg.Candidates,
			VectorWeight: cfg.VectorWeight, FulltextWeight: cfg.FulltextWeight},
	}
	s.grounding = Grounding{K: cmp.Or(cfg.AnswerK, 8), Mode: cmp.Or(cfg.AnswerMode, ModeHybrid), Composer: d.Composer}
	if s.grounding.Composer == nil {
		s.grounding.Composer = FencedComposer{}
	}
	if d.Jobs != nil {
		jobs.Register(d.Jobs, KindIngest, s.ingest)
		jobs.Register(d.Jobs, KindEvaluate, s.evaluate)
		jobs.Register(d.Jobs, KindReindex, s.reindex)
	}
	return s
}

// KnowledgeBase is a knowledge base as stored.
type KnowledgeBase struct {
	ID             uuid.UUID
	OrgID          uuid.UUID
	Name           string
	Description    string
	EmbeddingModel string
	Dimensions     int
	Chunking       Chunker
	VectorStore    string
	DocumentCount  int
	ChunkCount     int
	// Generation is the index that serves searches (each completed reindex adds one);
	// ReindexJobID the latest reindex job, nil when there was none.
	Generation   int
	ReindexJobID *uuid.UUID
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func toKnowledgeBase(k db.KnowledgeBase) KnowledgeBase {
	return KnowledgeBase{
		ID: k.ID, OrgID: k.OrgID, Name: k.Name, Description: k.Description, EmbeddingModel: k.EmbeddingModel,
		Dimensions: int(k.Dimensions), Chunking: Chunker{MaxTokens: int(k.ChunkMaxTokens), Overlap: int(k.ChunkOverlap)},
		VectorStore: k.VectorStore, DocumentCount: int(k.DocumentCount), ChunkCount: int(k.ChunkCount),
		Generation: int(k.Generation), ReindexJobID: store.UUIDPtr(k.ReindexJobID), CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt,
	}
}

// NewKnowledgeBase is what creating one takes; zero fields take the configured defaults.
type NewKnowledgeBase struct {
	Name           string
	Description    string
	EmbeddingModel string
	Dimensions     int
	Chunking       *Chunker
	// VectorStore is StorePgvector ("": the default) or another store the server has.
	VectorStore string
}

// CreateKnowledgeBase creates a knowledge base in org.
func (s *Service) CreateKnowledgeBase(ctx context.Context, org uuid.UUID, by audit.Actor, n NewKnowledgeBase) (KnowledgeBase, error) {
	if n.EmbeddingModel == "" {
		n.EmbeddingModel = s.cfg.EmbeddingModel
	}
	if n.Dimensions == 0 {
		n.Dimensions = s.cfg.Dimensions
	}
	ch := Chunker{MaxTokens: s.cfg.ChunkMaxTokens, Overlap: s.cfg.ChunkOverlap}
	if n.Chunking != nil {
		ch = *n.Chunking
	}
	fields := s.checkIndexSettings(n.EmbeddingModel, n.Dimensions, ch)
	if n.VectorStore == "" {
		n.VectorStore = StorePgvector
	}
	if _, ok := s.vectors[n.VectorStore]; !ok {
		fields = append(fields, errs.FieldError{Pointer: "/vector_store", Message: fmt.Sprintf("%q is not configured on this server (rag.%s)", n.VectorStore, n.VectorStore)})
	}
	if len(fields) > 0 {
		return KnowledgeBase{}, errs.InvalidFields("invalid knowledge base", fields)
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var kb KnowledgeBase
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		if err := s.admit(ctx, q, org, billing.Use{Limit: billing.LimitKnowledgeBases, Amount: 1}); err != nil {
			return err
		}
		row, err := q.CreateKnowledgeBase(ctx, db.CreateKnowledgeBaseParams{
			ID: uuid.Must(uuid.NewV7()), OrgID: org, Name: n.Name, Description: n.Description, EmbeddingModel: n.EmbeddingModel,
			Dimensions: int32(n.Dimensions), ChunkMaxTokens: int32(ch.MaxTokens), ChunkOverlap: int32(ch.Overlap), //nolint:gosec // validated above
			VectorStore: n.VectorStore, CreatedBy: store.NullUUID(by.UserID()), ApiKeyID: store.NullUUID(apiKeyOf(by)), CreatedAt: s.now(),
		})
		if err != nil {
			return fmt.Errorf("create knowledge base: %w", store.Translate(err))
		}
		kb = toKnowledgeBase(row)
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "knowledge_base.create", TargetType: "knowledge_base", TargetID: row.ID.String()})
	})
	return kb, err
}

// admit holds uses to the org's plan limits in q's transaction (none without billing).
func (s *Service) admit(ctx context.Context, q *db.Queries, org uuid.UUID, uses ...billing.Use) error {
	if s.plan == nil {
		return nil
	}
	return s.plan.Admit(ctx, q, org, uses...)
}

// checkIndexSettings checks what a knowledge base's index is built with: a model alias
// of the catalog, a vector size with its HNSW index, and a chunking within bounds.
func (s *Service) checkIndexSettings(model string, dims int, ch Chunker) []errs.FieldError {
	var fields []errs.FieldError
	if !s.hasModel(model) {
		fields = append(fields, errs.FieldError{Pointer: "/embedding_model", Message: "is not a model alias of the catalog (GET /v1/models)"})
	}
	if !slices.Contains(Dimensions, dims) {
		fields = append(fields, errs.FieldError{Pointer: "/dimensions", Message: fmt.Sprintf("must be one of %v", Dimensions)})
	}
	if ch.MaxTokens < 32 || ch.MaxTokens > 8192 || ch.Overlap < 0 || ch.Overlap >= ch.MaxTokens {
		fields = append(fields, errs.FieldError{Pointer: "/chunking/overlap_tokens", Message: "must be less than max_tokens (32 to 8192)"})
	}
	return fields
}

func apiKeyOf(by audit.Actor) *uuid.UUID {
	if by.Type == audit.ActorAPIKey {
		return by.ID
	}
	return nil
}

// KnowledgeBase returns one of org's knowledge bases (not_found for another org's).
func (s *Service) KnowledgeBase(ctx context.Context, org, id uuid.UUID) (KnowledgeBase, error) {
	row, err := s.st.GetKnowledgeBase(ctx, db.GetKnowledgeBaseParams{OrgID: org, ID: id})
	if err != nil {
		return KnowledgeBase{}, notFound(err, "knowledge base")
	}
	return toKnowledgeBase(row), nil
}

// KnowledgeBases lists org's knowledge bases, newest first, after the cursor id.
func (s *Service) KnowledgeBases(ctx context.Context, org uuid.UUID, limit int, after *uuid.UUID) ([]KnowledgeBase, error) {
	rows, err := s.st.ListKnowledgeBases(ctx, db.ListKnowledgeBasesParams{OrgID: org, After: store.NullUUID(after), MaxRows: int32(limit)}) //nolint:gosec // bounded by the spec
	if err != nil {
		return nil, fmt.Errorf("list knowledge bases: %w", err)
	}
	out := make([]KnowledgeBase, len(rows))
	for i, r := range rows {
		out[i] = toKnowledgeBase(r)
	}
	return out, nil
}

// UpdateKnowledgeBase renames a knowledge base or changes its description (nil: kept).
func (s *Service) UpdateKnowledgeBase(ctx context.Context, org uuid.UUID, by audit.Actor, id uuid.UUID, name, description *string) (KnowledgeBase, error) {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		if _, err := q.UpdateKnowledgeBase(ctx, db.UpdateKnowledgeBaseParams{
			OrgID: org, ID: id, Name: textOrNull(name), Description: textOrNull(description), UpdatedAt: s.now(),
		}); err != nil {
			return notFound(err, "knowledge base")
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "knowledge_base.update", TargetType: "knowledge_base", TargetID: id.String()})
	})
	if err != nil {
		return KnowledgeBase{}, err
	}
	return s.KnowledgeBase(ctx, org, id)
}

// DeleteKnowledgeBase deletes a knowledge base with its documents, chunks and vectors.
func (s *Service) DeleteKnowledgeBase(ctx context.Context, org uuid.UUID, by audit.Actor, id uuid.UUID) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var kb db.KnowledgeBase
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		if kb, err = q.LockKnowledgeBase(ctx, db.LockKnowledgeBaseParams{OrgID: org, ID: id}); err != nil {
			return notFound(err, "knowledge base")
		}
		if _, err := q.DeleteKnowledgeBase(ctx, db.DeleteKnowledgeBaseParams{OrgID: org, ID: id}); err != nil {
			return fmt.Errorf("delete knowledge base: %w", err)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "knowledge_base.delete", TargetType: "knowledge_base", TargetID: id.String()})
	})
	if err != nil {
		return err
	}
	s.dropVectors(ctx, kb.VectorStore, VectorSelector{Org: org, KB: id, Dimensions: int(kb.Dimensions)})
	return nil
}

// external reports whether a knowledge base's vectors live outside its chunk rows, so
// that writing and deleting chunks must write and delete them too.
func external(store string) bool { return store != StorePgvector }

// dropVectors deletes vectors of an external store once their chunks are gone (pgvector's
// went with the rows). A failure leaves vectors whose chunks no longer exist: searches
// skip them (hydrate reads the chunks), so it is logged, not returned.
func (s *Service) dropVectors(ctx context.Context, store string, sel VectorSelector) {
	vs, ok := s.vectors[store]
	if !external(store) || !ok {
		return
	}
	if err := vs.Delete(ctx, sel); err != nil {
		s.log.ErrorContext(ctx, "delete vectors", "store", store, "knowledge_base", sel.KB, "document", sel.Document, "error", err)
	}
}

// notFound turns a missing row into a not_found naming what was missing.
func notFound(err error, what string) error {
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return errs.E(errs.NotFound, "No such %s.", what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// errSuperseded tells an ingestion that its document changed or went meanwhile.
var errSuperseded = errors.New("document superseded")

// textOrNull is a nullable parameter: null keeps the stored value, "" sets it empty.
func textOrNull(p *string) pgtype.Text {
	if p == nil {
		return pgtype.Text{}
	}
	return pgtype.Text{String: *p, Valid: true}
}

// limits are the bounds of a document's extraction.
func (s *Service) limits() Limits {
	return Limits{MaxPages: s.cfg.MaxDocumentPages, MaxTextBytes: s.cfg.MaxDocumentBytes}
}

// MaxDocumentBytes is the largest document upload accepted.
func (s *Service) MaxDocumentBytes() int64 { return s.cfg.MaxDocumentBytes }
