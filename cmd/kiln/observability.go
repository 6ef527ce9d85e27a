package main

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/errreport"
	"github.com/kilnhq/kiln/internal/platform/tracing"
	"github.com/kilnhq/kiln/internal/platform/version"
)

// flushTimeout bounds the last export of spans at shutdown: a collector that is down must
// not hold the process.
const flushTimeout = 5 * time.Second

// startTracing builds the tracer provider when otel.endpoint is set (a.tracer stays nil
// otherwise: tracing off) and installs it as OpenTelemetry's global, for libraries that only
// look there. The returned stop flushes the spans still buffered.
func (a *app) startTracing(ctx context.Context) (stop func(), err error) {
	tp, err := tracing.New(ctx, a.cfg.OTel, tracing.Build{Version: version.Get().Version, Environment: a.cfg.Env})
	if err != nil || tp == nil {
		return func() {}, err
	}
	a.tracer = tp
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(tracing.Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { a.log.Warn("opentelemetry", "error", err) }))
	a.log.Info("tracing on", "endpoint", a.cfg.OTel.Endpoint, "protocol", a.cfg.OTel.Protocol, "sample_ratio", a.cfg.OTel.SampleRatio)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			a.log.Warn("flush spans at shutdown", "error", err)
		}
	}, nil
}

// tracerProvider returns the tracer provider, or nil when tracing is off (an untyped nil,
// which the packages read as off).
func (a *app) tracerProvider() trace.TracerProvider {
	if a.tracer == nil {
		return nil
	}
	return a.tracer
}

// startErrorReports builds the Sentry reporter when sentry.dsn is set (nil otherwise: no
// reports), its environment and release defaulting to env and the build's version. The
// returned stop sends the reports still queued.
func (a *app) startErrorReports() (*errreport.Reporter, func(), error) {
	r, err := errreport.New(a.cfg.Sentry, a.cfg.Env, version.Get().Version)
	if err != nil || r == nil {
		return nil, func() {}, err
	}
	a.log.Info("error reports on", "sample_rate", a.cfg.Sentry.SampleRate, "send_pii", a.cfg.Sentry.SendPII)
	return r, func() { r.Flush(flushTimeout) }, nil
}
