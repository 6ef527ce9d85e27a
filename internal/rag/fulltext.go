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

// Highlight returns the passage of text (about width runes) around its first match of
// the query's terms, HTML-escaped, with the matches wrapped in <mark>. Without a match
// it is the text's beginning.
func Highlight(text, query string, width int) string {
	terms := queryTerms(query)
	lower := strings.ToLower(text)
	type span struct{ start, end int }
	var spans []span
	for i := 0; i < len(lower); {
		matched := false
		for _, t := range terms {
			if strings.HasPrefix(lower[i:], t) && (isCJKTerm(t) || wordStart(lower, i)) {
				spans = append(spans, span{i, i + len(t)})
				i += len(t)
				matched = true
				break
			}
		}
		if !matched {
			_, n := utf8.DecodeRuneInString(lower[i:])
			i += n
		}
	}
	if len(lower) != len(text) { // case mapping changed byte lengths: no safe offsets
		spans = nil
	}
	// The window: from a little before the first match, width runes long.
	from := 0
	if len(spans) > 0 {
		from = spans[0].start
		for back := 0; from > 0 && back < width/4; back++ {
			_, n := utf8.DecodeLastRuneInString(text[:from])
			from -= n
		}
	}
	to := from
	for count := 0; to < len(text) && count < width; count++ {
		_, n := utf8.DecodeRuneInString(text[to:])
		to += n
	}
	var b strings.Builder
	if from > 0 {
		b.WriteString("…")
	}
	pos := from
	for _, s := range spans {
		if s.start < from || s.end > to {
			continue
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

func isCJKTerm(t string) bool {
	r, _ := utf8.DecodeRuneInString(t)
	return isCJK(r)
}

// wordStart reports whether s[i] begins a word.
func wordStart(s string, i int) bool {
	if i == 0 {
		return true
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return !unicode.IsLetter(r) && !unicode.IsNumber(r)
}
