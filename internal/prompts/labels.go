package prompts

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// The kinds of label move, as audit actions name them.
const (
	MovePublish  = "publish"  // to a version newer than before (or a new label)
	MoveRollback = "rollback" // to a version older than before
	MoveSplit    = "split"    // to a split between versions: a new experiment
)

// Target is where a label is to point: Version, or a Split of two or more versions.
type Target struct {
	Version int
	Split   []SplitEntry
}

// Move is a label move: what the label was (nil: new) and is.
type Move struct {
	Kind     string
	Previous *Label
	Label    Label
}

// SetLabel points label of the prompt named name at t. Publishing and rolling back are
// both a move to one version; a split starts a new experiment (and ends the label's
// previous one). It returns not_found for the prompt, and invalid_request (pointers
// /version and /split) for the reserved label latest, a missing version, or a split of
// fewer than two distinct versions or with weights under 1. Every move is audited
// (prompt.label_<kind>) by by.
func (s *Service) SetLabel(ctx context.Context, org uuid.UUID, name, label string, t Target, by audit.Actor) (Move, error) {
	if err := validateTarget(label, t); err != nil {
		return Move{}, err
	}
	var m Move
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		m = Move{}
		p, err := q.GetPromptForUpdate(ctx, db.GetPromptForUpdateParams{OrgID: org, Name: name})
		if err != nil {
			return s.lookupError(err, name)
		}
		if err := checkVersionsExist(ctx, q, org, p.ID, t); err != nil {
			return err
		}
		prev, err := q.GetPromptLabel(ctx, db.GetPromptLabelParams{OrgID: org, PromptID: p.ID, Label: label})
		switch code := errs.CodeOf(store.Translate(err)); {
		case err == nil:
			pl, err := toLabel(prev)
			if err != nil {
				return err
			}
			m.Previous = &pl
		case code != errs.NotFound:
			return err
		}
		now := s.now().UTC()
		if m.Previous != nil && m.Previous.ExperimentID != nil {
			if err := q.EndPromptExperiment(ctx, db.EndPromptExperimentParams{OrgID: org, ID: *m.Previous.ExperimentID, EndedAt: &now}); err != nil {
				return err
			}
		}
		params := db.UpsertPromptLabelParams{OrgID: org, PromptID: p.ID, Label: label, UpdatedAt: now, UpdatedBy: store.NullUUID(by.UserID())}
		if len(t.Split) > 0 {
			split, err := json.Marshal(t.Split)
			if err != nil {
				return err
			}
			experiment := uuid.Must(uuid.NewV7())
			if err := q.CreatePromptExperiment(ctx, db.CreatePromptExperimentParams{
				ID: experiment, OrgID: org, PromptID: p.ID, Label: label, Split: split, CreatedBy: store.NullUUID(by.UserID()), CreatedAt: now,
			}); err != nil {
				return err
			}
			params.Split, params.ExperimentID = split, uuid.NullUUID{UUID: experiment, Valid: true}
		} else {
			params.Version = pgtype.Int4{Int32: int32(t.Version), Valid: true} //nolint:gosec // validated by the API
		}
		row, err := q.UpsertPromptLabel(ctx, params)
		if err != nil {
			return err
		}
		if m.Label, err = toLabel(row); err != nil {
			return err
		}
		if err := q.TouchPrompt(ctx, db.TouchPromptParams{OrgID: org, ID: p.ID, UpdatedAt: now}); err != nil {
			return err
		}
		m.Kind = MovePublish
		switch {
		case len(t.Split) > 0:
			m.Kind = MoveSplit
		case m.Previous != nil && m.Previous.Version > t.Version:
			m.Kind = MoveRollback
		}
		data := map[string]any{"label": label, "to": auditTarget(&m.Label), "from": auditTarget(m.Previous)}
		if m.Label.ExperimentID != nil {
			data["experiment_id"] = m.Label.ExperimentID.String()
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.label_" + m.Kind, TargetType: "prompt", TargetID: name, Data: data})
	})
	if err != nil {
		return Move{}, fmt.Errorf("set prompt label: %w", err)
	}
	return m, nil
}

// auditTarget is what a label points at, for the audit log: a version, a split, or nil.
func auditTarget(l *Label) any {
	switch {
	case l == nil:
		return nil
	case l.ExperimentID != nil:
		return map[string]any{"split": l.Split}
	default:
		return map[string]any{"version": l.Version}
	}
}

// DeleteLabel removes label of the prompt named name and ends the experiment it ran; it
// returns what the label was, and not_found for the prompt or the label. The deletion is
// audited (prompt.label_delete) by by.
func (s *Service) DeleteLabel(ctx context.Context, org uuid.UUID, name, label string, by audit.Actor) (Label, error) {
	var out Label
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	err := s.st.InTx(ctx, func(q *db.Queries) error {
		p, err := q.GetPromptForUpdate(ctx, db.GetPromptForUpdateParams{OrgID: org, Name: name})
		if err != nil {
			return s.lookupError(err, name)
		}
		row, err := q.DeletePromptLabel(ctx, db.DeletePromptLabelParams{OrgID: org, PromptID: p.ID, Label: label})
		if err != nil {
			if errs.CodeOf(store.Translate(err)) == errs.NotFound {
				return errs.E(errs.NotFound, "Prompt %q has no label %q.", name, label)
			}
			return err
		}
		if out, err = toLabel(row); err != nil {
			return err
		}
		now := s.now().UTC()
		if out.ExperimentID != nil {
			if err := q.EndPromptExperiment(ctx, db.EndPromptExperimentParams{OrgID: org, ID: *out.ExperimentID, EndedAt: &now}); err != nil {
				return err
			}
		}
		if err := q.TouchPrompt(ctx, db.TouchPromptParams{OrgID: org, ID: p.ID, UpdatedAt: now}); err != nil {
			return err
		}
		return audit.Write(ctx, q, by, audit.Event{OrgID: &org, Action: "prompt.label_delete", TargetType: "prompt", TargetID: name,
			Data: map[string]any{"label": label, "from": auditTarget(&out)}})
	})
	if err != nil {
		return Label{}, fmt.Errorf("delete prompt label: %w", err)
	}
	return out, nil
}

func validateTarget(label string, t Target) error {
	if label == Latest {
		return errs.InvalidFields("invalid label", []errs.FieldError{{Pointer: "/path/label", Message: "latest is reserved: it always means the newest version"}})
	}
	if !namePattern.MatchString(label) {
		return errs.InvalidFields("invalid label", []errs.FieldError{{Pointer: "/path/label", Message: "must match ^[a-z0-9][a-z0-9._-]{0,63}$"}})
	}
	if (t.Version > 0) == (len(t.Split) > 0) {
		return errs.InvalidFields("invalid label target", []errs.FieldError{{Pointer: "/version", Message: "give exactly one of version and split"}})
	}
	if t.Version < 0 {
		return errs.InvalidFields("invalid label target", []errs.FieldError{{Pointer: "/version", Message: "must be at least 1"}})
	}
	if len(t.Split) == 0 {
		return nil
	}
	var fields []errs.FieldError
	if len(t.Split) < 2 {
		fields = append(fields, errs.FieldError{Pointer: "/split", Message: "needs at least two versions"})
	}
	seen := map[int]bool{}
	for i, e := range t.Split {
		ptr := "/split/" + strconv.Itoa(i)
		if e.Version < 1 {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/version", Message: "must be at least 1"})
		} else if seen[e.Version] {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/version", Message: "is split twice"})
		}
		seen[e.Version] = true
		if e.Weight < 1 {
			fields = append(fields, errs.FieldError{Pointer: ptr + "/weight", Message: "must be a positive integer"})
		}
	}
	return errs.InvalidFields("invalid split", fields)
}

func checkVersionsExist(ctx context.Context, q *db.Queries, org, promptID uuid.UUID, t Target) error {
	want := []int32{int32(t.Version)} //nolint:gosec // validated by the API
	if len(t.Split) > 0 {
		want = want[:0]
		for _, e := range t.Split {
			want = append(want, int32(e.Version)) //nolint:gosec // validated by the API
		}
	}
	have, err := q.ExistingPromptVersions(ctx, db.ExistingPromptVersionsParams{OrgID: org, PromptID: promptID, Versions: want})
	if err != nil {
		return err
	}
	exists := map[int32]bool{}
	for _, v := range have {
		exists[v] = true
	}
	var fields []errs.FieldError
	for i, v := range want {
		if exists[v] {
			continue
		}
		ptr := "/version"
		if len(t.Split) > 0 {
			ptr = "/split/" + strconv.Itoa(i) + "/version"
		}
		fields = append(fields, errs.FieldError{Pointer: ptr, Message: fmt.Sprintf("the prompt has no version %d", v)})
	}
	return errs.InvalidFields("invalid label target", fields)
}

// pick draws a version of split for stickyKey: SHA-256 of the experiment id and the key
// gives a bucket in [0, sum of weights), so a key always gets the same version while the
// experiment runs. An empty key draws at random.
func pick(experiment uuid.UUID, split []SplitEntry, stickyKey string) int {
	total := 0
	for _, e := range split {
		total += e.Weight
	}
	var bucket int
	if stickyKey == "" {
		bucket = rand.IntN(total) //nolint:gosec // traffic splitting, not security
	} else {
		bucket = Bucket(experiment, stickyKey, total)
	}
	for _, e := range split {
		if bucket < e.Weight {
			return e.Version
		}
		bucket -= e.Weight
	}
	return split[len(split)-1].Version // unreachable: bucket < total
}

// Bucket is stickyKey's bucket in [0, n) for experiment: the first 8 bytes of
// SHA-256(experiment id bytes ‖ key), modulo n (a bias below n/2⁶⁴, negligible).
func Bucket(experiment uuid.UUID, stickyKey string, n int) int {
	h := sha256.New()
	h.Write(experiment[:])
	h.Write([]byte(stickyKey))
	sum := h.Sum(nil)
	return int(binary.BigEndian.Uint64(sum[:8]) % uint64(n)) //nolint:gosec // n > 0 and small
}

// Experiment is one split a label ran, and how each version fared.
type Experiment struct {
	ID        uuid.UUID
	Prompt    string
	Label     string
	Split     []SplitEntry
	StartedAt time.Time
	EndedAt   *time.Time
	Versions  []VersionStats
}

// VersionStats are the chat calls of one version of an experiment.
type VersionStats struct {
	Version, Weight                int
	Requests, Errors               int64
	ErrorRate                      float64
	LatencyMsP50, LatencyMsP95     float64
	PromptTokens, CompletionTokens int64
	CostUSD                        float64
	FeedbackUp, FeedbackDown       int64 // ratings of conversation replies that ran under the version
}

// Experiment reports experiment id of the prompt named name: one entry per version of
// its split (zeros where no call used it yet). It returns not_found for an unknown
// prompt or experiment.
func (s *Service) Experiment(ctx context.Context, org uuid.UUID, name string, id uuid.UUID) (Experiment, error) {
	p, err := s.st.GetPrompt(ctx, db.GetPromptParams{OrgID: org, Name: name})
	if err != nil {
		return Experiment{}, s.lookupError(err, name)
	}
	row, err := s.st.GetPromptExperiment(ctx, db.GetPromptExperimentParams{OrgID: org, PromptID: p.ID, ID: id})
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return Experiment{}, errs.E(errs.NotFound, "Prompt %q has no experiment %s.", name, id)
		}
		return Experiment{}, fmt.Errorf("get prompt experiment: %w", err)
	}
	e := Experiment{ID: row.ID, Prompt: p.Name, Label: row.Label, StartedAt: row.CreatedAt, EndedAt: row.EndedAt}
	if err := json.Unmarshal(row.Split, &e.Split); err != nil {
		return Experiment{}, fmt.Errorf("decode experiment %s: %w", id, err)
	}
	stats, err := s.st.PromptExperimentStats(ctx, db.PromptExperimentStatsParams{OrgID: org, ExperimentID: uuid.NullUUID{UUID: id, Valid: true}})
	if err != nil {
		return Experiment{}, fmt.Errorf("prompt experiment stats: %w", err)
	}
	byVersion := map[int]db.PromptExperimentStatsRow{}
	for _, st := range stats {
		byVersion[int(st.Version)] = st
	}
	feedback, err := s.st.ExperimentFeedback(ctx, db.ExperimentFeedbackParams{OrgID: org, ExperimentID: uuid.NullUUID{UUID: id, Valid: true}})
	if err != nil {
		return Experiment{}, fmt.Errorf("prompt experiment feedback: %w", err)
	}
	ratings := map[int]db.ExperimentFeedbackRow{}
	for _, f := range feedback {
		ratings[int(f.Version)] = f
	}
	for _, arm := range e.Split {
		st := byVersion[arm.Version]
		v := VersionStats{
			Version: arm.Version, Weight: arm.Weight, Requests: st.Requests, Errors: st.Errors,
			LatencyMsP50: st.LatencyMsP50, LatencyMsP95: st.LatencyMsP95, PromptTokens: st.PromptTokens,
			CompletionTokens: st.CompletionTokens, CostUSD: st.CostUsd,
			FeedbackUp: ratings[arm.Version].Up, FeedbackDown: ratings[arm.Version].Down,
		}
		if v.Requests > 0 {
			v.ErrorRate = float64(v.Errors) / float64(v.Requests)
		}
		e.Versions = append(e.Versions, v)
	}
	return e, nil
}
