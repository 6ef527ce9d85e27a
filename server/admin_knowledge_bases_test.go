package server

import (
	"testing"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// TestAdminKnowledgeBases lists two orgs' knowledge bases with their sizes and failed
// ingestions, in cursor pages and by org, lists the failed document, retries it (a new
// ingestion job that makes it ready, audited as document.retry) and refuses to retry a
// document that did not fail.
func TestAdminKnowledgeBases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	root, _ := b.signUpAdmin(t, "kb-root@example.com")
	type added struct{ kb, doc string }
	addKB := func(owner, name string, texts ...string) []added {
		t.Helper()
		var kb api.KnowledgeBase
		if res := b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": name}, &kb); res.StatusCode != 201 {
			t.Fatalf("create %s: %d", name, res.StatusCode)
		}
		var out []added
		for _, text := range texts {
			var d api.Document
			if res := b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/documents", owner, map[string]any{"text": text, "title": name}, &d); res.StatusCode != 202 {
				t.Fatalf("add to %s: %d", name, res.StatusCode)
			}
			waitFor(t, "document ready", func() bool {
				var got api.DocumentWithChunks
				b.call(t, "GET", "/v1/knowledge-bases/"+kb.Id.String()+"/documents/"+d.Id.String(), owner, nil, &got)
				return got.Status == api.DocumentReady
			})
			out = append(out, added{kb.Id.String(), d.Id.String()})
		}
		return out
	}
	alice := b.signUp(t, "kb-alice@example.com").AccessToken
	bob := b.signUp(t, "kb-bob@example.com").AccessToken
	a := addKB(alice, "Alice's help center", "Invoices are emailed on the first day of each month.", "Refunds go back to the card within 30 days.")
	bb := addKB(bob, "Bob's docs", "Rotate API keys from the org settings page.")
	// An ingestion that failed for good (as after its last attempt).
	if _, err := b.pool.Exec(t.Context(), `UPDATE kb_documents SET status = 'failed', error = 'embed chunks: upstream timeout' WHERE id = $1`, a[1].doc); err != nil {
		t.Fatal(err)
	}

	var page1, page2 api.AdminKnowledgeBaseList
	if res := b.call(t, "GET", "/v1/admin/knowledge-bases?limit=1", root.AccessToken, nil, &page1); res.StatusCode != 200 || len(page1.Data) != 1 || page1.NextCursor == nil {
		t.Fatalf("first page: %d %+v", res.StatusCode, page1)
	}
	b.call(t, "GET", "/v1/admin/knowledge-bases?limit=1&cursor="+*page1.NextCursor, root.AccessToken, nil, &page2)
	if len(page2.Data) != 1 || page2.Data[0].Id == page1.Data[0].Id {
		t.Fatalf("second page %+v", page2)
	}
	byName := map[string]api.AdminKnowledgeBase{}
	for _, k := range append(page1.Data, page2.Data...) {
		byName[k.Name] = k
	}
	ak, bk := byName["Alice's help center"], byName["Bob's docs"]
	if ak.DocumentCount != 2 || ak.ChunkCount != 2 || ak.FailedDocuments != 1 || ak.Bytes != int64(len("Invoices are emailed on the first day of each month.")+len("Refunds go back to the card within 30 days.")) ||
		ak.OrgName == "" || ak.OrgId == bk.OrgId {
		t.Fatalf("Alice's knowledge base %+v", ak)
	}
	if bk.DocumentCount != 1 || bk.ChunkCount != 1 || bk.FailedDocuments != 0 {
		t.Fatalf("Bob's knowledge base %+v", bk)
	}
	var bobs api.AdminKnowledgeBaseList
	if b.call(t, "GET", "/v1/admin/knowledge-bases?org_id="+bk.OrgId.String(), root.AccessToken, nil, &bobs); len(bobs.Data) != 1 || bobs.Data[0].Id != bk.Id {
		t.Fatalf("by org %+v", bobs)
	}

	var failed api.AdminDocumentList
	b.call(t, "GET", "/v1/admin/knowledge-bases/failed-documents", root.AccessToken, nil, &failed)
	if len(failed.Data) != 1 || failed.Data[0].Id.String() != a[1].doc || failed.Data[0].OrgId != ak.OrgId || failed.Data[0].KnowledgeBaseName != ak.Name ||
		failed.Data[0].Error == nil || *failed.Data[0].Error != "embed chunks: upstream timeout" {
		t.Fatalf("failed documents %+v", failed)
	}
	if b.call(t, "GET", "/v1/admin/knowledge-bases/failed-documents?org_id="+bk.OrgId.String(), root.AccessToken, nil, &failed); len(failed.Data) != 0 {
		t.Fatalf("Bob's failed documents %+v", failed)
	}

	retry := "/v1/admin/knowledge-bases/" + a[1].kb + "/documents/" + a[1].doc + "/retry"
	var doc api.Document
	if res := b.call(t, "POST", retry, root.AccessToken, nil, &doc); res.StatusCode != 202 || doc.Status != api.DocumentQueued || doc.JobId == nil || doc.Error != nil {
		t.Fatalf("retry: %d %+v", res.StatusCode, doc)
	}
	waitFor(t, "retried document ready", func() bool {
		var got api.DocumentWithChunks
		b.call(t, "GET", "/v1/knowledge-bases/"+a[1].kb+"/documents/"+a[1].doc, alice, nil, &got)
		return got.Status == api.DocumentReady && got.ChunkCount == 1
	})
	if b.call(t, "GET", "/v1/admin/knowledge-bases/failed-documents", root.AccessToken, nil, &failed); len(failed.Data) != 0 {
		t.Fatalf("failed documents after the retry %+v", failed)
	}
	var events api.AuditEventList
	b.call(t, "GET", "/v1/admin/audit-events?action=document.retry", root.AccessToken, nil, &events)
	if len(events.Data) != 1 || events.Data[0].TargetId != a[1].doc {
		t.Fatalf("audit events %+v", events)
	}

	t.Run("ErrNotFailed", func(t *testing.T) {
		res := b.call(t, "POST", "/v1/admin/knowledge-bases/"+bb[0].kb+"/documents/"+bb[0].doc+"/retry", root.AccessToken, nil, nil)
		if p := decodeProblem(t, res); res.StatusCode != 409 || p.Code != api.ErrorCode(errs.Conflict) {
			t.Fatalf("%d %+v", res.StatusCode, p)
		}
	})
	t.Run("ErrNotFound", func(t *testing.T) {
		// A document under another knowledge base's id.
		res := b.call(t, "POST", "/v1/admin/knowledge-bases/"+bb[0].kb+"/documents/"+a[0].doc+"/retry", root.AccessToken, nil, nil)
		if res.StatusCode != 404 {
			t.Fatalf("%d", res.StatusCode)
		}
	})
}
