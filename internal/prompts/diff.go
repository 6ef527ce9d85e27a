package prompts

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
)

// The line operations of a diff.
const (
	LineEqual  = "equal"
	LineInsert = "insert"
	LineDelete = "delete"
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
}

// Line is one line of a content diff.
type Line struct {
	Op   string
	Text string
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

// DiffVersions compares two versions.
func DiffVersions(a, b Version) Diff {
	d := Diff{From: a.Number, To: b.Number, Changed: []string{}, Fields: []FieldChange{}, Messages: []MessageDiff{}}
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
		md.Lines = DiffLines(splitLines(fromText), splitLines(toText))
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

// maxDiffCells bounds the LCS table (lines of a × lines of b); beyond it the diff is a
// delete of every old line and an insert of every new one.
const maxDiffCells = 4_000_000

// DiffLines is a line diff of a into b by longest common subsequence: equal lines in
// order, each run of deletes before the inserts that replace it.
func DiffLines(a, b []string) []Line {
	out := []Line{}
	if len(a)*len(b) > maxDiffCells {
		for _, l := range a {
			out = append(out, Line{LineDelete, l})
		}
		for _, l := range b {
			out = append(out, Line{LineInsert, l})
		}
		return out
	}
	// lcs[i][j] is the LCS length of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			out = append(out, Line{LineEqual, a[i]})
			i, j = i+1, j+1
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, Line{LineDelete, a[i]})
			i++
		default:
			out = append(out, Line{LineInsert, b[j]})
			j++
		}
	}
	for ; i < len(a); i++ {
		out = append(out, Line{LineDelete, a[i]})
	}
	for ; j < len(b); j++ {
		out = append(out, Line{LineInsert, b[j]})
	}
	return out
}
