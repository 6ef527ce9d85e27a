package release_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/release"
)

func TestParseCommit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, msg string
		want      release.Commit
		wantErr   string
	}{
		{name: "OK", msg: "feat: add prompts", want: release.Commit{Type: "feat", Description: "add prompts"}},
		{name: "OKScope", msg: "fix(server): 404 for another org's prompt\n\nBody.\n", want: release.Commit{Type: "fix", Scope: "server", Description: "404 for another org's prompt"}},
		{name: "OKBang", msg: "feat(api)!: drop /v0", want: release.Commit{Type: "feat", Scope: "api", Breaking: true, Description: "drop /v0"}},
		{name: "OKFooter", msg: "refactor: rename\n\nWhy.\n\nBREAKING CHANGE: field x is y now\n", want: release.Commit{Type: "refactor", Breaking: true, Description: "rename", BreakingNote: "field x is y now"}},
		{name: "ErrNoType", msg: "add prompts", wantErr: "must read"},
		{name: "ErrUnknownType", msg: "feature: add prompts", wantErr: `unknown type "feature"`},
		{name: "ErrNoSpace", msg: "feat:add", wantErr: "must read"},
		{name: "ErrUpperType", msg: "Feat: add", wantErr: "must read"},
		{name: "ErrBodyNotSeparated", msg: "feat: add\nbody", wantErr: "second line must be empty"},
		{name: "ErrTooLong", msg: "feat: " + strings.Repeat("x", 100), wantErr: "at most 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := release.ParseCommit(tt.msg)
			if tt.wantErr != "" {
				if !errors.Is(err, release.ErrNotConventional) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseCommit(%q) error = %v, want one containing %q", tt.msg, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseCommit(%q) = %+v, %v; want %+v", tt.msg, got, err, tt.want)
			}
		})
	}
}

func TestCheckMessage(t *testing.T) {
	t.Parallel()
	ok := []string{
		"# Please enter the commit message\nfeat: add\n",
		"Merge branch 'dx'\n",
		"fixup! feat: add\n",
		"docs: readme\n\n# ------------------------ >8 ------------------------\n# Do not modify\ndiff --git a b\n",
	}
	for _, m := range ok {
		if err := release.CheckMessage(m); err != nil {
			t.Errorf("CheckMessage(%q) = %v, want nil", m, err)
		}
	}
	for _, m := range []string{"", "# only a comment\n", "wip\n", "Update README.md"} {
		if err := release.CheckMessage(m); !errors.Is(err, release.ErrNotConventional) {
			t.Errorf("CheckMessage(%q) = %v, want ErrNotConventional", m, err)
		}
	}
}

// repo is a throwaway git repository in a temporary directory.
type repo struct {
	t   *testing.T
	dir string
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	r := &repo{t: t, dir: t.TempDir()}
	r.git("init", "-q", "-b", "main")
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.CommandContext(context.Background(), "git", args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (r *repo) write(path, content string) {
	r.t.Helper()
	full := filepath.Join(r.dir, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func (r *repo) commit(msg string) {
	r.t.Helper()
	r.git("add", "-A")
	r.git("commit", "-q", "--allow-empty", "-m", msg)
}

func TestChangelog(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.commit("feat: first")
	r.git("tag", "v0.1.0")
	r.commit("feat(prompts): labels")
	r.commit("fix: 404 for another org's prompt")
	r.commit("docs: readme")
	r.commit("wip something")
	r.commit("perf(cache)!: new key layout\n\nBREAKING CHANGE: cached entries are dropped on upgrade")

	ctx := context.Background()
	tag, err := release.LastTag(ctx, r.dir, "HEAD")
	if err != nil || tag != "v0.1.0" {
		t.Fatalf("LastTag = %q, %v; want v0.1.0", tag, err)
	}
	commits, skipped, err := release.Log(ctx, r.dir, tag, "HEAD")
	if err != nil {
		t.Fatal(err)
	}
	if len(commits) != 4 || len(skipped) != 1 || !strings.HasSuffix(skipped[0], " wip something") {
		t.Fatalf("Log = %d commits, skipped %q; want 4 and the wip commit", len(commits), skipped)
	}
	for i := range commits {
		commits[i].Hash = "abc" // stable output
	}
	got := release.Changelog("v0.2.0", "2026-12-07", commits, len(skipped))
	want := `## v0.2.0 (2026-12-07)

### Breaking changes

- **cache:** new key layout: cached entries are dropped on upgrade (abc)

### Features

- **prompts:** labels (abc)

### Fixes

- 404 for another org's prompt (abc)

### Performance

- **cache:** new key layout (abc)

1 commits are not in Conventional Commits form and are not listed.
`
	if got != want {
		t.Fatalf("Changelog:\n%s\nwant:\n%s", got, want)
	}

	empty := newRepo(t)
	empty.commit("feat: first")
	if tag, err := release.LastTag(ctx, empty.dir, "HEAD"); err != nil || tag != "" {
		t.Fatalf("LastTag with no tag = %q, %v; want empty", tag, err)
	}
}

// baseSpec is a small API with a response whose "id" field is required.
const baseSpec = `openapi: 3.0.3
info:
  title: t
  version: 0.3.0
paths:
  /things/{id}:
    get:
      operationId: getThing
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Thing'}
  /other:
    get:
      operationId: getOther
      responses:
        "204": {description: ok}
components:
  schemas:
    Thing:
      type: object
      required: [id, name]
      properties:
        id: {type: string}
        name: {type: string}
`

func TestAPICheck(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The pinned oasdiff of tools/go.mod, built once by the go command and cached.
	cmd := exec.CommandContext(context.Background(), "go", "tool", "-modfile=tools/go.mod", "-n", "oasdiff")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locate oasdiff: %v", err)
	}
	oasdiff := []string{strings.TrimSpace(string(out))}

	tests := []struct {
		name    string
		edit    func(string) string
		wantErr bool
		want    []string
	}{
		{name: "OKAdditive", edit: func(s string) string {
			s = strings.Replace(s, "        name: {type: string}\n", "        name: {type: string}\n        color: {type: string}\n", 1)
			return strings.Replace(s, "components:\n", "  /more:\n    get:\n      operationId: getMore\n      responses:\n        \"204\": {description: ok}\ncomponents:\n", 1)
		}, want: []string{"no breaking change: pass"}},
		{name: "ErrPathRemoved", edit: func(s string) string {
			return strings.Replace(s, "  /other:\n    get:\n      operationId: getOther\n      responses:\n        \"204\": {description: ok}\n", "", 1)
		}, wantErr: true, want: []string{"GET /other", "api-path-removed"}},
		{name: "ErrRequiredResponseFieldRemoved", edit: func(s string) string {
			s = strings.Replace(s, "required: [id, name]", "required: [name]", 1)
			return strings.Replace(s, "        id: {type: string}\n", "", 1)
		}, wantErr: true, want: []string{"GET /things/{id}", "response-required-property-removed", "`id`"}},
		{name: "OKBreakWithNewMajor", edit: func(s string) string {
			s = strings.Replace(s, "version: 0.3.0", "version: 1.0.0", 1)
			return strings.Replace(s, "  /other:\n    get:\n      operationId: getOther\n      responses:\n        \"204\": {description: ok}\n", "", 1)
		}, want: []string{"api-path-removed", "major version goes from 0 to 1: pass"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRepo(t)
			r.write(release.SpecPath, baseSpec)
			r.commit("feat: the API")
			r.git("tag", "v0.3.0")
			r.write(release.SpecPath, tt.edit(baseSpec))
			var report bytes.Buffer
			err := release.APICheck{Dir: r.dir, Oasdiff: oasdiff, Out: &report}.Run(context.Background())
			if tt.wantErr != errors.Is(err, release.ErrBreaking) || (!tt.wantErr && err != nil) {
				t.Fatalf("Run() = %v (wantErr %v)\n%s", err, tt.wantErr, report.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(report.String(), w) {
					t.Errorf("report lacks %q:\n%s", w, report.String())
				}
			}
		})
	}

	t.Run("OKNoTag", func(t *testing.T) {
		t.Parallel()
		r := newRepo(t)
		r.write(release.SpecPath, baseSpec)
		r.commit("feat: the API")
		var report bytes.Buffer
		if err := (release.APICheck{Dir: r.dir, Oasdiff: oasdiff, Out: &report}).Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(report.String(), "no release tag") {
			t.Fatalf("report = %q", report.String())
		}
	})
}

func TestCheckSDKVersions(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.write(release.SpecPath, baseSpec)
	r.write(release.TypeScriptPackage, `{"name": "@kiln/sdk", "version": "0.3.0"}`)
	got, err := release.CheckSDKVersions(r.dir)
	if err != nil || got.API != "0.3.0" || got.GoSDKTag != "sdk/go/v0.3.0" {
		t.Fatalf("CheckSDKVersions = %+v, %v", got, err)
	}
	r.write(release.TypeScriptPackage, `{"name": "@kiln/sdk", "version": "0.2.0"}`)
	if _, err := release.CheckSDKVersions(r.dir); err == nil || !strings.Contains(err.Error(), `set it to "0.3.0"`) {
		t.Fatalf("CheckSDKVersions with a stale package.json = %v, want an error naming 0.3.0", err)
	}
	// The repository itself keeps its SDK in step with its API.
	if _, err := release.CheckSDKVersions("../.."); err != nil {
		t.Fatal(err)
	}
}
