package rag

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/ledongthuc/pdf"

	"github.com/kilnhq/kiln/internal/errs"
)

// pdfPages reads a PDF's text page by page with ledongthuc/pdf (text shown by its content
// streams, decoded through each font's encoding or ToUnicode map, so CJK text reads when
// the PDF maps its glyphs to Unicode, as producers embedding subset fonts do). The reader
// panics on some malformed files: a panic is an unreadable document, never a crash.
// Every page is returned, empty ones too, so the n-th section is page n.
func pdfPages(body []byte, lim Limits) (pages []Section, err error) {
	defer func() {
		if r := recover(); r != nil {
			pages, err = nil, unreadable("is not a readable PDF: %v", r)
		}
	}()
	r, err := pdf.NewReader(bytes.NewReader(body), int64(len(body)))
	if errors.Is(err, pdf.ErrInvalidPassword) {
		return nil, unreadable("is an encrypted PDF; send it without a password")
	}
	if err != nil {
		return nil, unreadable("is not a readable PDF: %v", err)
	}
	n := r.NumPage()
	if n > lim.MaxPages {
		return nil, errs.E(errs.RequestTooLarge, "The PDF has %d pages; a knowledge base takes PDFs of at most %d pages (rag.max_document_pages).", n, lim.MaxPages)
	}
	var total int64
	for i := 1; i <= n; i++ {
		text, err := r.Page(i).GetPlainText(nil)
		if err != nil {
			return nil, unreadable("has an unreadable page %d: %v", i, err)
		}
		text = cleanText(text)
		if total += int64(len(text)); total > lim.MaxTextBytes {
			return nil, tooMuchText(lim)
		}
		pages = append(pages, Section{Page: i, Text: text})
	}
	return pages, nil
}

// pageText joins pages with form feeds, the separator Sections splits a PDF's text at.
func pageText(pages []Section) string {
	texts := make([]string, len(pages))
	for i, p := range pages {
		texts[i] = p.Text
	}
	return strings.Join(texts, "\f")
}

// cleanText makes extracted text storable and tidy: valid UTF-8 without NUL (Postgres
// text refuses it) or form feeds (a PDF's page separator), lines trimmed and blank runs
// collapsed.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.NewReplacer("\x00", "", "\f", "\n").Replace(s)
	return tidy(normalizeNewlines(s))
}

func unreadable(format string, args ...any) error {
	return errs.InvalidFields("unreadable document", []errs.FieldError{{Pointer: "/file", Message: fmt.Sprintf(format, args...)}})
}

func tooMuchText(lim Limits) error {
	return errs.E(errs.RequestTooLarge, "The document unpacks to more than %d bytes of text (rag.max_document_bytes).", lim.MaxTextBytes)
}
