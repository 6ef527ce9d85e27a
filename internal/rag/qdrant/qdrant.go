// Package qdrant is the Qdrant adapter of rag.VectorStore, over Qdrant's official Go
// client (gRPC). All knowledge bases with vectors of one size share one collection,
// <prefix>_<dimensions> (cosine, float16 vectors as pgvector's halfvec), partitioned by
// payload: every point carries org_id (a tenant index), kb_id and document_id, and its
// chunk's metadata under "metadata"; every read and delete filters by org and knowledge
// base. A point's id is its chunk's id.
package qdrant

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/rag"
)

// Config is the store's configuration (config's rag.qdrant.*).
type Config struct {
	// URL is Qdrant's gRPC endpoint: http://host:6334, or https:// for TLS.
	URL    string
	APIKey string
	// CollectionPrefix names the collections: <prefix>_<dimensions>.
	CollectionPrefix string
	// EfSearch is HNSW's candidate list size of a search (raised to k when smaller);
	// ExactBelow: a knowledge base with fewer chunks is searched exactly.
	EfSearch   int
	ExactBelow int
}

// Store is a rag.VectorStore on a Qdrant server.
type Store struct {
	client *qdrant.Client
	cfg    Config
	ready  sync.Map // collection name → struct{}: created, with its payload indexes
}

var _ rag.VectorStore = (*Store)(nil)

// New connects to Qdrant (lazily: the first call dials).
func New(cfg Config) (*Store, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("qdrant url %q: want http://host:port or https://host:port (the gRPC port, 6334 by default)", cfg.URL)
	}
	port := 6334
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("qdrant url %q: bad port", cfg.URL)
		}
	}
	client, err := qdrant.NewClient(&qdrant.Config{Host: u.Hostname(), Port: port, APIKey: cfg.APIKey, UseTLS: u.Scheme == "https",
		SkipCompatibilityCheck: true, PoolSize: 1})
	if err != nil {
		return nil, fmt.Errorf("qdrant client: %w", err)
	}
	if cfg.CollectionPrefix == "" {
		cfg.CollectionPrefix = "kiln_chunks"
	}
	return &Store{client: client, cfg: cfg}, nil
}

// Close closes the client's connections.
func (s *Store) Close() error { return s.client.Close() }

// Ping asks Qdrant for its health (a readiness check).
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.client.HealthCheck(ctx); err != nil {
		return fmt.Errorf("qdrant health: %w", err)
	}
	return nil
}

func (s *Store) collection(dims int) string {
	return s.cfg.CollectionPrefix + "_" + strconv.Itoa(dims)
}

// ensure creates the collection of dims with its payload indexes, once per process.
func (s *Store) ensure(ctx context.Context, dims int) (string, error) {
	name := s.collection(dims)
	if _, ok := s.ready.Load(name); ok {
		return name, nil
	}
	exists, err := s.client.CollectionExists(ctx, name)
	if err != nil {
		return "", fmt.Errorf("qdrant collection %s: %w", name, err)
	}
	if !exists {
		err := s.client.CreateCollection(ctx, &qdrant.CreateCollection{
			CollectionName: name,
			VectorsConfig: qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: uint64(dims), Distance: qdrant.Distance_Cosine, //nolint:gosec // one of rag.Dimensions
				Datatype: qdrant.Datatype_Float16.Enum()}),
		})
		// Another replica may have created it meanwhile.
		if err != nil {
			if again, aerr := s.client.CollectionExists(ctx, name); aerr != nil || !again {
				return "", fmt.Errorf("create qdrant collection %s: %w", name, err)
			}
		}
	}
	for _, field := range []string{"org_id", "kb_id", "document_id"} {
		params := &qdrant.KeywordIndexParams{}
		if field == "org_id" {
			params.IsTenant = qdrant.PtrOf(true)
		}
		if _, err := s.client.CreateFieldIndex(ctx, &qdrant.CreateFieldIndexCollection{
			CollectionName: name, Wait: qdrant.PtrOf(true), FieldName: field,
			FieldType: qdrant.FieldType_FieldTypeKeyword.Enum(), FieldIndexParams: qdrant.NewPayloadIndexParamsKeyword(params),
		}); err != nil {
			return "", fmt.Errorf("qdrant payload index %s.%s: %w", name, field, err)
		}
	}
	s.ready.Store(name, struct{}{})
	return name, nil
}

// upsertBatch bounds the points of one upsert request.
const upsertBatch = 256

// Upsert writes the points with their payload, in batches, waiting until each is applied.
func (s *Store) Upsert(ctx context.Context, org, kb uuid.UUID, dims int, points []rag.VectorPoint) error {
	if len(points) == 0 {
		return nil
	}
	name, err := s.ensure(ctx, dims)
	if err != nil {
		return err
	}
	for start := 0; start < len(points); start += upsertBatch {
		part := points[start:min(start+upsertBatch, len(points))]
		structs := make([]*qdrant.PointStruct, len(part))
		for i, pt := range part {
			if len(pt.Vector) != dims {
				return fmt.Errorf("upsert vectors: chunk %s has %d dimensions, want %d", pt.ChunkID, len(pt.Vector), dims)
			}
			meta, err := qdrant.NewValue(metadataOf(pt.Metadata))
			if err != nil {
				return fmt.Errorf("upsert vectors: chunk %s metadata: %w", pt.ChunkID, err)
			}
			structs[i] = &qdrant.PointStruct{
				Id:      qdrant.NewIDUUID(pt.ChunkID.String()),
				Vectors: qdrant.NewVectorsDense(pt.Vector),
				Payload: map[string]*qdrant.Value{
					"org_id": qdrant.NewValueString(org.String()), "kb_id": qdrant.NewValueString(kb.String()),
					"document_id": qdrant.NewValueString(pt.DocumentID.String()), "metadata": meta,
				},
			}
		}
		if _, err := s.client.Upsert(ctx, &qdrant.UpsertPoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: structs}); err != nil {
			return fmt.Errorf("upsert vectors: %w", err)
		}
	}
	return nil
}

// metadataOf converts metadata to the types the client encodes (JSON numbers as float64).
func metadataOf(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case int:
			out[k] = float64(x)
		case int64:
			out[k] = float64(x)
		default:
			out[k] = v
		}
	}
	return out
}

// Delete removes the selected points by a filter on their payload and ids.
func (s *Store) Delete(ctx context.Context, sel rag.VectorSelector) error {
	if sel.Chunks != nil && len(sel.Chunks) == 0 {
		return nil
	}
	name := s.collection(sel.Dimensions)
	exists, err := s.client.CollectionExists(ctx, name)
	if err != nil {
		return fmt.Errorf("delete vectors: %w", err)
	}
	if !exists {
		return nil
	}
	f := tenant(sel.Org, sel.KB)
	if sel.Document != uuid.Nil {
		f.Must = append(f.Must, qdrant.NewMatchKeyword("document_id", sel.Document.String()))
	}
	if sel.Chunks != nil {
		f.Must = append(f.Must, qdrant.NewHasID(pointIDs(sel.Chunks)...))
	}
	if len(sel.Except) > 0 {
		f.MustNot = append(f.MustNot, qdrant.NewHasID(pointIDs(sel.Except)...))
	}
	if _, err := s.client.Delete(ctx, &qdrant.DeletePoints{CollectionName: name, Wait: qdrant.PtrOf(true), Points: qdrant.NewPointsSelectorFilter(f)}); err != nil {
		return fmt.Errorf("delete vectors: %w", err)
	}
	return nil
}

// Nearest queries the collection of the query's size within its org and knowledge base;
// Qdrant's filterable HNSW (or its exact search of a small knowledge base) fills k
// results under a selective filter.
func (s *Store) Nearest(ctx context.Context, q rag.VectorQuery) ([]rag.Ranked, error) {
	f, err := Filter(q.Org, q.KB, q.Filter)
	if err != nil {
		return nil, err
	}
	params := &qdrant.SearchParams{HnswEf: qdrant.PtrOf(uint64(max(s.cfg.EfSearch, q.K)))} //nolint:gosec // positive
	if q.Chunks < s.cfg.ExactBelow {
		params = &qdrant.SearchParams{Exact: qdrant.PtrOf(true)}
	}
	points, err := s.client.Query(ctx, &qdrant.QueryPoints{
		CollectionName: s.collection(q.Dimensions), Query: qdrant.NewQueryDense(q.Vector), Filter: f,
		Limit: qdrant.PtrOf(uint64(q.K)), Params: params, //nolint:gosec // positive
	})
	if err != nil {
		if isNotFound(err) { // nothing was ever stored at this size
			return nil, nil
		}
		return nil, fmt.Errorf("vector search: %w", err)
	}
	out := make([]rag.Ranked, 0, len(points))
	for _, p := range points {
		id, err := uuid.Parse(p.GetId().GetUuid())
		if err != nil {
			return nil, fmt.Errorf("vector search: point id %v: %w", p.GetId(), err)
		}
		out = append(out, rag.Ranked{ChunkID: id, Score: float64(p.GetScore())})
	}
	return out, nil
}

func isNotFound(err error) bool {
	return status.Code(err) == codes.NotFound
}

func tenant(org, kb uuid.UUID) *qdrant.Filter {
	return &qdrant.Filter{Must: []*qdrant.Condition{
		qdrant.NewMatchKeyword("org_id", org.String()),
		qdrant.NewMatchKeyword("kb_id", kb.String()),
	}}
}

func pointIDs(ids []uuid.UUID) []*qdrant.PointId {
	out := make([]*qdrant.PointId, len(ids))
	for i, id := range ids {
		out[i] = qdrant.NewIDUUID(id.String())
	}
	return out
}

// Filter translates a search's filter into Qdrant's, within org and knowledge base kb:
// eq and in match strings and booleans exactly and numbers as a closed range; gt, gte,
// lt and lte are numeric ranges. A range on strings (pgvector compares them bytewise)
// has no Qdrant equivalent: it is a validation_failed naming the condition.
func Filter(org, kb uuid.UUID, filter rag.Filter) (*qdrant.Filter, error) {
	f := tenant(org, kb)
	var fields []errs.FieldError
	for _, c := range filter {
		key := `metadata."` + c.Field + `"` // metadata keys hold no quote
		if c.Field == "document_id" {
			key = "document_id"
		}
		switch c.Op {
		case "eq":
			f.Must = append(f.Must, equal(key, c.Value))
		case "in":
			var anyOf []*qdrant.Condition
			for _, v := range c.Value.([]any) {
				anyOf = append(anyOf, equal(key, v))
			}
			f.Must = append(f.Must, qdrant.NewFilterAsCondition(&qdrant.Filter{Should: anyOf}))
		default:
			n, ok := c.Value.(float64)
			if !ok {
				fields = append(fields, errs.FieldError{Pointer: "/filter/" + c.Field + "/" + c.Op,
					Message: "compares strings, which the qdrant vector store cannot: use a number, eq or in"})
				continue
			}
			r := &qdrant.Range{}
			switch c.Op {
			case "gt":
				r.Gt = &n
			case "gte":
				r.Gte = &n
			case "lt":
				r.Lt = &n
			case "lte":
				r.Lte = &n
			}
			f.Must = append(f.Must, qdrant.NewRange(key, r))
		}
	}
	if len(fields) > 0 {
		return nil, errs.InvalidFields("invalid filter", fields)
	}
	return f, nil
}

func equal(key string, v any) *qdrant.Condition {
	switch x := v.(type) {
	case bool:
		return qdrant.NewMatchBool(key, x)
	case float64:
		return qdrant.NewRange(key, &qdrant.Range{Gte: &x, Lte: &x})
	default:
		return qdrant.NewMatchKeyword(key, fmt.Sprint(x))
	}
}
