// Package prompts is the prompt store: prompts by name with immutable, numbered versions
// (message templates with typed variables, a model alias, parameters and tools), labels
// that point at a version or split traffic between versions (an A/B experiment, sticky per
// key), diffs between versions, and rendering.
//
// Soft-deleted prompts are hidden from every read, restorable within their org's retention
// for deleted prompts, and purged past it.
package prompts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
)

// Latest is the reserved, read-only label meaning a prompt's newest version.
const Latest = "latest"

// DefaultLabel is the label a reference without label or version resolves.
const DefaultLabel = "production"

// PurgeDeleted deletes for good (with their versions, labels and experiments) the prompts
// deleted longer ago than their org's retention for deleted prompts.
func (s *Service) PurgeDeleted(ctx context.Context) (int64, error) {
	now := s.now()
	return store.PurgeInBatches(ctx, func(ctx context.Context, limit int32) (int64, error) {
		return s.st.PurgeDeletedPrompts(ctx, db.PurgeDeletedPromptsParams{Now: now, DefaultDays: days(s.retention.DeletedPrompts), MaxRows: limit})
	})
}

// Restore undoes the delete of the prompt named name (the deleted prompt id when id is
// given, else the last deleted), audited (prompt.restore) by by. It returns not_found
// when there is none, conflict while another prompt has the name, and retention_expired
// when it was deleted longer ago than the org's retention for deleted prompts.
func (s *Service) Restore(ctx context.Context, org uuid.UUID, name string, id *uuid.UUID, by audit.Actor) (Prompt, error) {
	var p db.Prompt
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		now := s.now().UTC()
		row, err := q.GetDeletedPromptForUpdate(ctx, db.GetDeletedPromptForUpdateParams{
			Now: now, DefaultDays: days(s.retention.DeletedPrompts), OrgID: org, Name: name, ID: store.NullUUID(id),
		})
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return errs.E(errs.NotFound, "No deleted prompt named %q.", name)
		}
		if err != nil {
			return err
		}
		if row.Expired {
			return errs.E(errs.RetentionExpired, "Prompt %q was deleted %s, past this org's retention for deleted prompts; it can no longer be restored.",
				name, row.DeletedAt.UTC().Format(time.RFC3339))
		}
		if _, err := q.RestorePrompt(ctx, db.RestorePromptParams{OrgID: org, ID: row.ID, UpdatedAt: now}); err != nil {
			if errs.CodeOf(store.Translate(err)) == errs.Conflict {
				return errs.E(errs.Conflict, "A prompt named %q exists; delete it first, or create the restored one under another name.", name)
			}
			return err
		}
		p = db.Prompt{ID: row.ID, OrgID: row.OrgID, Name: row.Name, Description: row.Description, CreatedBy: row.CreatedBy, CreatedAt: row.CreatedAt, UpdatedAt: now}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.restore", TargetType: "prompt", TargetID: name,
			Data: map[string]any{"prompt_id": row.ID.String()}})
	})
	if err != nil {
		return Prompt{}, fmt.Errorf("restore prompt: %w", err)
	}
	out, err := s.withLabels(ctx, org, []db.Prompt{p})
	if err != nil {
		return Prompt{}, err
	}
	return out[0], nil
}

// days is a retention in days as a query argument.
func days(n int) int32 { return int32(n) } //nolint:gosec // bounded by retention.Days.Check

// MaxListLimit guards the list queries; the HTTP layer sets the page size.
const MaxListLimit = 1000

// The variable types.
const (
	TypeString  = "string"
	TypeNumber  = "number"
	TypeInteger = "integer"
	TypeBoolean = "boolean"
)

var (
	namePattern     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	variablePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	// placeholder is {{name}}, whitespace allowed inside the braces. There is no escape:
	// a literal "{{" cannot be written in a template.
	placeholder = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)
)

// Message is one message of a version: Content is a template.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Variable is a declared template variable. Default is a JSON value of Type (nil: none).
type Variable struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Required    bool   `json:"required"`
	Default     any    `json:"default,omitempty"`
	Description string `json:"description,omitempty"`
}

// Parameters are a version's defaults for the chat request.
type Parameters struct {
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	MaxTokens   *int     `json:"max_tokens,omitempty"`
	// KnowledgeBases are the org's knowledge bases chat answers from when the request
	// names none (chat.Call.KnowledgeBases).
	KnowledgeBases []uuid.UUID `json:"knowledge_bases,omitempty"`
}

// Tool is a tool definition offered with a version; Parameters is a JSON Schema.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
}

// Draft is the content of a new version.
type Draft struct {
	Messages   []Message
	Variables  []Variable
	Model      string // "": none
	Parameters Parameters
	Tools      []Tool
	Note       string
}

// Version is an immutable version of a prompt.
type Version struct {
	Draft
	ID        uuid.UUID
	PromptID  uuid.UUID
	Number    int
	CreatedBy *uuid.UUID
	CreatedAt time.Time
}

// SplitEntry is one arm of a split label.
type SplitEntry struct {
	Version int `json:"version"`
	Weight  int `json:"weight"`
}

// Label points at Version, or splits traffic by Split under ExperimentID.
type Label struct {
	Name         string
	Version      int // 0 for a split
	Split        []SplitEntry
	ExperimentID *uuid.UUID
	UpdatedAt    time.Time
	UpdatedBy    *uuid.UUID
}

// Prompt is a named prompt with its labels.
type Prompt struct {
	ID            uuid.UUID
	OrgID         uuid.UUID
	Name          string
	Description   string
	LatestVersion int
	Labels        []Label
	CreatedBy     *uuid.UUID
	CreatedAt     time.Time
	UpdatedAt     time.Time
	DeletedAt     *time.Time // nil unless deleted
}

// Service keeps an org's prompts. It is safe for concurrent use.
type Service struct {
	st  *store.Store
	now func() time.Time
	// knownModel says whether a draft's model is an alias of the catalog; nil takes any.
	knownModel func(alias string) bool
	// checkKnowledgeBases returns not_found unless ids are org's knowledge bases; nil
	// takes any.
	checkKnowledgeBases func(ctx context.Context, org uuid.UUID, ids []uuid.UUID) error
	// retention holds the deployment's default retention for deleted prompts.
	retention retention.Days
}

// UseRetention makes d the deployment's default retention (config retention.*; New
// starts with retention.Builtin). Call it before serving.
func (s *Service) UseRetention(d retention.Days) { s.retention = d }

// KnowModels makes drafts name only models known says are in the catalog (the gateway's
// aliases). Call it before serving.
func (s *Service) KnowModels(known func(alias string) bool) { s.knownModel = known }

// KnowKnowledgeBases makes drafts name only knowledge bases of their org, as check
// (rag.Service.CheckKnowledgeBases) says. Call it before serving.
func (s *Service) KnowKnowledgeBases(check func(ctx context.Context, org uuid.UUID, ids []uuid.UUID) error) {
	s.checkKnowledgeBases = check
}

// checkRefs refuses a draft whose model is not in the catalog or whose knowledge bases are
// not org's, naming at/model or at/parameters/knowledge_bases/i.
func (s *Service) checkRefs(ctx context.Context, org uuid.UUID, d Draft, at string) error {
	var fields []errs.FieldError
	if d.Model != "" && s.knownModel != nil && !s.knownModel(d.Model) {
		fields = append(fields, errs.FieldError{Pointer: at + "/model", Message: fmt.Sprintf("no model alias %q (GET /v1/models lists them)", d.Model)})
	}
	for i, id := range d.Parameters.KnowledgeBases {
		if s.checkKnowledgeBases == nil {
			break
		}
		err := s.checkKnowledgeBases(ctx, org, []uuid.UUID{id})
		if errs.CodeOf(err) == errs.NotFound {
			fields = append(fields, errs.FieldError{Pointer: fmt.Sprintf("%s/parameters/knowledge_bases/%d", at, i), Message: "is no knowledge base of this org"})
		} else if err != nil {
			return err
		}
	}
	return errs.InvalidFields("invalid prompt version", fields)
}

// New returns a Service over st; now is the clock (time.Now in production).
func New(st *store.Store, now func() time.Time) *Service {
	return &Service{st: st, now: now, retention: retention.Builtin}
}

func notFound(name string) error { return errs.E(errs.NotFound, "No prompt named %q.", name) }

// Create creates a prompt with its first version. It returns invalid_request for a bad
// name or draft (pointers under /name and /version) and conflict when the org already has
// a prompt of that name.
func (s *Service) Create(ctx context.Context, org uuid.UUID, name, description string, first Draft, by audit.Actor) (Prompt, Version, error) {
	if !namePattern.MatchString(name) {
		return Prompt{}, Version{}, errs.InvalidFields("invalid prompt", []errs.FieldError{{Pointer: "/name", Message: "must match ^[a-z0-9][a-z0-9._-]{0,63}$"}})
	}
	if err := s.checkRefs(ctx, org, first, "/version"); err != nil {
		return Prompt{}, Version{}, err
	}
	if err := validateDraft(first, "/version"); err != nil {
		return Prompt{}, Version{}, err
	}
	var p Prompt
	var v Version
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		now := s.now().UTC()
		row, err := q.CreatePrompt(ctx, db.CreatePromptParams{
			ID: uuid.Must(uuid.NewV7()), OrgID: org, Name: name, Description: description,
			CreatedBy: store.NullUUID(by.UserID()), CreatedAt: now,
		})
		if err != nil {
			if errs.CodeOf(store.Translate(err)) == errs.Conflict {
				return errs.E(errs.Conflict, "A prompt named %q already exists.", name)
			}
			return err
		}
		p = toPrompt(row)
		if v, err = insertVersion(ctx, q, org, row.ID, 1, first, by.UserID(), now); err != nil {
			return err
		}
		p.LatestVersion = 1
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.create", TargetType: "prompt", TargetID: p.Name,
			Data: map[string]any{"prompt_id": p.ID.String(), "version": v.Number}})
	})
	if err != nil {
		return Prompt{}, Version{}, fmt.Errorf("create prompt: %w", err)
	}
	return p, v, nil
}

// Get returns the prompt named name with its labels, or not_found.
func (s *Service) Get(ctx context.Context, org uuid.UUID, name string) (Prompt, error) {
	row, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: name})
	if err != nil {
		return Prompt{}, s.lookupError(err, name)
	}
	out, err := s.withLabels(ctx, org, []db.Prompt{row})
	if err != nil {
		return Prompt{}, err
	}
	return out[0], nil
}

// List returns up to limit prompts, newest first, created before the prompt after (if
// any): the deleted ones when deleted, else the others.
func (s *Service) List(ctx context.Context, org uuid.UUID, limit int, after *uuid.UUID, deleted bool) ([]Prompt, error) {
	rows, err := s.st.ListPrompts(ctx, db.ListPromptsParams{
		OrgID: org, Deleted: deleted, After: store.NullUUID(after), MaxRows: int32(min(limit, MaxListLimit)), //nolint:gosec // bounded
	})
	if err != nil {
		return nil, fmt.Errorf("list prompts: %w", err)
	}
	return s.withLabels(ctx, org, rows)
}

// Delete soft-deletes the prompt named name: it disappears from every read at once and
// its name is free again; audited (prompt.delete) by by. It returns not_found when there is
// none.
func (s *Service) Delete(ctx context.Context, org uuid.UUID, name string, by audit.Actor) error {
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	return s.st.InTx(ctx, func(q *db.Queries) error {
		n, err := q.DeletePrompt(ctx, db.DeletePromptParams{OrgID: org, Name: name, DeletedAt: new(s.now().UTC())})
		if err != nil {
			return fmt.Errorf("delete prompt: %w", err)
		}
		if n == 0 {
			return notFound(name)
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.delete", TargetType: "prompt", TargetID: name})
	})
}

// AddVersion adds the next version of the prompt named name. It returns not_found, or
// invalid_request for a bad draft (pointers relative to the draft). The version is created
// by by's user (if by is a user) and audited (prompt.version_create) by by.
func (s *Service) AddVersion(ctx context.Context, org uuid.UUID, name string, d Draft, by audit.Actor) (Version, error) {
	if err := s.checkRefs(ctx, org, d, ""); err != nil {
		return Version{}, err
	}
	if err := validateDraft(d, ""); err != nil {
		return Version{}, err
	}
	var v Version
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		p, err := q.GetPromptForUpdate(ctx, db.GetPromptForUpdateParams{OrgID: org, Name: name})
		if err != nil {
			return s.lookupError(err, name)
		}
		latest, err := q.GetLatestPromptVersion(ctx, db.GetLatestPromptVersionParams{OrgID: org, PromptID: p.ID})
		if err != nil {
			return err
		}
		now := s.now().UTC()
		if v, err = insertVersion(ctx, q, org, p.ID, int(latest.Version)+1, d, by.UserID(), now); err != nil {
			return err
		}
		if err := q.TouchPrompt(ctx, db.TouchPromptParams{OrgID: org, ID: p.ID, UpdatedAt: now}); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.version_create", TargetType: "prompt", TargetID: name,
			Data: map[string]any{"version": v.Number, "note": v.Note}})
	})
	if err != nil {
		return Version{}, fmt.Errorf("add prompt version: %w", err)
	}
	return v, nil
}

// GetVersion returns version n of the prompt named name, or not_found.
func (s *Service) GetVersion(ctx context.Context, org uuid.UUID, name string, n int) (Version, error) {
	p, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: name})
	if err != nil {
		return Version{}, s.lookupError(err, name)
	}
	return s.version(ctx, s.st.Queries, p, n)
}

// ListVersions returns up to limit versions of the prompt named name, newest first,
// older than the version with id after (if any).
func (s *Service) ListVersions(ctx context.Context, org uuid.UUID, name string, limit int, after *uuid.UUID) ([]Version, error) {
	p, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: name})
	if err != nil {
		return nil, s.lookupError(err, name)
	}
	rows, err := s.st.ListPromptVersions(ctx, db.ListPromptVersionsParams{
		OrgID: org, PromptID: p.ID, After: store.NullUUID(after), MaxRows: int32(min(limit, MaxListLimit)), //nolint:gosec // bounded
	})
	if err != nil {
		return nil, fmt.Errorf("list prompt versions: %w", err)
	}
	out := make([]Version, len(rows))
	for i, r := range rows {
		if out[i], err = toVersion(r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// version reads version n of p; n 0 is the latest.
func (s *Service) version(ctx context.Context, q *db.Queries, p db.Prompt, n int) (Version, error) {
	var row db.PromptVersion
	var err error
	if n == 0 {
		row, err = q.GetLatestPromptVersion(ctx, db.GetLatestPromptVersionParams{OrgID: p.OrgID, PromptID: p.ID})
	} else {
		row, err = q.GetPromptVersion(ctx, db.GetPromptVersionParams{OrgID: p.OrgID, PromptID: p.ID, Version: int32(n)}) //nolint:gosec // validated by the API
	}
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return Version{}, errs.E(errs.NotFound, "Prompt %q has no version %d.", p.Name, n)
		}
		return Version{}, fmt.Errorf("get prompt version: %w", err)
	}
	return toVersion(row)
}

func (s *Service) lookupError(err error, name string) error {
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return notFound(name)
	}
	return fmt.Errorf("get prompt: %w", err)
}

// withLabels converts rows and adds their labels and latest versions (two queries).
func (s *Service) withLabels(ctx context.Context, org uuid.UUID, rows []db.Prompt) ([]Prompt, error) {
	out := make([]Prompt, len(rows))
	ids := make([]uuid.UUID, len(rows))
	at := make(map[uuid.UUID]int, len(rows))
	for i, r := range rows {
		out[i], ids[i], at[r.ID] = toPrompt(r), r.ID, i
		out[i].Labels = []Label{}
	}
	if len(rows) == 0 {
		return out, nil
	}
	latest, err := s.st.LatestPromptVersions(ctx, db.LatestPromptVersionsParams{OrgID: org, PromptIds: ids})
	if err != nil {
		return nil, fmt.Errorf("latest prompt versions: %w", err)
	}
	for _, l := range latest {
		out[at[l.PromptID]].LatestVersion = int(l.Version)
	}
	labels, err := s.st.ListPromptLabels(ctx, db.ListPromptLabelsParams{OrgID: org, PromptIds: ids})
	if err != nil {
		return nil, fmt.Errorf("list prompt labels: %w", err)
	}
	for _, l := range labels {
		label, err := toLabel(l)
		if err != nil {
			return nil, err
		}
		i := at[l.PromptID]
		out[i].Labels = append(out[i].Labels, label)
	}
	return out, nil
}

func insertVersion(ctx context.Context, q *db.Queries, org, promptID uuid.UUID, n int, d Draft, by *uuid.UUID, now time.Time) (Version, error) {
	if d.Variables == nil {
		d.Variables = []Variable{}
	}
	if d.Tools == nil {
		d.Tools = []Tool{}
	}
	messages, err := json.Marshal(d.Messages)
	if err != nil {
		return Version{}, err
	}
	variables, err := json.Marshal(d.Variables)
	if err != nil {
		return Version{}, err
	}
	params, err := json.Marshal(d.Parameters)
	if err != nil {
		return Version{}, err
	}
	tools, err := json.Marshal(d.Tools)
	if err != nil {
		return Version{}, err
	}
	row, err := q.CreatePromptVersion(ctx, db.CreatePromptVersionParams{
		ID: uuid.Must(uuid.NewV7()), OrgID: org, PromptID: promptID, Version: int32(n), //nolint:gosec // version numbers fit
		Messages: messages, Variables: variables, Model: store.Text(d.Model),
		Parameters: params, Tools: tools, Note: d.Note, CreatedBy: store.NullUUID(by), CreatedAt: now,
	})
	if err != nil {
		return Version{}, store.Translate(err)
	}
	return toVersion(row)
}

// validateDraft checks what the spec cannot: variable names are unique, defaults match
// their types and required variables have none, and every placeholder is declared.
// Pointers are under at.
func validateDraft(d Draft, at string) error {
	var fields []errs.FieldError
	declared := map[string]bool{}
	for i, v := range d.Variables {
		ptr := at + "/variables/" + strconv.Itoa(i)
		switch {
		case !variablePattern.MatchString(v.Name):
			fields = append(fields, errs.FieldError{Pointer: ptr + "/name", Message: "must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$"})
		case declared[v.Name]:
			fields = append(fields, errs.FieldError{Pointer: ptr + "/name", Message: "is declared twice"})
		}
		declared[v.Name] = true
		if !slices.Contains([]string{TypeString, TypeNumber, TypeInteger, TypeBoolean}, v.Type) {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/type", Message: "must be string, number, integer or boolean"})
			continue
		}
		if v.Default == nil {
			continue
		}
		if v.Required {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/default", Message: "a required variable takes no default"})
		} else if msg := checkType(v.Type, v.Default); msg != "" {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/default", Message: msg})
		}
	}
	if len(d.Messages) == 0 {
		fields = append(fields, errs.FieldError{Pointer: at + "/messages", Message: "needs at least one message"})
	}
	for i, m := range d.Messages {
		for _, match := range placeholder.FindAllStringSubmatch(m.Content, -1) {
			if !declared[match[1]] {
				fields = append(fields, errs.FieldError{Pointer: at + "/messages/" + strconv.Itoa(i) + "/content",
					Message: fmt.Sprintf("uses the undeclared variable %q", match[1])})
			}
		}
	}
	for i, t := range d.Tools {
		if slices.ContainsFunc(d.Tools[:i], func(o Tool) bool { return o.Name == t.Name }) {
			fields = append(fields, errs.FieldError{Pointer: at + "/tools/" + strconv.Itoa(i) + "/name", Message: "is defined twice"})
		}
	}
	return errs.InvalidFields("invalid prompt version", fields)
}

func toPrompt(r db.Prompt) Prompt {
	return Prompt{
		ID: r.ID, OrgID: r.OrgID, Name: r.Name, Description: r.Description, CreatedBy: store.UUIDPtr(r.CreatedBy),
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, DeletedAt: r.DeletedAt,
	}
}

func toVersion(r db.PromptVersion) (Version, error) {
	v := Version{ID: r.ID, PromptID: r.PromptID, Number: int(r.Version), CreatedBy: store.UUIDPtr(r.CreatedBy), CreatedAt: r.CreatedAt}
	v.Model, v.Note = r.Model.String, r.Note
	err := errors.Join(
		json.Unmarshal(r.Messages, &v.Messages), json.Unmarshal(r.Variables, &v.Variables),
		json.Unmarshal(r.Parameters, &v.Parameters), json.Unmarshal(r.Tools, &v.Tools),
	)
	if err != nil {
		return Version{}, fmt.Errorf("decode prompt version %s: %w", r.ID, err)
	}
	return v, nil
}

func toLabel(r db.PromptLabel) (Label, error) {
	l := Label{Name: r.Label, Version: int(r.Version.Int32), ExperimentID: store.UUIDPtr(r.ExperimentID), UpdatedAt: r.UpdatedAt, UpdatedBy: store.UUIDPtr(r.UpdatedBy)}
	if r.Split != nil {
		if err := json.Unmarshal(r.Split, &l.Split); err != nil {
			return Label{}, fmt.Errorf("decode prompt label %s: %w", r.Label, err)
		}
	}
	return l, nil
}
