package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/platform/tracing/tracetest"
)

// TestTracingJobSpanTree follows a password-reset request in the spans exported over OTLP:
// the request's server span, below it the span of the job it created (stored with the
// job, through the outbox and Asynq, to the worker), and below the job's span the
// handler's PostgreSQL queries and the email job it created in turn.
func TestTracingJobSpanTree(t *testing.T) {
	t.Parallel()
	rcv := tracetest.NewReceiver(t)
	tp := rcv.Provider(t)
	b := setupTraced(t, tp)
	b.runJobs(t)
	b.signUp(t, "tracer@example.com")
	res := b.call(t, "POST", "/v1/auth/password-reset/request", "", map[string]string{"email": "tracer@example.com"}, nil)
	wantStatus(t, res, 202)

	var jobID string
	var stored []byte
	err := b.pool.QueryRow(t.Context(), "SELECT id::text, trace_context FROM jobs WHERE kind = $1", account.KindPasswordResetRequest.Name).Scan(&jobID, &stored)
	if err != nil {
		t.Fatal(err)
	}
	var carrier map[string]string
	if err := json.Unmarshal(stored, &carrier); err != nil || len(carrier["traceparent"]) != 55 {
		t.Fatalf("stored trace context %s (%v), want a traceparent", stored, err)
	}

	// Wait for the email job the reset job creates to have run.
	resetJob := "job " + account.KindPasswordResetRequest.Name
	emailBelowJob := func(spans []tracetest.Span) bool {
		for _, j := range tracetest.Named(spans, resetJob) {
			if len(tracetest.Named(tracetest.DescendantsOf(spans, j), "job notify.email")) > 0 {
				return true
			}
		}
		return false
	}
	var spans []tracetest.Span
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if spans = rcv.Spans(t, tp); emailBelowJob(spans) || time.Now().After(deadline) {
			break // on the deadline, the checks below say what is missing
		}
	}
	req := serverSpan(t, spans, "POST /v1/auth/password-reset/request")
	below := tracetest.DescendantsOf(spans, req)
	jobs := tracetest.Named(below, resetJob)
	if len(jobs) != 1 {
		t.Fatalf("want one job span below the request, got %d among %v", len(jobs), names(below))
	}
	job := jobs[0]
	if carrier["traceparent"][3:35] != req.TraceID {
		t.Errorf("stored traceparent %s is not in the request's trace %s", carrier["traceparent"], req.TraceID)
	}
	if job.Kind != "SPAN_KIND_CONSUMER" || job.Attrs["kiln.job.id"] != jobID || job.Attrs["kiln.job.kind"] != account.KindPasswordResetRequest.Name ||
		job.Attrs["kiln.job.queue"] != "default" || job.Attrs["kiln.job.attempt"] != int64(1) || job.Attrs["kiln.job.outcome"] != "succeeded" {
		t.Errorf("job span kind %s attributes %v", job.Kind, job.Attrs)
	}
	inJob := tracetest.DescendantsOf(spans, job)
	var db int
	for _, s := range inJob {
		if s.Attrs["db.system.name"] == "postgresql" || s.Attrs["db.system"] == "postgresql" {
			db++
		}
	}
	if db == 0 {
		t.Errorf("no PostgreSQL span below the job's; below it: %v", names(inJob))
	}
	if len(tracetest.Named(inJob, "job notify.email")) != 1 {
		t.Errorf("the email job the reset job created is not below it: %v", names(inJob))
	}
}
