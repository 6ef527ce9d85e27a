// Package seed applies a seed file: a YAML description of orgs, users, memberships, API
// keys, prompts, feature flags, plans and knowledge-base documents that a development or
// demo database should hold.
// Applying is idempotent: what exists is left as it is, what is missing is created
// through the same domain services the API uses (so every rule and audit event applies),
// and applying the same file twice changes nothing. A dry run reports what would change.
package seed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/kilnhq/kiln/internal/auth/account"
)

// File is a parsed seed file; the YAML keys are the snake_case names of the fields.
type File struct {
	Path  string
	Flags []Flag
	Users []User
	Orgs  []Org
}

// pos is where an element and each of its fields start in the file.
type pos struct {
	line   int
	fields map[string]int
}

// at returns the line of field, or of the element when the field is absent.
func (p pos) at(field string) int {
	if l, ok := p.fields[field]; ok {
		return l
	}
	return p.line
}

// Flag defines a feature flag (created or replaced as given).
type Flag struct {
	pos
	Key            string
	Description    string
	Enabled        bool
	RolloutPercent *int
	StickyBy       string
}

// User is a person; Password is needed only to create them.
type User struct {
	pos
	Email    string
	Name     string
	Password string
	Verified bool
	Flags    []Override
}

// Org is a team org (not a personal one), found by its name among its owner's orgs.
type Org struct {
	pos
	Name    string
	Owner   string
	Members []Member
	APIKeys []APIKey
	Prompts []Prompt
	Flags   []Override
	// Plan, when set, puts the org on that plan of billing.plans (an active subscription).
	Plan           string
	KnowledgeBases []KnowledgeBase
}

// KnowledgeBase is an org's knowledge base, found by name among the org's knowledge bases,
// with documents added through the knowledge-base service (so their ingestion jobs run).
type KnowledgeBase struct {
	pos
	Name           string
	Description    string
	EmbeddingModel string
	Dimensions     int
	Documents      []Document
}

// Document is a document of a knowledge base, found by its external id (its title when
// none is given); a changed text replaces the stored one and is ingested again.
type Document struct {
	pos
	Title      string
	ExternalID string
	MediaType  string
	// Text is the body; File names a file (relative to the seed file) to read it from.
	Text string
	File string
}

// Key is the document's identity within its knowledge base.
func (d Document) Key() string {
	if d.ExternalID != "" {
		return d.ExternalID
	}
	return d.Title
}

// Member is a user of the file who belongs to an org with Role (admin or member).
type Member struct {
	pos
	Email string
	Role  string
}

// APIKey is an org's key, found by name among the org's live keys.
type APIKey struct {
	pos
	Name   string
	Scopes []string
}

// Prompt is an org's prompt with its versions, oldest first, and labels (label → version).
type Prompt struct {
	pos
	Name        string
	Description string
	Versions    []PromptVersion
	Labels      map[string]int
	labelLines  map[string]int
}

// PromptVersion is one version of a prompt.
type PromptVersion struct {
	pos
	Model     string
	Note      string
	Messages  []Message
	Variables []Variable
}

// Variable declares a template variable of a prompt version.
type Variable struct {
	Name        string
	Type        string
	Required    bool
	Default     any
	Description string
}

// Message is one message of a prompt version; Content is a template.
type Message struct {
	Role    string
	Content string
}

// Override forces a flag on or off for the org or user it is listed under.
type Override struct {
	pos
	Key     string
	Enabled bool
}

// Error is a problem in a seed file, located by file, line and field path.
type Error struct {
	Path  string
	Line  int
	Field string // e.g. orgs[0].api_keys[1].name
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.Path, e.Line, e.Field, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Parse reads a seed file. Unknown keys, wrong types, missing required fields and
// duplicates are reported with file, line and field.
func Parse(path string, data []byte) (*File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f := &File{Path: path}
	if len(root.Content) == 0 {
		return f, nil
	}
	p := parser{path: path}
	doc := root.Content[0]
	p.mapping(doc, "", map[string]func(*yaml.Node, string){
		"flags": func(n *yaml.Node, at string) { f.Flags = seq(&p, n, at, p.flag) },
		"users": func(n *yaml.Node, at string) { f.Users = seq(&p, n, at, p.user) },
		"orgs":  func(n *yaml.Node, at string) { f.Orgs = seq(&p, n, at, p.org) },
	})
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	f.check(&p)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return f, nil
}

// parser walks the YAML nodes, collecting every error rather than stopping at the first.
type parser struct {
	path string
	errs []error
}

func (p *parser) fail(line int, field string, format string, args ...any) {
	p.errs = append(p.errs, &Error{Path: p.path, Line: line, Field: field, Err: fmt.Errorf(format, args...)})
}

func join(at, key string) string {
	if at == "" {
		return key
	}
	return at + "." + key
}

// mapping calls fields[key] for each key of n, reporting unknown keys and duplicates.
func (p *parser) mapping(n *yaml.Node, at string, fields map[string]func(*yaml.Node, string)) pos {
	ps := pos{line: n.Line, fields: map[string]int{}}
	if n.Kind != yaml.MappingNode {
		p.fail(n.Line, orRoot(at), "must be a mapping")
		return ps
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := join(at, k.Value)
		fn, ok := fields[k.Value]
		if !ok {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			slices.Sort(known)
			p.fail(k.Line, field, "unknown field (known: %s)", strings.Join(known, ", "))
			continue
		}
		if _, dup := ps.fields[k.Value]; dup {
			p.fail(k.Line, field, "given twice")
			continue
		}
		ps.fields[k.Value] = k.Line
		fn(v, field)
	}
	return ps
}

func orRoot(at string) string {
	if at == "" {
		return "(top level)"
	}
	return at
}

func seq[T any](p *parser, n *yaml.Node, at string, item func(*yaml.Node, string) T) []T {
	if n.Kind != yaml.SequenceNode {
		p.fail(n.Line, at, "must be a list")
		return nil
	}
	out := make([]T, 0, len(n.Content))
	for i, c := range n.Content {
		out = append(out, item(c, fmt.Sprintf("%s[%d]", at, i)))
	}
	return out
}

// scalar decodes a scalar node into v (a *string, *bool, *int…), reporting a wrong type.
func (p *parser) scalar(v any) func(*yaml.Node, string) {
	return func(n *yaml.Node, at string) {
		if n.Kind != yaml.ScalarNode {
			p.fail(n.Line, at, "must be a single value")
			return
		}
		if err := n.Decode(v); err != nil {
			p.fail(n.Line, at, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
}

func (p *parser) strings(v *[]string) func(*yaml.Node, string) {
	return func(n *yaml.Node, at string) {
		*v = seq(p, n, at, func(c *yaml.Node, at string) string {
			var s string
			p.scalar(&s)(c, at)
			return s
		})
	}
}

func (p *parser) flag(n *yaml.Node, at string) Flag {
	var f Flag
	f.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
		"key": p.scalar(&f.Key), "description": p.scalar(&f.Description), "enabled": p.scalar(&f.Enabled),
		"rollout_percent": func(n *yaml.Node, at string) { f.RolloutPercent = new(int); p.scalar(f.RolloutPercent)(n, at) },
		"sticky_by":       p.scalar(&f.StickyBy),
	})
	return f
}

func (p *parser) override(n *yaml.Node, at string) Override {
	var o Override
	o.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){"key": p.scalar(&o.Key), "enabled": p.scalar(&o.Enabled)})
	return o
}

func (p *parser) user(n *yaml.Node, at string) User {
	var u User
	u.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
		"email": p.scalar(&u.Email), "name": p.scalar(&u.Name), "password": p.scalar(&u.Password),
		"verified": p.scalar(&u.Verified),
		"flags":    func(n *yaml.Node, at string) { u.Flags = seq(p, n, at, p.override) },
	})
	return u
}

func (p *parser) org(n *yaml.Node, at string) Org {
	var o Org
	o.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
		"name": p.scalar(&o.Name), "owner": p.scalar(&o.Owner),
		"members": func(n *yaml.Node, at string) {
			o.Members = seq(p, n, at, func(n *yaml.Node, at string) Member {
				var m Member
				m.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){"email": p.scalar(&m.Email), "role": p.scalar(&m.Role)})
				return m
			})
		},
		"api_keys": func(n *yaml.Node, at string) {
			o.APIKeys = seq(p, n, at, func(n *yaml.Node, at string) APIKey {
				var k APIKey
				k.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){"name": p.scalar(&k.Name), "scopes": p.strings(&k.Scopes)})
				return k
			})
		},
		"prompts":         func(n *yaml.Node, at string) { o.Prompts = seq(p, n, at, p.prompt) },
		"flags":           func(n *yaml.Node, at string) { o.Flags = seq(p, n, at, p.override) },
		"plan":            p.scalar(&o.Plan),
		"knowledge_bases": func(n *yaml.Node, at string) { o.KnowledgeBases = seq(p, n, at, p.knowledgeBase) },
	})
	return o
}

func (p *parser) knowledgeBase(n *yaml.Node, at string) KnowledgeBase {
	var kb KnowledgeBase
	kb.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
		"name": p.scalar(&kb.Name), "description": p.scalar(&kb.Description),
		"embedding_model": p.scalar(&kb.EmbeddingModel), "dimensions": p.scalar(&kb.Dimensions),
		"documents": func(n *yaml.Node, at string) {
			kb.Documents = seq(p, n, at, func(n *yaml.Node, at string) Document {
				var d Document
				d.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
					"title": p.scalar(&d.Title), "external_id": p.scalar(&d.ExternalID), "media_type": p.scalar(&d.MediaType),
					"text": p.scalar(&d.Text), "file": p.scalar(&d.File),
				})
				return d
			})
		},
	})
	return kb
}

func (p *parser) prompt(n *yaml.Node, at string) Prompt {
	var pr Prompt
	pr.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
		"name": p.scalar(&pr.Name), "description": p.scalar(&pr.Description),
		"versions": func(n *yaml.Node, at string) {
			pr.Versions = seq(p, n, at, func(n *yaml.Node, at string) PromptVersion {
				var v PromptVersion
				v.pos = p.mapping(n, at, map[string]func(*yaml.Node, string){
					"model": p.scalar(&v.Model), "note": p.scalar(&v.Note),
					"variables": func(n *yaml.Node, at string) {
						v.Variables = seq(p, n, at, func(n *yaml.Node, at string) Variable {
							var va Variable
							p.mapping(n, at, map[string]func(*yaml.Node, string){
								"name": p.scalar(&va.Name), "type": p.scalar(&va.Type), "required": p.scalar(&va.Required),
								"description": p.scalar(&va.Description),
								"default": func(n *yaml.Node, at string) {
									if err := n.Decode(&va.Default); err != nil {
										p.fail(n.Line, at, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
									}
								},
							})
							return va
						})
					},
					"messages": func(n *yaml.Node, at string) {
						v.Messages = seq(p, n, at, func(n *yaml.Node, at string) Message {
							var m Message
							p.mapping(n, at, map[string]func(*yaml.Node, string){"role": p.scalar(&m.Role), "content": p.scalar(&m.Content)})
							return m
						})
					},
				})
				return v
			})
		},
		"labels": func(n *yaml.Node, at string) {
			if n.Kind != yaml.MappingNode {
				p.fail(n.Line, at, "must be a mapping of label to version number")
				return
			}
			pr.Labels, pr.labelLines = map[string]int{}, map[string]int{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				var version int
				p.scalar(&version)(v, join(at, k.Value))
				pr.Labels[k.Value], pr.labelLines[k.Value] = version, k.Line
			}
		},
	})
	return pr
}

// check reports what the domain cannot: required fields, duplicates and references
// between the file's own entries.
func (f *File) check(p *parser) {
	required := func(ps pos, at, field, value string) {
		if strings.TrimSpace(value) == "" {
			p.fail(ps.at(field), join(at, field), "is required")
		}
	}
	seen := map[string]int{}
	unique := func(kind, key string, line int, field string) {
		if prev, dup := seen[kind+"\x00"+key]; dup {
			p.fail(line, field, "%q is already given on line %d", key, prev)
			return
		}
		seen[kind+"\x00"+key] = line
	}
	for i, fl := range f.Flags {
		at := fmt.Sprintf("flags[%d]", i)
		required(fl.pos, at, "key", fl.Key)
		unique("flag", fl.Key, fl.at("key"), join(at, "key"))
	}
	users := map[string]bool{}
	for i, u := range f.Users {
		at := fmt.Sprintf("users[%d]", i)
		required(u.pos, at, "email", u.Email)
		unique("user", account.NormaliseEmail(u.Email), u.at("email"), join(at, "email"))
		users[account.NormaliseEmail(u.Email)] = true
		for j, o := range u.Flags {
			required(o.pos, fmt.Sprintf("%s.flags[%d]", at, j), "key", o.Key)
		}
	}
	known := func(ps pos, at, field, email string) {
		if email != "" && !users[account.NormaliseEmail(email)] {
			p.fail(ps.at(field), join(at, field), "%q is not one of the file's users", email)
		}
	}
	for i, o := range f.Orgs {
		at := fmt.Sprintf("orgs[%d]", i)
		required(o.pos, at, "name", o.Name)
		required(o.pos, at, "owner", o.Owner)
		known(o.pos, at, "owner", o.Owner)
		unique("org", account.NormaliseEmail(o.Owner)+"\x00"+o.Name, o.at("name"), join(at, "name"))
		for j, m := range o.Members {
			mat := fmt.Sprintf("%s.members[%d]", at, j)
			required(m.pos, mat, "email", m.Email)
			required(m.pos, mat, "role", m.Role)
			known(m.pos, mat, "email", m.Email)
		}
		for j, k := range o.APIKeys {
			kat := fmt.Sprintf("%s.api_keys[%d]", at, j)
			required(k.pos, kat, "name", k.Name)
			unique("key"+at, k.Name, k.at("name"), join(kat, "name"))
		}
		for j, pr := range o.Prompts {
			pat := fmt.Sprintf("%s.prompts[%d]", at, j)
			required(pr.pos, pat, "name", pr.Name)
			unique("prompt"+at, pr.Name, pr.at("name"), join(pat, "name"))
			if len(pr.Versions) == 0 {
				p.fail(pr.at("versions"), join(pat, "versions"), "needs at least one version")
			}
			for label, v := range pr.Labels {
				if v < 1 || v > len(pr.Versions) {
					p.fail(pr.labelLines[label], fmt.Sprintf("%s.labels.%s", pat, label), "version %d is not among the %d versions listed", v, len(pr.Versions))
				}
			}
		}
		for j, ov := range o.Flags {
			required(ov.pos, fmt.Sprintf("%s.flags[%d]", at, j), "key", ov.Key)
		}
		for j, kb := range o.KnowledgeBases {
			kat := fmt.Sprintf("%s.knowledge_bases[%d]", at, j)
			required(kb.pos, kat, "name", kb.Name)
			unique("kb"+at, kb.Name, kb.at("name"), join(kat, "name"))
			for k := range kb.Documents {
				d := &kb.Documents[k]
				dat := fmt.Sprintf("%s.documents[%d]", kat, k)
				required(d.pos, dat, "title", d.Title)
				unique("doc"+kat, d.Key(), d.at("title"), join(dat, "external_id"))
				p.documentBody(d, dat)
			}
		}
	}
}

// documentBody reads a document's file into its text: exactly one of the two is given.
func (p *parser) documentBody(d *Document, at string) {
	switch {
	case d.Text != "" && d.File != "":
		p.fail(d.at("file"), join(at, "file"), "give text or file, not both")
	case d.File != "":
		path := d.File
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(p.path), path)
		}
		body, err := os.ReadFile(path) //nolint:gosec // a file the operator's own seed file names
		if err != nil {
			p.fail(d.at("file"), join(at, "file"), "%v", err)
			return
		}
		d.Text = string(body)
	case strings.TrimSpace(d.Text) == "":
		p.fail(d.at("text"), join(at, "text"), "is required (or file)")
	}
}
