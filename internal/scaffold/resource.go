package scaffold

import (
	"bytes"
	"fmt"
	"go/ast"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Resource is a CRUD resource to generate.
type Resource struct {
	Name      string // snake_case singular, e.g. widget
	Fields    []Field
	OrgScoped bool // each row belongs to an org; otherwise platform-wide, changed by platform admins
}

// The names the templates use.

// Pkg is the domain package's name.
func (r Resource) Pkg() string { return strings.ReplaceAll(r.Name, "_", "") }

// Type is the Go and schema name of one resource (ShippingLabel); sqlc names the row so too.
func (r Resource) Type() string { return apiCamel(r.Name) }

// Table is the table's name, the plural.
func (r Resource) Table() string { return plural(r.Name) }

// PluralType is the plural in CamelCase (ShippingLabels).
func (r Resource) PluralType() string { return apiCamel(r.Table()) }

// PluralVar is the server's field of the service (shippingLabels).
func (r Resource) PluralVar() string { return lowerCamel(r.Table()) }

// Var is the prefix of the server test's helpers (shippingLabel).
func (r Resource) Var() string { return lowerCamel(r.Name) }

// Tag is the spec's tag (shipping-labels).
func (r Resource) Tag() string { return strings.ReplaceAll(r.Table(), "_", "-") }

// Path is the collection's path (/v1/shipping-labels).
func (r Resource) Path() string { return "/v1/" + r.Tag() }

// Human is the name in prose (shipping label).
func (r Resource) Human() string { return strings.ReplaceAll(r.Name, "_", " ") }

// HumanPlural is the plural in prose.
func (r Resource) HumanPlural() string { return strings.ReplaceAll(r.Table(), "_", " ") }

// ReadScope is the API-key scope of the resource's reads (widget:read).
func (r Resource) ReadScope() string { return r.Name + ":read" }

// WriteScope is the API-key scope of an org-scoped resource's changes (widget:write); a
// platform-wide resource's changes take a platform admin's access token, never a key.
func (r Resource) WriteScope() string { return r.Name + ":write" }

// scopes are the resource's scopes and their constants in internal/auth/apikey.
func (r Resource) scopes() (scopes, consts []string) {
	scopes, consts = []string{r.ReadScope()}, []string{"Scope" + r.Type() + "Read"}
	if r.OrgScoped {
		scopes, consts = append(scopes, r.WriteScope()), append(consts, "Scope"+r.Type()+"Write")
	}
	return scopes, consts
}

// JSONFields are the fields of type json.
func (r Resource) JSONFields() []Field {
	var out []Field
	for _, f := range r.Fields {
		if f.Type == "json" {
			out = append(out, f)
		}
	}
	return out
}

// HasJSON reports whether a field is of type json.
func (r Resource) HasJSON() bool { return len(r.JSONFields()) > 0 }

// HasTime reports whether a field is of type time.
func (r Resource) HasTime() bool { return r.has("time") }

// NeedsValue reports whether the domain's update needs its value helper.
func (r Resource) NeedsValue() bool { return r.has("string", "text", "int", "bool") }

// NeedsPtr reports whether the domain's test needs its ptr helper.
func (r Resource) NeedsPtr() bool { return r.has("string", "text", "int", "bool", "time", "uuid") }

// NeedsPgtype reports whether the domain builds pgtype values.
func (r Resource) NeedsPgtype() bool { return r.NeedsValue() }

func (r Resource) has(types ...string) bool {
	return slices.ContainsFunc(r.Fields, func(f Field) bool { return slices.Contains(types, f.Type) })
}

// Validate refuses a name or fields that would not build, or would shadow what exists.
func (r Resource) Validate() error {
	if err := checkIdentifier("resource name", r.Name, 40); err != nil {
		return err
	}
	for _, list := range [][]string{goPredeclared, importedNames} {
		if slices.Contains(list, r.Pkg()) {
			return fmt.Errorf("resource name %q would shadow Go's or Kiln's %s: choose another", r.Name, r.Pkg())
		}
	}
	if len(r.Fields) == 0 {
		return fmt.Errorf("resource %s: give it at least one field (--field name:type)", r.Name)
	}
	seen := map[string]bool{}
	for _, f := range r.Fields {
		if seen[f.Name] {
			return fmt.Errorf("field %q is given twice", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

var migrationName = regexp.MustCompile(`^(\d+)_.*\.sql$`)

// nextMigration is the number after the highest of the checkout's migrations.
func nextMigration(root string) (int, error) {
	entries, err := os.ReadDir(filepath.Join(root, "migrations"))
	if err != nil {
		return 0, err
	}
	high := 0
	for _, e := range entries {
		if m := migrationName.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			high = max(high, n)
		}
	}
	return high + 1, nil
}

// tableExists reports whether a migration creates the table.
func tableExists(root, table string) (bool, error) {
	files, err := filepath.Glob(filepath.Join(root, "migrations", "*.sql"))
	if err != nil {
		return false, err
	}
	create := regexp.MustCompile(`(?i)CREATE TABLE (IF NOT EXISTS )?` + table + `\b`)
	for _, f := range files {
		src, err := os.ReadFile(f) //nolint:gosec // a migration of the checkout
		if err != nil {
			return false, err
		}
		if create.Match(src) {
			return true, nil
		}
	}
	return false, nil
}

// PlanResource computes the files a resource needs in the checkout at root.
func PlanResource(root string, r Resource) (*Plan, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if err := CheckRoot(root); err != nil {
		return nil, err
	}
	if exists, err := tableExists(root, r.Table()); err != nil || exists {
		if err == nil {
			err = fmt.Errorf("a migration creates a table %s already", r.Table())
		}
		return nil, err
	}
	n, err := nextMigration(root)
	if err != nil {
		return nil, err
	}
	p := &Plan{Root: root}
	files := []struct{ template, path string }{
		{"resource/migration.sql.tmpl", fmt.Sprintf("migrations/%05d_%s.sql", n, r.Table())},
		{"resource/queries.sql.tmpl", "queries/" + r.Table() + ".sql"},
		{"resource/domain.go.tmpl", "internal/" + r.Pkg() + "/" + r.Pkg() + ".go"},
		{"resource/domain_test.go.tmpl", "internal/" + r.Pkg() + "/" + r.Pkg() + "_test.go"},
		{"resource/server.go.tmpl", "server/" + r.Table() + ".go"},
		{"resource/server_test.go.tmpl", "server/" + r.Table() + "_test.go"},
	}
	for _, f := range files {
		content, err := render(f.template, r)
		if err != nil {
			return nil, err
		}
		if err := p.add(f.path, content); err != nil {
			return nil, err
		}
	}
	if err := p.edit("openapi/openapi.yaml", func(src []byte) ([]byte, error) { return r.mergeSpec(src) }); err != nil {
		return nil, err
	}
	if err := r.wire(p); err != nil {
		return nil, err
	}
	if err := r.register(p); err != nil {
		return nil, err
	}
	keyScopes := ""
	scopes, _ := r.scopes()
	for _, s := range scopes {
		keyScopes += " --scope " + s
	}
	p.Next = []string{
		"make generate        # the server interface, the sqlc queries and both SDKs",
		fmt.Sprintf("go test ./internal/%s ./server -run 'TestService|Test%s' -count=1", r.Pkg(), r.PluralType()),
		"kiln migrate up && kiln serve",
		"kiln quickstart --email you@example.com" + keyScopes + "   # an API key for the new endpoints",
	}
	return p, nil
}

func (r Resource) mergeSpec(src []byte) ([]byte, error) {
	var b specBlocks
	for _, s := range []struct {
		out      *string
		template string
	}{{&b.Tag, "resource/tag.yaml.tmpl"}, {&b.Paths, "resource/paths.yaml.tmpl"}, {&b.Schemas, "resource/schemas.yaml.tmpl"}} {
		content, err := render(s.template, r)
		if err != nil {
			return nil, err
		}
		*s.out = string(bytes.TrimRight(content, "\n")) + "\n"
	}
	b.TagName = r.Tag()
	b.PathKeys = []string{r.Path(), r.Path() + "/{id}"}
	b.SchemaKeys = []string{r.Type(), r.Type() + "List", "Create" + r.Type() + "Request", "Update" + r.Type() + "Request"}
	return mergeSpec(src, b)
}

// wire passes the new service to the server: a field of server.Deps and of Server, set in
// server.New, built in cmd/kiln's serve and in the server tests' harness.
func (r Resource) wire(p *Plan) error {
	pkgPath := "github.com/kilnhq/kiln/internal/" + r.Pkg()
	service := "*" + r.Pkg() + ".Service"
	err := p.edit("server/server.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			imp, err := importAt(fset, src, f, pkgPath)
			if err != nil {
				return nil, err
			}
			deps, err := structEnd(fset, src, f, "Deps", r.PluralType())
			if err != nil {
				return nil, err
			}
			server, err := structEnd(fset, src, f, "Server", r.PluralVar())
			if err != nil {
				return nil, err
			}
			set, err := literalEnd(fset, src, f, "New", "Server")
			if err != nil {
				return nil, err
			}
			return []insertion{imp,
				{deps, fmt.Sprintf("// %s serves the %s endpoints.\n%s %s\n", r.PluralType(), r.Human(), r.PluralType(), service)},
				{server, fmt.Sprintf("%s %s\n", r.PluralVar(), service)},
				{set, fmt.Sprintf("%s: d.%s,\n", r.PluralVar(), r.PluralType())},
			}, nil
		})
	})
	if err != nil {
		return err
	}
	main, err := fileWith(p.Root, "cmd/kiln", []byte("server.Deps{"))
	if err != nil {
		return err
	}
	err = p.edit(main, func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			imp, err := importAt(fset, src, f, pkgPath)
			if err != nil {
				return nil, err
			}
			at, err := literalEnd(fset, src, f, "", "server.Deps")
			if err != nil {
				return nil, err
			}
			return []insertion{imp, {at, fmt.Sprintf("%s: %s.New(store.New(d.pool), time.Now),\n", r.PluralType(), r.Pkg())}}, nil
		})
	})
	if err != nil {
		return err
	}
	return p.edit("server/harness_test.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			imp, err := importAt(fset, src, f, pkgPath)
			if err != nil {
				return nil, err
			}
			at, err := beforeCall(fset, src, f, "setupOn", "New")
			if err != nil {
				return nil, err
			}
			return []insertion{imp, {at, fmt.Sprintf("d.%s = %s.New(st, time.Now)\n", r.PluralType(), r.Pkg())}}, nil
		})
	})
}

// register makes the resource's API-key scopes known where Kiln's are (the catalog
// apikey.Scopes, which API-key creation validates against, and the spec's Scope enum, which
// the docs and SDKs list), and its create operation among those TestIdempotentRoutes expects
// to take an Idempotency-Key.
func (r Resource) register(p *Plan) error {
	scopes, consts := r.scopes()
	err := p.edit("internal/auth/apikey/scopes.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			decl, err := constEnd(fset, src, f, "ScopeAdmin", consts...)
			if err != nil {
				return nil, err
			}
			list, err := elementAt(fset, f, "Scopes", "ScopeAdmin")
			if err != nil {
				return nil, err
			}
			text := fmt.Sprintf("// The %s operations' scopes (kiln gen resource %s).\n", r.Human(), r.Name)
			for i, c := range consts {
				text += fmt.Sprintf("%s = %q\n", c, scopes[i])
			}
			return []insertion{{decl, text}, {list, strings.Join(consts, ", ") + ", "}}, nil
		})
	})
	if err != nil {
		return err
	}
	if err := p.edit("openapi/openapi.yaml", func(src []byte) ([]byte, error) { return addScopes(src, scopes) }); err != nil {
		return err
	}
	return p.edit("server/idempotency_test.go", func(src []byte) ([]byte, error) {
		return editGo(src, func(fset *token.FileSet, f *ast.File) ([]insertion, error) {
			at, err := sortedStringAt(fset, f, "TestIdempotentRoutes", "want", strings.ToLower("create"+r.Type()))
			return []insertion{at}, err
		})
	})
}

// fileWith returns the first Go file (tests aside) in dir holding text.
func fileWith(root, dir string, text []byte) (string, error) {
	files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
	if err != nil {
		return "", err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f) //nolint:gosec // a source file of the checkout
		if err != nil {
			return "", err
		}
		if bytes.Contains(src, text) {
			return filepath.Join(dir, filepath.Base(f)), nil
		}
	}
	return "", fmt.Errorf("no file of %s holds %q", dir, text)
}
