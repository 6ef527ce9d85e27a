package rag

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/errs"
)

// fuzzExtract checks what every extractor promises whatever its input: no panic, a
// refusal that is a client's problem (invalid_request or request_too_large, never an
// internal error), and text that Postgres can store (valid UTF-8 without NUL) and that
// reads back into sections and chunks.
func fuzzExtract(t *testing.T, mediaType string, body []byte) {
	lim := Limits{MaxPages: 20, MaxTextBytes: 1 << 20}
	text, sections, err := Extract(mediaType, body, lim)
	if err != nil {
		if c := errs.CodeOf(err); c != errs.Invalid && c != errs.RequestTooLarge {
			t.Fatalf("refusal coded %s: %v", c, err)
		}
		return
	}
	if !utf8.ValidString(text) || strings.ContainsRune(text, 0) {
		t.Fatalf("text %q is not storable", text)
	}
	if strings.TrimSpace(text) == "" || len(sections) == 0 {
		t.Fatalf("accepted a document without text: %q", text)
	}
	if int64(len(text)) > 8*lim.MaxTextBytes {
		t.Fatalf("text of %d bytes past the limit", len(text))
	}
	for _, p := range (Chunker{MaxTokens: 64, Overlap: 8}).Split(Sections(mediaType, text)) {
		if p.Tokens > 64 || p.Page < 0 || p.Page > lim.MaxPages {
			t.Fatalf("chunk %+v", p)
		}
	}
}

func FuzzExtractHTML(f *testing.F) {
	for _, s := range []string{
		"<h1>Billing</h1><p>Invoices are sent monthly.</p><h2>退款</h2><ul><li>三十天内</li></ul>",
		"<html><head><title>T</title><script>alert(1)</script></head><body><div><h3>x</h3>y<br>z</div></body></html>",
		"<p>unclosed <b>bold <i>italic", "<svg><h1>not a heading</h1></svg>", "<h7>odd</h7><table><tr><td>cell</td></tr></table>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { fuzzExtract(t, MediaHTML, body) })
}

func FuzzExtractMarkdown(f *testing.F) {
	for _, s := range []string{
		"# Billing\n\nInvoices are emailed.\n\n## 退款\n\n付款后三十天内可以申请退款。\n",
		"```\n# not a heading\n```\n### Deep\ntext", "#no space\n####### seven\n\r\n# \n", "~~~\n# in fence\n~~~\n# out\nbody",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { fuzzExtract(t, MediaMarkdown, body) })
}

func FuzzExtractPDF(f *testing.F) {
	two := testPDF(f, "Invoices are emailed on the first day of each month.", "Refunds go back to the card.")
	zh := cjkPDF(f, "知识库支持中文检索。")
	for _, b := range [][]byte{two, zh, two[:len(two)/2], zh[:len(zh)-40], []byte("%PDF-1.4\n%%EOF\n")} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) { fuzzExtract(t, MediaPDF, body) })
}

func FuzzExtractDOCX(f *testing.F) {
	full := testDOCX(f, para("1", "Billing")+para("", "Invoices are emailed monthly.")+para("2", "退款")+para("", "付款后三十天内可以申请退款。"))
	for _, b := range [][]byte{full, full[:len(full)/2], testDOCX(f, `<w:p><w:r><w:t>a</w:t><w:tab/><w:br/></w:r></w:p><w:p>`), []byte("PK\x05\x06" + strings.Repeat("\x00", 18))} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) { fuzzExtract(t, MediaDOCX, body) })
}
