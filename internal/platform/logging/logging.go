// Package logging builds Kiln's slog logger: JSON lines on stdout, the request id of the
// context on every line, and secrets redacted before anything is written.
package logging

import (
	"context"
	"io"
	"log/slog"
	"regexp"
	"strings"
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

// contextHandler adds the request id of the record's context.
type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if id := RequestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
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
// values are never logged. "prompt_tokens" is not "…_token", so usage counts stay visible.
var secretKeys = []string{"authorization", "cookie", "set-cookie", "password", "secret", "token", "api_key", "apikey", "private_key", "dsn"}

// secretPatterns find credentials inside free text (prompts, URLs, error messages).
var secretPatterns = regexp.MustCompile(strings.Join([]string{
	`sk-[A-Za-z0-9_\-]{12,}`,                                     // OpenAI-style provider keys
	`kiln_[a-z0-9]+_[A-Za-z0-9]{16,}_[A-Za-z0-9]{4,}`,            // Kiln API keys
	`(?i)bearer\s+[A-Za-z0-9._~+/\-]+=*`,                         // bearer credentials
	`eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+`, // JWTs
	`://[^/\s:@]+:[^@\s/]+@`,                                     // passwords in URLs
}, "|"))

func redactAttr(_ []string, a slog.Attr) slog.Attr {
	key := strings.ToLower(a.Key)
	for _, s := range secretKeys {
		if key == s || strings.HasSuffix(key, "_"+s) || strings.HasSuffix(key, "-"+s) {
			return slog.String(a.Key, Redacted)
		}
	}
	if a.Value.Kind() == slog.KindString || a.Value.Kind() == slog.KindAny {
		s := a.Value.String()
		if secretPatterns.MatchString(s) {
			return slog.String(a.Key, RedactString(s))
		}
	}
	return a
}

// RedactString replaces every credential-looking substring of s.
func RedactString(s string) string {
	return secretPatterns.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "://") {
			user, _, _ := strings.Cut(m[3:], ":")
			return "://" + user + ":" + Redacted + "@"
		}
		return Redacted
	})
}
