package release

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// sections are the changelog's headings in order; types not listed here (docs, test,
// chore…) do not change what a user of Kiln sees and are left out.
var sections = []struct{ typ, title string }{
	{"feat", "Features"},
	{"fix", "Fixes"},
	{"perf", "Performance"},
	{"revert", "Reverts"},
}

// Log returns the commits of the range from..to (from empty: everything reachable from
// to), newest first, read with git in dir. Messages that are not Conventional Commits are
// returned in skipped, by hash and subject.
func Log(ctx context.Context, dir, from, to string) (commits []Commit, skipped []string, err error) {
	rng := to
	if from != "" {
		rng = from + ".." + to
	}
	// Unit and record separators cannot appear in a commit message typed by a person.
	out, err := git(ctx, dir, "log", "--no-merges", "--format=%H%x1f%B%x1e", rng)
	if err != nil {
		return nil, nil, err
	}
	for rec := range strings.SplitSeq(out, "\x1e") {
		hash, msg, ok := strings.Cut(strings.TrimLeft(rec, "\n"), "\x1f")
		if !ok {
			continue
		}
		c, perr := ParseCommit(msg)
		if perr != nil {
			subject, _, _ := strings.Cut(msg, "\n")
			skipped = append(skipped, hash[:12]+" "+subject)
			continue
		}
		c.Hash = hash
		commits = append(commits, c)
	}
	return commits, skipped, nil
}

// Changelog renders the Markdown section of one release: breaking changes first (with
// their notes), then features, fixes, performance work and reverts, each line ending with
// the short commit hash. skipped counts the commits left out for not being Conventional
// Commits, so that a thin changelog says why it is thin.
func Changelog(version, date string, commits []Commit, skipped int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s (%s)\n", version, date)
	line := func(c Commit, text string) {
		scope := ""
		if c.Scope != "" {
			scope = "**" + c.Scope + ":** "
		}
		fmt.Fprintf(&b, "- %s%s (%s)\n", scope, text, short(c.Hash))
	}
	var breaking []Commit
	for _, c := range commits {
		if c.Breaking {
			breaking = append(breaking, c)
		}
	}
	if len(breaking) > 0 {
		b.WriteString("\n### Breaking changes\n\n")
		for _, c := range breaking {
			text := c.Description
			if c.BreakingNote != "" {
				text += ": " + strings.ReplaceAll(c.BreakingNote, "\n", " ")
			}
			line(c, text)
		}
	}
	for _, s := range sections {
		first := true
		for _, c := range commits {
			if c.Type != s.typ {
				continue
			}
			if first {
				fmt.Fprintf(&b, "\n### %s\n\n", s.title)
				first = false
			}
			line(c, c.Description)
		}
	}
	if skipped > 0 {
		fmt.Fprintf(&b, "\n%d commits are not in Conventional Commits form and are not listed.\n", skipped)
	}
	return b.String()
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// git runs git in dir and returns its standard output; a failure carries git's stderr.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...) //nolint:gosec // git with arguments of this package's own making
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// LastTag returns the newest release tag (v*) reachable from ref, or "" when there is none.
func LastTag(ctx context.Context, dir, ref string) (string, error) {
	out, err := git(ctx, dir, "tag", "--list", "v*", "--merged", ref)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(out) == "" {
		return "", nil
	}
	out, err = git(ctx, dir, "describe", "--tags", "--abbrev=0", "--match", "v*", ref)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}
