package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/platform/metrics"
	"github.com/kilnhq/kiln/internal/rag"
	"github.com/kilnhq/kiln/internal/rag/eval"
	"github.com/kilnhq/kiln/internal/rag/qdrant"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/server"
)

// newRAG builds the knowledge-base service from rag.* config, embedding through the LLM
// gateway, declares its ingestion job kind on the one registry (every process: an API
// replica creates ingestion jobs, a worker runs them), and grounds the runner's replies
// that name knowledge bases in it.
func (a *app) newRAG(d *deps, llmDeps server.LLM) (*rag.Service, error) {
	c := a.cfg.RAG
	stores := map[string]rag.VectorStore{}
	if c.Qdrant.URL != "" {
		q, err := qdrant.New(qdrant.Config{URL: c.Qdrant.URL, APIKey: c.Qdrant.APIKey, CollectionPrefix: c.Qdrant.CollectionPrefix,
			EfSearch: c.HNSWEfSearch, ExactBelow: c.ExactSearchBelow})
		if err != nil {
			return nil, err
		}
		stores[rag.StoreQdrant] = q
	}
	svc := rag.New(rag.Config{
		EmbeddingModel: c.EmbeddingModel, Dimensions: c.Dimensions, ChunkMaxTokens: c.ChunkMaxTokens, ChunkOverlap: c.ChunkOverlap,
		MaxDocumentBytes: c.MaxDocumentBytes, MaxDocumentPages: c.MaxDocumentPages, EmbedBatch: c.EmbedBatch, EfSearch: c.HNSWEfSearch, MaxScanTuples: c.HNSWMaxScanTuples,
		ExactSearchBelow: c.ExactSearchBelow, RRFK: c.RRFK, VectorWeight: c.HybridVectorWeight, FulltextWeight: c.HybridFulltextWeight,
		Candidates: c.HybridCandidates, AnswerK: c.AnswerK,
	}, rag.Deps{
		Store: store.New(d.pool), Embedder: rag.GatewayEmbedder{Gateway: llmDeps.Runner.Gateway, Usage: llmDeps.Usage}, Jobs: d.jobs,
		HasModel: llmDeps.Runner.Gateway.Has, VectorStores: stores, Models: chat.Evaluator{Runner: llmDeps.Runner, Usage: llmDeps.Usage},
		PlanLimits: llmDeps.Billing, Log: a.log, Now: time.Now,
	})
	llmDeps.Runner.Knowledge = svc
	return svc, nil
}

// ragCmd is `kiln rag`: knowledge-base tools for operators.
func (a *app) ragCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rag", Short: "Knowledge-base tools"}
	var (
		dataset, org, kbID, out string
		answerModel, judgeModel string
		modes                   []string
		dims, chunks            int
	)
	evalCmd := &cobra.Command{
		Use:   "eval",
		Short: "Measure retrieval on a labelled dataset (recall@k, MRR, nDCG@10, hit rate, latency) and compare modes",
		Long: `Reads DIR/queries.jsonl (and DIR/corpus.jsonl) in the dataset format of
internal/rag/testdata/baseline. Without --kb, the corpus is ingested into a new knowledge
base of --org (deleted afterwards); with --kb, that knowledge base is searched, its
documents named by their external ids. Each --mode is evaluated; every mode after the first
is compared with the first, query by query (wins, losses, a paired randomization p-value).
With --answer-model, the queries that carry a reference answer are answered by that model
grounded in the knowledge base (as chat is) and their citations scored (precision and
recall against the relevant documents); with --judge-model as well, a judge grades each
answer's faithfulness to its cited sources (docs/rag-evaluation.md).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			orgID, err := uuid.Parse(org)
			if err != nil {
				return fmt.Errorf("--org: %w", err)
			}
			d, closeDeps, err := a.open(ctx)
			if err != nil {
				return err
			}
			defer closeDeps()
			llmDeps, err := a.newLLM(ctx, store.New(d.pool), d.keyring, d.rdb, metrics.NewRegistry(), d.notify)
			if err != nil {
				return err
			}
			defer llmDeps.Billing.WaitAlerts()
			// The embedding calls' usage is recorded and flushed before the command returns.
			usageCtx, stopUsage := context.WithCancel(context.WithoutCancel(ctx))
			usageDone := make(chan struct{})
			go func() { llmDeps.Usage.Run(usageCtx); close(usageDone) }()
			defer func() { stopUsage(); <-usageDone }()
			svc, err := a.newRAG(d, llmDeps)
			if err != nil {
				return err
			}
			data, err := loadDataset(dataset, kbID == "")
			if err != nil {
				return err
			}
			by := audit.Actor{Type: audit.ActorSystem}
			var kb rag.KnowledgeBase
			if kbID == "" {
				if kb, err = svc.CreateKnowledgeBase(ctx, orgID, by, rag.NewKnowledgeBase{Name: "kiln rag eval", Dimensions: dims}); err != nil {
					return err
				}
				defer func() { _ = svc.DeleteKnowledgeBase(context.WithoutCancel(ctx), orgID, by, kb.ID) }()
				start := time.Now()
				if err := svc.AddCorpus(ctx, orgID, by, kb.ID, data.Corpus); err != nil {
					return err
				}
				_, _ = fmt.Fprintf(a.stdout, "ingested %d documents in %s\n", len(data.Corpus), time.Since(start).Round(time.Millisecond))
			}
			id, err := uuid.Parse(cmpOr(kbID, kb.ID.String()))
			if err != nil {
				return fmt.Errorf("--kb: %w", err)
			}
			if kb, err = svc.KnowledgeBase(ctx, orgID, id); err != nil {
				return err
			}
			var runs []eval.Run
			for _, m := range modes {
				search, err := svc.Searcher(ctx, kb, rag.Query{Mode: rag.Mode(m)}, chunks)
				if err != nil {
					return err
				}
				run, err := eval.Evaluate(ctx, m, data.Queries, search)
				if err != nil {
					return err
				}
				runs = append(runs, run)
				r := run.Metrics
				_, _ = fmt.Fprintf(a.stdout, "%-8s queries %d  nDCG@10 %.4f  recall@10 %.4f  MRR %.4f  hit@10 %.4f  recall@1 %.4f  p50 %.1f ms  p95 %.1f ms\n",
					m, r.Queries, r.NDCG10, r.Recall["@10"], r.MRR, r.HitRate, r.Recall["@1"], r.P50MS, r.P95MS)
			}
			report := map[string]any{"runs": runs}
			var comparisons []eval.Comparison
			for _, run := range runs[1:] {
				c := eval.Compare(runs[0], run)
				comparisons = append(comparisons, c)
				_, _ = fmt.Fprintf(a.stdout, "%s vs %s: %d wins, %d losses, %d ties, mean nDCG@10 %+.4f, p = %.4f\n", c.B, c.A, c.Wins, c.Losses, c.Ties, c.MeanDelta, c.PValue)
			}
			report["comparisons"] = comparisons
			if answerModel != "" {
				ans, err := svc.EvaluateAnswers(ctx, kb, data.Queries, rag.AnswerOptions{Model: answerModel, JudgeModel: judgeModel}, nil)
				if err != nil {
					return err
				}
				report["answers"] = ans
				m := ans.Metrics
				_, _ = fmt.Fprintf(a.stdout, "answers  queries %d  answered %d  failed %d  cited %d  citation precision %.4f  citation recall %.4f\n",
					m.Queries, m.Answered, m.Failed, m.Cited, m.CitationPrecision, m.CitationRecall)
				if judgeModel != "" {
					faith := "n/a"
					if m.Faithfulness != nil {
						faith = fmt.Sprintf("%.4f", *m.Faithfulness)
					}
					_, _ = fmt.Fprintf(a.stdout, "judge    judged %d  malformed %d  failed %d  faithfulness %s\n", m.Judged, m.JudgeMalformed, m.JudgeFailed, faith)
				}
			}
			if out != "" {
				b, err := json.MarshalIndent(report, "", "  ")
				if err != nil {
					return err
				}
				return os.WriteFile(out, b, 0o600)
			}
			return nil
		},
	}
	evalCmd.Flags().StringVar(&dataset, "dataset", "", "directory with queries.jsonl (and corpus.jsonl)")
	evalCmd.Flags().StringVar(&org, "org", "", "org id that owns the knowledge base")
	evalCmd.Flags().StringVar(&kbID, "kb", "", "evaluate this knowledge base instead of ingesting the corpus")
	evalCmd.Flags().StringSliceVar(&modes, "mode", []string{"hybrid", "vector", "fulltext"}, "search modes to evaluate; the first is the baseline of the comparisons")
	evalCmd.Flags().IntVar(&dims, "dimensions", 1024, "vector size of the knowledge base ingested from the corpus")
	evalCmd.Flags().IntVar(&chunks, "chunks", 30, "chunks retrieved per query (documents are ranked by their best chunk)")
	evalCmd.Flags().StringVar(&out, "out", "", "write every run's per-query results and the comparisons as JSON to this file")
	evalCmd.Flags().StringVar(&answerModel, "answer-model", "", "also answer the queries that carry a reference answer with this model alias, grounded as chat is, and score their citations")
	evalCmd.Flags().StringVar(&judgeModel, "judge-model", "", "with --answer-model: grade each answer's faithfulness to its cited sources with this model alias")
	_ = evalCmd.MarkFlagRequired("dataset")
	_ = evalCmd.MarkFlagRequired("org")
	cmd.AddCommand(evalCmd)
	return cmd
}

// loadDataset reads a dataset directory; the corpus only when it is to be ingested.
func loadDataset(dir string, withCorpus bool) (eval.Dataset, error) {
	if withCorpus {
		return eval.Load(dir)
	}
	f, err := os.Open(filepath.Join(dir, "queries.jsonl")) //nolint:gosec // the operator's own path
	if err != nil {
		return eval.Dataset{}, err
	}
	defer func() { _ = f.Close() }()
	qs, err := eval.ReadJSONL[eval.Query](f)
	return eval.Dataset{Queries: qs}, err
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
