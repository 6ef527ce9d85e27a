package server

import (
	"net"
	"net/http"
	"net/netip"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/platform/tracing"
)

// untracedRoutes are the probes and the scrape, which would bury the requests worth a trace.
var untracedRoutes = map[string]bool{"GET /health": true, "GET /ready": true, "GET /metrics": true}

// traceRequests starts a server span per request, named by its route template
// ("GET /v1/conversations/{id}", never the raw path, so names stay few). A caller's
// traceparent is continued only when the connection comes from a trusted proxy
// (http.trusted_proxies); anyone else's starts a new trace that links to it, so a client
// can neither join nor force the sampling of a trace of ours.
func (s *Server) traceRequests(tp trace.TracerProvider) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		tag := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
				span.SetAttributes(
					attribute.String("http.route", s.routeOf(r)),
					attribute.String("kiln.request_id", logging.RequestID(r.Context())),
				)
			}
			next.ServeHTTP(w, r)
		})
		return otelhttp.NewHandler(tag, "",
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(tracing.Propagator),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return s.routeOf(r) }),
			otelhttp.WithPublicEndpointFn(func(r *http.Request) bool { return !s.fromTrustedProxy(r) }),
			otelhttp.WithFilter(func(r *http.Request) bool { return !untracedRoutes[s.routeOf(r)] }),
		)
	}
}

// fromTrustedProxy reports whether r's connection comes from a trusted proxy.
func (s *Server) fromTrustedProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && s.trustedProxy(addr)
}
