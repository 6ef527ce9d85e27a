package prompts

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestEditsShortest checks that edits is a correct diff (it rebuilds both sides) and a
// shortest one (as many equal lines as the longest common subsequence) on random inputs.
func TestEditsShortest(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() []string {
		s := make([]string, rng.IntN(14))
		for i := range s {
			s[i] = strconv.Itoa(rng.IntN(4))
		}
		return s
	}
	for range 2000 {
		a, b := random(), random()
		var ra, rb []string
		equal := 0
		for _, e := range newDiffBudget().edits(a, b) {
			switch e.op {
			case LineEqual:
				ra, rb, equal = append(ra, e.text), append(rb, e.text), equal+1
			case LineDelete:
				ra = append(ra, e.text)
			case LineInsert:
				rb = append(rb, e.text)
			}
		}
		if strconv.Quote(join(ra)) != strconv.Quote(join(a)) || join(rb) != join(b) {
			t.Fatalf("diff of %q into %q rebuilds %q and %q", a, b, ra, rb)
		}
		if want := lcs(a, b); equal != want {
			t.Fatalf("diff of %q into %q keeps %d lines, the LCS has %d", a, b, equal, want)
		}
	}
}

func join(s []string) string {
	out := ""
	for _, l := range s {
		out += l + "\n"
	}
	return out
}

func lcs(a, b []string) int {
	t := make([][]int, len(a)+1)
	for i := range t {
		t[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	return t[0][0]
}
