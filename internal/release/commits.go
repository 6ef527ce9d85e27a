// Package release holds the rules of Kiln's development workflow that are checked by
// machines: commit messages in Conventional Commits form, the changelog generated from
// them, the API's version and the breaking-change gate, and the SDK versions that follow it.
package release

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Types are the Conventional Commits types Kiln accepts, in the order the changelog shows
// the ones it lists.
var Types = []string{"feat", "fix", "perf", "refactor", "docs", "test", "build", "ci", "chore", "style", "revert"}

// Commit is a parsed Conventional Commits message.
type Commit struct {
	Hash        string
	Type        string
	Scope       string
	Breaking    bool
	Description string
	// BreakingNote is the text of a BREAKING CHANGE footer, if any.
	BreakingNote string
}

// ErrNotConventional is wrapped by every ParseCommit error.
var ErrNotConventional = errors.New("not a Conventional Commits message")

var header = regexp.MustCompile(`^([a-z]+)(?:\(([a-z0-9][a-z0-9._/-]*)\))?(!)?: (\S.*)$`)

// headerMaxLen keeps subjects readable in `git log --oneline` and the changelog.
const headerMaxLen = 100

// ParseCommit parses a commit message "type(scope)!: description", with an optional body
// and footers. It returns an error wrapping ErrNotConventional that says what is wrong.
func ParseCommit(message string) (Commit, error) {
	lines := strings.Split(strings.TrimRight(message, "\n"), "\n")
	first := strings.TrimRight(lines[0], " \t\r")
	m := header.FindStringSubmatch(first)
	if m == nil {
		return Commit{}, fmt.Errorf("%w: the first line %q must read \"type(scope): description\" (scope optional, \"!\" before the colon marks a breaking change), type one of %s",
			ErrNotConventional, first, strings.Join(Types, ", "))
	}
	if !slices.Contains(Types, m[1]) {
		return Commit{}, fmt.Errorf("%w: unknown type %q, use one of %s", ErrNotConventional, m[1], strings.Join(Types, ", "))
	}
	if len(first) > headerMaxLen {
		return Commit{}, fmt.Errorf("%w: the first line is %d characters long, at most %d", ErrNotConventional, len(first), headerMaxLen)
	}
	if len(lines) > 1 && strings.TrimSpace(lines[1]) != "" {
		return Commit{}, fmt.Errorf("%w: the second line must be empty (it separates the subject from the body)", ErrNotConventional)
	}
	c := Commit{Type: m[1], Scope: m[2], Breaking: m[3] == "!", Description: m[4]}
	for i, l := range lines[1:] {
		for _, tok := range []string{"BREAKING CHANGE: ", "BREAKING-CHANGE: "} {
			if note, ok := strings.CutPrefix(l, tok); ok {
				c.Breaking = true
				c.BreakingNote = strings.TrimSpace(strings.Join(append([]string{note}, lines[i+2:]...), "\n"))
			}
		}
	}
	return c, nil
}

// generated are the subjects git itself writes (merges, reverts, fixups for autosquash);
// the commit-msg hook lets them through unchanged.
var generated = []string{"Merge ", "Revert \"", "fixup! ", "squash! ", "amend! "}

const scissors = "# ------------------------ >8 ------------------------"

// CheckMessage is the commit-msg hook's rule: message, as git hands it to the hook
// (comment lines starting with '#' are stripped first), is a Conventional Commits message
// or one that git generates.
func CheckMessage(message string) error {
	var kept []string
	for l := range strings.SplitSeq(message, "\n") {
		if strings.HasPrefix(l, scissors) {
			break // `git commit -v`: the diff below this line is not part of the message
		}
		if strings.HasPrefix(l, "#") {
			continue
		}
		kept = append(kept, l)
	}
	msg := strings.TrimLeft(strings.Join(kept, "\n"), "\n")
	if strings.TrimSpace(msg) == "" {
		return fmt.Errorf("%w: the message is empty", ErrNotConventional)
	}
	for _, p := range generated {
		if strings.HasPrefix(msg, p) {
			return nil
		}
	}
	_, err := ParseCommit(msg)
	return err
}
