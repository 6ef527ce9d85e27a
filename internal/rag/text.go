package rag

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// isCJK reports whether r is written without spaces between words (Han, Kana, Hangul):
// each such character counts as a token and is indexed in bigrams.
func isCJK(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}

// EstimateTokens estimates the tokens of text as common BPE tokenizers count them, without
// a vocabulary: a CJK character is one token, a word of other letters or digits one per
// four bytes (at least one), and each other visible symbol one. Chunk sizes only need to
// be right within a few percent; the provider counts what is billed.
func EstimateTokens(text string) int {
	n, word := 0, 0
	flush := func() {
		if word > 0 {
			n += (word + 3) / 4
			word = 0
		}
	}
	for _, r := range text {
		switch {
		case isCJK(r):
			flush()
			n++
		case unicode.IsLetter(r) || unicode.IsNumber(r):
			word += utf8.RuneLen(r)
		case unicode.IsSpace(r):
			flush()
		default:
			flush()
			n++
		}
	}
	flush()
	return n
}

// sentenceEnders end a Chinese (or Japanese) sentence wherever they stand.
const sentenceEnders = "。！？；!?;"

// closers may follow a sentence's end and stay with it.
const closers = "”’」』）)\"'"

// splitSentences cuts text after each sentence's end, keeping every byte: a Chinese
// full stop, exclamation or question mark or semicolon ends a sentence at once; a Latin
// '.', '!', '?' or ';' ends one when whitespace follows (so "3.5" and "e.g." inside a
// sentence mostly stay whole). Closing quotes and brackets stay with their sentence and
// the whitespace after a sentence goes with it.
func splitSentences(text string) []string {
	var out []string
	start := 0
	rs := []rune(text)
	pos := 0 // byte offset of rs[i]
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		next := pos + utf8.RuneLen(r)
		end := -1
		switch {
		case strings.ContainsRune("。！？；", r):
			end = i
		case strings.ContainsRune(".!?;", r) && (i+1 == len(rs) || unicode.IsSpace(rs[i+1]) || strings.ContainsRune(closers, rs[i+1])):
			end = i
		}
		if end >= 0 {
			j := i + 1
			for j < len(rs) && (strings.ContainsRune(closers, rs[j]) || strings.ContainsRune(sentenceEnders, rs[j])) {
				next += utf8.RuneLen(rs[j])
				j++
			}
			for j < len(rs) && unicode.IsSpace(rs[j]) {
				next += utf8.RuneLen(rs[j])
				j++
			}
			out = append(out, text[start:next])
			start = next
			i = j - 1
		}
		pos = next
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}
