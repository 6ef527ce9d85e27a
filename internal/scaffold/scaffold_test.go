package scaffold

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// root is the checkout these tests run in.
const root = "../.."

func TestParseField(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in, err string
	}{
		{"OK", "due_at:time", ""},
		{"OKEveryType", "meta:json", ""},
		{"ErrNoType", "size", "write name:type"},
		{"ErrUnknownType", "size:float", `unknown type "float"`},
		{"ErrUpperCase", "Size:int", "lower-case"},
		{"ErrDoubleUnderscore", "a__b:int", "single underscores"},
		{"ErrSQLReserved", "order:int", "SQL reserved word"},
		{"ErrGoKeyword", "func:string", "Go keyword"},
		{"ErrBuiltinColumn", "created_at:time", "every resource has it already"},
		{"ErrTooLong", strings.Repeat("a", 64) + ":int", "at most 63"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := ParseField(c.in)
			if c.err == "" {
				if err != nil || f.Name+":"+f.Type != c.in {
					t.Fatalf("%+v %v", f, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want one saying %q", err, c.err)
			}
		})
	}
}

func TestResourceValidate(t *testing.T) {
	t.Parallel()
	name := []Field{{Name: "name", Type: "string"}}
	for _, c := range []struct {
		name string
		r    Resource
		err  string
	}{
		{"OK", Resource{Name: "shipping_label", Fields: name}, ""},
		{"ErrSQLReserved", Resource{Name: "order", Fields: name}, "SQL reserved word"},
		{"ErrPredeclared", Resource{Name: "string", Fields: name}, "shadow"},
		{"ErrImported", Resource{Name: "time", Fields: name}, "shadow"},
		{"ErrNoFields", Resource{Name: "widget"}, "at least one field"},
		{"ErrFieldTwice", Resource{Name: "widget", Fields: append(name, name...)}, "given twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.r.Validate()
			if (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	r := Resource{Name: "shipping_label"}
	got := []string{r.Pkg(), r.Type(), r.Table(), r.PluralType(), r.PluralVar(), r.Path(), r.Tag(), plural("box"), plural("category"), plural("day"), camel("owner_id")}
	want := []string{"shippinglabel", "ShippingLabel", "shipping_labels", "ShippingLabels", "shippingLabels", "/v1/shipping-labels", "shipping-labels", "boxes", "categories", "days", "OwnerID"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("names %v, want %v", got, want)
	}
}

// TestMergeSpecLeavesTheRestAsItWas: the resource's blocks land in the spec's tags, paths
// and schemas, and taking them out again gives the spec back byte for byte.
func TestMergeSpecLeavesTheRestAsItWas(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join(root, "openapi/openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range []bool{true, false} {
		r := Resource{Name: "widget", OrgScoped: org, Fields: []Field{{"name", "string"}, {"size", "int"}, {"meta", "json"}}}
		merged, err := r.mergeSpec(src)
		if err != nil {
			t.Fatal(err)
		}
		rest := string(merged)
		for _, tmpl := range []string{"resource/tag.yaml.tmpl", "resource/paths.yaml.tmpl", "resource/schemas.yaml.tmpl"} {
			block, err := render(tmpl, r)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(rest, string(block)) {
				t.Fatalf("%s is not in the merged spec", tmpl)
			}
			rest = strings.Replace(rest, string(block), "", 1)
		}
		if rest != string(src) {
			t.Fatal("the merged spec without the resource's blocks differs from the spec")
		}
		var doc struct {
			Tags []struct {
				Name string `yaml:"name"`
			} `yaml:"tags"`
			Paths      map[string]map[string]any `yaml:"paths"`
			Components struct {
				Schemas map[string]any `yaml:"schemas"`
			} `yaml:"components"`
		}
		if err := yaml.Unmarshal(merged, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Tags[len(doc.Tags)-1].Name != "widgets" || doc.Paths["/v1/widgets/{id}"]["patch"] == nil || doc.Components.Schemas["UpdateWidgetRequest"] == nil {
			t.Fatalf("merged: last tag %v, paths %v", doc.Tags[len(doc.Tags)-1], doc.Paths["/v1/widgets/{id}"])
		}
		if _, err := r.mergeSpec(merged); err == nil || !strings.Contains(err.Error(), "already") {
			t.Fatalf("merging twice: %v", err)
		}
	}
}

// TestPlanResource plans a resource in this checkout (writing nothing): its files, and
// the wiring inserted into the server, cmd/kiln and the server tests' harness.
func TestPlanResource(t *testing.T) {
	t.Parallel()
	p, err := PlanResource(root, Resource{Name: "widget", OrgScoped: true, Fields: []Field{{"name", "string"}}})
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]string{}
	for _, c := range p.Changes {
		changes[c.Path] = string(c.Content)
	}
	for path, want := range map[string]string{
		"server/server.go":          "Widgets *widget.Service\n}",
		"cmd/kiln/commands.go":      "Widgets: widget.New(store.New(d.pool), time.Now),",
		"server/harness_test.go":    "d.Widgets = widget.New(st, time.Now)\n\tsrv, err := New(d)",
		"internal/widget/widget.go": "func (s *Service) List(ctx context.Context, org uuid.UUID, limit int, after *uuid.UUID) ([]Widget, error)",
		"queries/widgets.sql":       "-- name: ListWidgets :many",
		"server/widgets.go":         "func (s *Server) UpdateWidget(",
		// The scopes, in the catalog and the spec, and the create among the idempotent routes.
		"internal/auth/apikey/scopes.go": "ScopeWidgetRead, ScopeWidgetWrite, ScopeAdmin}",
		"openapi/openapi.yaml":           `enum: [chat, "kb:read", "kb:write", jobs, "billing:read", "widget:read", "widget:write", admin]`,
		"server/idempotency_test.go":     `"createwechatpaypayment", "createwidget", "exportme"`,
	} {
		if !strings.Contains(changes[path], want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
	for _, want := range []string{`x-kiln-scope: "widget:read"`, `x-kiln-scope: "widget:write"`, `$ref: "#/components/parameters/IdempotencyKey"`} {
		if !strings.Contains(changes["openapi/openapi.yaml"], want) {
			t.Errorf("the spec lacks %q", want)
		}
	}
	for _, c := range []struct {
		name string
		r    Resource
		err  string
	}{
		{"ErrTableExists", Resource{Name: "prompt", Fields: []Field{{"name", "string"}}}, "table prompts already"},
		{"ErrPackageExists", Resource{Name: "jobs", Fields: []Field{{"name", "string"}}}, "exists already"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := PlanResource(root, c.r); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
	if _, err := PlanResource(t.TempDir(), Resource{Name: "widget", Fields: []Field{{"name", "string"}}}); err == nil || !strings.Contains(err.Error(), "not the top of a Kiln checkout") {
		t.Fatalf("outside a checkout: %v", err)
	}
}

// TestAddScopes: the scopes go into the Scope enum before admin, and nothing else changes.
func TestAddScopes(t *testing.T) {
	t.Parallel()
	src := []byte("components:\n  schemas:\n    Scope:\n      type: string\n      enum: [chat, \"kb:read\", admin]\n    Other: {}\n")
	got, err := addScopes(src, []string{"widget:read", "widget:write"})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(string(src), "admin]", `"widget:read", "widget:write", admin]`, 1)
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := addScopes(got, []string{"widget:read"}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("adding twice: %v", err)
	}
	if _, err := addScopes([]byte("components: {}\n"), []string{"widget:read"}); err == nil {
		t.Fatal("a spec without a Scope enum: no error")
	}
}

func TestPlanJobAndProvider(t *testing.T) {
	t.Parallel()
	job, err := PlanJob(root, "report_export")
	if err != nil {
		t.Fatal(err)
	}
	provider, err := PlanProvider(root, "acme")
	if err != nil {
		t.Fatal(err)
	}
	changes := map[string]string{}
	for _, c := range append(job.Changes, provider.Changes...) {
		changes[c.Path] = string(c.Content)
	}
	for path, want := range map[string]string{
		"cmd/kiln/jobs.go":                   "worker.RegisterReportExport(reg)\n\tregisterTestKinds(reg, st)",
		"worker/report_export.go":            `var KindReportExport = jobs.Kind{Name: "report_export"`,
		"cmd/kiln/llm.go":                    "case acme.Type:\n\t\treturn acme.New(cfg, client)\n\t}",
		"internal/platform/config/config.go": `"dev", "acme"}`,
		"internal/llm/acme/acme.go":          "var _ llm.Provider = (*Provider)(nil)",
	} {
		if !strings.Contains(changes[path], want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
	if _, err := PlanProvider(root, "ollama"); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("a provider that exists: %v", err)
	}
}
