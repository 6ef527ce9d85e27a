package scaffold

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"slices"
	"sort"
	"strconv"
)

// insertion is text to insert into a Go source at a byte offset.
type insertion struct {
	at   int
	text string
}

// editGo inserts what find returns into a Go source and gofmts the result: the smallest
// change that wires a new piece in, found by the source's syntax rather than its text.
func editGo(src []byte, find func(fset *token.FileSet, f *ast.File) ([]insertion, error)) ([]byte, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	ins, err := find(fset, f)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(ins, func(i, j int) bool { return ins[i].at > ins[j].at })
	out := append([]byte(nil), src...)
	for _, in := range ins {
		out = append(out[:in.at], append([]byte(in.text), out[in.at:]...)...)
	}
	formatted, err := format.Source(out)
	if err != nil {
		return nil, fmt.Errorf("format after inserting: %w", err)
	}
	return formatted, nil
}

// lineStart is the offset of the start of pos's line, which must hold nothing before pos
// but indentation: a line inserted there goes right before pos's line.
func lineStart(fset *token.FileSet, src []byte, pos token.Pos) (int, error) {
	off := fset.Position(pos).Offset
	start := bytes.LastIndexByte(src[:off], '\n') + 1
	if len(bytes.TrimSpace(src[start:off])) > 0 {
		return 0, fmt.Errorf("line %d: expected %q on a line of its own", fset.Position(pos).Line, string(src[off]))
	}
	return start, nil
}

// importAt adds an import of path to f's import block.
func importAt(fset *token.FileSet, src []byte, f *ast.File, path string) (insertion, error) {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.IMPORT || !g.Rparen.IsValid() {
			continue
		}
		for _, s := range g.Specs {
			if p, _ := strconv.Unquote(s.(*ast.ImportSpec).Path.Value); p == path {
				return insertion{}, fmt.Errorf("imports %s already", path)
			}
		}
		at, err := lineStart(fset, src, g.Rparen)
		return insertion{at: at, text: strconv.Quote(path) + "\n"}, err
	}
	return insertion{}, fmt.Errorf("no import block")
}

// structEnd returns where a field goes at the end of the struct type name, refusing a
// field that exists.
func structEnd(fset *token.FileSet, src []byte, f *ast.File, name, field string) (int, error) {
	var st *ast.StructType
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.Name == name {
			st, _ = ts.Type.(*ast.StructType)
		}
		return st == nil
	})
	if st == nil {
		return 0, fmt.Errorf("no struct type %s", name)
	}
	for _, fl := range st.Fields.List {
		for _, n := range fl.Names {
			if n.Name == field {
				return 0, fmt.Errorf("%s has a field %s already", name, field)
			}
		}
	}
	return lineStart(fset, src, st.Fields.Closing)
}

// literalEnd returns where an element goes at the end of the first composite literal
// (inside function fn, if not empty) whose type is typ ("Server", "server.Deps").
func literalEnd(fset *token.FileSet, src []byte, f *ast.File, fn, typ string) (int, error) {
	var lit *ast.CompositeLit
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fn != "" && fd.Name.Name != fn || fd.Body == nil {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if cl, ok := n.(*ast.CompositeLit); ok && lit == nil && exprString(cl.Type) == typ {
				lit = cl
			}
			return lit == nil
		})
	}
	if lit == nil {
		return 0, fmt.Errorf("no %s{…} literal", typ)
	}
	return lineStart(fset, src, lit.Rbrace)
}

// beforeCall returns where a statement goes right before the first statement of function
// fn that calls callee.
func beforeCall(fset *token.FileSet, src []byte, f *ast.File, fn, callee string) (int, error) {
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Body == nil {
			continue
		}
		for _, s := range fd.Body.List {
			found := false
			ast.Inspect(s, func(n ast.Node) bool {
				if c, ok := n.(*ast.CallExpr); ok && exprString(c.Fun) == callee {
					found = true
				}
				return !found
			})
			if found {
				return lineStart(fset, src, s.Pos())
			}
		}
	}
	return 0, fmt.Errorf("no call of %s in %s", callee, fn)
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	}
	return ""
}

// constEnd returns where a constant goes at the end of the const block that declares
// name, refusing one of the names taken.
func constEnd(fset *token.FileSet, src []byte, f *ast.File, name string, taken ...string) (int, error) {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST || !g.Rparen.IsValid() {
			continue
		}
		declares := false
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if slices.Contains(taken, n.Name) {
					return 0, fmt.Errorf("a constant %s exists already", n.Name)
				}
				declares = declares || n.Name == name
			}
		}
		if declares {
			return lineStart(fset, src, g.Rparen)
		}
	}
	return 0, fmt.Errorf("no const block declares %s", name)
}

// elementAt returns the offset of the element elem of the composite literal that the
// package-level variable name is set to: elements inserted there go before it.
func elementAt(fset *token.FileSet, f *ast.File, name, elem string) (int, error) {
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			if len(vs.Names) != 1 || vs.Names[0].Name != name || len(vs.Values) != 1 {
				continue
			}
			lit, ok := vs.Values[0].(*ast.CompositeLit)
			if !ok {
				return 0, fmt.Errorf("%s is not set to a literal", name)
			}
			for _, e := range lit.Elts {
				if exprString(e) == elem {
					return fset.Position(e.Pos()).Offset, nil
				}
			}
			return 0, fmt.Errorf("%s does not list %s", name, elem)
		}
	}
	return 0, fmt.Errorf("no variable %s", name)
}

// sortedStringAt returns the insertion of value into the sorted []string literal that
// function fn assigns to the variable name, where it keeps the list sorted.
func sortedStringAt(fset *token.FileSet, f *ast.File, fn, name, value string) (insertion, error) {
	var lit *ast.CompositeLit
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != fn || fd.Body == nil {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && lit == nil && len(as.Lhs) == 1 && len(as.Rhs) == 1 && exprString(as.Lhs[0]) == name {
				lit, _ = as.Rhs[0].(*ast.CompositeLit)
			}
			return lit == nil
		})
	}
	if lit == nil || len(lit.Elts) == 0 {
		return insertion{}, fmt.Errorf("%s assigns no list to %s", fn, name)
	}
	quoted := strconv.Quote(value)
	for _, e := range lit.Elts {
		bl, ok := e.(*ast.BasicLit)
		if !ok || bl.Kind != token.STRING {
			return insertion{}, fmt.Errorf("%s's %s lists a non-string", fn, name)
		}
		s, err := strconv.Unquote(bl.Value)
		if err != nil {
			return insertion{}, err
		}
		switch {
		case s == value:
			return insertion{}, fmt.Errorf("%s's %s lists %s already", fn, name, quoted)
		case s > value:
			return insertion{at: fset.Position(e.Pos()).Offset, text: quoted + ", "}, nil
		}
	}
	return insertion{at: fset.Position(lit.Elts[len(lit.Elts)-1].End()).Offset, text: ", " + quoted}, nil
}
