package rag

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitSentences(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"English", "Kiln runs jobs. It retries them! Does it? Yes.", []string{"Kiln runs jobs. ", "It retries them! ", "Does it? ", "Yes."}},
		{"DecimalsStayWhole", "Version 3.5 is out. Upgrade now.", []string{"Version 3.5 is out. ", "Upgrade now."}},
		{"Chinese", "知识库支持中文。搜索很快！真的吗？是的；没错", []string{"知识库支持中文。", "搜索很快！", "真的吗？", "是的；", "没错"}},
		{"ClosingQuoteStays", "他说：“好。”然后走了。", []string{"他说：“好。”", "然后走了。"}},
		{"Mixed", "Kiln 支持 RAG。It works.", []string{"Kiln 支持 RAG。", "It works."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := splitSentences(tc.in)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("splitSentences(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Join(got, "") != tc.in {
				t.Fatal("the sentences do not join back to the text")
			}
		})
	}
}

func TestEstimateTokens(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{"": 0, "hello world": 4, "知识库": 3, "a, b.": 4, "internationalization": 5} {
		if got := EstimateTokens(in); got != want {
			t.Errorf("EstimateTokens(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestChunkerSplit(t *testing.T) {
	t.Parallel()
	t.Run("OKFitsWithinMaxTokensAndOverlaps", func(t *testing.T) {
		t.Parallel()
		var b strings.Builder
		for i := range 40 {
			b.WriteString("Sentence number " + strings.Repeat("x", i%7+1) + " tells one small fact about Kiln. ")
		}
		c := Chunker{MaxTokens: 60, Overlap: 20}
		pieces := c.Split([]Section{{Text: b.String()}})
		if len(pieces) < 5 {
			t.Fatalf("%d chunks, want several", len(pieces))
		}
		for i, p := range pieces {
			if p.Tokens > c.MaxTokens {
				t.Errorf("chunk %d has %d tokens > %d", i, p.Tokens, c.MaxTokens)
			}
			if i > 0 {
				prevSentences := splitSentences(pieces[i-1].Text)
				last := strings.TrimSpace(prevSentences[len(prevSentences)-1])
				if !strings.HasPrefix(p.Text, last) {
					t.Errorf("chunk %d does not start with the last sentence of chunk %d (%q)", i, i-1, last)
				}
			}
		}
	})
	t.Run("OKChineseCutAtSentenceEnds", func(t *testing.T) {
		t.Parallel()
		text := strings.Repeat("知识库把文档切成小块。每一块都会被向量化！", 10)
		pieces := Chunker{MaxTokens: 30, Overlap: 0}.Split([]Section{{Text: text}})
		if len(pieces) < 2 {
			t.Fatalf("%d chunks, want several", len(pieces))
		}
		for i, p := range pieces {
			if !strings.HasSuffix(p.Text, "。") && !strings.HasSuffix(p.Text, "！") {
				t.Errorf("chunk %d %q does not end at a sentence end", i, p.Text)
			}
			if p.Tokens > 30 {
				t.Errorf("chunk %d has %d tokens", i, p.Tokens)
			}
		}
	})
	t.Run("OKNoBoundaryFallsBackToCharacters", func(t *testing.T) {
		t.Parallel()
		pieces := Chunker{MaxTokens: 40, Overlap: 0}.Split([]Section{{Text: strings.Repeat("a", 1000)}})
		var total int
		for _, p := range pieces {
			if p.Tokens > 40 {
				t.Fatalf("a chunk has %d tokens", p.Tokens)
			}
			total += len(p.Text)
		}
		if total != 1000 {
			t.Fatalf("the chunks hold %d bytes of 1000", total)
		}
	})
}

func TestMarkdownSections(t *testing.T) {
	t.Parallel()
	md := "Intro line.\n\n# Guide\n\nStart here.\n\n## Install\n\nRun make.\n\n```sh\n# not a heading\n```\n\n## Configure\n\nSet keys.\n\n# Other\n\nEnd.\n"
	got := markdownSections(md)
	var paths []string
	for _, s := range got {
		paths = append(paths, strings.Join(s.Path, " > "))
	}
	want := []string{"", "Guide", "Guide > Install", "Guide > Configure", "Other"}
	if !slices.Equal(paths, want) {
		t.Fatalf("section paths %q, want %q", paths, want)
	}
	if !strings.Contains(got[2].Text, "# not a heading") {
		t.Fatal("a fenced code line was read as a heading")
	}
	if sectionsText(got) != md {
		t.Fatal("the sections do not join back to the document")
	}
}

func TestExtractHTML(t *testing.T) {
	t.Parallel()
	page := `<html><head><title>T</title><style>p{}</style></head><body><h1>Billing</h1><p>Invoices are
	sent monthly.</p><script>alert(1)</script><h2>Refunds</h2><ul><li>Within 30 days</li><li>Full amount</li></ul></body></html>`
	text, sections, err := Extract(MediaHTML, []byte(page), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(text, "alert") || strings.Contains(text, "p{}") {
		t.Fatalf("script or style kept: %q", text)
	}
	if len(sections) != 2 || strings.Join(sections[1].Path, " > ") != "Billing > Refunds" || !strings.Contains(sections[1].Text, "Within 30 days") {
		t.Fatalf("sections %+v", sections)
	}
	if !strings.Contains(sections[0].Text, "Invoices are sent monthly.") {
		t.Fatalf("paragraph whitespace not collapsed: %q", sections[0].Text)
	}
}

func TestExtractRefusals(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		mediaType string
		body      []byte
	}{
		"ErrNotUTF8":     {MediaText, []byte{0xff, 0xfe, 'a'}},
		"ErrEmpty":       {MediaMarkdown, []byte(" \n\n ")},
		"ErrUnknownType": {"application/msword", []byte{0xd0, 0xcf, 0x11, 0xe0}},
		"ErrNotPDF":      {MediaPDF, []byte("%PDF-1.7")},
		"ErrNotDOCX":     {MediaDOCX, []byte("PK\x03\x04")},
	} {
		if _, _, err := Extract(tc.mediaType, tc.body, testLimits); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSearchTextBigrams(t *testing.T) {
	t.Parallel()
	got := strings.Fields(SearchText("Kiln支持知识库。好"))
	want := []string{"Kiln", "支持", "持知", "知识", "识库", "。", "好"}
	if !slices.Equal(got, want) {
		t.Fatalf("SearchText = %q, want %q", got, want)
	}
}

func TestHighlight(t *testing.T) {
	t.Parallel()
	h := newHighlighter("how to reset a password").passage("Reset your password <now> from the account page. Passwords expire yearly.", 200)
	if !strings.Contains(h, "<mark>Reset</mark>") || !strings.Contains(h, "<mark>password</mark>") || !strings.Contains(h, "&lt;now&gt;") {
		t.Fatalf("highlight %q", h)
	}
	zh := newHighlighter("怎么重置密码").passage("您可以在账户页面重置密码。", 200)
	if !strings.Contains(zh, "<mark>重置</mark><mark>密码</mark>") && !strings.Contains(zh, "<mark>重置</mark>") {
		t.Fatalf("highlight %q", zh)
	}
}

func TestFuse(t *testing.T) {
	t.Parallel()
	a, b, c := [16]byte{1}, [16]byte{2}, [16]byte{3}
	vec := []Ranked{{ChunkID: a}, {ChunkID: b}}
	ft := []Ranked{{ChunkID: b}, {ChunkID: c}}
	got := Fuse(3, 60, 1, 1, vec, ft)
	if len(got) != 3 || got[0].ChunkID != b || got[0].VectorRank != 2 || got[0].FulltextRank != 1 {
		t.Fatalf("fused %+v: want b first (in both rankings)", got)
	}
	if only := Fuse(3, 60, 1, 0, vec, ft); only[0].ChunkID != a {
		t.Fatalf("a zero full-text weight should keep the vector order, got %+v", only)
	}
}
