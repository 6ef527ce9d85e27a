// Package eval measures retrieval against a labelled dataset: recall@k, MRR, nDCG@10, hit
// rate and latency per run, and compares two runs query by query (an A/B of retrieval
// configurations) with a paired significance figure. It knows nothing of how the ranking
// is produced: a Searcher returns ranked document ids.
package eval

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// Document is one document of a dataset's corpus (corpus.jsonl).
type Document struct {
	ID       string         `json:"id"`
	Lang     string         `json:"lang"`
	Title    string         `json:"title"`
	Text     string         `json:"text"`
	Metadata map[string]any `json:"metadata"`
}

// Query is one labelled query (queries.jsonl): the ids of the documents that answer it.
type Query struct {
	ID            string   `json:"id"`
	Lang          string   `json:"lang"`
	Query         string   `json:"query"`
	Relevant      []string `json:"relevant"`
	HardNegatives []string `json:"hard_negatives,omitempty"`
	Answer        string   `json:"answer,omitempty"`
}

// Dataset is a corpus and its queries.
type Dataset struct {
	Corpus  []Document
	Queries []Query
}

// Load reads corpus.jsonl and queries.jsonl from dir.
func Load(dir string) (Dataset, error) {
	var d Dataset
	if err := readJSONL(filepath.Join(dir, "corpus.jsonl"), &d.Corpus); err != nil {
		return d, err
	}
	if err := readJSONL(filepath.Join(dir, "queries.jsonl"), &d.Queries); err != nil {
		return d, err
	}
	ids := map[string]bool{}
	for _, doc := range d.Corpus {
		ids[doc.ID] = true
	}
	for _, q := range d.Queries {
		for _, r := range q.Relevant {
			if !ids[r] {
				return d, fmt.Errorf("query %s: relevant document %s is not in the corpus", q.ID, r)
			}
		}
	}
	return d, nil
}

func readJSONL[T any](path string, out *[]T) error {
	f, err := os.Open(path) //nolint:gosec // a dataset path given by the operator or a test
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	list, err := ReadJSONL[T](f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	*out = list
	return nil
}

// ReadJSONL decodes one JSON value per non-empty line.
func ReadJSONL[T any](r io.Reader) ([]T, error) {
	var out []T
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// Searcher ranks document ids for a query, best first.
type Searcher func(ctx context.Context, q Query) ([]string, error)

// Cutoffs are the k of recall@k.
var Cutoffs = []int{1, 3, 5, 10}

// Metrics are a run's means over its queries.
type Metrics struct {
	Queries int                `json:"queries"`
	Recall  map[string]float64 `json:"recall"` // "@1", "@3", "@5", "@10"
	MRR     float64            `json:"mrr"`
	NDCG10  float64            `json:"ndcg@10"`
	HitRate float64            `json:"hit_rate@10"`
	P50MS   float64            `json:"p50_ms"`
	P95MS   float64            `json:"p95_ms"`
}

// QueryResult is one query's outcome.
type QueryResult struct {
	ID        string   `json:"id"`
	Lang      string   `json:"lang"`
	Top       []string `json:"top"` // the first 10 document ids
	NDCG10    float64  `json:"ndcg@10"`
	RR        float64  `json:"rr"`
	Recall10  float64  `json:"recall@10"`
	LatencyMS float64  `json:"latency_ms"`
}

// Run is one evaluation: overall metrics, per language, and per query.
type Run struct {
	Name    string             `json:"name"`
	Metrics Metrics            `json:"metrics"`
	ByLang  map[string]Metrics `json:"by_lang"`
	Queries []QueryResult      `json:"queries"`
}

// Evaluate runs every query through search and scores the rankings.
func Evaluate(ctx context.Context, name string, queries []Query, search Searcher) (Run, error) {
	run := Run{Name: name, ByLang: map[string]Metrics{}}
	type acc struct {
		results []QueryResult
		recall  map[int]float64
	}
	groups := map[string]*acc{}
	group := func(k string) *acc {
		if groups[k] == nil {
			groups[k] = &acc{recall: map[int]float64{}}
		}
		return groups[k]
	}
	for _, q := range queries {
		start := time.Now()
		ranked, err := search(ctx, q)
		if err != nil {
			return run, fmt.Errorf("query %s: %w", q.ID, err)
		}
		elapsed := time.Since(start)
		ranked = dedupe(ranked)
		rel := map[string]bool{}
		for _, r := range q.Relevant {
			rel[r] = true
		}
		res := QueryResult{ID: q.ID, Lang: q.Lang, Top: ranked[:min(10, len(ranked))], LatencyMS: float64(elapsed.Microseconds()) / 1000}
		res.NDCG10 = ndcg(ranked, rel, 10)
		for i, id := range ranked {
			if rel[id] {
				res.RR = 1 / float64(i+1)
				break
			}
		}
		res.Recall10 = recall(ranked, rel, 10)
		for _, g := range []string{"", q.Lang} {
			a := group(g)
			a.results = append(a.results, res)
			for _, k := range Cutoffs {
				a.recall[k] += recall(ranked, rel, k)
			}
		}
		run.Queries = append(run.Queries, res)
	}
	for g, a := range groups {
		m := summarize(a.results)
		for _, k := range Cutoffs {
			m.Recall[fmt.Sprintf("@%d", k)] = a.recall[k] / float64(len(a.results))
		}
		if g == "" {
			run.Metrics = m
		} else {
			run.ByLang[g] = m
		}
	}
	return run, nil
}

func summarize(results []QueryResult) Metrics {
	m := Metrics{Queries: len(results), Recall: map[string]float64{}}
	if len(results) == 0 {
		return m
	}
	lat := make([]float64, len(results))
	for i, r := range results {
		m.MRR += r.RR
		m.NDCG10 += r.NDCG10
		if r.Recall10 > 0 {
			m.HitRate++
		}
		lat[i] = r.LatencyMS
	}
	n := float64(len(results))
	m.MRR, m.NDCG10, m.HitRate = m.MRR/n, m.NDCG10/n, m.HitRate/n
	sort.Float64s(lat)
	m.P50MS, m.P95MS = percentile(lat, 0.50), percentile(lat, 0.95)
	return m
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func dedupe(ids []string) []string {
	seen := map[string]bool{}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func recall(ranked []string, rel map[string]bool, k int) float64 {
	if len(rel) == 0 {
		return 0
	}
	found := 0
	for _, id := range ranked[:min(k, len(ranked))] {
		if rel[id] {
			found++
		}
	}
	return float64(found) / float64(len(rel))
}

// ndcg is binary-relevance nDCG@k.
func ndcg(ranked []string, rel map[string]bool, k int) float64 {
	var dcg, ideal float64
	for i, id := range ranked[:min(k, len(ranked))] {
		if rel[id] {
			dcg += 1 / math.Log2(float64(i+2))
		}
	}
	for i := range min(k, len(rel)) {
		ideal += 1 / math.Log2(float64(i+2))
	}
	if ideal == 0 {
		return 0
	}
	return dcg / ideal
}

// Comparison is an A/B of two runs on the same queries, by nDCG@10.
type Comparison struct {
	A string `json:"a"`
	B string `json:"b"`
	// Wins counts the queries where B scored higher than A, Losses lower, Ties equal.
	Wins   int `json:"wins"`
	Losses int `json:"losses"`
	Ties   int `json:"ties"`
	// MeanDelta is B's mean nDCG@10 minus A's.
	MeanDelta float64 `json:"mean_delta"`
	// PValue is the two-sided p-value of a paired randomization test (sign flips of the
	// per-query differences, 10,000 rounds, a fixed seed so it is reproducible): how often
	// chance alone gives a mean difference at least this large.
	PValue float64 `json:"p_value"`
	// Queries lists the queries on which the runs differ, with their nDCG@10 in A and B.
	Queries []QueryDelta `json:"queries"`
}

// QueryDelta is one query's nDCG@10 in both runs.
type QueryDelta struct {
	ID string  `json:"id"`
	A  float64 `json:"a"`
	B  float64 `json:"b"`
}

// Compare pairs the queries of a and b by id.
func Compare(a, b Run) Comparison {
	c := Comparison{A: a.Name, B: b.Name}
	inB := map[string]QueryResult{}
	for _, q := range b.Queries {
		inB[q.ID] = q
	}
	var diffs []float64
	for _, qa := range a.Queries {
		qb, ok := inB[qa.ID]
		if !ok {
			continue
		}
		d := qb.NDCG10 - qa.NDCG10
		diffs = append(diffs, d)
		switch {
		case d > 1e-12:
			c.Wins++
		case d < -1e-12:
			c.Losses++
		default:
			c.Ties++
			continue
		}
		c.Queries = append(c.Queries, QueryDelta{ID: qa.ID, A: qa.NDCG10, B: qb.NDCG10})
	}
	if len(diffs) == 0 {
		c.PValue = 1
		return c
	}
	c.MeanDelta = mean(diffs)
	c.PValue = signFlipTest(diffs, 10000)
	slices.SortFunc(c.Queries, func(x, y QueryDelta) int { return cmpFloat(math.Abs(y.B-y.A), math.Abs(x.B-x.A)) })
	return c
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// signFlipTest is a paired two-sided randomization test of mean(diffs) = 0.
func signFlipTest(diffs []float64, rounds int) float64 {
	observed := math.Abs(mean(diffs))
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // a reproducible statistic, not a secret
	extreme := 0
	for range rounds {
		var s float64
		for _, d := range diffs {
			if rng.IntN(2) == 0 {
				s += d
			} else {
				s -= d
			}
		}
		if math.Abs(s/float64(len(diffs))) >= observed-1e-12 {
			extreme++
		}
	}
	return float64(extreme+1) / float64(rounds+1)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
