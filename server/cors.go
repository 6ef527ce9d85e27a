package server

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/config"
)

// corsMethods are the methods a preflight allows: every method an operation of the spec
// uses. A preflight is answered the same for every path, so browsers reach the route,
// which answers a 404 or 405 they can read rather than a preflight failure they cannot.
const corsMethods = "GET, POST, PUT, PATCH, DELETE"

// corsSafelisted are the response headers browsers show every page; the rest must be
// listed in Access-Control-Expose-Headers.
var corsSafelisted = []string{"cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma"}

// exposedBeyondSpec are headers Kiln sends that the spec does not declare per operation,
// because they belong to the error answers of every route: WWW-Authenticate on a 401
// and Allow on a 405.
var exposedBeyondSpec = []string{"Allow", "WWW-Authenticate"}

// corsPolicy is http.cors: the origins whose pages may call the API, and what their
// scripts may read.
type corsPolicy struct {
	origins []config.Origin
	maxAge  string
	// exposed is the Access-Control-Expose-Headers value: every response header of the spec.
	exposed string
	// wsPatterns are the origins as coder/websocket's OriginPatterns, so the WebSocket
	// handshake checks the same list as the CORS middleware.
	wsPatterns []string
}

// newCORS reads http.cors, with the headers to expose taken from the spec's responses.
func newCORS(cfg config.CORS, spec *openapi3.T) (*corsPolicy, error) {
	origins, err := config.ParseOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("http.cors.allowed_origins: %w", err)
	}
	p := &corsPolicy{origins: origins, maxAge: strconv.Itoa(int(cfg.MaxAge.Seconds())), exposed: strings.Join(exposedHeaders(spec), ", ")}
	escape := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	for _, o := range origins {
		if o.Exact {
			p.wsPatterns = append(p.wsPatterns, escape.Replace(o.Value)) // an IPv6 host's brackets are literal
			continue
		}
		p.wsPatterns = append(p.wsPatterns, o.Value)
	}
	return p, nil
}

// exposedHeaders lists every response header the spec declares (operations, shared
// responses and shared headers) and exposedBeyondSpec, safelisted ones left out, sorted.
func exposedHeaders(spec *openapi3.T) []string {
	byLower := map[string]string{}
	add := func(headers openapi3.Headers) {
		for name := range headers {
			if !slices.Contains(corsSafelisted, strings.ToLower(name)) {
				byLower[strings.ToLower(name)] = name
			}
		}
	}
	for _, item := range spec.Paths.Map() {
		for _, op := range item.Operations() {
			for _, res := range op.Responses.Map() {
				if res.Value != nil {
					add(res.Value.Headers)
				}
			}
		}
	}
	if spec.Components != nil {
		add(spec.Components.Headers)
		for _, res := range spec.Components.Responses {
			if res.Value != nil {
				add(res.Value.Headers)
			}
		}
	}
	for _, name := range exposedBeyondSpec {
		byLower[strings.ToLower(name)] = name
	}
	out := make([]string, 0, len(byLower))
	for _, name := range byLower {
		out = append(out, name)
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return out
}

// allows reports whether pages of origin may call the API, and whether with credentials
// (exact origins only: a pattern may match hosts its owner does not control).
func (p *corsPolicy) allows(origin string) (ok, credentials bool) {
	origin = strings.ToLower(origin)
	u, err := url.Parse(origin)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return false, false
	}
	for _, o := range p.origins {
		if o.Exact {
			if origin == o.Value {
				return true, true
			}
			continue
		}
		target := u.Host
		if strings.Contains(o.Value, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if matched, _ := path.Match(o.Value, target); matched {
			return true, false
		}
	}
	return false, false
}

// allowsWebSocket reports whether r's page may open a WebSocket here: a client that sends
// no Origin (not a browser), a page of this host, or an allowed origin. It is the check
// coder/websocket makes with wsPatterns, made first so a refusal is a problem.
func (p *corsPolicy) allowsWebSocket(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	ok, _ := p.allows(origin)
	return ok
}

// withCORS answers preflights and lets pages of allowed origins read the answers: it sets
// Access-Control-Allow-Origin (and -Credentials for exact origins) and exposes every
// response header of the spec. A preflight from another origin is refused with a 403; a
// request from one is served without CORS headers, so its page cannot read the answer.
// With no origins configured it does nothing, and preflights meet the router's 405.
func (s *Server) withCORS(next http.Handler) http.Handler {
	p := s.cors
	if len(p.origins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		ok, credentials := p.allows(origin)
		allow := func() {
			h.Set("Access-Control-Allow-Origin", origin)
			if credentials {
				h.Set("Access-Control-Allow-Credentials", "true")
			}
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network")
			if !ok {
				s.respondError(w, r, errs.E(errs.PermissionDenied, "Pages of the origin %q may not call this API: it is not in http.cors.allowed_origins.", origin))
				return
			}
			allow()
			h.Set("Access-Control-Allow-Methods", corsMethods)
			if asked := r.Header.Get("Access-Control-Request-Headers"); asked != "" && headerList(asked) {
				h.Set("Access-Control-Allow-Headers", asked) // any header: the credential is a bearer token, never a cookie
			}
			h.Set("Access-Control-Max-Age", p.maxAge)
			if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
				h.Set("Access-Control-Allow-Private-Network", "true")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if ok {
			allow()
			h.Set("Access-Control-Expose-Headers", p.exposed)
		}
		next.ServeHTTP(w, r)
	})
}

// headerList reports whether v is a comma-separated list of header names, so echoing it
// cannot inject anything into the response.
func headerList(v string) bool {
	for name := range strings.SplitSeq(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return false
		}
		for i := 0; i < len(name); i++ {
			if !tokenChars[name[i]] {
				return false
			}
		}
	}
	return true
}

// tokenChars are the bytes of an HTTP token (RFC 9110 §5.6.2).
var tokenChars = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
		t[c] = true
	}
	return t
}()
