package server

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/store"
)

// ListPrompts lists the org's prompts, newest first.
func (s *Server) ListPrompts(ctx context.Context, req api.ListPromptsRequestObject) (api.ListPromptsResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.prompts.List(ctx, access.OrgID, limit+1, after, deref(req.Params.Deleted))
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(p prompts.Prompt) uuid.UUID { return p.ID }, toAPIPrompt)
	return api.ListPrompts200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreatePrompt creates a prompt with its first version.
func (s *Server) CreatePrompt(ctx context.Context, req api.CreatePromptRequestObject) (api.CreatePromptResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	draft, err := toDraft(req.Body.Version)
	if err != nil {
		return nil, err
	}
	p, _, err := s.prompts.Create(ctx, access.OrgID, req.Body.Name, deref(req.Body.Description), draft, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.CreatePrompt201JSONResponse(toAPIPrompt(p)), nil
}

// GetPrompt returns one prompt with its labels.
func (s *Server) GetPrompt(ctx context.Context, req api.GetPromptRequestObject) (api.GetPromptResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	p, err := s.prompts.Get(ctx, access.OrgID, req.Name)
	if err != nil {
		return nil, err
	}
	return api.GetPrompt200JSONResponse(toAPIPrompt(p)), nil
}

// DeletePrompt soft-deletes a prompt.
func (s *Server) DeletePrompt(ctx context.Context, req api.DeletePromptRequestObject) (api.DeletePromptResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if err := s.prompts.Delete(ctx, access.OrgID, req.Name, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeletePrompt204Response{}, nil
}

// RestorePrompt undoes the delete of a prompt.
func (s *Server) RestorePrompt(ctx context.Context, req api.RestorePromptRequestObject) (api.RestorePromptResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	p, err := s.prompts.Restore(ctx, access.OrgID, req.Name, req.Params.Id, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.RestorePrompt200JSONResponse(toAPIPrompt(p)), nil
}

// ListPromptVersions lists a prompt's versions, newest first.
func (s *Server) ListPromptVersions(ctx context.Context, req api.ListPromptVersionsRequestObject) (api.ListPromptVersionsResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.prompts.ListVersions(ctx, access.OrgID, req.Name, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(v prompts.Version) uuid.UUID { return v.ID }, toAPIPromptVersion)
	return api.ListPromptVersions200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreatePromptVersion adds a prompt's next version.
func (s *Server) CreatePromptVersion(ctx context.Context, req api.CreatePromptVersionRequestObject) (api.CreatePromptVersionResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	draft, err := toDraft(*req.Body)
	if err != nil {
		return nil, err
	}
	v, err := s.prompts.AddVersion(ctx, access.OrgID, req.Name, draft, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.CreatePromptVersion201JSONResponse(toAPIPromptVersion(v)), nil
}

// GetPromptVersion returns one version of a prompt.
func (s *Server) GetPromptVersion(ctx context.Context, req api.GetPromptVersionRequestObject) (api.GetPromptVersionResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	v, err := s.prompts.GetVersion(ctx, access.OrgID, req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	return api.GetPromptVersion200JSONResponse(toAPIPromptVersion(v)), nil
}

// SetPromptLabel publishes, rolls back or splits a label; every move is audited.
func (s *Server) SetPromptLabel(ctx context.Context, req api.SetPromptLabelRequestObject) (api.SetPromptLabelResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	t := prompts.Target{Version: deref(req.Body.Version)}
	if req.Body.Split != nil {
		for _, e := range *req.Body.Split {
			t.Split = append(t.Split, prompts.SplitEntry{Version: e.Version, Weight: e.Weight})
		}
	}
	m, err := s.prompts.SetLabel(ctx, access.OrgID, req.Name, req.Label, t, actor(ctx))
	if err != nil {
		return nil, err
	}
	return api.SetPromptLabel200JSONResponse(toAPIPromptLabel(m.Label)), nil
}

// DeletePromptLabel removes a label; audited.
func (s *Server) DeletePromptLabel(ctx context.Context, req api.DeletePromptLabelRequestObject) (api.DeletePromptLabelResponseObject, error) {
	access, err := s.adminOrg(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	if _, err := s.prompts.DeleteLabel(ctx, access.OrgID, req.Name, req.Label, actor(ctx)); err != nil {
		return nil, err
	}
	return api.DeletePromptLabel204Response{}, nil
}

// DiffPromptVersions compares two versions of a prompt.
func (s *Server) DiffPromptVersions(ctx context.Context, req api.DiffPromptVersionsRequestObject) (api.DiffPromptVersionsResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	d, err := s.prompts.Diff(ctx, access.OrgID, req.Name, req.Params.From, req.Params.To)
	if err != nil {
		return nil, err
	}
	out := api.PromptDiff{From: d.From, To: d.To, Changed: d.Changed, Truncated: d.Truncated, Fields: make([]api.PromptFieldChange, len(d.Fields)), Messages: make([]api.PromptMessageDiff, len(d.Messages))}
	for i, f := range d.Fields {
		out.Fields[i] = api.PromptFieldChange{Field: f.Field, From: f.From, To: f.To}
	}
	for i, m := range d.Messages {
		md := api.PromptMessageDiff{Index: m.Index, Change: api.PromptMessageDiffChange(m.Change), Truncated: m.Truncated, Lines: make([]api.DiffLine, len(m.Lines))}
		if m.FromRole != "" {
			md.FromRole = &m.FromRole
		}
		if m.ToRole != "" {
			md.ToRole = &m.ToRole
		}
		for j, l := range m.Lines {
			md.Lines[j] = api.DiffLine{Op: api.DiffLineOp(l.Op), Text: l.Text}
			if l.Count > 0 {
				md.Lines[j].Count = &l.Count
			}
		}
		out.Messages[i] = md
	}
	return api.DiffPromptVersions200JSONResponse(out), nil
}

// RenderPrompt previews a prompt as chat would use it.
func (s *Server) RenderPrompt(ctx context.Context, req api.RenderPromptRequestObject) (api.RenderPromptResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	ref := prompts.Ref{Name: req.Name, Label: deref(req.Body.Label), Version: deref(req.Body.Version)}
	if req.Body.Variables != nil {
		ref.Variables = *req.Body.Variables
	}
	sticky := deref(req.Body.StickyKey)
	if sticky == "" {
		sticky = principalStickyKey(ctx)
	}
	r, err := s.prompts.Resolve(ctx, access.OrgID, ref, sticky)
	if err != nil {
		return nil, err
	}
	out := api.RenderedPrompt{
		Name: r.Prompt, Version: r.Version, ExperimentId: r.ExperimentID, Messages: make([]api.PromptMessage, len(r.Messages)),
		Model: orNil(r.Model), Parameters: toAPIPromptParameters(r.Parameters), Tools: make([]api.ToolDefinition, len(r.Tools)),
	}
	if r.Label != "" {
		out.Label = &r.Label
	}
	for i, m := range r.Messages {
		out.Messages[i] = api.PromptMessage{Role: api.PromptMessageRole(m.Role), Content: m.Text()}
	}
	for i, t := range r.Tools {
		out.Tools[i] = toAPITool(t.Name, t.Description, t.Parameters)
	}
	return api.RenderPrompt200JSONResponse(out), nil
}

// GetPromptExperiment reports an A/B experiment per version.
func (s *Server) GetPromptExperiment(ctx context.Context, req api.GetPromptExperimentRequestObject) (api.GetPromptExperimentResponseObject, error) {
	access, err := s.orgFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	e, err := s.prompts.Experiment(ctx, access.OrgID, req.Name, req.Id)
	if err != nil {
		return nil, err
	}
	out := api.PromptExperimentReport{
		Id: e.ID, Name: e.Prompt, Label: e.Label, StartedAt: e.StartedAt.UTC(), EndedAt: store.UTC(e.EndedAt),
		Split: toAPISplit(e.Split), Versions: make([]api.PromptExperimentVersion, len(e.Versions)),
	}
	for i, v := range e.Versions {
		out.Versions[i] = api.PromptExperimentVersion{
			Version: v.Version, Weight: v.Weight, Requests: v.Requests, Errors: v.Errors, ErrorRate: v.ErrorRate,
			LatencyMsP50: v.LatencyMsP50, LatencyMsP95: v.LatencyMsP95, PromptTokens: v.PromptTokens,
			CompletionTokens: v.CompletionTokens, CostUsd: v.CostUSD, FeedbackUp: v.FeedbackUp, FeedbackDown: v.FeedbackDown,
		}
	}
	return api.GetPromptExperiment200JSONResponse(out), nil
}

// promptUse is the stored prompt a chat call uses.
type promptUse struct {
	prompts.Rendered
}

// usage is the prompt's entry of the call's usage record; nil for a call without one.
func (u *promptUse) usage() *usage.PromptUse {
	if u == nil {
		return nil
	}
	return &usage.PromptUse{Name: u.Prompt, Version: u.Version, ExperimentID: u.ExperimentID}
}

// applyPrompt resolves body.prompt, if any, into call (before the runner validates it):
// its rendered messages go before the request's, and its model alias, parameters and
// tools apply where the request sets none (a request tool of the same name wins). The
// sticky key of a split label is prompt.sticky_key, else the request's user, else the
// caller's user or API key id. It returns nil without a prompt; errors name fields
// under /prompt.
func (s *Server) applyPrompt(ctx context.Context, who caller, body *api.ChatRequest, call *chat.Call) (*promptUse, error) {
	ref := body.Prompt
	if ref == nil {
		return nil, nil //nolint:nilnil // no prompt is not an error
	}
	r := toPromptRef(ref)
	sticky := deref(ref.StickyKey)
	if sticky == "" {
		sticky = deref(body.User)
	}
	if sticky == "" {
		sticky = principalStickyKey(ctx)
	}
	rendered, err := s.prompts.Resolve(ctx, who.org, r, sticky)
	if err != nil {
		return nil, errs.UnderPointer(err, "/prompt")
	}
	rendered.Apply(&call.Request)
	if len(call.KnowledgeBases) == 0 {
		call.KnowledgeBases = rendered.Parameters.KnowledgeBases
	}
	if body.Model == nil && rendered.Model != "" {
		call.Alias = rendered.Model
	}
	return &promptUse{rendered}, nil
}

// toPromptRef is the stored prompt a request names.
func toPromptRef(ref *api.ChatPromptRef) prompts.Ref {
	r := prompts.Ref{Name: ref.Name, Label: deref(ref.Label), Version: deref(ref.Version)}
	if ref.Variables != nil {
		r.Variables = *ref.Variables
	}
	return r
}

// principalStickyKey is the caller's user or API key id.
func principalStickyKey(ctx context.Context) string {
	p, _ := principalFrom(ctx)
	if p.Key != nil {
		return p.Key.ID.String()
	}
	return p.UserID.String()
}

// toDraft converts a version body.
func toDraft(in api.PromptVersionInput) (prompts.Draft, error) {
	d := prompts.Draft{Model: deref(in.Model), Note: deref(in.Note)}
	for _, m := range in.Messages {
		d.Messages = append(d.Messages, prompts.Message{Role: string(m.Role), Content: m.Content})
	}
	if in.Variables != nil {
		for _, v := range *in.Variables {
			d.Variables = append(d.Variables, prompts.Variable{
				Name: v.Name, Type: string(v.Type), Required: deref(v.Required), Default: v.Default, Description: deref(v.Description),
			})
		}
	}
	if p := in.Parameters; p != nil {
		d.Parameters = prompts.Parameters{Temperature: p.Temperature, TopP: p.TopP, MaxTokens: p.MaxTokens}
		if p.KnowledgeBases != nil {
			d.Parameters.KnowledgeBases = *p.KnowledgeBases
		}
	}
	if in.Tools != nil {
		for _, t := range *in.Tools {
			params, err := json.Marshal(t.Parameters)
			if err != nil {
				return d, err
			}
			d.Tools = append(d.Tools, prompts.Tool{Name: t.Name, Description: deref(t.Description), Parameters: params})
		}
	}
	return d, nil
}

func toAPIPrompt(p prompts.Prompt) api.Prompt {
	out := api.Prompt{
		Id: p.ID, Name: p.Name, Description: p.Description, LatestVersion: p.LatestVersion,
		Labels: make([]api.PromptLabel, len(p.Labels)), CreatedBy: p.CreatedBy, CreatedAt: p.CreatedAt.UTC(), UpdatedAt: p.UpdatedAt.UTC(),
		DeletedAt: store.UTC(p.DeletedAt),
	}
	for i, l := range p.Labels {
		out.Labels[i] = toAPIPromptLabel(l)
	}
	return out
}

func toAPIPromptLabel(l prompts.Label) api.PromptLabel {
	out := api.PromptLabel{Label: l.Name, ExperimentId: l.ExperimentID, UpdatedAt: l.UpdatedAt.UTC(), UpdatedBy: l.UpdatedBy}
	if l.ExperimentID != nil {
		split := toAPISplit(l.Split)
		out.Split = &split
	} else {
		out.Version = &l.Version
	}
	return out
}

func toAPISplit(split []prompts.SplitEntry) []api.PromptSplitEntry {
	out := make([]api.PromptSplitEntry, len(split))
	for i, e := range split {
		out[i] = api.PromptSplitEntry{Version: e.Version, Weight: e.Weight}
	}
	return out
}

func toAPIPromptVersion(v prompts.Version) api.PromptVersion {
	out := api.PromptVersion{
		Version: v.Number, Messages: make([]api.PromptMessage, len(v.Messages)), Variables: make([]api.PromptVariable, len(v.Variables)),
		Model: orNil(v.Model), Parameters: toAPIPromptParameters(v.Parameters), Tools: make([]api.ToolDefinition, len(v.Tools)),
		Note: v.Note, CreatedBy: v.CreatedBy, CreatedAt: v.CreatedAt.UTC(),
	}
	for i, m := range v.Messages {
		out.Messages[i] = api.PromptMessage{Role: api.PromptMessageRole(m.Role), Content: m.Content}
	}
	for i, va := range v.Variables {
		out.Variables[i] = api.PromptVariable{Name: va.Name, Type: api.PromptVariableType(va.Type), Required: &va.Required, Default: va.Default, Description: orNil(va.Description)}
	}
	for i, t := range v.Tools {
		out.Tools[i] = toAPITool(t.Name, t.Description, t.Parameters)
	}
	return out
}

func toAPIPromptParameters(p prompts.Parameters) api.PromptParameters {
	out := api.PromptParameters{Temperature: p.Temperature, TopP: p.TopP, MaxTokens: p.MaxTokens}
	if len(p.KnowledgeBases) > 0 {
		out.KnowledgeBases = &p.KnowledgeBases
	}
	return out
}

func toAPITool(name, description string, parameters json.RawMessage) api.ToolDefinition {
	t := api.ToolDefinition{Name: name, Description: orNil(description), Parameters: map[string]any{}}
	_ = json.Unmarshal(parameters, &t.Parameters) // stored from a JSON object
	return t
}

// orNil is nil for the empty string.
func orNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
