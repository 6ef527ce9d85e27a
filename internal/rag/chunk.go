package rag

import (
	"strings"
	"unicode"
)

// Section is a run of a document's text under one heading path (Markdown or HTML
// headings; empty for plain text).
type Section struct {
	Path []string
	Text string
	// Page is the PDF page it is on, from 1 (0: not a PDF).
	Page int
}

// Piece is one chunk as the chunker cut it.
type Piece struct {
	Text    string
	Tokens  int
	Section []string
	Page    int
}

// Chunker cuts sections into chunks of at most MaxTokens tokens (EstimateTokens),
// recursively: at paragraphs first, then lines, sentences (English and Chinese), clauses,
// words and, for a run of text with no such boundary, characters. Consecutive pieces are
// packed into a chunk while they fit, and each chunk after the first of a section starts
// with up to Overlap tokens of whole pieces from the end of the one before, so a passage
// cut in two is still found whole in one of them. A chunk never spans two sections: the
// heading path is the chunk's context.
type Chunker struct {
	MaxTokens int
	Overlap   int
}

// Split chunks sections in order.
func (c Chunker) Split(sections []Section) []Piece {
	var out []Piece
	for _, s := range sections {
		if strings.TrimSpace(s.Text) == "" {
			continue
		}
		for _, t := range c.pack(c.split(s.Text, 0)) {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, Piece{Text: t, Tokens: EstimateTokens(t), Section: s.Path, Page: s.Page})
			}
		}
	}
	return out
}

// levels are the boundaries split at, coarsest first.
var levels = []func(string) []string{
	func(s string) []string { return splitAfter(s, "\n\n") },
	func(s string) []string { return splitAfter(s, "\n") },
	splitSentences,
	splitClauses,
	splitWords,
	splitRunes,
}

// split cuts text into pieces of at most MaxTokens each, at the coarsest boundary that
// does it; the pieces concatenate back to text.
func (c Chunker) split(text string, level int) []string {
	if EstimateTokens(text) <= c.MaxTokens || level >= len(levels) {
		return []string{text}
	}
	parts := levels[level](text)
	if len(parts) <= 1 {
		return c.split(text, level+1)
	}
	var out []string
	for _, p := range parts {
		out = append(out, c.split(p, level+1)...)
	}
	return out
}

// pack joins consecutive pieces into chunks of at most MaxTokens, each chunk starting
// with the overlap taken from the end of the one before.
func (c Chunker) pack(pieces []string) []string {
	var (
		out    []string
		cur    []string
		tokens []int
		total  int
		fresh  bool // cur holds a piece not yet in a chunk
	)
	emit := func() {
		out, fresh = append(out, strings.Join(cur, "")), false
		// Keep the longest tail of whole pieces within the overlap, but never the whole
		// chunk (that would repeat it).
		keep, kept := len(cur), 0
		for keep > 1 && kept+tokens[keep-1] <= c.Overlap {
			keep--
			kept += tokens[keep]
		}
		cur, tokens, total = append([]string(nil), cur[keep:]...), append([]int(nil), tokens[keep:]...), kept
	}
	for _, p := range pieces {
		n := EstimateTokens(p)
		if len(cur) > 0 && total+n > c.MaxTokens {
			emit()
			for len(cur) > 0 && total+n > c.MaxTokens { // the overlap must yield to the new piece
				total -= tokens[0]
				cur, tokens = cur[1:], tokens[1:]
			}
		}
		cur, tokens, total, fresh = append(cur, p), append(tokens, n), total+n, true
	}
	if fresh {
		out = append(out, strings.Join(cur, ""))
	}
	return out
}

// splitAfter cuts s after each sep, keeping sep with the piece before it.
func splitAfter(s, sep string) []string {
	var out []string
	for {
		i := strings.Index(s, sep)
		if i < 0 {
			break
		}
		j := i + len(sep)
		for strings.HasPrefix(s[j:], "\n") { // a run of blank lines stays together
			j++
		}
		out = append(out, s[:j])
		s = s[j:]
	}
	if s != "" {
		out = append(out, s)
	}
	return out
}

// splitClauses cuts after commas, colons and the Chinese enumeration comma.
func splitClauses(s string) []string {
	var out []string
	start := 0
	for i, r := range s {
		if strings.ContainsRune(",:，、：", r) {
			end := i + len(string(r))
			for end < len(s) && s[end] == ' ' {
				end++
			}
			if end > start {
				out = append(out, s[start:end])
				start = end
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// splitWords cuts before each run of spaces, and around each CJK character (words
// there have no spaces).
func splitWords(s string) []string {
	var out []string
	start := 0
	prevSpace, prevCJK := false, false
	for i, r := range s {
		space, cjk := unicode.IsSpace(r), isCJK(r)
		if i > start && ((space && !prevSpace) || cjk || prevCJK) {
			out = append(out, s[start:i])
			start = i
		}
		prevSpace, prevCJK = space, cjk
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// splitRunes cuts s into characters.
func splitRunes(s string) []string {
	out := make([]string, 0, len(s))
	for _, r := range s {
		out = append(out, string(r))
	}
	return out
}
