package chat

import (
	"context"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/rag"
)

// Evaluator makes the model calls of a knowledge base's answer evaluation
// (rag.AnswerModels) through the Runner: answers grounded exactly as a chat reply that
// names the knowledge base, and the judge's ungrounded calls. Each call is accounted to
// the org under the endpoint rag.evaluate (in Usage, when set).
type Evaluator struct {
	Runner *Runner
	Usage  *usage.Recorder
}

var _ rag.AnswerModels = Evaluator{}

// Answer asks model question alone, grounded in org's knowledge base kb.
func (e Evaluator) Answer(ctx context.Context, org, kb uuid.UUID, model, question string) (string, []rag.Citation, error) {
	res, err := e.run(ctx, Call{Alias: model, Org: org, KnowledgeBases: []uuid.UUID{kb},
		Request: llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleUser, question)}}})
	if err != nil {
		return "", nil, err
	}
	return res.Message.Text(), res.Citations, nil
}

// Complete asks model with a system and a user message, grounded in nothing.
func (e Evaluator) Complete(ctx context.Context, org uuid.UUID, model, system, user string) (string, error) {
	res, err := e.run(ctx, Call{Alias: model, Org: org,
		Request: llm.Request{Messages: []llm.Message{llm.TextMessage(llm.RoleSystem, system), llm.TextMessage(llm.RoleUser, user)}}})
	if err != nil {
		return "", err
	}
	return res.Message.Text(), nil
}

// run validates and runs c as a blocking call with the org's provider keys, and records
// its usage.
func (e Evaluator) run(ctx context.Context, c Call) (*Result, error) {
	ctx = llm.WithOrg(ctx, c.Org)
	if err := e.Runner.Validate(ctx, &c); err != nil {
		return nil, err
	}
	start := e.Runner.Now()
	res, err := e.Runner.Run(ctx, c, nil)
	if e.Usage != nil {
		e.Usage.Record(UsageRecord(ctx, Account{Org: c.Org}, rag.UsageEvaluate, c.Alias, start, res, err, nil))
	}
	return res, err
}
