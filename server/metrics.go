package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
)

// metricsEndpoint serves the registry's metrics, behind metrics.token when one is set.
func (s *Server) metricsEndpoint(reg prometheus.Gatherer, cfg config.Metrics) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if cfg.Token == "" {
		return h
	}
	// Comparing digests keeps the comparison constant-time whatever the offered length.
	want := sha256.Sum256([]byte(cfg.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := bearer(r)
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			s.refuse(w, r, errUnauthenticated)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// MetricsServer returns the http.Server of metrics.listen: GET /metrics and nothing else
// (a problem 404), with the API's timeouts and header limit. Serve it on s.Listener.
func (s *Server) MetricsServer(addr string) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsOnly)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.respondError(w, r, errs.E(errs.NotFound, "No route matches %s %s; this listener serves GET /metrics only.", r.Method, r.URL.Path))
	})
	srv := s.HTTPServer(addr)
	srv.Handler = chain(mux, withRequestID, s.withSecurityHeaders, s.recoverPanics)
	return srv
}
