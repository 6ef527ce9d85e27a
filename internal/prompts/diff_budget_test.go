package prompts_test

import (
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/prompts"
)

// largeVersions are two versions of 100 messages of 2,000 lines (issue 12's example);
// every 50th line differs when sparse, every line otherwise.
func largeVersions(sparse bool) (prompts.Version, prompts.Version) {
	a, b := prompts.Version{Number: 1}, prompts.Version{Number: 2}
	for m := range 100 {
		var la, lb []string
		for l := range 2000 {
			line := "message " + strconv.Itoa(m) + " line " + strconv.Itoa(l)
			la = append(la, line)
			if !sparse || l%50 == 0 {
				line = "changed " + line
			}
			lb = append(lb, line)
		}
		a.Messages = append(a.Messages, prompts.Message{Role: "user", Content: strings.Join(la, "\n")})
		b.Messages = append(b.Messages, prompts.Message{Role: "user", Content: strings.Join(lb, "\n")})
	}
	return a, b
}

// TestDiffBudget checks that a diff of two large versions stays within its budget of
// lines, text and memory (issue 12: it allocated gigabytes and answered 10 MB). Not
// parallel: it measures the heap.
func TestDiffBudget(t *testing.T) {
	for name, sparse := range map[string]bool{"EveryLine": false, "Sparse": true} {
		t.Run(name, func(t *testing.T) {
			a, b := largeVersions(sparse)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			d := prompts.DiffVersions(a, b)
			runtime.ReadMemStats(&after)
			lines, text := 0, 0
			for _, m := range d.Messages {
				lines += len(m.Lines)
				for _, l := range m.Lines {
					text += len(l.Text)
				}
			}
			if lines > prompts.DiffMaxLines || text > prompts.DiffMaxBytes || !d.Truncated {
				t.Errorf("%d lines, %d bytes of text, truncated %v", lines, text, d.Truncated)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
				t.Errorf("the diff allocated %d MiB", alloc>>20)
			}
			if !slices.Equal(d.Changed, []string{"messages"}) || d.Messages[99].Change != prompts.MessageChanged {
				t.Errorf("changed %v, last message %s", d.Changed, d.Messages[99].Change)
			}
		})
	}
	t.Run("Context", func(t *testing.T) {
		a := strings.Split("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", " ")
		b := slices.Clone(a)
		b[9] = "ten"
		got := ""
		for _, l := range prompts.DiffLines(a, b) {
			got += map[string]string{"equal": "=", "insert": "+", "delete": "-", "skip": fmt.Sprintf("…%d", l.Count)}[l.Op] + l.Text + " "
		}
		if want := "…6 =7 =8 =9 -10 +ten =11 =12 =13 …7 "; got != want {
			t.Errorf("diff %q, want %q", got, want)
		}
	})
}

// BenchmarkDiffLarge is issue 12's example: two versions of 100 messages of 2,000 lines.
func BenchmarkDiffLarge(b *testing.B) {
	for name, sparse := range map[string]bool{"EveryLine": false, "Sparse": true} {
		b.Run(name, func(b *testing.B) {
			x, y := largeVersions(sparse)
			b.ReportAllocs()
			for b.Loop() {
				prompts.DiffVersions(x, y)
			}
		})
	}
}
