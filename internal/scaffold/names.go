package scaffold

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// identifier is a lower-case snake_case name: a Go identifier and an SQL identifier that
// needs no quoting.
var identifier = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// goKeywords and goPredeclared cannot name a package or a field's local variable.
var goKeywords = []string{
	"break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for", "func", "go",
	"goto", "if", "import", "interface", "map", "package", "range", "return", "select", "struct", "switch", "type", "var",
}

var goPredeclared = []string{
	"any", "append", "bool", "byte", "cap", "clear", "close", "comparable", "complex", "complex128", "complex64", "copy",
	"delete", "error", "false", "float32", "float64", "imag", "int", "int16", "int32", "int64", "int8", "iota", "len",
	"make", "max", "min", "new", "nil", "panic", "print", "println", "real", "recover", "rune", "string", "true",
	"uint", "uint16", "uint32", "uint64", "uint8", "uintptr",
}

// importedNames are the packages the generated files import: a resource of one of these
// names would shadow it.
var importedNames = []string{
	"api", "audit", "context", "db", "errors", "errs", "fmt", "http", "json", "pgtype", "server", "store", "storetest",
	"strings", "testing", "time", "uuid", "main",
}

// sqlReserved are PostgreSQL's reserved key words and those that cannot name a column or
// a table unquoted (PostgreSQL documentation, appendix "SQL Key Words").
var sqlReserved = []string{
	"all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization", "binary", "both",
	"case", "cast", "check", "collate", "collation", "column", "concurrently", "constraint", "create", "cross",
	"current_catalog", "current_date", "current_role", "current_schema", "current_time", "current_timestamp",
	"current_user", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for",
	"foreign", "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner", "intersect",
	"into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime", "localtimestamp",
	"natural", "not", "notnull", "null", "offset", "on", "only", "or", "order", "outer", "overlaps", "placing",
	"primary", "references", "returning", "right", "select", "session_user", "similar", "some", "symmetric", "table",
	"tablesample", "then", "to", "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when",
	"where", "window", "with",
}

// builtinColumns are the columns every generated resource has.
var builtinColumns = []string{"id", "org_id", "created_at", "updated_at"}

// checkIdentifier refuses what cannot name a Go identifier, an SQL identifier and a JSON
// property alike.
func checkIdentifier(what, name string, max int) error {
	switch {
	case !identifier.MatchString(name):
		return fmt.Errorf("%s %q: use lower-case letters, digits and single underscores, starting with a letter (e.g. %s)", what, name, example(what))
	case len(name) > max:
		return fmt.Errorf("%s %q: at most %d characters", what, name, max)
	case slices.Contains(goKeywords, name):
		return fmt.Errorf("%s %q is a Go keyword", what, name)
	case slices.Contains(sqlReserved, name):
		return fmt.Errorf("%s %q is an SQL reserved word", what, name)
	}
	return nil
}

func example(what string) string {
	if what == "resource name" {
		return "widget, shipping_label"
	}
	return "name, due_at"
}

// camel is name in CamelCase with sqlc's one initialism: owner_id → OwnerID.
func camel(name string) string {
	var b strings.Builder
	for p := range strings.SplitSeq(name, "_") {
		if p == "id" {
			b.WriteString("ID")
			continue
		}
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}

// apiCamel is name as oapi-codegen names a property's field: owner_id → OwnerId.
func apiCamel(name string) string {
	var b strings.Builder
	for p := range strings.SplitSeq(name, "_") {
		b.WriteString(strings.ToUpper(p[:1]) + p[1:])
	}
	return b.String()
}

// lowerCamel is name in camelCase: shipping_labels → shippingLabels.
func lowerCamel(name string) string {
	c := apiCamel(name)
	return strings.ToLower(c[:1]) + c[1:]
}

// plural is the English plural of a snake_case name, by the regular rules only.
func plural(name string) string {
	switch {
	case strings.HasSuffix(name, "s"), strings.HasSuffix(name, "x"), strings.HasSuffix(name, "z"),
		strings.HasSuffix(name, "ch"), strings.HasSuffix(name, "sh"):
		return name + "es"
	case strings.HasSuffix(name, "y") && len(name) > 1 && !strings.ContainsRune("aeiou", rune(name[len(name)-2])):
		return name[:len(name)-1] + "ies"
	}
	return name + "s"
}
