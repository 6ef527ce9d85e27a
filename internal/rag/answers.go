package rag

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/rag/eval"
)

// AnswerModels makes an answer evaluation's model calls (chat.Evaluator).
type AnswerModels interface {
	// Answer answers question with model alias grounded in org's knowledge base kb the
	// way chat grounds a reply, returning the reply's text and its sources.
	Answer(ctx context.Context, org, kb uuid.UUID, model, question string) (string, []Citation, error)
	// Complete is one ungrounded model call of org with a system and a user message.
	Complete(ctx context.Context, org uuid.UUID, model, system, user string) (string, error)
}

// AnswerOptions ask an evaluation to answer the queries that carry a reference answer
// with Model, and, with JudgeModel set, to have it grade the answers' faithfulness.
type AnswerOptions struct {
	Model      string `json:"model"`
	JudgeModel string `json:"judge_model,omitempty"`
}

// checkAnswerOptions returns invalid_request naming the field at pointer (the options'
// place in the request) that is wrong, or not_ready when the server cannot answer.
func (s *Service) checkAnswerOptions(o *AnswerOptions, queries []eval.Query, pointer string) error {
	if o == nil {
		return nil
	}
	if s.models == nil {
		return errs.E(errs.NotReady, "This server cannot generate answers for evaluations.")
	}
	var fields []errs.FieldError
	if !s.hasModel(o.Model) {
		fields = append(fields, errs.FieldError{Pointer: pointer + "/model", Message: "is not a model alias of the catalog (GET /v1/models)"})
	}
	if o.JudgeModel != "" && !s.hasModel(o.JudgeModel) {
		fields = append(fields, errs.FieldError{Pointer: pointer + "/judge_model", Message: "is not a model alias of the catalog (GET /v1/models)"})
	}
	if len(eval.Answerable(queries)) == 0 {
		fields = append(fields, errs.FieldError{Pointer: pointer, Message: "needs queries with a reference answer (answer)"})
	}
	if len(fields) > 0 {
		return errs.InvalidFields("invalid answer evaluation", fields)
	}
	return nil
}

// EvaluateAnswers answers the queries that carry a reference answer from knowledge base
// kb through the same grounding as chat, and scores them (eval.EvaluateAnswers): citation
// precision and recall against each query's relevant documents (by external id) and,
// with o.JudgeModel, the judge's faithfulness. It returns invalid_request or not_ready
// as checkAnswerOptions does.
func (s *Service) EvaluateAnswers(ctx context.Context, kb KnowledgeBase, queries []eval.Query, o AnswerOptions, progress func(done int) error) (eval.AnswerRun, error) {
	if err := s.checkAnswerOptions(&o, queries, "/answers"); err != nil {
		return eval.AnswerRun{}, err
	}
	answer := func(ctx context.Context, q eval.Query) (eval.Answer, error) {
		text, cites, err := s.models.Answer(ctx, kb.OrgID, kb.ID, o.Model, q.Query)
		if err != nil {
			return eval.Answer{}, err
		}
		sources, err := s.citedSources(ctx, kb, cites)
		return eval.Answer{Text: text, Sources: sources}, err
	}
	var judge eval.Judge
	if o.JudgeModel != "" {
		judge = func(ctx context.Context, system, user string) (string, error) {
			return s.models.Complete(ctx, kb.OrgID, o.JudgeModel, system, user)
		}
	}
	run, err := eval.EvaluateAnswers(ctx, queries, answer, judge, progress)
	run.Model, run.JudgeModel = o.Model, o.JudgeModel
	return run, err
}

// citedSources are citations as an evaluation's sources: each with its document's
// external id (or id) and its chunk's text, read from kb.
func (s *Service) citedSources(ctx context.Context, kb KnowledgeBase, cites []Citation) ([]eval.Source, error) {
	ids := make([]uuid.UUID, len(cites))
	for i, c := range cites {
		ids[i] = c.ChunkID
	}
	rows, err := s.st.GetChunksByID(ctx, db.GetChunksByIDParams{OrgID: kb.OrgID, KbID: kb.ID, Ids: ids})
	if err != nil {
		return nil, fmt.Errorf("read cited chunks: %w", err)
	}
	byID := make(map[uuid.UUID]db.GetChunksByIDRow, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	out := make([]eval.Source, 0, len(cites))
	for _, c := range cites {
		r, ok := byID[c.ChunkID]
		if !ok { // deleted since it was retrieved
			continue
		}
		doc := r.DocumentID.String()
		if r.ExternalID.Valid {
			doc = r.ExternalID.String
		}
		out = append(out, eval.Source{N: c.Source, Document: doc, Title: r.Title, Text: r.Text})
	}
	return out, nil
}
