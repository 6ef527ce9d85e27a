package scaffold

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGeneratedCodeBuildsAndPasses runs the generators in a copy of this checkout (its
// tracked and untracked files, as they are now) and then what their author would:
// `make generate`, go build and vet, the generated tests (a resource's API-key scopes and
// its idempotent create among them), the spec-wide server tests that every new operation
// must pass (every operation a key may call names a catalog scope; the idempotent routes),
// and the spec's lint. It takes minutes: not under -short.
func TestGeneratedCodeBuildsAndPasses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and tests a copy of the checkout: minutes")
	}
	for _, tool := range []string{"git", "make", "go", "node"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	src, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"tools", "sdk/typescript"} {
		if _, err := os.Stat(filepath.Join(src, dir, "node_modules/.installed")); err != nil {
			t.Fatalf("%s/node_modules is not installed: run `make node-deps` first", dir)
		}
	}
	dst := copyCheckout(t, src)
	start := time.Now()

	plans := []func() (*Plan, error){
		func() (*Plan, error) {
			return PlanResource(dst, Resource{Name: "widget", OrgScoped: true, Fields: []Field{{"name", "string"}, {"size", "int"}}})
		},
		func() (*Plan, error) {
			return PlanResource(dst, Resource{Name: "gadget", Fields: []Field{
				{"label", "text"}, {"active", "bool"}, {"due_at", "time"}, {"owner_id", "uuid"}, {"meta", "json"},
			}})
		},
		func() (*Plan, error) { return PlanJob(dst, "report_export") },
		func() (*Plan, error) { return PlanProvider(dst, "acme") },
	}
	for _, plan := range plans {
		p, err := plan()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(); err != nil {
			t.Fatal(err)
		}
	}
	packages := []string{"./internal/widget", "./internal/gadget", "./internal/llm/acme", "./worker", "./server", "./cmd/kiln", "./internal/platform/config", "./internal/auth/apikey"}
	// The node packages are installed already (linked from the checkout): make must not
	// install them again.
	run(t, dst, "make", "-o", "tools/node_modules/.installed", "-o", "sdk/typescript/node_modules/.installed", "generate")
	run(t, dst, "go", "build", "./...")
	run(t, dst, "go", append([]string{"vet"}, packages...)...)
	run(t, dst, "go", append([]string{"test", "-count=1", "-run",
		"^(TestService|TestWidgets|TestGadgets|TestReportExport|TestChat|TestChatStream|TestModels|TestErrors|" +
			"TestRequestBudgetInSpec|TestListsPagedInSpec|TestNULRefusedEverywhere|TestForeignOrgIsNotFoundEverywhere|TestErrorCatalog|" +
			"TestScopesInSpec|TestIdempotentRoutes|TestValidateScopes|TestHas)$"},
		packages...)...)
	run(t, dst, "tools/node_modules/.bin/redocly", "lint", "openapi/openapi.yaml", "--config", "openapi/redocly.yaml")
	t.Logf("generated, built and tested in %s", time.Since(start).Round(time.Second))
}

// copyCheckout copies the checkout's files (tracked, and untracked but not ignored) to a
// directory named after the checkout, so that a second run builds from the Go build
// cache what did not change; node_modules are linked entry by entry, so that nothing run
// in the copy can change the checkout's.
func copyCheckout(t *testing.T, src string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(src))
	dst := filepath.Join(os.TempDir(), "kiln-gen-test-"+hex.EncodeToString(sum[:6]))
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dst) })
	files := run(t, src, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	for name := range strings.SplitSeq(strings.TrimRight(files, "\x00"), "\x00") {
		from := filepath.Join(src, name)
		info, err := os.Lstat(from)
		if os.IsNotExist(err) {
			continue // deleted in the checkout, not yet in git
		}
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(from) //nolint:gosec // a file git lists in the checkout
		if err != nil {
			t.Fatal(err)
		}
		to := filepath.Join(dst, name)
		if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"tools/node_modules", "sdk/typescript/node_modules"} {
		entries, err := os.ReadDir(filepath.Join(src, dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, dir), 0o750); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.Symlink(filepath.Join(src, dir, e.Name()), filepath.Join(dst, dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dst
}

// run runs a command in dir and returns its output; a failure fails the test with it.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begun := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	t.Logf("%s %s: %s", name, strings.Join(args, " "), time.Since(begun).Round(100*time.Millisecond))
	return out.String()
}
