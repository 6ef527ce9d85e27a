package eval

import (
	"context"
	"math"
	"strings"
	"testing"
)

func TestEvaluateMetrics(t *testing.T) {
	t.Parallel()
	queries := []Query{
		{ID: "q1", Lang: "en", Relevant: []string{"a"}},
		{ID: "q2", Lang: "zh", Relevant: []string{"b", "c"}},
		{ID: "q3", Lang: "en", Relevant: []string{"z"}},
	}
	rankings := map[string][]string{
		"q1": {"a", "x"},           // first: RR 1, nDCG 1
		"q2": {"x", "b", "b", "y"}, // b second (duplicates dropped), c missing
		"q3": {"x", "y"},           // nothing
	}
	run, err := Evaluate(context.Background(), "t", queries, func(_ context.Context, q Query) ([]string, error) { return rankings[q.ID], nil })
	if err != nil {
		t.Fatal(err)
	}
	ndcg2 := (1 / math.Log2(3)) / (1 + 1/math.Log2(3))
	want := Metrics{Queries: 3, MRR: (1 + 0.5) / 3, NDCG10: (1 + ndcg2) / 3, HitRate: 2.0 / 3}
	m := run.Metrics
	if m.Queries != want.Queries || !near(m.MRR, want.MRR) || !near(m.NDCG10, want.NDCG10) || !near(m.HitRate, want.HitRate) {
		t.Fatalf("metrics %+v, want %+v", m, want)
	}
	if !near(m.Recall["@1"], 1.0/3) || !near(m.Recall["@10"], (1+0.5)/3) {
		t.Fatalf("recall %v", m.Recall)
	}
	if run.ByLang["zh"].Queries != 1 || !near(run.ByLang["zh"].NDCG10, ndcg2) {
		t.Fatalf("zh %+v", run.ByLang["zh"])
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	a := Run{Name: "a", Queries: []QueryResult{{ID: "1", NDCG10: 0.5}, {ID: "2", NDCG10: 1}, {ID: "3", NDCG10: 0}}}
	b := Run{Name: "b", Queries: []QueryResult{{ID: "1", NDCG10: 1}, {ID: "2", NDCG10: 1}, {ID: "3", NDCG10: 0.2}}}
	c := Compare(a, b)
	if c.Wins != 2 || c.Losses != 0 || c.Ties != 1 || !near(c.MeanDelta, 0.7/3) || len(c.Queries) != 2 || c.Queries[0].ID != "1" {
		t.Fatalf("comparison %+v", c)
	}
	if c.PValue <= 0 || c.PValue > 1 {
		t.Fatalf("p-value %v", c.PValue)
	}
	// Many consistent wins are significant; a wash is not.
	var x, y, z Run
	for i := range 40 {
		id := strings.Repeat("q", i+1)
		x.Queries = append(x.Queries, QueryResult{ID: id, NDCG10: 0.5})
		y.Queries = append(y.Queries, QueryResult{ID: id, NDCG10: 0.6})
		z.Queries = append(z.Queries, QueryResult{ID: id, NDCG10: 0.5 + 0.1*float64(i%2*2-1)})
	}
	if p := Compare(x, y).PValue; p > 0.01 {
		t.Fatalf("40 wins of 0.1: p = %v", p)
	}
	if p := Compare(x, z).PValue; p < 0.5 {
		t.Fatalf("20 wins and 20 losses: p = %v", p)
	}
}

func TestReadJSONL(t *testing.T) {
	t.Parallel()
	qs, err := ReadJSONL[Query](strings.NewReader(`{"id":"q1","query":"hi","relevant":["a"]}` + "\n\n" + `{"id":"q2","query":"yo","relevant":[]}`))
	if err != nil || len(qs) != 2 || qs[0].Relevant[0] != "a" {
		t.Fatalf("%+v %v", qs, err)
	}
	if _, err := ReadJSONL[Query](strings.NewReader("{\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad line: %v", err)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
