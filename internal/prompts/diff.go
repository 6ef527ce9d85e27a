package prompts

import (
	"cmp"
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
)

// The line operations of a diff.
const (
	LineEqual  = "equal"
	LineInsert = "insert"
	LineDelete = "delete"
	// LineSkip stands for Count unchanged lines left out (farther than DiffContext from
	// any change).
	LineSkip = "skip"
)

// The changes of a message between two versions.
const (
	MessageUnchanged = "unchanged"
	MessageChanged   = "changed"
	MessageAdded     = "added"
	MessageRemoved   = "removed"
)

// Diff is how version To differs from version From.
type Diff struct {
	From, To int
	// Changed names the fields that differ: messages, variables, model, parameters, tools, note.
	Changed []string
	// Fields holds the old and new value of each changed field but messages.
	Fields   []FieldChange
	Messages []MessageDiff
	// Truncated tells that some message's lines stop short: the answer's budget
	// (DiffMaxLines, DiffMaxBytes) was spent.
	Truncated bool
}

// FieldChange is one changed field's values (JSON-encodable).
type FieldChange struct {
	Field    string
	From, To any
}

// MessageDiff compares the messages at Index (paired by position).
type MessageDiff struct {
	Index            int
	Change           string
	FromRole, ToRole string // "" when the message is not in that version
	Lines            []Line
	// Truncated tells that the lines stop short of the message's end.
	Truncated bool
}

// Line is one line of a content diff.
type Line struct {
	Op   string
	Text string
	// Count is the number of unchanged lines a LineSkip stands for.
	Count int
}

// Diff compares versions from and to of the prompt named name. It returns not_found
// for an unknown prompt or version.
func (s *Service) Diff(ctx context.Context, org uuid.UUID, name string, from, to int) (Diff, error) {
	p, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: name})
	if err != nil {
		return Diff{}, s.lookupError(err, name)
	}
	a, err := s.version(ctx, s.st.Queries, p, from)
	if err != nil {
		return Diff{}, err
	}
	b, err := s.version(ctx, s.st.Queries, p, to)
	if err != nil {
		return Diff{}, err
	}
	return DiffVersions(a, b), nil
}

// DiffVersions compares two versions within the budget of one request (DiffBudget).
func DiffVersions(a, b Version) Diff {
	d := Diff{From: a.Number, To: b.Number, Changed: []string{}, Fields: []FieldChange{}, Messages: []MessageDiff{}}
	budget := newDiffBudget()
	changed := false
	for i := range max(len(a.Messages), len(b.Messages)) {
		md := MessageDiff{Index: i}
		var fromText, toText string
		if i < len(a.Messages) {
			md.FromRole, fromText = a.Messages[i].Role, a.Messages[i].Content
		}
		if i < len(b.Messages) {
			md.ToRole, toText = b.Messages[i].Role, b.Messages[i].Content
		}
		switch {
		case md.FromRole == "":
			md.Change = MessageAdded
		case md.ToRole == "":
			md.Change = MessageRemoved
		case md.FromRole != md.ToRole || fromText != toText:
			md.Change = MessageChanged
		default:
			md.Change = MessageUnchanged
		}
		changed = changed || md.Change != MessageUnchanged
		md.Lines, md.Truncated = budget.diff(splitLines(fromText), splitLines(toText))
		d.Truncated = d.Truncated || md.Truncated
		d.Messages = append(d.Messages, md)
	}
	if changed {
		d.Changed = append(d.Changed, "messages")
	}
	for _, f := range []FieldChange{
		{Field: "variables", From: a.Variables, To: b.Variables},
		{Field: "model", From: a.Model, To: b.Model},
		{Field: "parameters", From: a.Parameters, To: b.Parameters},
		{Field: "tools", From: a.Tools, To: b.Tools},
		{Field: "note", From: a.Note, To: b.Note},
	} {
		if !sameJSON(f.From, f.To) {
			d.Changed = append(d.Changed, f.Field)
			d.Fields = append(d.Fields, f)
		}
	}
	return d
}

// sameJSON compares two values as their JSON (nil and empty slices alike).
func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	if empty(va) && empty(vb) {
		return true
	}
	return reflect.DeepEqual(va, vb)
}

func empty(v any) bool {
	s, ok := v.([]any)
	return v == nil || ok && len(s) == 0
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// The budget of one diff (one request), so that two large versions cost a bounded amount
// of CPU, memory and response, whatever their content (issue 12).
const (
	// DiffContext is how many unchanged lines are shown around each change; longer runs
	// of unchanged lines are one LineSkip.
	DiffContext = 3
	// DiffMaxEdits bounds the edit distance searched per message (Myers' D): past it the
	// changed region is shown as a delete of its old lines and an insert of its new ones,
	// still a correct diff but not the shortest.
	DiffMaxEdits = 500
	// DiffMaxSteps bounds the search steps of one whole diff, over every message; once
	// spent, the remaining changed regions are shown as delete-and-insert.
	DiffMaxSteps = 10_000_000
	// DiffMaxLines bounds the lines of one diff's answer (every message together); the
	// lines past it are left out and the message and the diff are marked truncated.
	DiffMaxLines = 10_000
	// DiffMaxBytes bounds the text of one diff's answer, as DiffMaxLines does.
	DiffMaxBytes = 1 << 20
)

// diffBudget is what is left of one diff's budget.
type diffBudget struct {
	steps, lines, bytes int
}

func newDiffBudget() *diffBudget {
	return &diffBudget{steps: DiffMaxSteps, lines: DiffMaxLines, bytes: DiffMaxBytes}
}

// DiffLines is a line diff of a into b, with the budget of a whole diff: equal lines in
// order, each run of deletes before the inserts that replace it, unchanged lines farther
// than DiffContext from a change collapsed into one LineSkip.
func DiffLines(a, b []string) []Line {
	lines, _ := newDiffBudget().diff(a, b)
	return lines
}

// diff diffs a into b, spending the budget; truncated tells that lines were left out.
func (bu *diffBudget) diff(a, b []string) (out []Line, truncated bool) {
	out = []Line{}
	if bu.lines == 0 { // nothing more can be shown: spend nothing on it
		return out, len(a)+len(b) > 0
	}
	ops := bu.edits(a, b)
	emit := func(l Line) bool {
		if bu.lines == 0 || bu.bytes < len(l.Text) {
			bu.lines, truncated = 0, true
			return false
		}
		bu.lines--
		bu.bytes -= len(l.Text)
		out = append(out, l)
		return true
	}
	for i := 0; i < len(ops); {
		if ops[i].op != LineEqual {
			if !emit(Line{Op: ops[i].op, Text: ops[i].text}) {
				break
			}
			i++
			continue
		}
		j := i
		for j < len(ops) && ops[j].op == LineEqual {
			j++
		}
		// Show DiffContext lines after the change before i and before the change at j.
		head, tail := DiffContext, DiffContext
		if i == 0 {
			head = 0
		}
		if j == len(ops) {
			tail = 0
		}
		if j-i <= head+tail+1 {
			head, tail = j-i, 0
		}
		for k := i; k < i+head; k++ {
			if !emit(Line{Op: LineEqual, Text: ops[k].text}) {
				return out, truncated
			}
		}
		if skip := j - i - head - tail; skip > 0 {
			if !emit(Line{Op: LineSkip, Count: skip}) {
				return out, truncated
			}
		}
		for k := j - tail; k < j; k++ {
			if !emit(Line{Op: LineEqual, Text: ops[k].text}) {
				return out, truncated
			}
		}
		i = j
	}
	return out, truncated
}

// edit is one line of a full diff.
type edit struct {
	op   string
	text string
}

// edits is the full diff of a into b: the common head and tail are equal, the middle is
// Myers' shortest edit script when it is found within the budget, else a delete of the
// middle's old lines and an insert of its new ones.
func (bu *diffBudget) edits(a, b []string) []edit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	bu.steps -= pre + suf
	out := make([]edit, 0, len(a)+len(b)-pre-suf)
	for _, l := range a[:pre] {
		out = append(out, edit{LineEqual, l})
	}
	ma, mb := a[pre:len(a)-suf], b[pre:len(b)-suf]
	mid, ok := bu.myers(ma, mb)
	if !ok {
		mid = mid[:0]
		for _, l := range ma {
			mid = append(mid, edit{LineDelete, l})
		}
		for _, l := range mb {
			mid = append(mid, edit{LineInsert, l})
		}
	}
	out = append(out, deletesFirst(mid)...)
	for _, l := range a[len(a)-suf:] {
		out = append(out, edit{LineEqual, l})
	}
	return out
}

// myers finds the shortest edit script of a into b (Myers, "An O(ND) Difference
// Algorithm", 1986) with at most DiffMaxEdits edits and the steps left in the budget;
// ok is false when it gives up. Memory is O(D²) (the frontier of every round) and time
// O((N+M)·D), both bounded by the caps.
func (bu *diffBudget) myers(a, b []string) (script []edit, ok bool) {
	if len(a) == 0 || len(b) == 0 {
		for _, l := range a {
			script = append(script, edit{LineDelete, l})
		}
		for _, l := range b {
			script = append(script, edit{LineInsert, l})
		}
		return script, true
	}
	// Lines compare as ids, not strings.
	ids := make(map[string]int32, len(a))
	intern := func(ls []string) []int32 {
		out := make([]int32, len(ls))
		for i, l := range ls {
			id, seen := ids[l]
			if !seen {
				id = int32(len(ids)) //nolint:gosec // lines of a request body (≤ 1 MiB)
				ids[l] = id
			}
			out[i] = id
		}
		return out
	}
	x0, y0 := intern(a), intern(b)
	n, m := len(x0), len(y0)
	maxD := min(DiffMaxEdits, n+m)
	if abs(n-m) > maxD || bu.steps <= 0 {
		return nil, false
	}
	// v[k+maxD+1] is the furthest x on diagonal k; trace[d*d+k+d] is v of round d-1 at k,
	// for k in [-d, d].
	v := make([]int32, 2*maxD+3)
	var trace []int32
	off := maxD + 1
	for d := 0; d <= maxD; d++ {
		trace = append(trace, v[off-d:off+d+1]...)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || k != d && v[off+k-1] < v[off+k+1] {
				x = int(v[off+k+1])
			} else {
				x = int(v[off+k-1]) + 1
			}
			y, snake := x-k, x
			for x < n && y < m && x0[x] == y0[y] {
				x, y = x+1, y+1
			}
			bu.steps -= 1 + x - snake
			v[off+k] = int32(x) //nolint:gosec // x ≤ lines of a request body (≤ 1 MiB)
			if x >= n && y >= m {
				return backtrack(a, b, trace, d), true
			}
		}
		if bu.steps <= 0 {
			return nil, false
		}
	}
	return nil, false
}

// backtrack walks the rounds of myers back from (len(a), len(b)) at round d.
func backtrack(a, b []string, trace []int32, d int) []edit {
	var rev []edit
	x, y := len(a), len(b)
	for ; d >= 0; d-- {
		v := trace[d*d : d*d+2*d+1] // round d-1, index k+d
		k := x - y
		prevK := k - 1
		if k == -d || k != d && v[k-1+d] < v[k+1+d] {
			prevK = k + 1
		}
		prevX := 0
		if d > 0 {
			prevX = int(v[prevK+d])
		}
		prevY := prevX - prevK
		for x > prevX && y > prevY {
			rev = append(rev, edit{LineEqual, a[x-1]})
			x, y = x-1, y-1
		}
		if d > 0 {
			if x == prevX {
				rev = append(rev, edit{LineInsert, b[y-1]})
			} else {
				rev = append(rev, edit{LineDelete, a[x-1]})
			}
		}
		x, y = prevX, prevY
	}
	slices.Reverse(rev)
	return rev
}

// deletesFirst orders each run of changes as its deletes, then its inserts.
func deletesFirst(s []edit) []edit {
	for i := 0; i < len(s); {
		if s[i].op == LineEqual {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j].op != LineEqual {
			j++
		}
		slices.SortStableFunc(s[i:j], func(x, y edit) int {
			return cmp.Compare(opRank(x.op), opRank(y.op))
		})
		i = j
	}
	return s
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func opRank(op string) int {
	if op == LineDelete {
		return 0
	}
	return 1
}
