package rag

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strconv"
	"strings"
)

// docxText reads a DOCX (Office Open XML: a zip of XML parts) into Markdown-style text:
// the paragraphs of word/document.xml, headings (by their style's name "heading N" or
// "Title", or an outline level) as "#" lines, tabs and breaks kept, deleted revisions
// and field codes left out. No DOCX library is served to this project (gooxml is not,
// unioffice needs a paid licence), and a DOCX is XML in a zip: archive/zip and
// encoding/xml read it, so no binary format is parsed by hand. The XML read is bounded
// by eight times lim.MaxTextBytes, against zip bombs.
func docxText(body []byte, lim Limits) (string, error) {
	zr, err := zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return "", unreadable("is not a readable DOCX (not a zip archive): %v", err)
	}
	var doc, styles *zip.File
	for _, f := range zr.File {
		switch f.Name {
		case "word/document.xml":
			doc = f
		case "word/styles.xml":
			styles = f
		}
	}
	if doc == nil {
		return "", unreadable("is not a readable DOCX: it has no word/document.xml")
	}
	xmlLimit := 8 * lim.MaxTextBytes
	headings := map[string]int{}
	if styles != nil {
		if err := readPart(styles, xmlLimit, func(d *xml.Decoder) error { return docxHeadingStyles(d, headings) }); err != nil {
			return "", err
		}
	}
	var text string
	err = readPart(doc, xmlLimit, func(d *xml.Decoder) error {
		var err error
		text, err = docxParagraphs(d, headings, lim.MaxTextBytes)
		return err
	})
	return text, err
}

var errPartTooLarge = errors.New("part too large")

// readPart decodes one part of the archive, refusing one that inflates past limit.
func readPart(f *zip.File, limit int64, read func(*xml.Decoder) error) error {
	rc, err := f.Open()
	if err != nil {
		return unreadable("is not a readable DOCX (%s): %v", f.Name, err)
	}
	defer rc.Close()
	lr := &limitedReader{r: rc, n: limit}
	err = read(xml.NewDecoder(lr))
	switch {
	case lr.over || errors.Is(err, errPartTooLarge):
		return tooMuchText(Limits{MaxTextBytes: limit / 8})
	case err != nil:
		return unreadable("is not a readable DOCX (%s): %v", f.Name, err)
	}
	return nil
}

// limitedReader is io.LimitReader that remembers it was cut.
type limitedReader struct {
	r    io.Reader
	n    int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		l.over = true
		return 0, errPartTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// docxHeadingStyles maps the ids of styles.xml's heading styles to their level: Word
// names them "heading 1" … "heading 9" and "Title" in every language, while their ids
// are translated ("Heading1", "1", "berschrift1").
func docxHeadingStyles(d *xml.Decoder, out map[string]int) error {
	var id string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch se.Name.Local {
		case "style":
			id = attr(se, "styleId")
		case "name":
			if level := headingLevel(attr(se, "val")); level > 0 && id != "" {
				out[id] = level
			}
		}
	}
}

// headingLevel reads a style name ("heading 2", "Title") or an English style id
// ("Heading2") as a heading level; 0 when it is none.
func headingLevel(name string) int {
	name = strings.ToLower(strings.ReplaceAll(name, " ", ""))
	if name == "title" {
		return 1
	}
	if n, ok := strings.CutPrefix(name, "heading"); ok {
		if level, err := strconv.Atoi(n); err == nil && level >= 1 && level <= 6 {
			return level
		}
	}
	return 0
}

func attr(se xml.StartElement, local string) string {
	for _, a := range se.Attr {
		if a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// docxParagraphs walks document.xml's paragraphs in order (tables' included).
func docxParagraphs(d *xml.Decoder, headings map[string]int, maxText int64) (string, error) {
	var (
		out   strings.Builder
		para  strings.Builder
		level int
		skip  int // depth inside deleted text or field codes
		inT   bool
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "p":
				para.Reset()
				level = 0
			case "pStyle":
				if l := headingLevel(attr(t, "val")); l > 0 {
					level = l
				} else if l, ok := headings[attr(t, "val")]; ok {
					level = l
				}
			case "outlineLvl":
				if n, err := strconv.Atoi(attr(t, "val")); err == nil && n >= 0 && n < 6 && level == 0 {
					level = n + 1
				}
			case "t":
				inT = skip == 0
			case "delText", "instrText":
				skip++
			case "tab":
				para.WriteByte('\t')
			case "br", "cr":
				para.WriteByte('\n')
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "t":
				inT = false
			case "delText", "instrText":
				skip = max(0, skip-1)
			case "p":
				text := strings.TrimSpace(para.String())
				if text == "" {
					continue
				}
				if level > 0 {
					text = strings.Repeat("#", level) + " " + strings.Join(strings.Fields(text), " ")
				}
				out.WriteString(text + "\n\n")
				if int64(out.Len()) > maxText {
					return "", errPartTooLarge
				}
			}
		case xml.CharData:
			if inT {
				para.Write(t)
			}
		}
	}
	return cleanText(out.String()), nil
}
