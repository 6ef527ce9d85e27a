// Package tracing builds Kiln's OpenTelemetry tracer provider: spans exported over OTLP
// (HTTP/protobuf or gRPC) when an exporter endpoint is configured, and nothing at all
// otherwise: with tracing off no middleware, hook or tracer is installed, so it costs nothing.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

	"github.com/kilnhq/kiln/internal/platform/config"
)

// Propagator reads and writes the W3C traceparent header (HTTP requests, job rows).
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Build describes the process for the spans' resource.
type Build struct {
	Version     string // service.version
	Environment string // deployment.environment.name
}

// Provider is a tracer provider that exports; Shutdown flushes the spans still buffered.
type Provider = sdktrace.TracerProvider

// New returns the tracer provider cfg describes, or nil when cfg sets no endpoint
// (tracing off). Shut it down to flush its last spans.
func New(ctx context.Context, cfg config.OTel, build Build) (*Provider, error) {
	if cfg.Endpoint == "" {
		return nil, nil
	}
	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES
		resource.WithAttributes(
			semconv.ServiceName(cfg.ServiceName),
			semconv.ServiceVersion(build.Version),
			semconv.DeploymentEnvironmentName(build.Environment),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		// A sampled caller's trace is kept whole; new traces are sampled at the ratio.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return tp, nil
}

// newExporter builds the OTLP exporter of cfg.Protocol. The exporters still read the other
// standard variables themselves (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE,
// _COMPRESSION).
func newExporter(ctx context.Context, cfg config.OTel) (sdktrace.SpanExporter, error) {
	if cfg.Protocol == "grpc" {
		exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		if err != nil {
			return nil, fmt.Errorf("otlp grpc exporter: %w", err)
		}
		return exp, nil
	}
	// Like OTEL_EXPORTER_OTLP_ENDPOINT, the endpoint is a base URL the signal's path is
	// appended to.
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("otel.endpoint: %w", err)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()), otlptracehttp.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("otlp http exporter: %w", err)
	}
	return exp, nil
}

// ChildrenOnly wraps tp so that its tracers make spans only inside a recording span: a
// library instrumented with it traces the work of a traced request or job, and the
// background loops that run outside any (pollers, flushers, heartbeats) make no root spans.
func ChildrenOnly(tp trace.TracerProvider) trace.TracerProvider { return childrenOnly{tp: tp} }

type childrenOnly struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (p childrenOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childTracer{t: p.tp.Tracer(name, opts...)}
}

type childTracer struct {
	embedded.Tracer
	t trace.Tracer
}

func (t childTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if parent := trace.SpanFromContext(ctx); !parent.IsRecording() {
		return ctx, parent // ending a span that does not record is a no-op
	}
	return t.t.Start(ctx, name, opts...)
}
