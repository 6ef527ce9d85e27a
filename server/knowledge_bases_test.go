package server

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"

	"codeberg.org/go-pdf/fpdf"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/errs"
)

// upload builds a multipart document upload.
func upload(t testing.TB, path, credential, filename, contentType, body string, fields map[string]string) *http.Request {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="`+filename+`"`)
	h.Set("Content-Type", contentType)
	part, err := w.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = part.Write([]byte(body))
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	_ = w.Close()
	req := httptest.NewRequest("POST", path, &buf)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+credential)
	return req
}

func TestKnowledgeBases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	owner := b.signUp(t, "kb@example.com").AccessToken

	var kb api.KnowledgeBase
	if res := b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": "Help center", "chunking": map[string]int{"max_tokens": 80, "overlap_tokens": 10}}, &kb); res.StatusCode != 201 {
		t.Fatalf("create: %d %s", res.StatusCode, readAll(res))
	}
	if kb.EmbeddingModel != "default" || kb.Dimensions != 256 || kb.VectorStore != api.VectorStorePgvector {
		t.Fatalf("knowledge base %+v", kb)
	}
	docs := "/v1/knowledge-bases/" + kb.Id.String() + "/documents"

	var reset, invoices api.Document
	res := b.call(t, "POST", docs, owner, map[string]any{"title": "Reset your password", "external_id": "reset",
		"text": "Open the account page and choose reset password. The emailed link works for one hour.", "metadata": map[string]any{"product": "account", "year": 2025}},
		&reset, "Idempotency-Key", "doc-1")
	if res.StatusCode != 202 || reset.JobId == nil || reset.Status != api.DocumentQueued {
		t.Fatalf("add JSON document: %d %+v", res.StatusCode, reset)
	}
	t.Run("OKIdempotentReplay", func(t *testing.T) {
		again := b.call(t, "POST", docs, owner, map[string]any{"title": "Reset your password", "external_id": "reset",
			"text": "Open the account page and choose reset password. The emailed link works for one hour.", "metadata": map[string]any{"product": "account", "year": 2025}},
			nil, "Idempotency-Key", "doc-1")
		if again.StatusCode != 202 || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: %d %q", again.StatusCode, again.Header.Get("Idempotent-Replayed"))
		}
	})
	md := "# Billing\n\nInvoices are emailed on the first day of each month.\n\n## 退款\n\n付款后三十天内可以申请退款，款项退回原支付卡。\n"
	res = b.do(t, upload(t, docs, owner, "billing.md", "application/octet-stream", md, map[string]string{"metadata": `{"product": "billing"}`}))
	if res.StatusCode != 202 {
		t.Fatalf("upload Markdown: %d %s", res.StatusCode, readAll(res))
	}
	decodeJSON(t, res, &invoices)
	if invoices.Title != "billing.md" || invoices.MediaType != "text/markdown" || invoices.Source != api.DocumentSourceUpload {
		t.Fatalf("uploaded document %+v", invoices)
	}

	ready := func(id string) api.DocumentWithChunks {
		var d api.DocumentWithChunks
		waitFor(t, "document "+id+" ready", func() bool {
			b.call(t, "GET", docs+"/"+id, owner, nil, &d)
			return d.Status == api.DocumentReady || d.Status == api.DocumentFailed
		})
		if d.Status != api.DocumentReady || d.ChunkCount == 0 || len(d.Chunks) != d.ChunkCount {
			t.Fatalf("document %+v", d)
		}
		return d
	}
	ready(reset.Id.String())
	billing := ready(invoices.Id.String())
	if billing.Chunks[len(billing.Chunks)-1].Metadata["section"] != "Billing > 退款" {
		t.Fatalf("last chunk's metadata %v, want section Billing > 退款", billing.Chunks[len(billing.Chunks)-1].Metadata)
	}

	t.Run("OKUnchangedDocumentNotAddedAgain", func(t *testing.T) {
		var same api.Document
		res := b.call(t, "POST", docs, owner, map[string]any{"title": "Reset your password", "external_id": "reset",
			"text": "Open the account page and choose reset password. The emailed link works for one hour.", "metadata": map[string]any{"product": "account", "year": 2025}}, &same)
		if res.StatusCode != 200 || same.Id != reset.Id || same.Status != api.DocumentReady {
			t.Fatalf("%d %+v", res.StatusCode, same)
		}
	})
	t.Run("OKSearchModes", func(t *testing.T) {
		for _, tc := range []struct{ mode, query, want string }{
			{"hybrid", "how do I reset my password", reset.Id.String()},
			{"vector", "when are invoices emailed", invoices.Id.String()},
			{"fulltext", "退款多久", invoices.Id.String()},
		} {
			var out api.SearchResults
			res := b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/search", owner, map[string]any{"query": tc.query, "k": 3, "mode": tc.mode}, &out)
			if res.StatusCode != 200 || len(out.Data) == 0 || out.Data[0].DocumentId.String() != tc.want || string(out.Mode) != tc.mode {
				t.Fatalf("%s %q: %d %+v", tc.mode, tc.query, res.StatusCode, out)
			}
			if tc.mode == "hybrid" && !strings.Contains(out.Data[0].Highlight, "<mark>") {
				t.Fatalf("highlight %q", out.Data[0].Highlight)
			}
		}
	})
	t.Run("OKFilter", func(t *testing.T) {
		var out api.SearchResults
		b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/search", owner, map[string]any{"query": "password invoices", "filter": map[string]any{"year": map[string]any{"gte": 2025}}}, &out)
		if len(out.Data) == 0 {
			t.Fatal("no results")
		}
		for _, h := range out.Data {
			if h.DocumentId != reset.Id {
				t.Fatalf("filter year >= 2025 returned document %s", h.DocumentId)
			}
		}
	})
	t.Run("ErrRefusals", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			req    *http.Request
			status int
			code   errs.Code
		}{
			{"BadFilter", jsonAuth(owner, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/search", `{"query":"x","filter":{"year":{"near":1}}}`), 400, errs.Invalid},
			{"UnknownFileType", upload(t, docs, owner, "letter.doc", "application/msword", "\xd0\xcf\x11\xe0", nil), 415, errs.UnsupportedMediaType},
			{"UnreadablePDF", upload(t, docs, owner, "scan.pdf", "application/pdf", "%PDF-1.7", nil), 400, errs.Invalid},
			{"EmptyFile", upload(t, docs, owner, "empty.txt", "text/plain", "  \n", nil), 400, errs.Invalid},
			{"TooLarge", upload(t, docs, owner, "big.txt", "text/plain", strings.Repeat("a", 11<<20), nil), 413, errs.RequestTooLarge},
			{"ReservedMetadata", jsonAuth(owner, "POST", docs, `{"text":"x","metadata":{"section":"mine"}}`), 400, errs.Invalid},
			{"UnknownModel", jsonAuth(owner, "POST", "/v1/knowledge-bases", `{"name":"x","embedding_model":"nope"}`), 400, errs.Invalid},
		} {
			res := b.do(t, tc.req)
			if p := decodeProblem(t, res); res.StatusCode != tc.status || p.Code != api.ErrorCode(tc.code) {
				t.Errorf("%s: %d %s, want %d %s", tc.name, res.StatusCode, p.Code, tc.status, tc.code)
			}
		}
	})
	t.Run("ErrScopesAndTenancy", func(t *testing.T) {
		reader := b.createKey(t, owner, []string{"kb:read"}).Key
		if res := b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/search", reader, map[string]any{"query": "invoices"}, nil); res.StatusCode != 200 {
			t.Fatalf("search with kb:read: %d", res.StatusCode)
		}
		if res := b.call(t, "POST", docs, reader, map[string]any{"text": "x"}, nil); res.StatusCode != 403 {
			t.Fatalf("add a document with kb:read only: %d", res.StatusCode)
		}
		stranger := b.signUp(t, "stranger@example.com").AccessToken
		for _, path := range []string{"/v1/knowledge-bases/" + kb.Id.String(), docs, docs + "/" + reset.Id.String()} {
			if res := b.call(t, "GET", path, stranger, nil, nil); res.StatusCode != 404 {
				t.Fatalf("GET %s by another org: %d", path, res.StatusCode)
			}
		}
		var list api.KnowledgeBaseList
		if b.call(t, "GET", "/v1/knowledge-bases", stranger, nil, &list); len(list.Data) != 0 {
			t.Fatalf("another org lists %d knowledge bases", len(list.Data))
		}
	})
	t.Run("OKDelete", func(t *testing.T) {
		if res := b.call(t, "DELETE", docs+"/"+reset.Id.String(), owner, nil, nil); res.StatusCode != 204 {
			t.Fatalf("delete document: %d", res.StatusCode)
		}
		if res := b.call(t, "GET", docs+"/"+reset.Id.String(), owner, nil, nil); res.StatusCode != 404 {
			t.Fatalf("deleted document: %d", res.StatusCode)
		}
		var got api.KnowledgeBase
		b.call(t, "PATCH", "/v1/knowledge-bases/"+kb.Id.String(), owner, map[string]any{"name": "Renamed"}, &got)
		if got.Name != "Renamed" || got.DocumentCount != 1 || got.ChunkCount != billing.ChunkCount {
			t.Fatalf("after delete and rename: %+v", got)
		}
		if res := b.call(t, "DELETE", "/v1/knowledge-bases/"+kb.Id.String(), owner, nil, nil); res.StatusCode != 204 {
			t.Fatalf("delete knowledge base: %d", res.StatusCode)
		}
		var chunks int
		if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM kb_chunks`).Scan(&chunks); err != nil || chunks != 0 {
			t.Fatalf("%d chunks left after deleting the knowledge base (%v)", chunks, err)
		}
	})
}

func jsonAuth(credential, method, path, body string) *http.Request {
	req := jsonRequest(method, path, body)
	req.Header.Set("Authorization", "Bearer "+credential)
	return req
}

func decodeJSON(t testing.TB, res *http.Response, out any) {
	t.Helper()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("decode: %v", err)
	}
}

// TestEvaluations runs an evaluation job over the API and reads its stored results.
func TestEvaluations(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	owner := b.signUp(t, "eval@example.com").AccessToken
	var kb api.KnowledgeBase
	b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": "Eval"}, &kb)
	base := "/v1/knowledge-bases/" + kb.Id.String()
	docs := map[string]string{
		"reset":   "Open the account page and choose reset password; the emailed link works for one hour.",
		"invoice": "Invoices are emailed on the first day of each month as PDF.",
		"refund":  "Refunds are possible within 30 days and go back to the card.",
	}
	for id, text := range docs {
		var d api.Document
		if res := b.call(t, "POST", base+"/documents", owner, map[string]any{"text": text, "title": id, "external_id": id}, &d); res.StatusCode != 202 {
			t.Fatalf("add %s: %d", id, res.StatusCode)
		}
		waitFor(t, "document ready", func() bool {
			var got api.DocumentWithChunks
			b.call(t, "GET", base+"/documents/"+d.Id.String(), owner, nil, &got)
			return got.Status == api.DocumentReady
		})
	}
	var e api.Evaluation
	res := b.call(t, "POST", base+"/evaluations", owner, map[string]any{"name": "smoke", "modes": []string{"fulltext", "vector"}, "queries": []map[string]any{
		{"id": "q1", "lang": "en", "query": "how do I reset my password", "relevant": []string{"reset"}},
		{"id": "q2", "lang": "en", "query": "when do invoices arrive", "relevant": []string{"invoice"}},
		{"id": "q3", "lang": "en", "query": "can I get my money back", "relevant": []string{"refund"}},
	}}, &e)
	if res.StatusCode != 202 || e.JobId == nil || e.QueryCount != 3 || len(e.Modes) != 2 {
		t.Fatalf("create evaluation: %d %+v", res.StatusCode, e)
	}
	waitFor(t, "evaluation done", func() bool {
		b.call(t, "GET", base+"/evaluations/"+e.Id.String(), owner, nil, &e)
		return e.Status == api.EvaluationSucceeded || e.Status == api.EvaluationFailed
	})
	if e.Status != api.EvaluationSucceeded || e.Runs == nil || len(*e.Runs) != 2 || e.Comparisons == nil || len(*e.Comparisons) != 1 {
		t.Fatalf("evaluation %+v", e)
	}
	ft := (*e.Runs)[0]
	if ft.Mode != api.SearchFulltext || ft.Metrics.Queries != 3 || ft.Metrics.Ndcg10 <= 0.3 || ft.ByLang["en"].Queries != 3 || ft.Queries == nil || len(*ft.Queries) != 3 {
		t.Fatalf("full-text run %+v", ft)
	}
	if c := (*e.Comparisons)[0]; c.A != api.SearchFulltext || c.B != api.SearchVector || c.Wins+c.Losses+c.Ties != 3 {
		t.Fatalf("comparison %+v", c)
	}
	var list api.EvaluationList
	if b.call(t, "GET", base+"/evaluations", owner, nil, &list); len(list.Data) != 1 || list.Data[0].Runs != nil {
		t.Fatalf("list %+v", list)
	}
	stranger := b.signUp(t, "eval-stranger@example.com").AccessToken
	if res := b.call(t, "GET", base+"/evaluations/"+e.Id.String(), stranger, nil, nil); res.StatusCode != 404 {
		t.Fatalf("another org reads the evaluation: %d", res.StatusCode)
	}
}

// TestDocumentUploadPDFAndDOCX uploads a PDF written by fpdf and a DOCX zipped here, in
// English and Chinese: their text is searchable, a PDF's chunks carry their page and a
// DOCX's the heading path.
func TestDocumentUploadPDFAndDOCX(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.runJobs(t)
	owner := b.signUp(t, "pdf@example.com").AccessToken
	var kb api.KnowledgeBase
	b.call(t, "POST", "/v1/knowledge-bases", owner, map[string]any{"name": "Manuals"}, &kb)
	docs := "/v1/knowledge-bases/" + kb.Id.String() + "/documents"

	p := fpdf.New("P", "mm", "A4", "")
	p.SetFont("Helvetica", "", 12)
	for _, text := range []string{"Kiln keeps invoices for seven years.", "Refunds reach the card within five days."} {
		p.AddPage()
		p.MultiCell(0, 6, text, "", "", false)
	}
	var pdfBody bytes.Buffer
	if err := p.Output(&pdfBody); err != nil {
		t.Fatal(err)
	}
	var docxBody bytes.Buffer
	zw := zip.NewWriter(&docxBody)
	w, _ := zw.Create("word/document.xml")
	_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>`+
		`<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Shipping</w:t></w:r></w:p><w:p><w:r><w:t>Parcels leave the warehouse every morning.</w:t></w:r></w:p>`+
		`<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>海外配送</w:t></w:r></w:p><w:p><w:r><w:t>海外订单通常在十个工作日内送达。</w:t></w:r></w:p></w:body></w:document>`)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}

	ready := func(res *http.Response) api.DocumentWithChunks {
		t.Helper()
		var d api.Document
		if res.StatusCode != 202 {
			t.Fatalf("upload: %d %s", res.StatusCode, readAll(res))
		}
		decodeJSON(t, res, &d)
		var got api.DocumentWithChunks
		waitFor(t, "document ready", func() bool {
			b.call(t, "GET", docs+"/"+d.Id.String(), owner, nil, &got)
			return got.Status == api.DocumentReady || got.Status == api.DocumentFailed
		})
		if got.Status != api.DocumentReady || len(got.Chunks) == 0 {
			t.Fatalf("document %+v", got)
		}
		return got
	}
	manual := ready(b.do(t, upload(t, docs, owner, "manual.pdf", "application/pdf", pdfBody.String(), nil)))
	if manual.MediaType != "application/pdf" || len(manual.Chunks) != 2 || manual.Chunks[0].Metadata["page"] != float64(1) || manual.Chunks[1].Metadata["page"] != float64(2) {
		t.Fatalf("PDF chunks %+v, want one per page with its page number", manual.Chunks)
	}
	shipping := ready(b.do(t, upload(t, docs, owner, "shipping.docx", "application/octet-stream", docxBody.String(), nil)))
	if last := shipping.Chunks[len(shipping.Chunks)-1]; last.Metadata["section"] != "Shipping > 海外配送" || !strings.Contains(last.Text, "十个工作日") {
		t.Fatalf("DOCX chunk %+v", last)
	}
	for query, want := range map[string]string{"how long do refunds take": manual.Id.String(), "海外订单多久送达": shipping.Id.String()} {
		var out api.SearchResults
		b.call(t, "POST", "/v1/knowledge-bases/"+kb.Id.String()+"/search", owner, map[string]any{"query": query, "k": 1}, &out)
		if len(out.Data) != 1 || out.Data[0].DocumentId.String() != want {
			t.Fatalf("search %q: %+v", query, out.Data)
		}
	}
	t.Run("OKEmbeddingUsageRecorded", func(t *testing.T) {
		// Each ingestion's embedding call and each search's query embedding is a usage row
		// of the knowledge base's org, with its tokens.
		counts := map[string][2]int{}
		waitFor(t, "usage rows", func() bool {
			rows, err := b.pool.Query(t.Context(), `SELECT u.endpoint, count(*)::int, sum(u.prompt_tokens)::int FROM llm_usage u
				JOIN knowledge_bases k ON k.org_id = u.org_id WHERE k.id = $1 AND u.status = 'ok' GROUP BY 1`, kb.Id)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var endpoint string
				var n, tokens int
				if err := rows.Scan(&endpoint, &n, &tokens); err != nil {
					t.Fatal(err)
				}
				counts[endpoint] = [2]int{n, tokens}
			}
			return counts["rag.ingest"][0] >= 2 && counts["rag.search"][0] >= 2
		})
		if counts["rag.ingest"][1] == 0 || counts["rag.search"][1] == 0 {
			t.Fatalf("usage %v: no tokens counted", counts)
		}
	})
}
