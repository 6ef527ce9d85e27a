// Package scaffold is `kiln gen`: it writes what a new CRUD resource, job kind or LLM
// provider needs, in Kiln's own style, into a checkout of Kiln. Its templates
// (text/template, embedded) produce gofmt'd Go; what it changes in existing files (the
// spec, the server's wiring, cmd/kiln) it inserts at anchors it finds, leaving every
// other byte as it was.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

//go:embed templates
var templates embed.FS

var funcs = template.FuncMap{
	"title":      func(s string) string { return strings.ToUpper(s[:1]) + s[1:] },
	"lowerCamel": lowerCamel,
}

// render executes the template at name (under templates/) with data.
func render(name string, data any) ([]byte, error) {
	t, err := template.New(filepath.Base(name)).Funcs(funcs).ParseFS(templates, "templates/"+name)
	if err != nil {
		return nil, fmt.Errorf("parse template %s: %w", name, err)
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// Change is one file the generator writes: a new file, or a new content of an existing one.
type Change struct {
	Path    string // relative to the checkout's root
	Content []byte
	New     bool
}

// Plan is what a generator writes, computed before anything is written.
type Plan struct {
	Root    string
	Changes []Change
	// Next are the steps left to the author, printed after the files are written.
	Next []string
}

// add records a new file; Go sources are gofmt'd.
func (p *Plan) add(path string, content []byte) error {
	if _, err := os.Stat(filepath.Join(p.Root, path)); err == nil {
		return fmt.Errorf("%s exists already: the name is taken", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if strings.HasSuffix(path, ".go") {
		formatted, err := format.Source(content)
		if err != nil {
			return fmt.Errorf("format %s: %w\n%s", path, err, content)
		}
		content = formatted
	}
	p.Changes = append(p.Changes, Change{Path: path, Content: content, New: true})
	return nil
}

// edit records a new content of an existing file, computed from its current content.
func (p *Plan) edit(path string, change func([]byte) ([]byte, error)) error {
	old, err := p.read(path)
	if err != nil {
		return err
	}
	content, err := change(old)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for i := range p.Changes {
		if p.Changes[i].Path == path {
			p.Changes[i].Content = content
			return nil
		}
	}
	p.Changes = append(p.Changes, Change{Path: path, Content: content})
	return nil
}

// read returns a file as the plan leaves it so far.
func (p *Plan) read(path string) ([]byte, error) {
	for _, c := range p.Changes {
		if c.Path == path {
			return c.Content, nil
		}
	}
	return os.ReadFile(filepath.Join(p.Root, path)) //nolint:gosec // a path of the checkout, built by the generator
}

// Write writes the plan's files.
func (p *Plan) Write() error {
	for _, c := range p.Changes {
		full := filepath.Join(p.Root, c.Path)
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			return err
		}
		if err := os.WriteFile(full, c.Content, 0o644); err != nil { //nolint:gosec // source files, readable like the rest of the checkout
			return err
		}
	}
	return nil
}

// CheckRoot fails unless root is the top of a Kiln checkout.
func CheckRoot(root string) error {
	mod, err := os.ReadFile(filepath.Join(root, "go.mod")) //nolint:gosec // the checkout's go.mod
	if err != nil || !bytes.HasPrefix(mod, []byte("module github.com/kilnhq/kiln\n")) {
		return fmt.Errorf("%s is not the top of a Kiln checkout (no go.mod of github.com/kilnhq/kiln): run kiln gen there", root)
	}
	return nil
}
