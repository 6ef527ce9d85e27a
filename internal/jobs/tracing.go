package jobs

import (
	"context"
	"encoding/json"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/tracing"
)

// tracerName names the jobs runtime's tracer.
const tracerName = "github.com/kilnhq/kiln/internal/jobs"

// traceContext is the W3C trace context (traceparent, tracestate) of the trace ctx is in,
// JSON-encoded for the job's row, or nil outside a trace: with tracing off no context
// carries a span, so a job costs one context lookup more and stores nothing.
func traceContext(ctx context.Context) []byte {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	carrier := propagation.MapCarrier{}
	tracing.Propagator.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	b, _ := json.Marshal(carrier) //nolint:errchkjson // a map of strings always encodes
	return b
}

// startRunSpan starts the span of one attempt of job: a child of the trace the job was
// created in (stored with it), or the root of a trace of its own. Without a tracer it
// returns ctx and a span that records nothing.
func (s *Service) startRunSpan(ctx context.Context, job Job) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	if len(job.traceContext) > 0 {
		var carrier propagation.MapCarrier
		if json.Unmarshal(job.traceContext, &carrier) == nil {
			ctx = tracing.Propagator.Extract(ctx, carrier)
		}
	}
	return s.tracer.Start(ctx, "job "+job.Kind, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("kiln.job.id", job.ID.String()),
		attribute.String("kiln.job.kind", job.Kind),
		attribute.String("kiln.job.queue", job.Queue),
		attribute.Int("kiln.job.attempt", job.Attempts),
		attribute.Int("kiln.job.run", job.Run),
	))
}

// endRunSpan records how the attempt ended on its span and ends it.
func endRunSpan(span trace.Span, end attemptEnd) {
	if !span.IsRecording() {
		return
	}
	outcome := string(end.state)
	if end.state == Queued {
		outcome = "retry"
	}
	span.SetAttributes(attribute.String("kiln.job.outcome", outcome))
	if end.state == Failed || end.state == Queued {
		span.SetStatus(codes.Error, end.err)
	}
	span.End()
}
