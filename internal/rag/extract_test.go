package rag

import (
	"archive/zip"
	"bytes"
	"fmt"
	"strings"
	"testing"

	"codeberg.org/go-pdf/fpdf"

	"github.com/kilnhq/kiln/internal/errs"
)

var testLimits = Limits{MaxPages: 50, MaxTextBytes: 1 << 20}

// testPDF writes a PDF of the given pages with fpdf (the core Helvetica font: Latin text).
func testPDF(t testing.TB, pages ...string) []byte {
	t.Helper()
	p := fpdf.New("P", "mm", "A4", "")
	p.SetFont("Helvetica", "", 12)
	for _, text := range pages {
		p.AddPage()
		p.MultiCell(0, 6, text, "", "", false)
	}
	var buf bytes.Buffer
	if err := p.Output(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testDOCX writes a DOCX as Word does: a zip with [Content_Types].xml, word/styles.xml
// (the heading styles' ids are translated, so only their names say heading) and
// word/document.xml of the given body XML.
func testDOCX(t testing.TB, body string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range map[string]string{
		"[Content_Types].xml": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>`,
		"word/styles.xml": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">` +
			`<w:style w:type="paragraph" w:styleId="1"><w:name w:val="heading 1"/></w:style><w:style w:type="paragraph" w:styleId="2"><w:name w:val="heading 2"/></w:style></w:styles>`,
		"word/document.xml": `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>` + body + `</w:body></w:document>`,
	} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(content))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func para(style, text string) string {
	pPr := ""
	if style != "" {
		pPr = `<w:pPr><w:pStyle w:val="` + style + `"/></w:pPr>`
	}
	return `<w:p>` + pPr + `<w:r><w:t xml:space="preserve">` + text + `</w:t></w:r></w:p>`
}

func TestExtractPDF(t *testing.T) {
	t.Parallel()
	body := testPDF(t, "Invoices are emailed on the first day of each month.", "", "Refunds go back to the card you paid with.")
	text, sections, err := Extract(MediaPDF, body, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(sections) != 3 || !strings.Contains(sections[0].Text, "Invoices are emailed") || !strings.Contains(sections[2].Text, "Refunds go back") {
		t.Fatalf("pages %+v", sections)
	}
	// The kept text reads back into its pages, numbered as in the PDF (the empty second
	// page is skipped, not renumbered).
	kept := Sections(MediaPDF, text)
	if len(kept) != 2 || kept[0].Page != 1 || kept[1].Page != 3 || !strings.Contains(kept[1].Text, "Refunds") {
		t.Fatalf("kept pages %+v", kept)
	}
	pieces := Chunker{MaxTokens: 100, Overlap: 10}.Split(kept)
	if len(pieces) != 2 || pieces[1].Page != 3 {
		t.Fatalf("chunks %+v, want one per page with its page number", pieces)
	}
	t.Run("ErrTooManyPages", func(t *testing.T) {
		_, _, err := Extract(MediaPDF, body, Limits{MaxPages: 2, MaxTextBytes: 1 << 20})
		if errs.CodeOf(err) != errs.RequestTooLarge || !strings.Contains(err.Error(), "3 pages") {
			t.Fatalf("err %v, want request_too_large naming 3 pages", err)
		}
	})
	t.Run("ErrTooMuchText", func(t *testing.T) {
		if _, _, err := Extract(MediaPDF, body, Limits{MaxPages: 50, MaxTextBytes: 20}); errs.CodeOf(err) != errs.RequestTooLarge {
			t.Fatalf("err %v, want request_too_large", err)
		}
	})
	t.Run("ErrNoText", func(t *testing.T) {
		if _, _, err := Extract(MediaPDF, testPDF(t, ""), testLimits); errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("err %v, want invalid_request (a scanned PDF has no text)", err)
		}
	})
	t.Run("ErrTruncated", func(t *testing.T) {
		if _, _, err := Extract(MediaPDF, body[:len(body)/2], testLimits); errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("err %v, want invalid_request", err)
		}
	})
}

func TestExtractDOCX(t *testing.T) {
	t.Parallel()
	body := testDOCX(t, para("1", "Billing")+para("", "Invoices are emailed monthly.")+
		`<w:p><w:r><w:t>Deleted </w:t></w:r><w:del><w:r><w:delText>old words</w:delText></w:r></w:del><w:r><w:tab/><w:t>kept</w:t></w:r></w:p>`+
		para("2", "退款")+para("", "付款后三十天内可以申请退款。")+
		`<w:tbl><w:tr><w:tc>`+para("", "In a table")+`</w:tc></w:tr></w:tbl>`)
	text, sections, err := Extract(MediaDOCX, body, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "old words") || !strings.Contains(text, "Deleted \tkept") || !strings.Contains(text, "In a table") {
		t.Fatalf("text %q", text)
	}
	if len(sections) != 2 || strings.Join(sections[1].Path, " > ") != "Billing > 退款" || !strings.Contains(sections[1].Text, "付款后三十天内可以申请退款。") {
		t.Fatalf("sections %+v", sections)
	}
	t.Run("ErrNoDocumentPart", func(t *testing.T) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		_, _ = zw.Create("hello.txt")
		_ = zw.Close()
		if _, _, err := Extract(MediaDOCX, buf.Bytes(), testLimits); errs.CodeOf(err) != errs.Invalid {
			t.Fatalf("err %v, want invalid_request", err)
		}
	})
	t.Run("ErrInflatesTooFar", func(t *testing.T) {
		big := testDOCX(t, strings.Repeat(para("", strings.Repeat("a", 1000)), 200))
		if len(big) > 20_000 {
			t.Fatalf("fixture %d bytes: not compressed", len(big))
		}
		if _, _, err := Extract(MediaDOCX, big, Limits{MaxPages: 1, MaxTextBytes: 10_000}); errs.CodeOf(err) != errs.RequestTooLarge {
			t.Fatalf("err %v, want request_too_large", err)
		}
	})
}

// cjkPDF writes a one-page PDF showing text with a Type0 font (Identity-H, two-byte
// glyph ids) and a ToUnicode map, as producers that embed a CJK
// font subset write it. fpdf needs a CJK TrueType font for that, which no module ships,
// so the few objects are written here; the glyphs are not embedded (extraction reads
// only the codes and the map).
func cjkPDF(t testing.TB, text string) []byte {
	t.Helper()
	// Codes are glyph ids in order of first use, as in a subset font; the map takes each
	// back to its character.
	var hex, chars strings.Builder
	ids := map[rune]int{}
	for _, r := range text {
		if r > 0xFFFF {
			t.Fatalf("%q is outside the BMP", r)
		}
		if _, ok := ids[r]; !ok {
			ids[r] = len(ids) + 1
			fmt.Fprintf(&chars, "<%04X> <%04X>\n", ids[r], r)
		}
		fmt.Fprintf(&hex, "%04X", ids[r])
	}
	cmap := "/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Test def\n" +
		"1 begincodespacerange <0000> <FFFF> endcodespacerange\n" +
		fmt.Sprintf("%d beginbfchar\n%sendbfchar\nendcmap end end", len(ids), chars.String())
	content := "BT /F1 12 Tf 72 700 Td <" + hex.String() + "> Tj ET"
	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(content), content),
		"<< /Type /Font /Subtype /Type0 /BaseFont /NotEmbedded /Encoding /Identity-H /DescendantFonts [6 0 R] /ToUnicode 7 0 R >>",
		"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /NotEmbedded /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%s\nendstream", len(cmap), cmap),
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.7\n")
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, xref)
	return b.Bytes()
}

func TestExtractPDFChinese(t *testing.T) {
	t.Parallel()
	text, _, err := Extract(MediaPDF, cjkPDF(t, "知识库支持中文检索。"), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(text) != "知识库支持中文检索。" {
		t.Fatalf("text %q", text)
	}
}
