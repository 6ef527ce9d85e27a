package rag

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/rag/eval"
	"github.com/kilnhq/kiln/internal/store"
)

// Evaluation is an evaluation run of a knowledge base's retrieval.
type Evaluation struct {
	ID          uuid.UUID
	KBID        uuid.UUID
	Name        string
	Status      string // queued, running, succeeded, failed
	Error       string
	Modes       []Mode
	QueryCount  int
	JobID       *uuid.UUID
	Runs        []eval.Run        // one per mode, in the modes' order; empty until it succeeded
	Comparisons []eval.Comparison // each mode after the first against the first
	// AnswerOptions are the answer evaluation asked for (nil: none); Answers its outcome
	// once the evaluation succeeded.
	AnswerOptions *AnswerOptions
	Answers       *eval.AnswerRun
	CreatedAt     time.Time
	FinishedAt    *time.Time
}

// NewEvaluation is an evaluation to run.
type NewEvaluation struct {
	Name    string
	Queries []eval.Query
	Modes   []Mode // default hybrid, vector, fulltext
	Chunks  int    // chunks retrieved per query; default 30
	// Answers asks for the answers to the queries that carry a reference answer to be
	// generated and scored (EvaluateAnswers); nil: retrieval only.
	Answers *AnswerOptions
}

// evaluationRequest is what kb_evaluations.request stores.
type evaluationRequest struct {
	Queries []eval.Query   `json:"queries"`
	Modes   []Mode         `json:"modes"`
	Chunks  int            `json:"chunks"`
	Answers *AnswerOptions `json:"answers,omitempty"`
}

// evaluationResult is what kb_evaluations.result stores.
type evaluationResult struct {
	Runs        []eval.Run        `json:"runs"`
	Comparisons []eval.Comparison `json:"comparisons"`
	Answers     *eval.AnswerRun   `json:"answers,omitempty"`
}

// KindEvaluate runs an evaluation.
var KindEvaluate = jobs.Kind{Name: "rag.evaluate", MaxAttempts: 3, Timeout: 30 * time.Minute,
	Backoff: jobs.Backoff{Base: 10 * time.Second, Max: time.Minute}}

// evaluatePayload is the payload of KindEvaluate.
type evaluatePayload struct {
	Org        uuid.UUID `json:"org"`
	Evaluation uuid.UUID `json:"evaluation"`
}

// CreateEvaluation stores an evaluation of knowledge base kb and creates its job. It
// returns not_found, or invalid_request and not_ready for answer options it cannot run.
func (s *Service) CreateEvaluation(ctx context.Context, org uuid.UUID, by audit.Actor, kb uuid.UUID, n NewEvaluation) (Evaluation, error) {
	if err := s.checkAnswerOptions(n.Answers, n.Queries, "/answers"); err != nil {
		return Evaluation{}, err
	}
	if len(n.Modes) == 0 {
		n.Modes = []Mode{ModeHybrid, ModeVector, ModeFulltext}
	}
	if n.Chunks <= 0 {
		n.Chunks = 30
	}
	req, err := json.Marshal(evaluationRequest{Queries: n.Queries, Modes: n.Modes, Chunks: n.Chunks, Answers: n.Answers})
	if err != nil {
		return Evaluation{}, fmt.Errorf("encode evaluation: %w", err)
	}
	ctx, cancel := audit.Detach(ctx)
	defer cancel()
	var out Evaluation
	err = s.st.InTx(ctx, func(q *db.Queries) error {
		if _, err := q.GetKnowledgeBase(ctx, db.GetKnowledgeBaseParams{OrgID: org, ID: kb}); err != nil {
			return notFound(err, "knowledge base")
		}
		row, err := q.CreateEvaluation(ctx, db.CreateEvaluationParams{ID: uuid.Must(uuid.NewV7()), OrgID: org, KbID: kb, Name: n.Name,
			Request: req, QueryCount: int32(len(n.Queries)), CreatedAt: s.now()}) //nolint:gosec // at most 2000 (the spec)
		if err != nil {
			return fmt.Errorf("create evaluation: %w", err)
		}
		j, err := s.jobs.Enqueue(ctx, q, s.now(), jobs.New{Kind: KindEvaluate.Name, OrgID: &org, CreatedBy: by.UserID(), APIKeyID: apiKeyOf(by),
			Payload: evaluatePayload{Org: org, Evaluation: row.ID}})
		if err != nil {
			return err
		}
		if err := q.SetEvaluationJob(ctx, db.SetEvaluationJobParams{ID: row.ID, JobID: uuid.NullUUID{UUID: j.ID, Valid: true}}); err != nil {
			return fmt.Errorf("set evaluation job: %w", err)
		}
		row.JobID = uuid.NullUUID{UUID: j.ID, Valid: true}
		out = toEvaluation(row, "", "", n.Modes)
		out.AnswerOptions = n.Answers
		return nil
	})
	return out, err
}

// Evaluation returns one evaluation with its results.
func (s *Service) Evaluation(ctx context.Context, org, kb, id uuid.UUID) (Evaluation, error) {
	row, err := s.st.GetEvaluation(ctx, db.GetEvaluationParams{OrgID: org, KbID: kb, ID: id})
	if err != nil {
		return Evaluation{}, notFound(err, "evaluation")
	}
	var req evaluationRequest
	_ = json.Unmarshal(row.KbEvaluation.Request, &req)
	e := toEvaluation(row.KbEvaluation, row.JobState.String, row.JobError.String, req.Modes)
	e.AnswerOptions = req.Answers
	if len(row.KbEvaluation.Result) > 0 {
		var res evaluationResult
		if err := json.Unmarshal(row.KbEvaluation.Result, &res); err != nil {
			return Evaluation{}, fmt.Errorf("read evaluation result: %w", err)
		}
		e.Runs, e.Comparisons, e.Answers = res.Runs, res.Comparisons, res.Answers
	}
	return e, nil
}

// Evaluations lists a knowledge base's evaluations, newest first, without results.
func (s *Service) Evaluations(ctx context.Context, org, kb uuid.UUID, limit int, after *uuid.UUID) ([]Evaluation, error) {
	if _, err := s.KnowledgeBase(ctx, org, kb); err != nil {
		return nil, err
	}
	rows, err := s.st.ListEvaluations(ctx, db.ListEvaluationsParams{OrgID: org, KbID: kb, After: store.NullUUID(after), MaxRows: int32(limit)}) //nolint:gosec // bounded by the spec
	if err != nil {
		return nil, fmt.Errorf("list evaluations: %w", err)
	}
	out := make([]Evaluation, len(rows))
	for i, r := range rows {
		var modes []Mode
		_ = json.Unmarshal(r.Modes, &modes)
		out[i] = toEvaluation(db.KbEvaluation{ID: r.ID, OrgID: r.OrgID, KbID: r.KbID, Name: r.Name, Status: r.Status, Error: r.Error,
			QueryCount: r.QueryCount, JobID: r.JobID, CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt}, r.JobState.String, r.JobError.String, modes)
	}
	return out, nil
}

func toEvaluation(r db.KbEvaluation, jobState, jobError string, modes []Mode) Evaluation {
	e := Evaluation{ID: r.ID, KBID: r.KbID, Name: r.Name, Status: r.Status, Error: r.Error.String, Modes: modes,
		QueryCount: int(r.QueryCount), JobID: store.UUIDPtr(r.JobID), CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt}
	if (e.Status == "queued" || e.Status == "running") && (jobState == string(jobs.Cancelled) || jobState == string(jobs.Failed)) {
		e.Status, e.Error = "failed", "evaluation "+jobState
		if jobError != "" && jobState == string(jobs.Failed) {
			e.Error += ": " + jobError
		}
	}
	return e
}

// evaluate is KindEvaluate's handler.
func (s *Service) evaluate(ctx context.Context, run *jobs.Run, p evaluatePayload) (any, error) {
	ctx = withUsageEndpoint(ctx, UsageEvaluate)
	row, err := s.st.GetEvaluationForJob(ctx, db.GetEvaluationForJobParams{OrgID: p.Org, ID: p.Evaluation})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return nil, nil // deleted with its knowledge base
	}
	if err != nil {
		return nil, fmt.Errorf("read evaluation: %w", err)
	}
	var req evaluationRequest
	if err := json.Unmarshal(row.Request, &req); err != nil {
		return nil, jobs.Permanent(fmt.Errorf("read evaluation request: %w", err))
	}
	kb, err := s.KnowledgeBase(ctx, p.Org, row.KbID)
	if err != nil {
		return nil, nil //nolint:nilerr // the knowledge base went: nothing to evaluate
	}
	if err := s.st.StartEvaluation(ctx, row.ID); err != nil {
		return nil, fmt.Errorf("start evaluation: %w", err)
	}
	var res evaluationResult
	total := int64(len(req.Modes))
	if req.Answers != nil {
		total += int64(len(eval.Answerable(req.Queries)))
	}
	for i, mode := range req.Modes {
		search, err := s.Searcher(ctx, kb, Query{Mode: mode}, req.Chunks)
		if err != nil {
			return nil, err
		}
		r, err := eval.Evaluate(ctx, string(mode), req.Queries, search)
		if err != nil {
			return nil, s.failEvaluation(ctx, run, row.ID, err)
		}
		res.Runs = append(res.Runs, r)
		if err := run.Report(ctx, jobs.Progress{Done: int64(i + 1), Total: total, Message: "evaluated " + string(mode)}); err != nil {
			return nil, fmt.Errorf("report progress: %w", err)
		}
	}
	for _, r := range res.Runs[1:] {
		res.Comparisons = append(res.Comparisons, eval.Compare(res.Runs[0], r))
	}
	if req.Answers != nil {
		a, err := s.EvaluateAnswers(ctx, kb, req.Queries, *req.Answers, func(done int) error {
			return run.Report(ctx, jobs.Progress{Done: int64(len(req.Modes) + done), Total: total, Message: fmt.Sprintf("answered %d queries", done)})
		})
		if err != nil {
			return nil, s.failEvaluation(ctx, run, row.ID, err)
		}
		res.Answers = &a
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, jobs.Permanent(fmt.Errorf("encode evaluation result: %w", err))
	}
	now := s.now()
	if err := s.st.FinishEvaluation(ctx, db.FinishEvaluationParams{ID: row.ID, Status: "succeeded", Result: b, Now: &now}); err != nil {
		return nil, fmt.Errorf("store evaluation result: %w", err)
	}
	m := res.Runs[0].Metrics
	out := map[string]any{"mode": res.Runs[0].Name, "ndcg@10": m.NDCG10, "recall@10": m.Recall["@10"], "mrr": m.MRR}
	if a := res.Answers; a != nil {
		out["citation_precision"], out["faithfulness"] = a.Metrics.CitationPrecision, a.Metrics.Faithfulness
	}
	return out, nil
}

// failEvaluation records an evaluation's failure once no attempt is left.
func (s *Service) failEvaluation(ctx context.Context, run *jobs.Run, id uuid.UUID, err error) error {
	if ctx.Err() == nil && run.Attempts >= run.MaxAttempts {
		now := s.now()
		if ferr := s.st.FinishEvaluation(context.WithoutCancel(ctx), db.FinishEvaluationParams{ID: id, Status: "failed", Error: store.Text(err.Error()), Now: &now}); ferr != nil {
			s.log.ErrorContext(ctx, "record failed evaluation", "evaluation", id, "error", ferr)
		}
	}
	return err
}
