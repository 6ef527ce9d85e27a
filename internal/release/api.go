package release

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SpecPath is where the API's one spec lives, relative to the repository root.
const SpecPath = "openapi/openapi.yaml"

// SpecVersion returns info.version of an OpenAPI document.
func SpecVersion(spec []byte) (string, error) {
	var doc struct {
		Info struct {
			Version string `yaml:"version"`
		} `yaml:"info"`
	}
	if err := yaml.Unmarshal(spec, &doc); err != nil {
		return "", fmt.Errorf("read info.version: %w", err)
	}
	if doc.Info.Version == "" {
		return "", errors.New("read info.version: the spec has none")
	}
	return doc.Info.Version, nil
}

// Major returns the major number of a semantic version ("1.4.0" or "v1.4.0" → 1).
func Major(version string) (int, error) {
	head, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	n, err := strconv.Atoi(head)
	if err != nil {
		return 0, fmt.Errorf("version %q is not a semantic version", version)
	}
	return n, nil
}

// ErrBreaking is returned by CheckAPI when the spec breaks its clients without a new
// major version.
var ErrBreaking = errors.New("breaking API change without a new major version")

// APICheck compares the spec in a working tree with the spec at a base git ref.
type APICheck struct {
	// Dir is the repository's root.
	Dir string
	// Base is the git ref to compare with; empty means the last release tag (v*).
	Base string
	// Oasdiff is the command that runs oasdiff (default: go tool -modfile=tools/go.mod oasdiff).
	Oasdiff []string
	// Out receives the report.
	Out io.Writer
}

// Run runs the gate. With no base and no release tag it reports that and passes. It
// returns an error wrapping ErrBreaking when oasdiff finds a breaking change (severity
// ERR) and the major number of info.version is the same on both sides; the report names
// every break. Warnings (changes that may break some clients) are reported and pass.
func (c APICheck) Run(ctx context.Context) error {
	base := c.Base
	if base == "" {
		tag, err := LastTag(ctx, c.Dir, "HEAD")
		if err != nil {
			return err
		}
		if tag == "" {
			fmt.Fprintln(c.Out, "api-check: no release tag (v*) yet, so there is no published API to compare with: pass (compare with a ref with BASE=<ref>)")
			return nil
		}
		base = tag
	}
	baseSpec, err := git(ctx, c.Dir, "show", base+":"+SpecPath)
	if err != nil {
		return fmt.Errorf("api-check: read the spec at %s: %w", base, err)
	}
	revSpec, err := os.ReadFile(filepath.Join(c.Dir, SpecPath))
	if err != nil {
		return fmt.Errorf("api-check: %w", err)
	}
	baseVersion, err := SpecVersion([]byte(baseSpec))
	if err != nil {
		return fmt.Errorf("api-check: spec at %s: %w", base, err)
	}
	revVersion, err := SpecVersion(revSpec)
	if err != nil {
		return fmt.Errorf("api-check: %s: %w", SpecPath, err)
	}
	baseMajor, err := Major(baseVersion)
	if err != nil {
		return fmt.Errorf("api-check: spec at %s: %w", base, err)
	}
	revMajor, err := Major(revVersion)
	if err != nil {
		return fmt.Errorf("api-check: %s: %w", SpecPath, err)
	}

	tmp, err := os.MkdirTemp("", "kiln-api-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// oasdiff names the base file in its report: make it say which ref it came from.
	basePath := filepath.Join(tmp, strings.NewReplacer("/", "_", ":", "_", "~", "_", "^", "_").Replace(base)+".openapi.yaml")
	if err := os.WriteFile(basePath, []byte(baseSpec), 0o600); err != nil {
		return err
	}
	oasdiff := c.Oasdiff
	if len(oasdiff) == 0 {
		oasdiff = []string{"go", "tool", "-modfile=tools/go.mod", "oasdiff"}
	}
	args := append(oasdiff[1:len(oasdiff):len(oasdiff)], "breaking", basePath, SpecPath, "--fail-on", "ERR", "--color", "never", "--format", "text")
	cmd := exec.CommandContext(ctx, oasdiff[0], args...) //nolint:gosec // the command is this repository's pinned oasdiff
	cmd.Dir = c.Dir
	var report bytes.Buffer
	cmd.Stdout, cmd.Stderr = &report, &report
	runErr := cmd.Run()
	fmt.Fprintf(c.Out, "api-check: %s (%s, info.version %s) → working tree (info.version %s)\n", SpecPath, base, baseVersion, revVersion)
	var exit *exec.ExitError
	switch {
	case runErr == nil:
		if strings.TrimSpace(report.String()) != "" {
			_, _ = io.Copy(c.Out, &report)
		}
		fmt.Fprintln(c.Out, "api-check: no breaking change: pass")
		return nil
	case errors.As(runErr, &exit) && exit.ExitCode() == 1:
		_, _ = io.Copy(c.Out, &report)
		if revMajor > baseMajor {
			fmt.Fprintf(c.Out, "api-check: breaking changes allowed: the major version goes from %d to %d: pass\n", baseMajor, revMajor)
			return nil
		}
		return fmt.Errorf("api-check: %w (%s at %s, %s now): remove the breaks above, or release them as a new major version by raising info.version to %d.0.0", ErrBreaking, baseVersion, base, revVersion, baseMajor+1)
	default:
		_, _ = io.Copy(c.Out, &report)
		return fmt.Errorf("api-check: run oasdiff: %w", runErr)
	}
}
