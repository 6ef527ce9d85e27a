package seed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/rag"
)

// Services are the domain services a seed is applied through.
type Services struct {
	Accounts *account.Service
	Members  *members.Service
	Keys     *apikey.Service
	Prompts  *prompts.Service
	Flags    *flags.Evaluator
	// Billing puts orgs on plans; Knowledge holds knowledge bases. A file that uses
	// either fails when it is nil.
	Billing   *billing.Service
	Knowledge *rag.Service
	Now       func() time.Time
}

// Result counts what applying did (or, in a dry run, would do).
type Result struct {
	Created, Updated, Unchanged int
}

// Apply makes the database hold what f describes and writes one line per entry to out:
// "create", "update" or "ok" (unchanged), prefixed "would " in a dry run, which changes
// nothing. A new API key's secret is printed once, on its line; an existing key is never
// shown again nor replaced. Existing users keep their password, existing prompt versions
// their content (versions are immutable: the file's versions past the prompt's latest are
// added) and entries the file does not list are left alone. The first error stops the
// run, naming the file, line and field it comes from; what was applied before it stays.
func Apply(ctx context.Context, s Services, f *File, dryRun bool, out io.Writer) (Result, error) {
	a := &applier{s: s, f: f, dry: dryRun, out: out, users: map[string]uuid.UUID{},
		system: audit.Actor{Type: audit.ActorSystem, UserAgent: "kiln seed"}}
	err := a.run(ctx)
	return a.res, err
}

type applier struct {
	s      Services
	f      *File
	dry    bool
	out    io.Writer
	res    Result
	system audit.Actor
	// users maps the file's emails (lower-case) to user ids; uuid.Nil in a dry run for a
	// user not yet created.
	users     map[string]uuid.UUID
	overrides []flags.Override
}

func (a *applier) report(kind, what, note string) {
	verb := map[string]string{"create": "create", "update": "update", "ok": "ok"}[kind]
	switch kind {
	case "create":
		a.res.Created++
	case "update":
		a.res.Updated++
	default:
		a.res.Unchanged++
	}
	if a.dry && kind != "ok" {
		verb = "would " + verb
	}
	if note != "" {
		note = ": " + note
	}
	fmt.Fprintf(a.out, "%-12s %s%s\n", verb, what, note)
}

// fail locates err at the element ps (at the field a domain error names, when it names
// one of the element's fields).
func (a *applier) fail(ps pos, at string, err error) error {
	var located *Error
	if errors.As(err, &located) {
		return err
	}
	line, field := ps.line, at
	var e *errs.Error
	if errors.As(err, &e) && len(e.Fields) > 0 {
		name := strings.TrimPrefix(e.Fields[0].Pointer, "/")
		if l, ok := ps.fields[name]; ok {
			line, field = l, join(at, name)
		}
	}
	return &Error{Path: a.f.Path, Line: line, Field: field, Err: err}
}

func (a *applier) run(ctx context.Context) error {
	for i, fl := range a.f.Flags {
		if err := a.flag(ctx, fl); err != nil {
			return a.fail(fl.pos, fmt.Sprintf("flags[%d]", i), err)
		}
	}
	var err error
	if a.overrides, err = a.s.Flags.Overrides(ctx); err != nil {
		return err
	}
	for i, u := range a.f.Users {
		at := fmt.Sprintf("users[%d]", i)
		id, err := a.user(ctx, u)
		if err != nil {
			return a.fail(u.pos, at, err)
		}
		a.users[account.NormaliseEmail(u.Email)] = id
		for j, o := range u.Flags {
			if err := a.override(ctx, o, flags.SubjectUser, id, "user "+u.Email); err != nil {
				return a.fail(o.pos, fmt.Sprintf("%s.flags[%d]", at, j), err)
			}
		}
	}
	for i, o := range a.f.Orgs {
		if err := a.org(ctx, o, fmt.Sprintf("orgs[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) flag(ctx context.Context, fl Flag) error {
	want := flags.NewFlag(fl.Key)
	want.Description, want.Enabled = fl.Description, fl.Enabled
	if fl.RolloutPercent != nil {
		want.RolloutPercent = *fl.RolloutPercent
	}
	if fl.StickyBy != "" {
		want.StickyBy = flags.SubjectType(fl.StickyBy)
	}
	what := "flag " + fl.Key
	have, err := a.s.Flags.Get(ctx, fl.Key)
	kind := "update"
	switch {
	case errs.CodeOf(err) == errs.NotFound:
		kind = "create"
	case err != nil:
		return err
	case have == want:
		a.report("ok", what, "")
		return nil
	}
	if !a.dry {
		if _, err := a.s.Flags.Set(ctx, want, a.system); err != nil {
			return err
		}
	}
	a.report(kind, what, "")
	return nil
}

func (a *applier) override(ctx context.Context, o Override, subject flags.SubjectType, id uuid.UUID, of string) error {
	what := fmt.Sprintf("flag override %s for %s", o.Key, of)
	state := map[bool]string{true: "on", false: "off"}[o.Enabled]
	kind := "create"
	for _, have := range a.overrides {
		if have.FlagKey == o.Key && have.SubjectType == subject && have.SubjectID == id && id != uuid.Nil {
			if have.Enabled == o.Enabled && have.ExpiresAt == nil {
				a.report("ok", what, state)
				return nil
			}
			kind = "update"
		}
	}
	if !a.dry {
		if _, err := a.s.Flags.SetOverride(ctx, flags.Override{FlagKey: o.Key, SubjectType: subject, SubjectID: id, Enabled: o.Enabled}); err != nil {
			return err
		}
	}
	a.report(kind, what, state)
	return nil
}

// user returns the id of the user with u.Email, creating the user when absent.
func (a *applier) user(ctx context.Context, u User) (uuid.UUID, error) {
	what := "user " + u.Email
	have, err := a.s.Accounts.UserByEmail(ctx, u.Email)
	switch {
	case errs.CodeOf(err) == errs.NotFound:
		if u.Password == "" {
			return uuid.Nil, errs.InvalidFields("a new user needs a password", []errs.FieldError{{Pointer: "/password", Message: "is required to create the user"}})
		}
		note := map[bool]string{true: "email verified"}[u.Verified]
		if a.dry {
			a.report("create", what, note)
			return uuid.Nil, nil
		}
		created, session, _, err := a.s.Accounts.SignUp(ctx, u.Email, u.Password, u.Name, account.Client{UserAgent: "kiln seed"})
		if err != nil {
			return uuid.Nil, err
		}
		// Signing up signs in; a seeded user has no device, so no session is left open.
		if err := a.s.Accounts.RevokeSession(ctx, created.ID, session.ID); err != nil {
			return uuid.Nil, err
		}
		if u.Verified {
			if err := a.verify(ctx, created.ID); err != nil {
				return uuid.Nil, err
			}
		}
		a.report("create", what, note)
		return created.ID, nil
	case err != nil:
		return uuid.Nil, err
	case u.Verified && !have.EmailVerified:
		if !a.dry {
			if err := a.verify(ctx, have.ID); err != nil {
				return uuid.Nil, err
			}
		}
		a.report("update", what, "email verified")
	default:
		a.report("ok", what, "")
	}
	return have.ID, nil
}

// verify marks the user's email verified the way a user does: with a verification token.
func (a *applier) verify(ctx context.Context, userID uuid.UUID) error {
	_, token, err := a.s.Accounts.EmailVerificationToken(ctx, userID)
	if err != nil {
		return err
	}
	_, err = a.s.Accounts.VerifyEmail(ctx, token, a.system)
	return err
}

func (a *applier) org(ctx context.Context, o Org, at string) error {
	ownerID := a.users[account.NormaliseEmail(o.Owner)]
	owner := audit.Actor{Type: audit.ActorUser, ID: &ownerID, UserAgent: "kiln seed"}
	what := "org " + o.Name
	var orgID uuid.UUID
	created := false
	if ownerID != uuid.Nil {
		ms, err := a.s.Accounts.Memberships(ctx, ownerID)
		if err != nil {
			return a.fail(o.pos, at, err)
		}
		for _, m := range ms {
			if m.Role == account.RoleOwner && !m.Org.Personal && m.Org.Name == strings.TrimSpace(o.Name) {
				orgID = m.Org.ID
				break
			}
		}
	}
	switch {
	case orgID != uuid.Nil:
		a.report("ok", what, "owned by "+o.Owner)
	case a.dry:
		a.report("create", what, "owned by "+o.Owner)
	default:
		c, err := a.s.Accounts.CreateOrg(ctx, ownerID, o.Name, owner)
		if err != nil {
			return a.fail(o.pos, at, err)
		}
		orgID, created = c.ID, true
		a.report("create", what, "owned by "+o.Owner)
	}
	for j, m := range o.Members {
		if err := a.member(ctx, orgID, owner, m, o.Name); err != nil {
			return a.fail(m.pos, fmt.Sprintf("%s.members[%d]", at, j), err)
		}
	}
	for j, k := range o.APIKeys {
		if err := a.apiKey(ctx, orgID, owner, k, o.Name); err != nil {
			return a.fail(k.pos, fmt.Sprintf("%s.api_keys[%d]", at, j), err)
		}
	}
	for j, p := range o.Prompts {
		pat := fmt.Sprintf("%s.prompts[%d]", at, j)
		if err := a.prompt(ctx, orgID, owner, p, o.Name, pat); err != nil {
			return a.fail(p.pos, pat, err)
		}
	}
	for j, ov := range o.Flags {
		if err := a.override(ctx, ov, flags.SubjectOrg, orgID, "org "+o.Name); err != nil {
			return a.fail(ov.pos, fmt.Sprintf("%s.flags[%d]", at, j), err)
		}
	}
	if o.Plan != "" {
		if err := a.plan(ctx, orgID, created, o.Plan, o.Name); err != nil {
			return a.fail(o.pos, at, err)
		}
	}
	for j, kb := range o.KnowledgeBases {
		kat := fmt.Sprintf("%s.knowledge_bases[%d]", at, j)
		if err := a.knowledgeBase(ctx, orgID, owner, kb, o.Name, kat); err != nil {
			return a.fail(kb.pos, kat, err)
		}
	}
	return nil
}

// plan puts the org on plan (an active subscription set by hand, as an operator does); an
// org created by this run (or to be, in a dry run) gets its first subscription.
func (a *applier) plan(ctx context.Context, orgID uuid.UUID, newOrg bool, plan, org string) error {
	if a.s.Billing == nil {
		return errors.New("plans are not available to this seed run")
	}
	if _, ok := a.s.Billing.Plans().Get(plan); !ok {
		return errs.InvalidFields("unknown plan", []errs.FieldError{{Pointer: "/plan", Message: fmt.Sprintf("names no plan of billing.plans (known: %s)", strings.Join(a.planIDs(), ", "))}})
	}
	what := fmt.Sprintf("plan of org %s", org)
	kind, note := "create", plan
	if orgID != uuid.Nil && !newOrg {
		sub, err := a.s.Billing.Subscription(ctx, orgID)
		if err != nil {
			return err
		}
		if sub.Plan == plan && sub.Status == billing.Active {
			a.report("ok", what, plan)
			return nil
		}
		kind, note = "update", fmt.Sprintf("%s (%s) → %s", sub.Plan, sub.Status, plan)
	}
	if !a.dry {
		if _, err := a.s.Billing.Set(ctx, a.system, orgID, billing.SetSubscription{Plan: plan, Status: billing.Active}); err != nil {
			return err
		}
	}
	a.report(kind, what, note)
	return nil
}

func (a *applier) planIDs() []string {
	var ids []string
	for _, p := range a.s.Billing.Plans().List() {
		ids = append(ids, p.ID)
	}
	return ids
}

// knowledgeBase creates the knowledge base when the org has none of that name, and adds
// the documents it lacks or whose text changed: each new one queues its ingestion job.
func (a *applier) knowledgeBase(ctx context.Context, orgID uuid.UUID, owner audit.Actor, kb KnowledgeBase, org, at string) error {
	if a.s.Knowledge == nil {
		return errors.New("knowledge bases are not available to this seed run")
	}
	what := fmt.Sprintf("knowledge base %s of org %s", kb.Name, org)
	var have *rag.KnowledgeBase
	if orgID != uuid.Nil {
		var err error
		if have, err = a.findKnowledgeBase(ctx, orgID, strings.TrimSpace(kb.Name)); err != nil {
			return err
		}
	}
	switch {
	case have != nil && have.Description == kb.Description:
		a.report("ok", what, "")
	case have != nil:
		if !a.dry {
			if _, err := a.s.Knowledge.UpdateKnowledgeBase(ctx, orgID, owner, have.ID, nil, &kb.Description); err != nil {
				return err
			}
		}
		a.report("update", what, "description")
	case a.dry:
		a.report("create", what, fmt.Sprintf("%d documents", len(kb.Documents)))
	default:
		created, err := a.s.Knowledge.CreateKnowledgeBase(ctx, orgID, owner, rag.NewKnowledgeBase{
			Name: kb.Name, Description: kb.Description, EmbeddingModel: kb.EmbeddingModel, Dimensions: kb.Dimensions,
		})
		if err != nil {
			return err
		}
		have = &created
		a.report("create", what, fmt.Sprintf("%d documents", len(kb.Documents)))
	}
	docs := map[string]rag.Document{}
	if have != nil {
		var after *uuid.UUID
		for {
			page, err := a.s.Knowledge.Documents(ctx, orgID, have.ID, 100, after, "")
			if err != nil {
				return err
			}
			for _, d := range page {
				docs[d.ExternalID] = d
			}
			if len(page) < 100 {
				break
			}
			after = &page[len(page)-1].ID
		}
	}
	for j, d := range kb.Documents {
		if err := a.document(ctx, orgID, owner, have, docs, d, kb.Name); err != nil {
			return a.fail(d.pos, fmt.Sprintf("%s.documents[%d]", at, j), err)
		}
	}
	return nil
}

func (a *applier) findKnowledgeBase(ctx context.Context, orgID uuid.UUID, name string) (*rag.KnowledgeBase, error) {
	var after *uuid.UUID
	for {
		page, err := a.s.Knowledge.KnowledgeBases(ctx, orgID, 100, after)
		if err != nil {
			return nil, err
		}
		for _, kb := range page {
			if kb.Name == name {
				return &kb, nil
			}
		}
		if len(page) < 100 {
			return nil, nil
		}
		after = &page[len(page)-1].ID
	}
}

func (a *applier) document(ctx context.Context, orgID uuid.UUID, owner audit.Actor, kb *rag.KnowledgeBase, have map[string]rag.Document, d Document, kbName string) error {
	what := fmt.Sprintf("document %q of knowledge base %s", d.Key(), kbName)
	n := rag.NewDocument{Title: d.Title, Source: "text", MediaType: d.MediaType, Body: []byte(d.Text), ExternalID: d.Key()}
	if n.MediaType == "" {
		n.MediaType = rag.MediaText
	}
	hash, err := n.ContentHash()
	if err != nil {
		return err
	}
	kind := "create"
	if prev, ok := have[d.Key()]; ok {
		if string(prev.ContentHash) == string(hash) {
			a.report("ok", what, string(prev.Status))
			return nil
		}
		kind = "update"
	}
	if !a.dry {
		if _, _, err := a.s.Knowledge.AddDocument(ctx, orgID, owner, kb.ID, n); err != nil {
			return err
		}
	}
	a.report(kind, what, "ingestion queued")
	return nil
}

func (a *applier) member(ctx context.Context, orgID uuid.UUID, owner audit.Actor, m Member, org string) error {
	userID := a.users[account.NormaliseEmail(m.Email)]
	what := fmt.Sprintf("member %s of org %s", m.Email, org)
	if orgID == uuid.Nil || userID == uuid.Nil {
		a.report("create", what, m.Role)
		return nil
	}
	role, err := a.s.Accounts.Role(ctx, userID, orgID)
	switch {
	case errs.CodeOf(err) == errs.NotFound:
		if !a.dry {
			if _, err := a.s.Members.Add(ctx, owner, orgID, userID, m.Role); err != nil {
				return err
			}
		}
		a.report("create", what, m.Role)
	case err != nil:
		return err
	case role == m.Role:
		a.report("ok", what, m.Role)
	default:
		if !a.dry {
			if _, _, err := a.s.Members.ChangeRole(ctx, owner, orgID, userID, m.Role); err != nil {
				return err
			}
		}
		a.report("update", what, role+" → "+m.Role)
	}
	return nil
}

func (a *applier) apiKey(ctx context.Context, orgID uuid.UUID, owner audit.Actor, k APIKey, org string) error {
	what := fmt.Sprintf("api key %q of org %s", k.Name, org)
	if orgID != uuid.Nil {
		now := a.s.Now()
		var after *uuid.UUID
		for {
			page, err := a.s.Keys.List(ctx, orgID, 100, after)
			if err != nil {
				return err
			}
			for _, have := range page {
				if have.Name == k.Name && have.RevokedAt == nil && (have.ExpiresAt == nil || have.ExpiresAt.After(now)) {
					a.report("ok", what, have.Display+" (its secret was shown when it was created)")
					return nil
				}
			}
			if len(page) < 100 {
				break
			}
			after = &page[len(page)-1].ID
		}
	}
	if a.dry {
		a.report("create", what, "")
		return nil
	}
	_, secret, err := a.s.Keys.Create(ctx, orgID, owner, k.Name, k.Scopes, nil, nil)
	if err != nil {
		return err
	}
	a.report("create", what, secret+"  (the secret is shown once: keep it now)")
	return nil
}

func (a *applier) prompt(ctx context.Context, orgID uuid.UUID, owner audit.Actor, p Prompt, org, at string) error {
	what := fmt.Sprintf("prompt %s of org %s", p.Name, org)
	latest := 0
	var labels []prompts.Label
	if orgID != uuid.Nil {
		have, err := a.s.Prompts.Get(ctx, orgID, p.Name)
		switch {
		case errs.CodeOf(err) == errs.NotFound:
		case err != nil:
			return err
		default:
			latest, labels = have.LatestVersion, have.Labels
		}
	}
	switch {
	case latest == 0 && a.dry:
		a.report("create", what, fmt.Sprintf("%d versions", len(p.Versions)))
	case latest == 0:
		if _, _, err := a.s.Prompts.Create(ctx, orgID, p.Name, p.Description, draft(p.Versions[0]), owner); err != nil {
			return err
		}
		for _, v := range p.Versions[1:] {
			if _, err := a.s.Prompts.AddVersion(ctx, orgID, p.Name, draft(v), owner); err != nil {
				return err
			}
		}
		a.report("create", what, fmt.Sprintf("%d versions", len(p.Versions)))
	case latest < len(p.Versions):
		if !a.dry {
			for _, v := range p.Versions[latest:] {
				if _, err := a.s.Prompts.AddVersion(ctx, orgID, p.Name, draft(v), owner); err != nil {
					return err
				}
			}
		}
		a.report("update", what, fmt.Sprintf("versions %d to %d added", latest+1, len(p.Versions)))
	default:
		a.report("ok", what, fmt.Sprintf("%d versions", latest))
	}
	names := make([]string, 0, len(p.Labels))
	for name := range p.Labels {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		want := p.Labels[name]
		lwhat := fmt.Sprintf("label %s of prompt %s → version %d", name, p.Name, want)
		i := slices.IndexFunc(labels, func(l prompts.Label) bool { return l.Name == name })
		switch {
		case i >= 0 && labels[i].Version == want && len(labels[i].Split) == 0:
			a.report("ok", lwhat, "")
			continue
		case a.dry:
		default:
			if _, err := a.s.Prompts.SetLabel(ctx, orgID, p.Name, name, prompts.Target{Version: want}, owner); err != nil {
				return &Error{Path: a.f.Path, Line: p.labelLines[name], Field: at + ".labels." + name, Err: err}
			}
		}
		a.report(map[bool]string{true: "update", false: "create"}[i >= 0], lwhat, "")
	}
	return nil
}

func draft(v PromptVersion) prompts.Draft {
	d := prompts.Draft{Model: v.Model, Note: v.Note}
	for _, m := range v.Messages {
		d.Messages = append(d.Messages, prompts.Message{Role: m.Role, Content: m.Content})
	}
	for _, va := range v.Variables {
		d.Variables = append(d.Variables, prompts.Variable{Name: va.Name, Type: va.Type, Required: va.Required, Default: va.Default, Description: va.Description})
	}
	return d
}
