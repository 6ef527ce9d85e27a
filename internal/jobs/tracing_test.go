package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/tracing"
	"github.com/kilnhq/kiln/internal/platform/tracing/tracetest"
	"github.com/kilnhq/kiln/internal/store/storetest"
	"github.com/kilnhq/kiln/internal/streams"
)

// jobSpans returns the spans of job id's attempts, waiting up to 10 s for want of them.
func jobSpans(t *testing.T, rcv *tracetest.Receiver, tp *tracing.Provider, id string, want int) []tracetest.Span {
	t.Helper()
	var got []tracetest.Span
	waitFor(t, 10*time.Second, "the job's spans", func() bool {
		got = got[:0]
		for _, s := range rcv.Spans(t, tp) {
			if s.Attrs["kiln.job.id"] == id {
				got = append(got, s)
			}
		}
		return len(got) >= want
	})
	return got
}

// TestJobSpans: every attempt of a job is a span; a job created in a trace (a request's,
// another job's) continues it, one created outside any starts a trace of its own.
func TestJobSpans(t *testing.T) {
	t.Parallel()
	rcv := tracetest.NewReceiver(t)
	tp := rcv.Provider(t)
	var b *bundle
	children := make(chan string, 1)
	b = setup(t, func(b *bundle) {
		// test.parent creates a test.effect job from inside its run.
		jobs.Register(b.reg, jobs.Kind{Name: "test.parent"}, func(ctx context.Context, _ *jobs.Run, _ struct{}) (any, error) {
			return nil, b.st.InTx(ctx, func(q *db.Queries) error {
				j, err := b.reg.Enqueue(ctx, q, time.Now(), jobs.New{Kind: "test.effect", Payload: effect{}})
				select {
				case children <- j.ID.String():
				default: // a repeated attempt
				}
				return err
			})
		})
	})
	rdb, err := redisclient.Open(t.Context(), storetest.RedisURL(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	bus := streams.New(rdb, b.ks, streams.Config{})
	t.Cleanup(bus.Close)
	run(t, jobs.NewService(jobs.Deps{Registry: b.reg, Store: b.st, Redis: rdb, Bus: bus, Tracing: tp}, b.config(2)))

	t.Run("OutsideATraceItsOwnRoot", func(t *testing.T) {
		j := b.enqueue(t, jobs.New{Kind: "test.effect", Payload: effect{Fail: 1}})
		if n := count(t, b.st, `SELECT count(*) FROM jobs WHERE id = $1 AND trace_context IS NULL`, j.ID); n != 1 {
			t.Error("a job created outside any trace stored a trace context")
		}
		spans := jobSpans(t, rcv, tp, j.ID.String(), 2)
		for i, s := range spans {
			if s.Name != "job test.effect" || s.Kind != "SPAN_KIND_CONSUMER" || s.ParentID != "" {
				t.Errorf("span %d: %q kind %s parent %q, want a root consumer span job test.effect", i, s.Name, s.Kind, s.ParentID)
			}
			if s.Attrs["kiln.job.kind"] != "test.effect" || s.Attrs["kiln.job.queue"] != "default" || s.Attrs["kiln.job.attempt"] != int64(i+1) {
				t.Errorf("span %d attributes %v, want kind test.effect, queue default, attempt %d", i, s.Attrs, i+1)
			}
		}
		if spans[0].StatusCode != "STATUS_CODE_ERROR" || spans[0].Attrs["kiln.job.outcome"] != "retry" {
			t.Errorf("failed attempt: status %s outcome %v, want an error and retry", spans[0].StatusCode, spans[0].Attrs["kiln.job.outcome"])
		}
		if spans[1].StatusCode == "STATUS_CODE_ERROR" || spans[1].Attrs["kiln.job.outcome"] != "succeeded" {
			t.Errorf("second attempt: status %s outcome %v, want succeeded", spans[1].StatusCode, spans[1].Attrs["kiln.job.outcome"])
		}
	})

	t.Run("InsideATraceContinued", func(t *testing.T) {
		ctx, caller := tp.Tracer("test").Start(t.Context(), "caller")
		var j jobs.Job
		err := b.st.InTx(ctx, func(q *db.Queries) error {
			var err error
			j, err = b.reg.Enqueue(ctx, q, time.Now(), jobs.New{Kind: "test.parent", Payload: struct{}{}})
			return err
		})
		caller.End()
		if err != nil {
			t.Fatal(err)
		}
		parent := jobSpans(t, rcv, tp, j.ID.String(), 1)[0]
		sc := caller.SpanContext()
		if parent.TraceID != sc.TraceID().String() || parent.ParentID != sc.SpanID().String() {
			t.Errorf("job span trace %s parent %s, want the caller's trace %s and span %s", parent.TraceID, parent.ParentID, sc.TraceID(), sc.SpanID())
		}
		var child string
		select {
		case child = <-children:
		case <-time.After(10 * time.Second):
			t.Fatal("test.parent created no job")
		}
		c := jobSpans(t, rcv, tp, child, 1)[0]
		if c.TraceID != parent.TraceID || c.ParentID != parent.SpanID {
			t.Errorf("a job created by a job: span trace %s parent %s, want the creating job's trace %s and span %s", c.TraceID, c.ParentID, parent.TraceID, parent.SpanID)
		}
	})
}
