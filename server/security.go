package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Content-Security-Policy values. An API answer is never a page, so it may load and
// be framed by nothing; /docs (Swagger UI) loads its own scripts, styles and images and
// fetches the spec and the API from this origin, and nothing else. Swagger UI's inline
// SVG icons are data: images; its start-up script is a served file (init.js), so no
// 'unsafe-inline' is needed.
const (
	apiCSP  = "default-src 'none'; frame-ancestors 'none'"
	docsCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

// header is one response header, its value a slice ready to assign to an http.Header:
// setting a map entry costs no canonicalisation and no allocation per request. The slice
// has len == cap, so a handler's Header().Add copies it rather than writing into it.
type header struct {
	name  string
	value []string
}

// securityHeaders are the headers every answer carries.
type securityHeaders struct {
	common   []header // on every answer
	api, doc header   // the Content-Security-Policy of an API answer and of /docs
	hsts     *header  // nil when http.hsts_max_age is 0
}

func newSecurityHeaders(hstsMaxAge time.Duration) securityHeaders {
	h := securityHeaders{
		common: []header{
			{"X-Content-Type-Options", []string{"nosniff"}},
			{"Referrer-Policy", []string{"no-referrer"}},
			{"Cross-Origin-Resource-Policy", []string{"same-origin"}},
		},
		api: header{"Content-Security-Policy", []string{apiCSP}},
		doc: header{"Content-Security-Policy", []string{docsCSP}},
	}
	if secs := int64(hstsMaxAge / time.Second); secs > 0 {
		h.hsts = &header{"Strict-Transport-Security", []string{"max-age=" + strconv.FormatInt(secs, 10) + "; includeSubDomains"}}
	}
	return h
}

// forPath returns every header an answer to path carries.
func (h securityHeaders) forPath(path string) []header {
	out := append(make([]header, 0, len(h.common)+2), h.common...)
	out = append(out, h.csp(path))
	if h.hsts != nil {
		out = append(out, *h.hsts)
	}
	return out
}

// csp is the Content-Security-Policy of an answer to path.
func (h securityHeaders) csp(path string) header {
	if path == "/docs" || strings.HasPrefix(path, "/docs/") {
		return h.doc
	}
	return h.api
}

// withSecurityHeaders sets the security headers before anything else can answer, so
// every response carries them: problems, 404/405, streams, WebSocket refusals, /docs.
func (s *Server) withSecurityHeaders(next http.Handler) http.Handler {
	sec := s.security
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for _, kv := range sec.common {
			h[kv.name] = kv.value
		}
		csp := sec.csp(r.URL.Path)
		h[csp.name] = csp.value
		if sec.hsts != nil {
			h[sec.hsts.name] = sec.hsts.value
		}
		next.ServeHTTP(w, r)
	})
}
