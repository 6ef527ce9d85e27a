package server

import (
	"context"
	"encoding/json"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/rag/eval"
)

// ListEvaluations lists a knowledge base's evaluation runs.
func (s *Server) ListEvaluations(ctx context.Context, req api.ListEvaluationsRequestObject) (api.ListEvaluationsResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	limit, after, err := page(req.Params.Limit, req.Params.Cursor)
	if err != nil {
		return nil, err
	}
	list, err := s.rag.Evaluations(ctx, org, req.Id, limit+1, after)
	if err != nil {
		return nil, err
	}
	data, next := pageOf(list, limit, func(e rag.Evaluation) uuid.UUID { return e.ID }, toAPIEvaluation)
	return api.ListEvaluations200JSONResponse{Data: data, NextCursor: next}, nil
}

// CreateEvaluation queues an evaluation run.
func (s *Server) CreateEvaluation(ctx context.Context, req api.CreateEvaluationRequestObject) (api.CreateEvaluationResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	n := rag.NewEvaluation{Name: deref(req.Body.Name), Chunks: deref(req.Body.Chunks), Queries: make([]eval.Query, len(req.Body.Queries))}
	for i, q := range req.Body.Queries {
		n.Queries[i] = eval.Query{ID: q.Id, Lang: deref(q.Lang), Query: q.Query, Relevant: q.Relevant, HardNegatives: deref(q.HardNegatives), Answer: deref(q.Answer)}
	}
	for _, m := range deref(req.Body.Modes) {
		n.Modes = append(n.Modes, rag.Mode(m))
	}
	if a := req.Body.Answers; a != nil {
		n.Answers = &rag.AnswerOptions{Model: a.Model, JudgeModel: deref(a.JudgeModel)}
	}
	e, err := s.rag.CreateEvaluation(ctx, org, actor(ctx), req.Id, n)
	if err != nil {
		return nil, err
	}
	return api.CreateEvaluation202JSONResponse(toAPIEvaluation(e)), nil
}

// GetEvaluation returns an evaluation run with its results.
func (s *Server) GetEvaluation(ctx context.Context, req api.GetEvaluationRequestObject) (api.GetEvaluationResponseObject, error) {
	org, err := s.kbFor(ctx, req.Params.KilnOrg)
	if err != nil {
		return nil, err
	}
	e, err := s.rag.Evaluation(ctx, org, req.Id, req.EvaluationId)
	if err != nil {
		return nil, err
	}
	return api.GetEvaluation200JSONResponse(toAPIEvaluation(e)), nil
}

func toAPIEvaluation(e rag.Evaluation) api.Evaluation {
	out := api.Evaluation{Id: e.ID, KnowledgeBaseId: e.KBID, Name: e.Name, Status: api.EvaluationStatus(e.Status), Error: nonEmpty(e.Error),
		QueryCount: e.QueryCount, JobId: e.JobID, CreatedAt: e.CreatedAt, FinishedAt: e.FinishedAt, Modes: make([]api.SearchMode, len(e.Modes))}
	for i, m := range e.Modes {
		out.Modes[i] = api.SearchMode(m)
	}
	if len(e.Runs) > 0 {
		runs := make([]api.EvaluationRun, len(e.Runs))
		for i, r := range e.Runs {
			runs[i] = api.EvaluationRun{Mode: api.SearchMode(r.Name), Metrics: toAPIMetrics(r.Metrics), ByLang: map[string]api.EvaluationMetrics{}}
			for lang, m := range r.ByLang {
				runs[i].ByLang[lang] = toAPIMetrics(m)
			}
			queries := objects(r.Queries)
			runs[i].Queries = &queries
		}
		out.Runs = &runs
		comparisons := make([]api.EvaluationComparison, len(e.Comparisons))
		for i, c := range e.Comparisons {
			comparisons[i] = api.EvaluationComparison{A: api.SearchMode(c.A), B: api.SearchMode(c.B), Wins: c.Wins, Losses: c.Losses, Ties: c.Ties,
				MeanDelta: float32(c.MeanDelta), PValue: float32(c.PValue)}
		}
		out.Comparisons = &comparisons
	}
	if o := e.AnswerOptions; o != nil {
		out.Answers = &api.EvaluationAnswers{Model: o.Model, JudgeModel: nonEmpty(o.JudgeModel)}
		if a := e.Answers; a != nil {
			m := a.Metrics
			out.Answers.Metrics = &api.EvaluationAnswerMetrics{Queries: m.Queries, Answered: m.Answered, Failed: m.Failed, Cited: m.Cited,
				CitationPrecision: float32(m.CitationPrecision), CitationRecall: float32(m.CitationRecall), Judged: m.Judged,
				JudgeMalformed: m.JudgeMalformed, JudgeFailed: m.JudgeFailed}
			if m.Faithfulness != nil {
				f := float32(*m.Faithfulness)
				out.Answers.Metrics.Faithfulness = &f
			}
			queries := objects(a.Queries)
			out.Answers.Queries = &queries
		}
	}
	return out
}

// objects is each of list as a JSON object.
func objects[T any](list []T) []map[string]any {
	out := make([]map[string]any, len(list))
	for i, v := range list {
		b, _ := json.Marshal(v)
		_ = json.Unmarshal(b, &out[i])
	}
	return out
}

func toAPIMetrics(m eval.Metrics) api.EvaluationMetrics {
	out := api.EvaluationMetrics{Queries: m.Queries, Mrr: float32(m.MRR), Ndcg10: float32(m.NDCG10), HitRate10: float32(m.HitRate),
		P50Ms: float32(m.P50MS), P95Ms: float32(m.P95MS), Recall: map[string]float32{}}
	for k, v := range m.Recall {
		out.Recall[k] = float32(v)
	}
	return out
}
