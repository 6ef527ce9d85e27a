package qdrant_test

import (
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/rag/qdrant"
)

// TestFilter: every Qdrant filter is scoped to the org and knowledge base, and each
// operator of a search's filter becomes the condition of the same meaning; a string range
// (pgvector compares strings bytewise, Qdrant cannot) is a field error.
func TestFilter(t *testing.T) {
	org, kb := uuid.New(), uuid.New()
	t.Run("OK", func(t *testing.T) {
		f, err := rag.ParseFilter(map[string]any{"product": "billing", "year": map[string]any{"gte": 2023.0, "lt": 2025.0},
			"tier": map[string]any{"in": []any{"pro", 2.0, true}}, "draft": false, "document_id": "0196a2c4-0000-7000-8000-000000000001"})
		if err != nil {
			t.Fatal(err)
		}
		q, err := qdrant.Filter(org, kb, f)
		if err != nil {
			t.Fatal(err)
		}
		must := q.GetMust()
		if len(must) != 8 || len(q.GetShould()) != 0 || len(q.GetMustNot()) != 0 {
			t.Fatalf("%d must conditions, want 8 (org, kb, 6 of the filter): %v", len(must), q)
		}
		if must[0].GetField().GetKey() != "org_id" || must[0].GetField().GetMatch().GetKeyword() != org.String() ||
			must[1].GetField().GetKey() != "kb_id" || must[1].GetField().GetMatch().GetKeyword() != kb.String() {
			t.Fatalf("tenant conditions %v %v", must[0], must[1])
		}
		for _, c := range must[2:] {
			fc := c.GetField()
			switch fc.GetKey() {
			case "document_id":
				if fc.GetMatch().GetKeyword() != "0196a2c4-0000-7000-8000-000000000001" {
					t.Fatalf("document_id: %v", fc)
				}
			case `metadata."draft"`:
				if fc.GetMatch().GetBoolean() != false || fc.GetMatch().GetMatchValue() == nil {
					t.Fatalf("draft: %v", fc)
				}
			case `metadata."product"`:
				if fc.GetMatch().GetKeyword() != "billing" {
					t.Fatalf("product: %v", fc)
				}
			case `metadata."year"`:
				r := fc.GetRange()
				if !((r.Gte != nil && *r.Gte == 2023 && r.Lt == nil) || (r.Lt != nil && *r.Lt == 2025 && r.Gte == nil)) {
					t.Fatalf("year: %v", r)
				}
			case "":
				anyOf := c.GetFilter().GetShould()
				if len(anyOf) != 3 || anyOf[0].GetField().GetMatch().GetKeyword() != "pro" ||
					anyOf[1].GetField().GetRange().GetGte() != 2 || anyOf[1].GetField().GetRange().GetLte() != 2 ||
					!anyOf[2].GetField().GetMatch().GetBoolean() || anyOf[0].GetField().GetKey() != `metadata."tier"` {
					t.Fatalf("tier in: %v", anyOf)
				}
			default:
				t.Fatalf("unexpected condition %v", c)
			}
		}
	})
	t.Run("ErrStringRange", func(t *testing.T) {
		f, err := rag.ParseFilter(map[string]any{"version": map[string]any{"gt": "1.2"}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = qdrant.Filter(org, kb, f)
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Pointer != "/filter/version/gt" {
			t.Fatalf("string range: %v, want a field error at /filter/version/gt", err)
		}
	})
}

// TestNewRejectsBadURL: the URL must name a host over http or https.
func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "localhost:6334", "grpc://localhost:6334", "http://", "http://localhost:port"} {
		if _, err := qdrant.New(qdrant.Config{URL: u}); err == nil {
			t.Fatalf("New(%q): no error", u)
		}
	}
	s, err := qdrant.New(qdrant.Config{URL: "http://localhost:6334"})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
}
