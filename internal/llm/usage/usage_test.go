package usage_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

func newRecorder(t *testing.T, st *store.Store, every time.Duration) (*usage.Recorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	rec, err := usage.NewRecorder(st, slog.New(slog.NewTextHandler(io.Discard, nil)), reg, every)
	if err != nil {
		t.Fatal(err)
	}
	return rec, reg
}

func TestRecorder(t *testing.T) {
	t.Parallel()

	t.Run("OKEveryRecordWrittenWhenStoppedBeforeAFlush", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		rec, reg := newRecorder(t, st, time.Hour) // no timed flush: only the drain writes
		org := uuid.Must(uuid.NewV7())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { rec.Run(ctx); close(done) }()
		const n = 2500 // more than two batches
		for i := range n {
			rec.Record(usage.Record{OrgID: org, RequestID: "r", Endpoint: "chat", Alias: "default", Provider: "dev", Model: "dev-echo",
				Status: usage.StatusOK, Usage: llm.Usage{PromptTokens: 3, CompletionTokens: 2}, Latency: time.Duration(i) * time.Microsecond, Attempts: 1, At: time.Now()})
		}
		cancel()
		<-done
		var got int
		if err := st.Pool.QueryRow(t.Context(), "SELECT count(*) FROM llm_usage WHERE org_id = $1", org).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != n {
			t.Fatalf("%d rows after shutdown, want %d", got, n)
		}
		if v := counterValue(t, reg, "kiln_llm_usage_records_written_total"); v != n {
			t.Errorf("written counter %v", v)
		}
	})

	t.Run("OKReportGroupsByDayAndModelAndFilters", func(t *testing.T) {
		t.Parallel()
		st := storetest.New(t)
		rec, _ := newRecorder(t, st, 5*time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { rec.Run(ctx); close(done) }()
		org, other, key := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
		day1 := time.Date(2026, 11, 24, 23, 59, 0, 0, time.UTC)
		day2 := time.Date(2026, 11, 25, 0, 1, 0, 0, time.UTC)
		for _, r := range []usage.Record{
			{OrgID: org, Alias: "default", Status: usage.StatusOK, Usage: llm.Usage{PromptTokens: 10, CompletionTokens: 5, CachedTokens: 4}, CostUSD: 0.5, Latency: 100 * time.Millisecond, At: day1},
			{OrgID: org, Alias: "fast", APIKeyID: key, Status: usage.StatusError, ErrorCode: "upstream_error", Latency: 300 * time.Millisecond, At: day2},
			{OrgID: org, Alias: "default", APIKeyID: key, Status: usage.StatusOK, Cached: true, Usage: llm.Usage{PromptTokens: 1, CompletionTokens: 1}, Latency: 200 * time.Millisecond, At: day2},
			{OrgID: other, Alias: "default", Status: usage.StatusOK, Usage: llm.Usage{PromptTokens: 99}, At: day2},
		} {
			r.Endpoint, r.RequestID, r.Attempts = "chat", "r", 1
			rec.Record(r)
		}
		cancel()
		<-done
		window := usage.Filter{OrgID: org, From: day1.Add(-time.Hour), To: day2.Add(time.Hour)}

		byDay := window
		byDay.GroupBy = "day"
		buckets, total, err := rec.Report(t.Context(), byDay)
		if err != nil {
			t.Fatal(err)
		}
		if len(buckets) != 2 || buckets[0].Key != "2026-11-24" || buckets[1].Key != "2026-11-25" || buckets[1].Requests != 2 || buckets[1].Errors != 1 || buckets[1].CachedRequests != 1 {
			t.Fatalf("by day %+v", buckets)
		}
		if total.Requests != 3 || total.PromptTokens != 11 || total.CachedTokens != 4 || total.CostUSD != 0.5 || total.LatencyMsAvg != 200 {
			t.Errorf("total %+v", total)
		}

		byModel := window
		byModel.GroupBy, byModel.APIKeyID = "model", key
		buckets, _, err = rec.Report(t.Context(), byModel)
		if err != nil {
			t.Fatal(err)
		}
		if len(buckets) != 2 || buckets[0].Key != "default" || buckets[0].Requests != 1 || buckets[1].Key != "fast" {
			t.Fatalf("by model for one key %+v", buckets)
		}

		onlyFast := window
		onlyFast.GroupBy, onlyFast.Alias = "day", "fast"
		if _, total, _ = rec.Report(t.Context(), onlyFast); total.Requests != 1 || total.Errors != 1 {
			t.Errorf("alias filter total %+v", total)
		}
	})
}

// counterValue reads a registered counter without labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestRecorderWritesPrompt(t *testing.T) {
	t.Parallel()
	st := storetest.New(t)
	rec, _ := newRecorder(t, st, time.Hour)
	org, experiment := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	rec.Record(usage.Record{OrgID: org, RequestID: "a", Endpoint: "chat", Alias: "default", Status: usage.StatusOK, At: time.Now(),
		Prompt: &usage.PromptUse{Name: "support", Version: 3, ExperimentID: &experiment}})
	rec.Record(usage.Record{OrgID: org, RequestID: "b", Endpoint: "chat", Alias: "default", Status: usage.StatusOK, At: time.Now()})
	cancel()
	<-done
	var withPrompt, without int
	err := st.Pool.QueryRow(t.Context(), `SELECT
		count(*) FILTER (WHERE prompt_name = 'support' AND prompt_version = 3 AND experiment_id = $2),
		count(*) FILTER (WHERE prompt_name IS NULL AND prompt_version IS NULL AND experiment_id IS NULL)
		FROM llm_usage WHERE org_id = $1`, org, experiment).Scan(&withPrompt, &without)
	if err != nil {
		t.Fatal(err)
	}
	if withPrompt != 1 || without != 1 {
		t.Fatalf("rows with prompt %d, without %d; want 1 and 1", withPrompt, without)
	}
}
