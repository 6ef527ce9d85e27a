package rag

import (
	"html"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SearchText is text as the full-text index reads it: Postgres's parsers do not segment
// Chinese (a run of Han characters is one "word"), so each run of CJK characters becomes
// its overlapping character bigrams (a lone character stays itself). "知识库支持" reads
// "知识 识库 库支 支持": a query's bigrams then match whatever words it shares with the
// text, with no dictionary to load or keep current. Other text is left to the 'english'
// configuration (stemming, stop words).
func SearchText(text string) string {
	var b strings.Builder
	b.Grow(len(text) * 2)
	var run []rune
	flush := func() {
		switch len(run) {
		case 0:
			return
		case 1:
			b.WriteString(" " + string(run) + " ")
		default:
			for i := 0; i+1 < len(run); i++ {
				b.WriteString(" " + string(run[i:i+2]))
			}
			b.WriteByte(' ')
		}
		run = run[:0]
	}
	for _, r := range text {
		if isCJK(r) {
			run = append(run, r)
			continue
		}
		flush()
		b.WriteRune(r)
	}
	flush()
	return b.String()
}

// queryTerms are the words a highlight marks: Latin words of three letters or more
// (lowercased) and the CJK bigrams of the query.
func queryTerms(query string) []string {
	seen := map[string]bool{}
	var out []string
	add := func(t string) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	for _, f := range strings.FieldsFunc(strings.ToLower(SearchText(query)), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	}) {
		if first, _ := utf8.DecodeRuneInString(f); isCJK(first) || utf8.RuneCountInString(f) >= 3 {
			add(f)
		}
	}
	// Longer terms first, so a match prefers "passwords" to "password".
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// highlighter marks a query's terms in the passages of the texts a search returns.
type highlighter struct {
	// The query's terms, longest first so that a match prefers "passwords" to "password":
	// words match where a word begins, CJK terms anywhere.
	words, cjk []string
}

func newHighlighter(query string) highlighter {
	var h highlighter
	for _, t := range queryTerms(query) {
		if isCJKTerm(t) {
			h.cjk = append(h.cjk, t)
		} else {
			h.words = append(h.words, t)
		}
	}
	return h
}

// match is the length of the term s begins with (0: none); atWord says s begins a word.
func (h highlighter) match(s string, atWord bool) int {
	if atWord {
		for _, t := range h.words {
			if strings.HasPrefix(s, t) {
				return len(t)
			}
		}
	}
	for _, t := range h.cjk {
		if strings.HasPrefix(s, t) {
			return len(t)
		}
	}
	return 0
}

// passage returns the passage of text (about width runes) around its first match of the
// query's terms, HTML-escaped, with the matches wrapped in <mark>. Without a match it is
// the text's beginning.
func (h highlighter) passage(text string, width int) string {
	type span struct{ start, end int }
	var spans []span
	from, to := 0, -1 // the window, once the first match places it
	// Where case mapping changes byte lengths, offsets in lower are not text's: no marks.
	if lower := strings.ToLower(text); len(lower) == len(text) {
		atWord := true
		for i := 0; i < len(lower) && (to < 0 || i < to); {
			n := h.match(lower[i:], atWord)
			if n > 0 && len(spans) == 0 {
				from, to = window(text, i, width)
			}
			if n > 0 {
				spans = append(spans, span{i, i + n})
			} else {
				_, n = utf8.DecodeRuneInString(lower[i:])
			}
			r, _ := utf8.DecodeLastRuneInString(lower[i : i+n])
			atWord = !unicode.IsLetter(r) && !unicode.IsNumber(r)
			i += n
		}
	}
	if to < 0 {
		from, to = window(text, 0, width)
	}
	var b strings.Builder
	if from > 0 {
		b.WriteString("…")
	}
	pos := from
	for _, s := range spans {
		if s.end > to {
			break
		}
		b.WriteString(html.EscapeString(text[pos:s.start]) + "<mark>" + html.EscapeString(text[s.start:s.end]) + "</mark>")
		pos = s.end
	}
	b.WriteString(html.EscapeString(text[pos:to]))
	if to < len(text) {
		b.WriteString("…")
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// window is the passage of text around a match at first: from a little before it, width
// runes long.
func window(text string, first, width int) (from, to int) {
	from = first
	for back := 0; from > 0 && back < width/4; back++ {
		_, n := utf8.DecodeLastRuneInString(text[:from])
		from -= n
	}
	to = from
	for count := 0; to < len(text) && count < width; count++ {
		_, n := utf8.DecodeRuneInString(text[to:])
		to += n
	}
	return from, to
}

func isCJKTerm(t string) bool {
	r, _ := utf8.DecodeRuneInString(t)
	return isCJK(r)
}
