package scaffold

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// specBlocks are the blocks a resource adds to the spec, each a run of whole lines
// indented for its section.
type specBlocks struct {
	Tag, Paths, Schemas string
	TagName             string
	PathKeys            []string
	SchemaKeys          []string
}

// specIndex is what the generator reads of the spec to refuse a name that is taken.
type specIndex struct {
	Tags []struct {
		Name string `yaml:"name"`
	} `yaml:"tags"`
	Paths      map[string]yaml.Node `yaml:"paths"`
	Components struct {
		Schemas map[string]yaml.Node `yaml:"schemas"`
	} `yaml:"components"`
}

func readSpecIndex(src []byte) (specIndex, error) {
	var idx specIndex
	if err := yaml.Unmarshal(src, &idx); err != nil {
		return idx, fmt.Errorf("parse the spec: %w", err)
	}
	return idx, nil
}

// mergeSpec inserts b's blocks at the ends of the spec's tags, paths and
// components/schemas. The blocks are whole lines: every byte of src stays as it was, so
// removing the blocks gives src back. A tag, path or schema that exists already is an error.
func mergeSpec(src []byte, b specBlocks) ([]byte, error) {
	idx, err := readSpecIndex(src)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(idx.Tags, func(t struct {
		Name string `yaml:"name"`
	}) bool {
		return t.Name == b.TagName
	}) {
		return nil, fmt.Errorf("the spec has a tag %q already", b.TagName)
	}
	for _, k := range b.PathKeys {
		if _, ok := idx.Paths[k]; ok {
			return nil, fmt.Errorf("the spec has the path %s already", k)
		}
	}
	for _, k := range b.SchemaKeys {
		if _, ok := idx.Components.Schemas[k]; ok {
			return nil, fmt.Errorf("the spec has the schema %s already", k)
		}
	}
	lines := strings.SplitAfter(string(src), "\n")
	if !strings.HasSuffix(string(src), "\n") {
		return nil, fmt.Errorf("the spec does not end with a newline")
	}
	tags, err := sectionEnd(lines, "tags:", 0, len(lines))
	if err != nil {
		return nil, err
	}
	paths, err := sectionEnd(lines, "paths:", 0, len(lines))
	if err != nil {
		return nil, err
	}
	components := slices.Index(lines, "components:\n")
	if components < 0 {
		return nil, fmt.Errorf("the spec has no top-level components")
	}
	schemas, err := sectionEnd(lines, "  schemas:", components+1, endOf(lines, components, 0))
	if err != nil {
		return nil, err
	}
	inserts := map[int]string{tags: b.Tag, paths: b.Paths, schemas: b.Schemas}
	if len(inserts) != 3 {
		return nil, fmt.Errorf("the spec's tags, paths and schemas are not apart")
	}
	var out strings.Builder
	for i, l := range lines {
		out.WriteString(inserts[i])
		out.WriteString(l)
	}
	merged := []byte(out.String())
	after, err := readSpecIndex(merged)
	if err != nil {
		return nil, fmt.Errorf("the merged spec: %w", err)
	}
	for _, k := range b.PathKeys {
		if _, ok := after.Paths[k]; !ok {
			return nil, fmt.Errorf("the merged spec lacks the path %s", k)
		}
	}
	for _, k := range b.SchemaKeys {
		if _, ok := after.Components.Schemas[k]; !ok {
			return nil, fmt.Errorf("the merged spec lacks the schema %s", k)
		}
	}
	return merged, nil
}

// sectionEnd finds the line key (e.g. "paths:", "  schemas:") in lines[from:to] and returns
// the index of the line after its last non-blank line: where a block appended to it goes.
func sectionEnd(lines []string, key string, from, to int) (int, error) {
	start := slices.Index(lines[from:to], key+"\n")
	if start < 0 {
		return 0, fmt.Errorf("the spec has no %q section", strings.TrimSpace(key))
	}
	start += from
	return endOf(lines, start, len(key)-len(strings.TrimLeft(key, " "))), nil
}

// endOf returns the index after the last non-blank line of the block that starts at
// lines[start] with the given indentation: the block ends at the next line indented as
// much or less (comments and blank lines aside).
func endOf(lines []string, start, indent int) int {
	end := len(lines)
	for j := start + 1; j < len(lines); j++ {
		l := strings.TrimRight(lines[j], "\n")
		trimmed := strings.TrimLeft(l, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if len(l)-len(trimmed) <= indent {
			end = j
			break
		}
	}
	for end-1 > start && strings.TrimSpace(lines[end-1]) == "" {
		end--
	}
	return end
}

// addScopes adds scopes to the spec's Scope enum, a flow list ([chat, …, admin]), right
// before admin, which stays last as in apikey.Scopes; every other byte stays as it was. A
// scope the enum lists already is an error.
func addScopes(src []byte, scopes []string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("parse the spec: %w", err)
	}
	enum := &doc
	if len(doc.Content) == 1 {
		enum = doc.Content[0]
	}
	for _, key := range []string{"components", "schemas", "Scope", "enum"} {
		enum = mapValue(enum, key)
	}
	if enum == nil || enum.Kind != yaml.SequenceNode || enum.Style&yaml.FlowStyle == 0 {
		return nil, fmt.Errorf("the spec has no components/schemas/Scope/enum written as [a, b, …]")
	}
	var admin *yaml.Node
	for _, n := range enum.Content {
		if slices.Contains(scopes, n.Value) {
			return nil, fmt.Errorf("the spec's Scope enum has %q already", n.Value)
		}
		if n.Value == "admin" {
			admin = n
		}
	}
	lines := strings.SplitAfter(string(src), "\n")
	if admin == nil || admin.Line > len(lines) {
		return nil, fmt.Errorf("the spec's Scope enum lacks admin")
	}
	at := admin.Column - 1
	for _, l := range lines[:admin.Line-1] {
		at += len(l)
	}
	if !strings.HasPrefix(string(src[at:]), "admin") {
		return nil, fmt.Errorf("the spec's Scope enum: admin not found at line %d, column %d", admin.Line, admin.Column)
	}
	var text strings.Builder
	for _, s := range scopes {
		text.WriteString(strconv.Quote(s) + ", ")
	}
	return slices.Concat(src[:at], []byte(text.String()), src[at:]), nil
}

// mapValue is the value of key in the mapping node m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
