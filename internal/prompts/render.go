package prompts

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/store"
)

// Ref names what to render: the prompt Name at Version, or at Label (default
// DefaultLabel; Latest is the newest version), with Variables as decoded from JSON
// (float64 numbers, bool, string).
type Ref struct {
	Name      string
	Label     string
	Version   int
	Variables map[string]any
}

// Rendered is a resolved version with its messages filled in, ready for a chat call.
type Rendered struct {
	Prompt       string
	Version      int
	Label        string     // "" when a version was asked for
	ExperimentID *uuid.UUID // set when a split label drew the version
	Messages     []llm.Message
	Model        string // "": none
	Parameters   Parameters
	Tools        []llm.Tool
}

// Resolve finds the version ref names (drawing it by stickyKey from a split label) and
// renders its messages. It returns not_found for an unknown prompt, label or version,
// and invalid_request naming each bad variable under /variables/<name>: missing when
// required, not declared by the version, or of the wrong JSON type.
func (s *Service) Resolve(ctx context.Context, org uuid.UUID, ref Ref, stickyKey string) (Rendered, error) {
	if ref.Label != "" && ref.Version > 0 {
		return Rendered{}, errs.InvalidFields("invalid prompt reference", []errs.FieldError{{Pointer: "/version", Message: "give at most one of label and version"}})
	}
	p, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: ref.Name})
	if err != nil {
		return Rendered{}, s.lookupError(err, ref.Name)
	}
	out := Rendered{Prompt: p.Name, Version: ref.Version}
	if ref.Version == 0 {
		out.Label = ref.Label
		if out.Label == "" {
			out.Label = DefaultLabel
		}
		if out.Label != Latest {
			row, err := s.st.GetPromptLabel(ctx, db.GetPromptLabelParams{OrgID: org, PromptID: p.ID, Label: out.Label})
			if err != nil {
				if errs.CodeOf(store.Translate(err)) == errs.NotFound {
					return Rendered{}, errs.E(errs.NotFound, "Prompt %q has no label %q (latest names the newest version).", p.Name, out.Label)
				}
				return Rendered{}, fmt.Errorf("get prompt label: %w", err)
			}
			l, err := toLabel(row)
			if err != nil {
				return Rendered{}, err
			}
			out.Version = l.Version
			if l.ExperimentID != nil {
				out.Version, out.ExperimentID = pick(*l.ExperimentID, l.Split, stickyKey), l.ExperimentID
			}
		}
	}
	v, err := s.version(ctx, s.st.Queries, p, out.Version)
	if err != nil {
		return Rendered{}, err
	}
	out.Version, out.Model, out.Parameters = v.Number, v.Model, v.Parameters
	values, err := bind(v.Variables, ref.Variables, v.Number)
	if err != nil {
		return Rendered{}, err
	}
	for _, m := range v.Messages {
		text := placeholder.ReplaceAllStringFunc(m.Content, func(match string) string {
			return values[placeholder.FindStringSubmatch(match)[1]]
		})
		out.Messages = append(out.Messages, llm.Message{Role: llm.Role(m.Role), Content: []llm.Part{{Type: llm.PartText, Text: text}}})
	}
	for _, t := range v.Tools {
		out.Tools = append(out.Tools, llm.Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters})
	}
	return out, nil
}

// bind checks the given values against the declared variables and returns the text of
// every declared variable: the value, else the default, else "".
func bind(declared []Variable, given map[string]any, version int) (map[string]string, error) {
	var fields []errs.FieldError
	known := make(map[string]bool, len(declared))
	out := make(map[string]string, len(declared))
	for _, d := range declared {
		known[d.Name] = true
		ptr := "/variables/" + d.Name
		value, ok := given[d.Name]
		if !ok || value == nil {
			if d.Required {
				fields = append(fields, errs.FieldError{Pointer: ptr, Message: "is required"})
				continue
			}
			value = d.Default
		} else if msg := checkType(d.Type, value); msg != "" {
			fields = append(fields, errs.FieldError{Pointer: ptr, Message: msg})
			continue
		}
		out[d.Name] = format(value)
	}
	var unknown []string
	for name := range given {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		fields = append(fields, errs.FieldError{Pointer: "/variables/" + name, Message: fmt.Sprintf("is not declared by version %d", version)})
	}
	return out, errs.InvalidFields("invalid prompt variables", fields)
}

// checkType returns why value (decoded from JSON) is not of type typ, or "".
func checkType(typ string, value any) string {
	switch typ {
	case TypeString:
		if _, ok := value.(string); ok {
			return ""
		}
	case TypeNumber:
		if _, ok := value.(float64); ok {
			return ""
		}
	case TypeInteger:
		if f, ok := value.(float64); ok && f == math.Trunc(f) && !math.IsInf(f, 0) {
			return ""
		}
	case TypeBoolean:
		if _, ok := value.(bool); ok {
			return ""
		}
	}
	return "must be a JSON " + typ
}

// format is a value's text in a rendered message.
func format(value any) string {
	switch v := value.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	default:
		return fmt.Sprint(v)
	}
}

// Apply merges the rendered prompt into req (before the runner validates it): its
// messages go before the request's, and its parameters and tools apply where the request
// sets none (a request tool of the same name wins). The prompt's model is the caller's
// to apply, where the request names none.
func (r Rendered) Apply(req *llm.Request) {
	req.Messages = append(append([]llm.Message(nil), r.Messages...), req.Messages...)
	p := r.Parameters
	if req.Temperature == nil {
		req.Temperature = p.Temperature
	}
	if req.TopP == nil {
		req.TopP = p.TopP
	}
	if req.MaxTokens == nil {
		req.MaxTokens = p.MaxTokens
	}
	var tools []llm.Tool
	for _, t := range r.Tools {
		overridden := false
		for _, own := range req.Tools {
			overridden = overridden || own.Name == t.Name
		}
		if !overridden {
			tools = append(tools, t)
		}
	}
	req.Tools = append(tools, req.Tools...)
}
