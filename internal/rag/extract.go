package rag

import (
	"bytes"
	"mime"
	"path"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/kilnhq/kiln/internal/errs"
)

// The media types documents are read as.
const (
	MediaText     = "text/plain"
	MediaMarkdown = "text/markdown"
	MediaHTML     = "text/html"
	MediaPDF      = "application/pdf"
	MediaDOCX     = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
)

// Limits bound what extracting one document may produce.
type Limits struct {
	// MaxPages is the most pages a PDF may have.
	MaxPages int
	// MaxTextBytes is the most text (and, for a DOCX, uncompressed XML: eight times as
	// much) an upload may unpack to.
	MaxTextBytes int64
}

// MediaTypeOf names how to read an upload: by its declared Content-Type when that is one
// Kiln reads, else by its file name's extension. "" when neither tells.
func MediaTypeOf(contentType, filename string) string {
	if mt, _, err := mime.ParseMediaType(contentType); err == nil {
		switch mt {
		case MediaText, MediaMarkdown, MediaHTML, MediaPDF, MediaDOCX:
			return mt
		case "text/x-markdown":
			return MediaMarkdown
		case "application/xhtml+xml":
			return MediaHTML
		}
	}
	switch strings.ToLower(path.Ext(filename)) {
	case ".txt", ".text":
		return MediaText
	case ".md", ".markdown":
		return MediaMarkdown
	case ".html", ".htm", ".xhtml":
		return MediaHTML
	case ".pdf":
		return MediaPDF
	case ".docx":
		return MediaDOCX
	}
	return ""
}

// Extract reads a document's bytes as mediaType into its text (kept with the document)
// and its sections. A PDF keeps its pages apart with form feeds (each section is a page),
// a DOCX its headings as Markdown headings. Errors: invalid_request for a body that is
// not UTF-8 text without NUL (of a text type), not a readable PDF or DOCX, or has no text;
// request_too_large past lim; unsupported_media_type for any other type.
func Extract(mediaType string, body []byte, lim Limits) (text string, sections []Section, err error) {
	switch mediaType {
	case MediaPDF:
		sections, err = pdfPages(body, lim)
		if err != nil {
			return "", nil, err
		}
		return documentText(pageText(sections), sections)
	case MediaDOCX:
		text, err = docxText(body, lim)
		if err != nil {
			return "", nil, err
		}
		return documentText(text, markdownSections(text))
	}
	if !utf8.Valid(body) || bytes.IndexByte(body, 0) >= 0 {
		return "", nil, errs.InvalidFields("unreadable document", []errs.FieldError{{Pointer: "/file", Message: "is not UTF-8 text (or has NUL bytes)"}})
	}
	switch mediaType {
	case MediaHTML:
		sections, err = htmlSections(body)
		if err != nil {
			return "", nil, errs.InvalidFields("unreadable document", []errs.FieldError{{Pointer: "/file", Message: "is not readable HTML: " + err.Error()}})
		}
		text = sectionsText(sections)
	case MediaMarkdown:
		text = normalizeNewlines(string(body))
		sections = markdownSections(text)
	case MediaText, "":
		text = normalizeNewlines(string(body))
		sections = []Section{{Text: text}}
	default:
		return "", nil, errs.E(errs.UnsupportedMediaType, "Documents of type %q are not read; send plain text, Markdown, HTML, PDF or DOCX.", mediaType)
	}
	return documentText(text, sections)
}

// documentText refuses a document without text.
func documentText(text string, sections []Section) (string, []Section, error) {
	if strings.TrimSpace(text) == "" {
		return "", nil, errs.InvalidFields("empty document", []errs.FieldError{{Pointer: "/text", Message: "has no text"}})
	}
	return text, sections, nil
}

// Sections reads text kept with a document (the output of Extract) back into sections:
// HTML and DOCX were kept as Markdown-style headings, so they read as Markdown; a PDF's
// pages are apart by form feeds.
func Sections(mediaType, text string) []Section {
	switch mediaType {
	case MediaText:
		return []Section{{Text: text}}
	case MediaPDF:
		var out []Section
		for i, page := range strings.Split(text, "\f") {
			if strings.TrimSpace(page) != "" {
				out = append(out, Section{Page: i + 1, Text: page})
			}
		}
		return out
	}
	return markdownSections(text)
}

func normalizeNewlines(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

var (
	atxHeading = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$`)
	fence      = regexp.MustCompile("^ {0,3}(```|~~~)")
)

// markdownSections cuts Markdown at its ATX headings (not inside fenced code); each
// section's path is the headings above it, outermost first. Heading lines are kept in the
// text, so the document's text reads as written.
func markdownSections(text string) []Section {
	var (
		out     []Section
		path    []string
		levels  []int
		buf     strings.Builder
		inFence string
	)
	flush := func() {
		if strings.TrimSpace(buf.String()) != "" {
			out = append(out, Section{Path: append([]string(nil), path...), Text: buf.String()})
		}
		buf.Reset()
	}
	for line := range strings.Lines(text) {
		trimmed := strings.TrimRight(line, "\n")
		if m := fence.FindStringSubmatch(trimmed); m != nil {
			switch inFence {
			case "":
				inFence = m[1]
			case m[1]:
				inFence = ""
			}
		}
		if m := atxHeading.FindStringSubmatch(trimmed); m != nil && inFence == "" {
			flush()
			level := len(m[1])
			for len(levels) > 0 && levels[len(levels)-1] >= level {
				levels, path = levels[:len(levels)-1], path[:len(path)-1]
			}
			levels, path = append(levels, level), append(path, strings.TrimSpace(m[2]))
		}
		buf.WriteString(line)
	}
	flush()
	return out
}

// htmlSections reads HTML's visible text as Markdown-style sections: headings h1–h6 cut
// sections, block elements end lines, scripts, styles and the head (but its title) are
// skipped.
func htmlSections(body []byte) ([]Section, error) {
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var md strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.DataAtom {
			case atom.Script, atom.Style, atom.Noscript, atom.Template, atom.Head, atom.Svg, atom.Iframe:
				return
			case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
				level := int(n.DataAtom.String()[1] - '0')
				md.WriteString("\n\n" + strings.Repeat("#", level) + " " + strings.Join(strings.Fields(textOf(n)), " ") + "\n\n")
				return
			case atom.Br:
				md.WriteString("\n")
			case atom.Li:
				md.WriteString("\n- ")
			}
		}
		if n.Type == html.TextNode {
			md.WriteString(strings.Join(strings.Fields(n.Data), " "))
			if strings.HasSuffix(n.Data, " ") || strings.HasSuffix(n.Data, "\n") {
				md.WriteString(" ")
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
		if n.Type == html.ElementNode && blockElement[n.DataAtom] {
			md.WriteString("\n\n")
		}
	}
	walk(doc)
	return markdownSections(tidy(md.String())), nil
}

var blockElement = map[atom.Atom]bool{
	atom.P: true, atom.Div: true, atom.Section: true, atom.Article: true, atom.Main: true, atom.Header: true,
	atom.Footer: true, atom.Ul: true, atom.Ol: true, atom.Table: true, atom.Tr: true, atom.Pre: true,
	atom.Blockquote: true, atom.Dl: true, atom.Dd: true, atom.Dt: true, atom.Figure: true, atom.Nav: true, atom.Aside: true,
}

func textOf(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

var blankRuns = regexp.MustCompile(`\n[ \t]*(\n[ \t]*)+`)

// tidy trims each line and collapses runs of blank lines into one.
func tidy(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSpace(l)
	}
	return strings.TrimSpace(blankRuns.ReplaceAllString(strings.Join(lines, "\n"), "\n\n")) + "\n"
}

// sectionsText joins sections back into the document's text.
func sectionsText(sections []Section) string {
	var b strings.Builder
	for _, s := range sections {
		b.WriteString(s.Text)
	}
	return b.String()
}
