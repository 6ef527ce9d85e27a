package seed_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/seed"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func services(t *testing.T) seed.Services {
	t.Helper()
	st := storetest.New(t)
	rdb, ks := storetest.Redis(t)
	log := slog.New(slog.DiscardHandler)
	clock := storetest.NewClock()
	return seed.Services{
		// The cheapest argon2id parameters: the test is about the seed, not hashing cost.
		Accounts: account.New(st, account.Config{Argon2Memory: 8 * 1024, Argon2Time: 1, Argon2Threads: 1}, log, clock.Now),
		Members:  members.New(st, clock.Now),
		Keys:     apikey.New(st, rdb, ks, apikey.Config{Env: "test", CacheTTL: time.Minute}, log, clock.Now),
		Prompts:  prompts.New(st, clock.Now),
		Flags:    flags.New(st, rdb, ks, nil, time.Minute, log, clock.Now),
		Billing: billing.New(st, billing.NewCatalog([]billing.Plan{{ID: "free", Name: "Free"}, {ID: "team", Name: "Team"}}, "free"),
			billing.NewQuota(rdb, ks, time.Minute, clock.Now), time.Minute, 7*24*time.Hour, clock.Now),
		Knowledge: rag.New(rag.DefaultConfig(), rag.Deps{Store: st, Embedder: rag.GatewayEmbedder{}, Jobs: jobs.NewRegistry(),
			HasModel: func(string) bool { return true }, Log: log, Now: clock.Now}),
		Now: clock.Now,
	}
}

const file = `flags:
  - key: beta.search
    description: the new search
    rollout_percent: 0
users:
  - email: Ada@Example.com
    name: Ada
    password: correct-horse-battery
    verified: true
    flags:
      - {key: beta.search, enabled: true}
  - email: bob@example.com
    name: Bob
    password: another-long-password
orgs:
  - name: Acme
    owner: ada@example.com
    members:
      - {email: bob@example.com, role: admin}
    api_keys:
      - name: backend
        scopes: [chat]
    prompts:
      - name: support-reply
        description: answers support mail
        versions:
          - messages: [{role: system, content: "You help {{product}} users."}]
            variables: [{name: product, type: string, required: true}]
          - messages: [{role: system, content: "You help {{product}} users, briefly."}]
            variables: [{name: product, type: string, default: Kiln}]
            note: shorter
        labels:
          production: 1
          staging: 2
    flags:
      - {key: beta.search, enabled: false}
`

func apply(t *testing.T, s seed.Services, src string, dry bool) (seed.Result, string, error) {
	t.Helper()
	f, err := seed.Parse("demo.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var out bytes.Buffer
	res, err := seed.Apply(context.Background(), s, f, dry, &out)
	return res, out.String(), err
}

func TestApply(t *testing.T) {
	t.Parallel()
	s := services(t)
	ctx := context.Background()

	// A dry run on an empty database lists everything and changes nothing.
	res, out, err := apply(t, s, file, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Created != 11 || res.Updated != 0 || !strings.Contains(out, "would create api key \"backend\" of org Acme") {
		t.Fatalf("dry run = %+v\n%s", res, out)
	}
	if _, err := s.Accounts.UserByEmail(ctx, "ada@example.com"); err == nil {
		t.Fatal("the dry run created a user")
	}

	res, out, err = apply(t, s, file, false)
	if err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if res.Created != 11 || res.Updated != 0 || res.Unchanged != 0 {
		t.Fatalf("apply = %+v\n%s", res, out)
	}
	secret := regexp.MustCompile(`kiln_test_\S+`).FindString(out)
	if secret == "" {
		t.Fatalf("no key secret printed:\n%s", out)
	}
	key, err := s.Keys.Authenticate(ctx, secret)
	if err != nil || len(key.Scopes) != 1 || key.Scopes[0] != "chat" {
		t.Fatalf("the printed secret does not authenticate: %+v, %v", key, err)
	}
	ada, err := s.Accounts.UserByEmail(ctx, "ada@example.com")
	if err != nil || !ada.EmailVerified || ada.Name != "Ada" {
		t.Fatalf("ada = %+v, %v", ada, err)
	}
	if sessions, err := s.Accounts.Sessions(ctx, ada.ID, 100, nil); err != nil || len(sessions) != 0 {
		t.Fatalf("seeded user has sessions %+v, %v; want none", sessions, err)
	}
	if _, _, _, err := s.Accounts.Login(ctx, "ada@example.com", "correct-horse-battery", account.Client{}); err != nil {
		t.Fatalf("seeded user cannot log in: %v", err)
	}
	ms, err := s.Accounts.Memberships(ctx, ada.ID)
	if err != nil || len(ms) != 2 || ms[1].Org.Name != "Acme" || ms[1].Role != account.RoleOwner {
		t.Fatalf("ada's memberships = %+v, %v", ms, err)
	}
	acme := ms[1].Org.ID
	bob, _ := s.Accounts.UserByEmail(ctx, "bob@example.com")
	if role, err := s.Accounts.Role(ctx, bob.ID, acme); err != nil || role != account.RoleAdmin {
		t.Fatalf("bob's role = %q, %v", role, err)
	}
	p, err := s.Prompts.Get(ctx, acme, "support-reply")
	if err != nil || p.LatestVersion != 2 || len(p.Labels) != 2 {
		t.Fatalf("prompt = %+v, %v", p, err)
	}
	for _, l := range p.Labels {
		if want := map[string]int{"production": 1, "staging": 2}[l.Name]; l.Version != want {
			t.Errorf("label %s → %d, want %d", l.Name, l.Version, want)
		}
	}
	if !s.Flags.Enabled(ctx, "beta.search", flags.Subject{UserID: ada.ID}) || s.Flags.Enabled(ctx, "beta.search", flags.Subject{OrgID: acme, UserID: bob.ID}) {
		t.Error("flag overrides not in force")
	}

	// Applying again changes nothing and shows no secret.
	res, out, err = apply(t, s, file, false)
	if err != nil || res.Created != 0 || res.Updated != 0 || res.Unchanged != 11 {
		t.Fatalf("second apply = %+v, %v\n%s", res, err, out)
	}
	if strings.Contains(out, "kiln_test_") && !strings.Contains(out, "its secret was shown") || strings.Contains(out, secret) {
		t.Fatalf("second apply shows a secret:\n%s", out)
	}
	keys, _ := s.Keys.List(ctx, acme, 10, nil)
	if len(keys) != 1 {
		t.Fatalf("keys after two applies = %d, want 1", len(keys))
	}

	// A grown file adds what is new: a third version, a moved label, a changed role.
	grown := strings.Replace(file, "          staging: 2\n", "          staging: 3\n", 1)
	grown = strings.Replace(grown, "            note: shorter\n", "            note: shorter\n          - messages: [{role: system, content: \"v3\"}]\n", 1)
	grown = strings.Replace(grown, "role: admin", "role: member", 1)
	res, out, err = apply(t, s, grown, true)
	if err != nil || res.Updated != 3 || res.Created != 0 {
		t.Fatalf("dry run of the grown file = %+v, %v\n%s", res, err, out)
	}
	if res, out, err = apply(t, s, grown, false); err != nil || res.Updated != 3 {
		t.Fatalf("apply of the grown file = %+v, %v\n%s", res, err, out)
	}
	if p, _ := s.Prompts.Get(ctx, acme, "support-reply"); p.LatestVersion != 3 {
		t.Fatalf("latest version = %d, want 3", p.LatestVersion)
	}
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()
	s := services(t)
	// A domain rule broken by the file is reported at the line of the field it names.
	src := "users:\n  - email: ada@example.com\n    name: Ada\n    password: short\n"
	_, _, err := apply(t, s, src, false)
	var e *seed.Error
	if !errors.As(err, &e) || e.Line != 4 || e.Field != "users[0].password" || e.Path != "demo.yaml" {
		t.Fatalf("err = %v, want demo.yaml:4 users[0].password", err)
	}
	// A new user without a password.
	_, _, err = apply(t, s, "users:\n  - email: bob@example.com\n", true)
	if !errors.As(err, &e) || e.Line != 2 || !strings.Contains(err.Error(), "users[0]") {
		t.Fatalf("err = %v, want demo.yaml:2 users[0]", err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src string
		want      []string
	}{
		{"ErrUnknownField", "users:\n  - email: a@example.com\n    pasword: x\n", []string{"demo.yaml:3: users[0].pasword: unknown field (known: email, flags, name, password, verified)"}},
		{"ErrWrongType", "orgs:\n  - name: A\n    owner: a@example.com\n    prompts: nope\nusers: [{email: a@example.com}]\n", []string{"demo.yaml:4: orgs[0].prompts: must be a list"}},
		{"ErrNotBool", "users:\n  - email: a@example.com\n    verified: maybe\n", []string{"demo.yaml:3: users[0].verified:"}},
		{"ErrMissing", "orgs:\n  - owner: a@example.com\nusers: [{email: a@example.com}]\n", []string{"demo.yaml:2: orgs[0].name: is required"}},
		{"ErrUnknownOwner", "orgs:\n  - name: A\n    owner: who@example.com\n", []string{`demo.yaml:3: orgs[0].owner: "who@example.com" is not one of the file's users`}},
		{"ErrDuplicate", "users:\n  - email: a@example.com\n  - email: A@example.com\n", []string{`demo.yaml:3: users[1].email: "a@example.com" is already given on line 2`}},
		{"ErrLabelVersion", "users: [{email: a@example.com}]\norgs:\n  - name: A\n    owner: a@example.com\n    prompts:\n      - name: p\n        versions: [{messages: [{role: system, content: x}]}]\n        labels:\n          production: 2\n",
			[]string{"demo.yaml:9: orgs[0].prompts[0].labels.production: version 2 is not among the 1 versions listed"}},
		{"ErrSeveral", "users:\n  - email: a@example.com\n    x: 1\n    y: 2\n", []string{"demo.yaml:3: users[0].x", "demo.yaml:4: users[0].y"}},
		{"ErrSyntax", "users: [\n", []string{"demo.yaml: yaml: line"}},
		{"ErrDocumentBody", "users: [{email: a@example.com}]\norgs:\n  - name: A\n    owner: a@example.com\n    knowledge_bases:\n      - name: K\n        documents:\n          - title: T\n            file: nope.md\n",
			[]string{"demo.yaml:9: orgs[0].knowledge_bases[0].documents[0].file: open nope.md"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := seed.Parse("demo.yaml", []byte(tt.src))
			if err == nil {
				t.Fatal("Parse() = nil error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error:\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

// The demo seed that `make run SEED=demo` loads parses.
func TestDemoSeedParses(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../deploy/seed/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Parse("deploy/seed/demo.yaml", data); err != nil {
		t.Fatal(err)
	}
}

const kbFile = `users:
  - {email: ada@example.com, password: correct-horse-battery}
orgs:
  - name: Acme
    owner: ada@example.com
    plan: team
    knowledge_bases:
      - name: Handbook
        description: the staff handbook
        documents:
          - title: Holidays
            text: Everyone gets 25 days.
          - title: Expenses
            external_id: expenses
            media_type: text/markdown
            text: "# Expenses\n\nKeep the receipts."
`

func TestApplyPlansAndKnowledgeBases(t *testing.T) {
	t.Parallel()
	s := services(t)
	ctx := context.Background()

	res, out, err := apply(t, s, kbFile, true)
	if err != nil || res.Created != 6 {
		t.Fatalf("dry run = %+v, %v\n%s", res, err, out)
	}
	for _, want := range []string{"would create plan of org Acme: team", "would create knowledge base Handbook of org Acme: 2 documents",
		`would create document "Holidays" of knowledge base Handbook`, `would create document "expenses" of knowledge base Handbook`} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}

	if res, out, err = apply(t, s, kbFile, false); err != nil || res.Created != 6 {
		t.Fatalf("apply = %+v, %v\n%s", res, err, out)
	}
	ada, _ := s.Accounts.UserByEmail(ctx, "ada@example.com")
	ms, _ := s.Accounts.Memberships(ctx, ada.ID)
	acme := ms[1].Org.ID
	if sub, err := s.Billing.Subscription(ctx, acme); err != nil || sub.Plan != "team" || sub.Status != billing.Active {
		t.Fatalf("subscription = %+v, %v", sub, err)
	}
	kbs, err := s.Knowledge.KnowledgeBases(ctx, acme, 10, nil)
	if err != nil || len(kbs) != 1 || kbs[0].Name != "Handbook" || kbs[0].Description != "the staff handbook" {
		t.Fatalf("knowledge bases = %+v, %v", kbs, err)
	}
	docs, err := s.Knowledge.Documents(ctx, acme, kbs[0].ID, 10, nil, "")
	if err != nil || len(docs) != 2 {
		t.Fatalf("documents = %+v, %v", docs, err)
	}
	for _, d := range docs {
		if d.JobID == nil || d.Status != rag.StatusQueued {
			t.Errorf("document %q: job %v, status %s; want its ingestion job queued", d.Title, d.JobID, d.Status)
		}
	}

	// Twice: nothing changes, no document is queued again.
	if res, out, err = apply(t, s, kbFile, false); err != nil || res.Created != 0 || res.Updated != 0 || res.Unchanged != 6 {
		t.Fatalf("second apply = %+v, %v\n%s", res, err, out)
	}
	// A changed text, description and plan are updates; the document keeps its id.
	grown := strings.NewReplacer("Keep the receipts.", "Keep every receipt.", "the staff handbook", "the handbook", "plan: team", "plan: free").Replace(kbFile)
	if res, out, err = apply(t, s, grown, true); err != nil || res.Updated != 3 || res.Created != 0 {
		t.Fatalf("dry run of the changed file = %+v, %v\n%s", res, err, out)
	}
	if res, out, err = apply(t, s, grown, false); err != nil || res.Updated != 3 {
		t.Fatalf("apply of the changed file = %+v, %v\n%s", res, err, out)
	}
	after, _ := s.Knowledge.Documents(ctx, acme, kbs[0].ID, 10, nil, "")
	if len(after) != 2 {
		t.Fatalf("documents after the change = %d, want 2", len(after))
	}

	// An unknown plan is an error at the org's plan line, naming the plans there are.
	_, _, err = apply(t, s, strings.Replace(kbFile, "plan: team", "plan: gold", 1), false)
	var e *seed.Error
	if !errors.As(err, &e) || e.Line != 6 || e.Field != "orgs[0].plan" || !strings.Contains(err.Error(), "known: free, team") {
		t.Fatalf("err = %v, want demo.yaml:6 orgs[0].plan", err)
	}
}
