package scaffold

import (
	"fmt"
	"go/ast"
	"go/token"
	"slices"
	"strconv"
	"strings"
)

// named is what the job and provider templates use of their name.
type named struct {
	Name string
}

// Pkg is the provider's package name.
func (n named) Pkg() string { return strings.ReplaceAll(n.Name, "_", "") }

// Type is the name in CamelCase.
func (n named) Type() string { return apiCamel(n.Name) }

// Human is the name in prose.
func (n named) Human() string { return strings.ReplaceAll(n.Name, "_", " ") }

// PlanJob computes the files of a job kind NAME: its kind, payload and handler in worker/,
// their test, and its registration in cmd/kiln.
func PlanJob(root, name string) (*Plan, error) {
	if err := checkIdentifier("job name", name, 63); err != nil {
		return nil, err
	}
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	n := named{Name: name}
	p := &Plan{Root: root}
	for template, path := range map[string]string{"job/job.go.tmpl": "worker/" + name + ".go", "job/job_test.go.tmpl": "worker/" + name + "_test.go"} {
		content, err := render(template, n)
		if err != nil {
			return nil, err
		}
		if err := p.add(path, content); err != nil {
			return nil, err
		}
	}
	err := p.edit("cmd/kiln/jobs.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			at, err := beforeCall(fset, src, f, "newJobs", "registerTestKinds")
			if err != nil {
				return nil, err
			}
			return []insertion{{at, fmt.Sprintf("worker.Register%s(reg)\n", n.Type())}}, nil
		})
	})
	if err != nil {
		return nil, err
	}
	p.Next = []string{
		fmt.Sprintf("go test ./worker -run 'Test%s$' -count=1", n.Type()),
		fmt.Sprintf("enqueue it in the transaction of the change that asks for it: reg.Enqueue(ctx, q, now, jobs.New{Kind: worker.Kind%s.Name, …})", n.Type()),
	}
	return p, nil
}

// PlanProvider computes the files of an LLM provider adapter NAME: its package under
// internal/llm, its test against an httptest upstream, its type in the config's list and
// its case in cmd/kiln's newProvider.
func PlanProvider(root, name string) (*Plan, error) {
	if err := checkIdentifier("provider name", name, 32); err != nil {
		return nil, err
	}
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	n := named{Name: name}
	if slices.Contains(append(slices.Clone(goPredeclared), importedNames...), n.Pkg()) || n.Pkg() == "llm" || n.Pkg() == "sse" {
		return nil, fmt.Errorf("provider name %q would shadow Go's or Kiln's %s: choose another", name, n.Pkg())
	}
	p := &Plan{Root: root}
	dir := "internal/llm/" + n.Pkg() + "/"
	for template, path := range map[string]string{
		"provider/provider.go.tmpl": dir + n.Pkg() + ".go", "provider/wire.go.tmpl": dir + "wire.go",
		"provider/provider_test.go.tmpl": dir + n.Pkg() + "_test.go",
	} {
		content, err := render(template, n)
		if err != nil {
			return nil, err
		}
		if err := p.add(path, content); err != nil {
			return nil, err
		}
	}
	err := p.edit("internal/platform/config/config.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			lit := varLiteral(f, "ProviderTypes")
			if lit == nil {
				return nil, fmt.Errorf("no var ProviderTypes = []string{…}")
			}
			for _, e := range lit.Elts {
				if b, ok := e.(*ast.BasicLit); ok && b.Value == strconv.Quote(name) {
					return nil, fmt.Errorf("the provider type %q exists already", name)
				}
			}
			return []insertion{{fset.Position(lit.Rbrace).Offset, ", " + strconv.Quote(name)}}, nil
		})
	})
	if err != nil {
		return nil, err
	}
	err = p.edit("cmd/kiln/llm.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			imp, err := importAt(fset, src, f, "github.com/kilnhq/kiln/internal/llm/"+n.Pkg())
			if err != nil {
				return nil, err
			}
			at, err := switchEnd(fset, src, f, "newProvider")
			if err != nil {
				return nil, err
			}
			return []insertion{imp, {at, fmt.Sprintf("case %s.Type:\nreturn %s.New(cfg, client)\n", n.Pkg(), n.Pkg())}}, nil
		})
	})
	if err != nil {
		return nil, err
	}
	p.Next = []string{
		fmt.Sprintf("go test ./internal/llm/%s -count=1", n.Pkg()),
		fmt.Sprintf("configure it: llm.providers: [{name: %s, type: %s, base_url: …, api_key: …}], then kiln llm ping", name, name),
	}
	return p, nil
}

// varLiteral returns the composite literal a package-level var is set to.
func varLiteral(f *ast.File, name string) *ast.CompositeLit {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name == name && i < len(vs.Values) {
					lit, _ := vs.Values[i].(*ast.CompositeLit)
					return lit
				}
			}
		}
	}
	return nil
}

// switchEnd returns where a case goes at the end of the first switch of function fn.
func switchEnd(fset *token.FileSet, src []byte, f *ast.File, fn string) (int, error) {
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Body == nil {
			continue
		}
		var sw *ast.SwitchStmt
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if s, ok := n.(*ast.SwitchStmt); ok && sw == nil {
				sw = s
			}
			return sw == nil
		})
		if sw != nil {
			return lineStart(fset, src, sw.Body.Rbrace)
		}
	}
	return 0, fmt.Errorf("no switch in %s", fn)
}
