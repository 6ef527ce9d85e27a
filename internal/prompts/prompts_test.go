package prompts_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

type bundle struct {
	st  *store.Store
	svc *prompts.Service
	org uuid.UUID
}

func setup(t *testing.T) *bundle {
	t.Helper()
	st := storetest.New(t)
	return &bundle{st: st, svc: prompts.New(st, time.Now), org: storetest.Org(t, st)}
}

func draft(content string, vars ...prompts.Variable) prompts.Draft {
	return prompts.Draft{Messages: []prompts.Message{{Role: "system", Content: content}}, Variables: vars, Note: content}
}

func (b *bundle) create(t *testing.T, name string, d prompts.Draft) prompts.Prompt {
	t.Helper()
	p, _, err := b.svc.Create(t.Context(), b.org, name, "", d, audit.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (b *bundle) addVersion(t *testing.T, name string, d prompts.Draft) prompts.Version {
	t.Helper()
	v, err := b.svc.AddVersion(t.Context(), b.org, name, d, audit.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantCode(t *testing.T, err error, code errs.Code) {
	t.Helper()
	if e, ok := errors.AsType[*errs.Error](err); !ok || e.Code != code {
		t.Fatalf("error %v, want %s", err, code)
	}
}

// pointers checks err is an invalid_request and returns its field pointers, sorted.
func pointers(t *testing.T, err error) []string {
	t.Helper()
	wantCode(t, err, errs.Invalid)
	e, _ := errors.AsType[*errs.Error](err)
	var out []string
	for _, f := range e.Fields {
		out = append(out, f.Pointer)
	}
	slices.Sort(out)
	return out
}

func TestCreateAndVersions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	p := b.create(t, "support.bot", draft("You are {{ tone }}.", prompts.Variable{Name: "tone", Type: prompts.TypeString, Default: "kind"}))
	if p.LatestVersion != 1 || p.Name != "support.bot" {
		t.Fatalf("created %+v", p)
	}

	t.Run("ErrConflictSameName", func(t *testing.T) {
		_, _, err := b.svc.Create(ctx, b.org, "support.bot", "", draft("x"), audit.Actor{})
		wantCode(t, err, errs.Conflict)
	})
	t.Run("ErrInvalidName", func(t *testing.T) {
		_, _, err := b.svc.Create(ctx, b.org, "Bad Name", "", draft("x"), audit.Actor{})
		if got := pointers(t, err); !slices.Equal(got, []string{"/name"}) {
			t.Errorf("pointers %v", got)
		}
	})
	t.Run("ErrInvalidDraft", func(t *testing.T) {
		d := draft("Hi {{who}} {{ missing }}",
			prompts.Variable{Name: "who", Type: prompts.TypeString, Required: true, Default: "x"},
			prompts.Variable{Name: "who", Type: "date"},
			prompts.Variable{Name: "n", Type: prompts.TypeInteger, Default: 1.5})
		_, _, err := b.svc.Create(ctx, b.org, "other", "", d, audit.Actor{})
		want := []string{"/version/messages/0/content", "/version/variables/0/default", "/version/variables/1/name", "/version/variables/1/type", "/version/variables/2/default"}
		if got := pointers(t, err); !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("OKVersionsNumberedAndImmutable", func(t *testing.T) {
		v2 := b.addVersion(t, "support.bot", draft("v2"))
		if v2.Number != 2 {
			t.Fatalf("version %d", v2.Number)
		}
		_, err := b.st.Pool.Exec(ctx, "UPDATE prompt_versions SET note = 'edited' WHERE id = $1", v2.ID)
		if err == nil {
			t.Fatal("a version could be updated")
		}
		got, err := b.svc.GetVersion(ctx, b.org, "support.bot", 1)
		if err != nil || got.Messages[0].Content != "You are {{ tone }}." || got.Variables[0].Default != "kind" {
			t.Fatalf("version 1 %+v %v", got, err)
		}
		list, err := b.svc.ListVersions(ctx, b.org, "support.bot", 10, nil)
		if err != nil || len(list) != 2 || list[0].Number != 2 {
			t.Fatalf("versions %+v %v", list, err)
		}
	})
	t.Run("ErrNotFoundVersion", func(t *testing.T) {
		_, err := b.svc.GetVersion(ctx, b.org, "support.bot", 9)
		wantCode(t, err, errs.NotFound)
	})
	t.Run("ErrNotFoundOtherOrg", func(t *testing.T) {
		other := storetest.Org(t, b.st)
		_, err := b.svc.Get(ctx, other, "support.bot")
		wantCode(t, err, errs.NotFound)
		_, err = b.svc.AddVersion(ctx, other, "support.bot", draft("x"), audit.Actor{})
		wantCode(t, err, errs.NotFound)
		_, err = b.svc.Resolve(ctx, other, prompts.Ref{Name: "support.bot", Label: prompts.Latest}, "")
		wantCode(t, err, errs.NotFound)
	})
}

func TestDeleteHidesAndFreesName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.create(t, "gone", draft("a"))
	if err := b.svc.Delete(ctx, b.org, "gone", audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	_, err := b.svc.Get(ctx, b.org, "gone")
	wantCode(t, err, errs.NotFound)
	wantCode(t, b.svc.Delete(ctx, b.org, "gone", audit.Actor{}), errs.NotFound)
	list, err := b.svc.List(ctx, b.org, 10, nil, false)
	if err != nil || len(list) != 0 {
		t.Fatalf("list %+v %v", list, err)
	}
	b.create(t, "gone", draft("again"))
}

func TestListPages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 5 {
		b.create(t, fmt.Sprintf("p%d", i), draft("x"))
	}
	var names []string
	var after *uuid.UUID
	for {
		page, err := b.svc.List(t.Context(), b.org, 2, after, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			names = append(names, p.Name)
		}
		if len(page) < 2 {
			break
		}
		after = &page[len(page)-1].ID
	}
	if want := []string{"p4", "p3", "p2", "p1", "p0"}; !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
}

func TestLabels(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.create(t, "greet", draft("one"))
	b.addVersion(t, "greet", draft("two"))

	move := func(t *testing.T, target prompts.Target) prompts.Move {
		t.Helper()
		m, err := b.svc.SetLabel(ctx, b.org, "greet", "production", target, audit.Actor{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	render := func(t *testing.T) int {
		t.Helper()
		r, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "greet"}, "ada")
		if err != nil {
			t.Fatal(err)
		}
		return r.Version
	}

	t.Run("ErrNotFoundUnsetLabel", func(t *testing.T) {
		_, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "greet"}, "")
		wantCode(t, err, errs.NotFound)
	})
	t.Run("OKPublishRollbackSplit", func(t *testing.T) {
		if m := move(t, prompts.Target{Version: 1}); m.Kind != prompts.MovePublish || m.Previous != nil {
			t.Errorf("first move %+v", m)
		}
		if m := move(t, prompts.Target{Version: 2}); m.Kind != prompts.MovePublish || m.Previous.Version != 1 || render(t) != 2 {
			t.Errorf("publish %+v", m)
		}
		if m := move(t, prompts.Target{Version: 1}); m.Kind != prompts.MoveRollback || render(t) != 1 {
			t.Errorf("rollback %+v", m)
		}
		m := move(t, prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 1}, {Version: 2, Weight: 1}}})
		if m.Kind != prompts.MoveSplit || m.Label.ExperimentID == nil {
			t.Fatalf("split %+v", m)
		}
		again := move(t, prompts.Target{Split: m.Label.Split})
		if *again.Label.ExperimentID == *m.Label.ExperimentID {
			t.Error("a new split kept the experiment id")
		}
		ended, err := b.svc.Experiment(ctx, b.org, "greet", *m.Label.ExperimentID)
		if err != nil || ended.EndedAt == nil {
			t.Errorf("old experiment %+v %v, want ended", ended, err)
		}
		r, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "greet", Label: prompts.Latest}, "")
		if err != nil || r.Version != 2 || r.ExperimentID != nil {
			t.Errorf("latest %+v %v", r, err)
		}
	})
	t.Run("ErrInvalidTargets", func(t *testing.T) {
		for name, tt := range map[string]struct {
			label  string
			target prompts.Target
			want   string
		}{
			"Latest":         {prompts.Latest, prompts.Target{Version: 1}, "/path/label"},
			"Neither":        {"production", prompts.Target{}, "/version"},
			"MissingVersion": {"production", prompts.Target{Version: 7}, "/version"},
			"OneArm":         {"production", prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 1}}}, "/split"},
			"ZeroWeight":     {"production", prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 0}, {Version: 2, Weight: 1}}}, "/split/0/weight"},
			"SameVersion":    {"production", prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 1}, {Version: 1, Weight: 1}}}, "/split/1/version"},
			"MissingArm":     {"production", prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 1}, {Version: 9, Weight: 1}}}, "/split/1/version"},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := b.svc.SetLabel(ctx, b.org, "greet", tt.label, tt.target, audit.Actor{})
				if got := pointers(t, err); !slices.Contains(got, tt.want) {
					t.Errorf("pointers %v, want %s", got, tt.want)
				}
			})
		}
	})
}

func TestRender(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.create(t, "r", prompts.Draft{
		Messages: []prompts.Message{{Role: "system", Content: "Be {{tone}}; limit {{ n }} words; formal={{formal}}; t={{t}}."}, {Role: "user", Content: "{{question}}"}},
		Variables: []prompts.Variable{
			{Name: "tone", Type: prompts.TypeString, Default: "kind"},
			{Name: "n", Type: prompts.TypeInteger, Required: true},
			{Name: "formal", Type: prompts.TypeBoolean, Default: false},
			{Name: "t", Type: prompts.TypeNumber},
			{Name: "question", Type: prompts.TypeString, Required: true},
		},
		Model: "default",
	})
	ref := func(vars map[string]any) prompts.Ref {
		return prompts.Ref{Name: "r", Version: 1, Variables: vars}
	}
	t.Run("OK", func(t *testing.T) {
		r, err := b.svc.Resolve(ctx, b.org, ref(map[string]any{"n": float64(50), "t": 0.5, "question": "Why?"}), "")
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Messages[0].Text(); got != "Be kind; limit 50 words; formal=false; t=0.5." {
			t.Errorf("system %q", got)
		}
		if got := r.Messages[1].Text(); got != "Why?" || r.Model != "default" || r.Label != "" {
			t.Errorf("rendered %+v", r)
		}
	})
	t.Run("ErrInvalidVariables", func(t *testing.T) {
		_, err := b.svc.Resolve(ctx, b.org, ref(map[string]any{"n": 1.5, "tone": 3.0, "formal": "yes", "extra": "x"}), "")
		want := []string{"/variables/extra", "/variables/formal", "/variables/n", "/variables/question", "/variables/tone"}
		if got := pointers(t, err); !slices.Equal(got, want) {
			t.Errorf("pointers %v, want %v", got, want)
		}
	})
	t.Run("ErrInvalidLabelAndVersion", func(t *testing.T) {
		_, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "r", Label: "production", Version: 1}, "")
		wantCode(t, err, errs.Invalid)
	})
}

// TestSplitSticky is the measure: a 70/30 split over 1,000 simulated users lands
// within ±5 % of its weights, and every user keeps their version.
func TestSplitSticky(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.create(t, "ab", draft("A"))
	b.addVersion(t, "ab", draft("B"))
	if _, err := b.svc.SetLabel(ctx, b.org, "ab", "production", prompts.Target{Split: []prompts.SplitEntry{{Version: 1, Weight: 70}, {Version: 2, Weight: 30}}}, audit.Actor{}); err != nil {
		t.Fatal(err)
	}
	const users = 1000
	first := make(map[string]int, users)
	counts := map[int]int{}
	for i := range users {
		key := fmt.Sprintf("user-%d", i)
		r, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "ab"}, key)
		if err != nil {
			t.Fatal(err)
		}
		first[key] = r.Version
		counts[r.Version]++
	}
	share := float64(counts[1]) / users
	if math.Abs(share-0.7) > 0.05 {
		t.Errorf("version 1 got %.1f %% of users, want 70 ± 5 %%", share*100)
	}
	for i := range users {
		key := fmt.Sprintf("user-%d", i)
		r, err := b.svc.Resolve(ctx, b.org, prompts.Ref{Name: "ab"}, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Version != first[key] {
			t.Fatalf("%s got version %d, then %d", key, first[key], r.Version)
		}
	}
	t.Logf("70/30 split over %d users: %d / %d", users, counts[1], counts[2])
}

func TestDiff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	b.create(t, "d", prompts.Draft{Messages: []prompts.Message{{Role: "system", Content: "a\nb\nc"}}, Note: "first"})
	b.addVersion(t, "d", prompts.Draft{
		Messages: []prompts.Message{{Role: "system", Content: "a\nB\nc\nd"}, {Role: "user", Content: "hi"}},
		Model:    "default", Note: "second",
	})
	d, err := b.svc.Diff(ctx, b.org, "d", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"messages", "model", "note"}; !slices.Equal(d.Changed, want) {
		t.Errorf("changed %v, want %v", d.Changed, want)
	}
	want := []prompts.Line{{Op: "equal", Text: "a"}, {Op: "delete", Text: "b"}, {Op: "insert", Text: "B"}, {Op: "equal", Text: "c"}, {Op: "insert", Text: "d"}}
	if m := d.Messages[0]; m.Change != prompts.MessageChanged || !slices.Equal(m.Lines, want) {
		t.Errorf("message 0 %+v", m)
	}
	if m := d.Messages[1]; m.Change != prompts.MessageAdded || m.FromRole != "" || !slices.Equal(m.Lines, []prompts.Line{{Op: "insert", Text: "hi"}}) {
		t.Errorf("message 1 %+v", m)
	}
	same, err := b.svc.Diff(ctx, b.org, "d", 2, 2)
	if err != nil || len(same.Changed) != 0 {
		t.Errorf("self diff %+v %v", same, err)
	}
	_, err = b.svc.Diff(ctx, b.org, "d", 1, 3)
	wantCode(t, err, errs.NotFound)
}

func TestDiffLines(t *testing.T) {
	t.Parallel()
	for name, tt := range map[string]struct {
		a, b []string
		want string
	}{
		"Empty":   {nil, nil, ""},
		"Insert":  {nil, []string{"x"}, "+x "},
		"Delete":  {[]string{"x"}, nil, "-x "},
		"Replace": {[]string{"a", "b"}, []string{"a", "c"}, "=a -b +c "},
		"Moved":   {[]string{"a", "b", "c"}, []string{"c", "a", "b"}, "+c =a =b -c "},
	} {
		t.Run(name, func(t *testing.T) {
			got := ""
			for _, l := range prompts.DiffLines(tt.a, tt.b) {
				got += map[string]string{"equal": "=", "insert": "+", "delete": "-"}[l.Op] + l.Text + " "
			}
			if got != tt.want {
				t.Errorf("diff %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBucketStable(t *testing.T) {
	t.Parallel()
	exp := uuid.MustParse("01900000-0000-7000-8000-000000000000")
	if a, b := prompts.Bucket(exp, "ada", 100), prompts.Bucket(exp, "ada", 100); a != b || a < 0 || a >= 100 {
		t.Fatalf("buckets %d %d", a, b)
	}
}

func TestDraftModelInCatalog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.svc.KnowModels(func(alias string) bool { return alias == "fast" })
	ctx := t.Context()
	withModel := func(model string) prompts.Draft {
		d := draft("You are terse.")
		d.Model = model
		return d
	}
	if _, _, err := b.svc.Create(ctx, b.org, "terse", "", withModel("fast"), audit.Actor{}); err != nil {
		t.Fatalf("a catalog alias: %v", err)
	}
	for _, tt := range []struct {
		name, pointer string
		add           func() error
	}{
		{"ErrCreate", "/version/model", func() error {
			_, _, err := b.svc.Create(ctx, b.org, "other", "", withModel("nope"), audit.Actor{})
			return err
		}},
		{"ErrAddVersion", "/model", func() error {
			_, err := b.svc.AddVersion(ctx, b.org, "terse", withModel("nope"), audit.Actor{})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.add()
			e, ok := errors.AsType[*errs.Error](err)
			if !ok || e.Code != errs.Invalid || len(e.Fields) != 1 || e.Fields[0].Pointer != tt.pointer {
				t.Fatalf("err = %v, want invalid_request at %s", err, tt.pointer)
			}
		})
	}
}
