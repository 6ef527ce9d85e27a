package scaffold

import (
	"fmt"
	"slices"
	"strings"
)

// FieldTypes are the types a field of a generated resource may have.
var FieldTypes = []string{"string", "text", "int", "bool", "time", "uuid", "json"}

// Field is one field of a generated resource: a column, a property of its schemas and a
// field of its domain type.
type Field struct {
	Name string // snake_case: the column and the JSON property
	Type string // one of FieldTypes
}

// ParseField reads "name:type".
func ParseField(s string) (Field, error) {
	name, typ, ok := strings.Cut(s, ":")
	if !ok {
		return Field{}, fmt.Errorf("field %q: write name:type, e.g. size:int (types: %s)", s, strings.Join(FieldTypes, ", "))
	}
	f := Field{Name: name, Type: typ}
	if err := checkIdentifier("field name", name, 63); err != nil {
		return Field{}, err
	}
	if slices.Contains(builtinColumns, name) {
		return Field{}, fmt.Errorf("field %q: every resource has it already (%s)", name, strings.Join(builtinColumns, ", "))
	}
	if !slices.Contains(FieldTypes, typ) {
		return Field{}, fmt.Errorf("field %q: unknown type %q (types: %s)", name, typ, strings.Join(FieldTypes, ", "))
	}
	return f, nil
}

// GoName is the field's name in the domain and sqlc types (OwnerID).
func (f Field) GoName() string { return camel(f.Name) }

// APIName is the field's name in the generated API types (OwnerId).
func (f Field) APIName() string { return apiCamel(f.Name) }

// SQLType is the column's type.
func (f Field) SQLType() string {
	return map[string]string{"string": "text", "text": "text", "int": "bigint", "bool": "boolean", "time": "timestamptz", "uuid": "uuid", "json": "jsonb"}[f.Type]
}

// Check is the column's CHECK constraint, if any: the spec's bound, kept by the database too.
func (f Field) Check() string {
	switch f.Type {
	case "string":
		return fmt.Sprintf(" CHECK (char_length(%s) <= %d)", f.Name, stringMax)
	case "text":
		return fmt.Sprintf(" CHECK (char_length(%s) <= %d)", f.Name, textMax)
	}
	return ""
}

// The bounds of string and text fields.
const (
	stringMax = 200
	textMax   = 10000
)

// Schema is the field's schema in the spec, indented for a property.
func (f Field) Schema(indent string) string {
	lines := map[string][]string{
		"string": {"type: string", fmt.Sprintf("maxLength: %d", stringMax)},
		"text":   {"type: string", fmt.Sprintf("maxLength: %d", textMax)},
		"int":    {"type: integer", "format: int64"},
		"bool":   {"type: boolean"},
		"time":   {`$ref: "#/components/schemas/Timestamp"`},
		"uuid":   {"type: string", "format: uuid"},
		"json":   {"description: Any JSON value."},
	}[f.Type]
	return indent + strings.Join(lines, "\n"+indent)
}

// GoType is the field's type in the domain.
func (f Field) GoType() string {
	return map[string]string{"string": "string", "text": "string", "int": "int64", "bool": "bool", "time": "time.Time", "uuid": "uuid.UUID", "json": "json.RawMessage"}[f.Type]
}

// InputType is the field's type in the domain's input (json: any JSON value, encoded by the domain).
func (f Field) InputType() string {
	if f.Type == "json" {
		return "any"
	}
	return f.GoType()
}

// PatchType is the field's type in the domain's patch: nil leaves it as it is. (A json
// field's nil is absent: the spec refuses a JSON null.)
func (f Field) PatchType() string {
	if f.Type == "json" {
		return "any"
	}
	return "*" + f.InputType()
}

// GoPatchSample is Sample(n) as a Go expression of PatchType.
func (f Field) GoPatchSample(n int) string {
	if f.Type == "json" {
		return f.GoSample(n)
	}
	return fmt.Sprintf("ptr[%s](%s)", f.InputType(), f.GoSample(n))
}

// Nullable is the update query's parameter for an optional value p (a pointer to InputType).
func (f Field) Nullable(p string) string {
	switch f.Type {
	case "string", "text":
		return fmt.Sprintf("pgtype.Text{String: value(%s), Valid: %s != nil}", p, p)
	case "int":
		return fmt.Sprintf("pgtype.Int8{Int64: value(%s), Valid: %s != nil}", p, p)
	case "bool":
		return fmt.Sprintf("pgtype.Bool{Bool: value(%s), Valid: %s != nil}", p, p)
	case "uuid":
		return fmt.Sprintf("store.NullUUID(%s)", p)
	}
	return p // time: *time.Time; json: the encoded value, nil when absent
}

// Sample is a JSON value of the field's type; n picks one of two different ones.
func (f Field) Sample(n int) string {
	return map[string][2]string{
		"string": {`"first ` + f.Name + `"`, `"second ` + f.Name + `"`},
		"text":   {`"A longer text, with a line break.\nSecond line."`, `"Changed."`},
		"int":    {"7", "8"},
		"bool":   {"true", "false"},
		"time":   {`"2026-01-02T03:04:05Z"`, `"2026-02-03T04:05:06Z"`},
		"uuid":   {`"0190f5d6-0000-7000-8000-000000000001"`, `"0190f5d6-0000-7000-8000-000000000002"`},
		"json":   {`{"k":"v","n":[1,2]}`, `[true,null]`},
	}[f.Type][n]
}

// GoSample is Sample(n) as a Go expression of InputType, for the domain's tests.
func (f Field) GoSample(n int) string {
	s := f.Sample(n)
	switch f.Type {
	case "time":
		return fmt.Sprintf("mustTime(%s)", s)
	case "uuid":
		return fmt.Sprintf("uuid.MustParse(%s)", s)
	case "json":
		return fmt.Sprintf("json.RawMessage(%q)", s)
	case "text":
		return fmt.Sprintf("%q", strings.ReplaceAll(s[1:len(s)-1], `\n`, "\n"))
	}
	return s
}
