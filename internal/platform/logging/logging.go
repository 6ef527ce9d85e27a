// Package logging builds Kiln's slog logger: JSON lines on stdout, the request id and trace
// id of the context on every line, and secrets redacted before anything is written.
package logging

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

type ctxKey struct{}

// WithRequestID returns a context whose log lines carry the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// RequestID returns the request id stored in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// New returns a JSON logger writing to w at the given level (debug, info, warn, error).
func New(w io.Writer, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config; info on anything else
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv, ReplaceAttr: redactAttr})
	return slog.New(contextHandler{h})
}

// contextHandler adds the request id and the trace id (when the context carries a span)
// of the record's context.
type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(attrs)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}

// Redacted replaces a secret value.
const Redacted = "[REDACTED]"

// secretKeys are attribute names (or their _suffix: client_secret, refresh_token) whose
// values are never logged; "-" counts as "_" (X-Api-Key). "prompt_tokens" is not
// "…_token", so usage counts stay visible.
var secretKeys = []string{"authorization", "cookie", "password", "secret", "token", "api_key", "apikey", "private_key", "dsn"}

// secretPatterns find credentials inside free text (prompts, URLs, error messages). The
// first submatch, when a pattern has one, is the part to redact.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`sk-[A-Za-z0-9_\-]{12,}`), // OpenAI-style provider keys
	// Kiln API keys, exactly as apikey.Generate writes them (env, 32 base62, 6 base62) and
	// not followed by a token character: an emailed token (kiln_pr_…, kiln_ve_…, 43 base64url
	// characters that may hold "_") is never cut in part, so development logs keep usable links.
	regexp.MustCompile(`(kiln_[a-z0-9]{1,8}_[A-Za-z0-9]{32}_[A-Za-z0-9]{6})(?:[^A-Za-z0-9_\-]|$)`),
	regexp.MustCompile(`(?i)bearer\s+[A-Za-z0-9._~+/\-]+=*`),                         // bearer credentials
	regexp.MustCompile(`eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+`), // JWTs
	regexp.MustCompile(`://[^/\s:@]*:([^@\s/]+)@`),                                   // passwords in URLs (user kept)
}

// anySecret matches where any of secretPatterns does: one scan for the common case of no secret.
var anySecret = func() *regexp.Regexp {
	var alts []string
	for _, re := range secretPatterns {
		alts = append(alts, "(?:"+re.String()+")")
	}
	return regexp.MustCompile(strings.Join(alts, "|"))
}()

// isSecretKey reports whether an attribute name is one of secretKeys or ends in
// "_"+one of them, ignoring case, with "-" read as "_" (X-Api-Key, Set-Cookie). It runs
// for every attribute of every line, so it compares bytes and allocates nothing.
func isSecretKey(name string) bool {
	for _, s := range secretKeys {
		n := len(name) - len(s)
		if n < 0 || !foldUnderscoreEqual(name[n:], s) {
			continue
		}
		if n == 0 || name[n-1] == '_' || name[n-1] == '-' {
			return true
		}
	}
	return false
}

// foldUnderscoreEqual compares a with the lower-case, snake_case b: ASCII case folded,
// '-' in a matching '_' in b.
func foldUnderscoreEqual(a, b string) bool {
	for i := 0; i < len(b); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '-' {
			c = '_'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// mayHoldSecret is a cheap test for the literal every secretPatterns match contains, so
// ordinary log values (methods, routes, user agents) never reach the regexp.
func mayHoldSecret(s string) bool {
	return strings.Contains(s, "sk-") || strings.Contains(s, "kiln_") || strings.Contains(s, "eyJ") ||
		strings.Contains(s, "://") || containsFold(s, "bearer")
}

// containsFold reports whether s contains the lower-case ASCII word sub, ignoring case,
// without allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i]|0x20 == sub[0] && foldUnderscoreEqual(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	if isSecretKey(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	switch a.Value.Kind() {
	case slog.KindString:
		return redactValue(a, a.Value.String())
	case slog.KindAny:
		if lv, ok := a.Value.Any().(slog.Level); ok {
			// The built-in level, as a plain string: slog then skips its JSON-marshal path.
			return slog.String(a.Key, lv.String())
		}
		return redactValue(a, a.Value.String())
	}
	return a // numbers, durations, times: nothing to scan
}

// redactValue returns a with the credentials in its text form s redacted, or a unchanged.
func redactValue(a slog.Attr, s string) slog.Attr {
	if mayHoldSecret(s) && anySecret.MatchString(s) {
		return slog.String(a.Key, RedactString(s))
	}
	return a
}

// RedactString replaces every credential-looking substring of s. Each pattern is matched on
// its own and overlapping matches are merged, so a match of one pattern cannot shield part
// of another credential from redaction.
func RedactString(s string) string {
	var spans [][2]int
	for _, re := range secretPatterns {
		for _, m := range re.FindAllStringSubmatchIndex(s, -1) {
			if len(m) >= 4 && m[2] >= 0 {
				m = m[2:4]
			}
			spans = append(spans, [2]int{m[0], m[1]})
		}
	}
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return cmp.Compare(a[0], b[0]) })
	var b strings.Builder
	written := 0 // s[:written] is already in b
	start, end := spans[0][0], spans[0][1]
	flush := func() {
		b.WriteString(s[written:start])
		b.WriteString(Redacted)
		written = end
	}
	for _, sp := range spans[1:] {
		if sp[0] <= end { // overlapping or touching: one redaction
			end = max(end, sp[1])
			continue
		}
		flush()
		start, end = sp[0], sp[1]
	}
	flush()
	b.WriteString(s[written:])
	return b.String()
}
