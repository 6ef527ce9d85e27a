package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/platform/logging"
)

// capture returns a logger at level and the buffer it writes to.
func capture(t *testing.T, level string) (*slog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	return logging.New(&buf, level), &buf
}

// lines decodes every line of buf as one JSON object.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSuffix(buf.String(), "\n"), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		out = append(out, m)
	}
	return out
}

func TestNewWritesJSONLines(t *testing.T) {
	t.Parallel()
	log, buf := capture(t, "info")
	log.Info("first", "n", 1)
	log.Warn("second", "ok", true)
	log.Debug("hidden at info")

	got := lines(t, buf)
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2 (debug is below info):\n%s", len(got), buf)
	}
	for i, want := range []struct{ msg, level string }{{"first", "INFO"}, {"second", "WARN"}} {
		if got[i]["msg"] != want.msg || got[i]["level"] != want.level {
			t.Errorf("line %d = %v, want msg %q level %q", i, got[i], want.msg, want.level)
		}
		if _, ok := got[i]["time"]; !ok {
			t.Errorf("line %d has no time: %v", i, got[i])
		}
	}
	if got[0]["n"] != float64(1) {
		t.Errorf("attribute n = %#v, want 1", got[0]["n"])
	}
}

func TestNewLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		level string
		want  []string // messages written, of debug, info, warn, error
	}{
		{"DebugWritesAll", "debug", []string{"debug", "info", "warn", "error"}},
		{"InfoDropsDebug", "info", []string{"info", "warn", "error"}},
		{"WarnDropsInfo", "warn", []string{"warn", "error"}},
		{"ErrorOnly", "error", []string{"error"}},
		{"UnknownLevelIsInfo", "loud", []string{"info", "warn", "error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log, buf := capture(t, tt.level)
			log.Debug("debug")
			log.Info("info")
			log.Warn("warn")
			log.Error("error")
			var msgs []string
			for _, l := range lines(t, buf) {
				msgs = append(msgs, l["msg"].(string))
			}
			if fmt.Sprint(msgs) != fmt.Sprint(tt.want) {
				t.Errorf("level %q wrote %v, want %v", tt.level, msgs, tt.want)
			}
		})
	}
}

// TestTraceID: a line logged in a span's context names the trace, so a log line leads to
// the whole request in the tracing backend; without a span there is no trace_id.
func TestTraceID(t *testing.T) {
	t.Parallel()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	})
	log, buf := capture(t, "info")
	log.With("area", "x").InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "traced")
	log.InfoContext(context.Background(), "untraced")
	got := lines(t, buf)
	if len(got) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(got), buf)
	}
	if got[0]["trace_id"] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("traced line: trace_id = %v, want 4bf92f3577b34da6a3ce929d0e0e4736", got[0]["trace_id"])
	}
	if _, ok := got[1]["trace_id"]; ok {
		t.Errorf("untraced line has a trace_id: %v", got[1])
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	const id = "01JABCDEF0123456789XYZ"

	tests := []struct {
		name   string
		log    func(log *slog.Logger, ctx context.Context)
		wantID string
	}{
		{
			name:   "FromContext",
			log:    func(log *slog.Logger, ctx context.Context) { log.InfoContext(ctx, "handled") },
			wantID: id,
		},
		{
			name:   "ThroughWith",
			log:    func(log *slog.Logger, ctx context.Context) { log.With("route", "/v1/x").ErrorContext(ctx, "handled") },
			wantID: id,
		},
		{
			name:   "AbsentWithoutContext",
			log:    func(log *slog.Logger, _ context.Context) { log.Info("handled") },
			wantID: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log, buf := capture(t, "info")
			tt.log(log, logging.WithRequestID(context.Background(), id))
			got := lines(t, buf)
			if len(got) != 1 {
				t.Fatalf("got %d lines, want 1", len(got))
			}
			gotID, present := got[0]["request_id"]
			if tt.wantID == "" {
				if present {
					t.Errorf("request_id = %v, want none", gotID)
				}
				return
			}
			if gotID != tt.wantID {
				t.Errorf("request_id = %v, want %q: %v", gotID, tt.wantID, got[0])
			}
		})
	}

	t.Run("RequestIDReadsBack", func(t *testing.T) {
		t.Parallel()
		if got := logging.RequestID(logging.WithRequestID(context.Background(), id)); got != id {
			t.Errorf("RequestID = %q, want %q", got, id)
		}
		if got := logging.RequestID(context.Background()); got != "" {
			t.Errorf("RequestID of a bare context = %q, want empty", got)
		}
	})
}

// Secrets planted below are unique strings: the whole captured output is searched for them.
const (
	openAIKey = "sk-proj-Plant3dOpenAIKey0123456789abcdef"
	kilnKey   = "kiln_live_Plant3dRandomPart0123456789ABCDE_Chk9ab"
	bearerTok = "Plant3dOpaqueBearerToken.abc~def"
	jwt       = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.Plant3dJWTSignature_xyz"
	dbPass    = "Plant3dDbPassword"
)

func TestRedactedAttributes(t *testing.T) {
	t.Parallel()
	const secret = "Plant3dAttributeValue42"

	tests := []struct {
		name       string
		key        string
		wantHidden bool
	}{
		{"AuthorizationRedacted", "authorization", true},
		{"AuthorizationAnyCaseRedacted", "Authorization", true},
		{"PasswordRedacted", "password", true},
		{"APIKeyRedacted", "api_key", true},
		{"HeaderStyleAPIKeyRedacted", "X-Api-Key", true},
		{"ClientSecretRedacted", "client_secret", true},
		{"RefreshTokenRedacted", "refresh_token", true},
		{"CookieRedacted", "cookie", true},
		{"SetCookieRedacted", "Set-Cookie", true},
		{"DSNRedacted", "database_dsn", true},
		{"PromptTokensKept", "prompt_tokens", false},
		{"TokenizerKept", "tokenizer", false},
		{"PasswordlessKept", "passwordless", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			log, buf := capture(t, "debug")
			log.Info("request", tt.key, secret)
			got := lines(t, buf)[0][tt.key]
			if tt.wantHidden {
				if got != logging.Redacted {
					t.Errorf("%s = %v, want %s", tt.key, got, logging.Redacted)
				}
				if strings.Contains(buf.String(), secret) {
					t.Errorf("output leaks the value of %s:\n%s", tt.key, buf)
				}
				return
			}
			if got != secret {
				t.Errorf("%s = %v, want it logged as is", tt.key, got)
			}
		})
	}

	// Non-string values under a secret key are redacted too.
	t.Run("NonStringValueRedacted", func(t *testing.T) {
		t.Parallel()
		log, buf := capture(t, "info")
		log.Info("request", "api_key", 123456789, "prompt_tokens", 42)
		got := lines(t, buf)[0]
		if got["api_key"] != logging.Redacted {
			t.Errorf("api_key = %v, want %s", got["api_key"], logging.Redacted)
		}
		if got["prompt_tokens"] != float64(42) {
			t.Errorf("prompt_tokens = %v, want 42", got["prompt_tokens"])
		}
	})
}

func TestRedactString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		want   string // exact output; empty to check only that secret is gone
		secret string // must not appear in the output
	}{
		{
			name:   "OpenAIKey",
			in:     "my key is " + openAIKey + ", please help",
			want:   "my key is [REDACTED], please help",
			secret: openAIKey,
		},
		{
			name:   "AnthropicStyleKey",
			in:     "use sk-ant-api03-Plant3dAnthropicKey_0123",
			want:   "use [REDACTED]",
			secret: "Plant3dAnthropicKey",
		},
		{
			name:   "KilnKey",
			in:     "key=" + kilnKey + " rejected",
			want:   "key=[REDACTED] rejected",
			secret: kilnKey,
		},
		{
			name:   "Bearer",
			in:     "Authorization: Bearer " + bearerTok,
			want:   "Authorization: [REDACTED]",
			secret: bearerTok,
		},
		{
			name:   "BearerLowercase",
			in:     "bearer xyz",
			want:   "[REDACTED]",
			secret: "xyz",
		},
		{
			name:   "JWT",
			in:     "token " + jwt + " expired",
			want:   "token [REDACTED] expired",
			secret: "Plant3dJWTSignature",
		},
		{
			name:   "PasswordInPostgresURL",
			in:     "dial postgres://u:pw@h/db failed",
			want:   "dial postgres://u:[REDACTED]@h/db failed",
			secret: ":pw@",
		},
		{
			name:   "PasswordInRedisURLWithoutUser",
			in:     "dial redis://:" + dbPass + "@cache:6379/0 failed",
			want:   "dial redis://:[REDACTED]@cache:6379/0 failed",
			secret: dbPass,
		},
		{
			name:   "SeveralSecretsInOneString",
			in:     openAIKey + " " + kilnKey + " postgres://kiln:" + dbPass + "@db/kiln",
			want:   "[REDACTED] [REDACTED] postgres://kiln:[REDACTED]@db/kiln",
			secret: dbPass,
		},
		{
			name: "EmailedTokensWithUnderscoresKept", // dev logs show usable links: kiln_pr_ and kiln_ve_ tokens are base64url
			in:   "reset: https://app.example.com/reset?token=kiln_pr_0123456789abcdefABCDEF_Xyz9ab_7-QrStUvWx0 verify: kiln_ve_AbCdEfGhIjKlMnOpQrStUvWxYz012345_abcdef_gh",
			want: "reset: https://app.example.com/reset?token=kiln_pr_0123456789abcdefABCDEF_Xyz9ab_7-QrStUvWx0 verify: kiln_ve_AbCdEfGhIjKlMnOpQrStUvWxYz012345_abcdef_gh",
		},
		{
			name: "KeysBackToBack",
			in:   kilnKey + " " + kilnKey + "." + kilnKey,
			want: "[REDACTED] [REDACTED].[REDACTED]",
		},
		{
			name: "PlainTextKept",
			in:   "sk-short, kiln_live_x, prompt_tokens=12, https://example.com/a:b, user@example.com",
			want: "sk-short, kiln_live_x, prompt_tokens=12, https://example.com/a:b, user@example.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := logging.RedactString(tt.in)
			if tt.want != "" && got != tt.want {
				t.Errorf("RedactString(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("RedactString(%q) = %q still contains %q", tt.in, got, tt.secret)
			}
		})
	}
}

// TestNoSecretReachesTheOutput plants secrets in every place a log line can carry them and
// searches the whole output.
func TestNoSecretReachesTheOutput(t *testing.T) {
	t.Parallel()
	log, buf := capture(t, "debug")
	ctx := logging.WithRequestID(context.Background(), "req-1")

	log.InfoContext(ctx, "user said: "+openAIKey) // in the message
	log.InfoContext(ctx, "chat", "prompt", "here is my key "+openAIKey+" and "+kilnKey, "prompt_tokens", 12)
	log.ErrorContext(ctx, "connect", "error", fmt.Errorf("dial postgres://kiln:%s@db/kiln: refused", dbPass))
	log.WarnContext(ctx, "upstream", "error", errors.New("401 for Bearer "+bearerTok))
	log.With("authorization", "Bearer "+bearerTok).InfoContext(ctx, "preset attribute")
	log.InfoContext(ctx, "grouped", slog.Group("req", slog.String("password", dbPass), slog.String("note", "jwt "+jwt)))
	log.InfoContext(ctx, "headers", "headers", http.Header{"Authorization": {"Bearer " + bearerTok}})
	log.InfoContext(ctx, "struct", "call", struct{ Key string }{kilnKey})

	out := buf.String()
	for _, secret := range []string{openAIKey, kilnKey, bearerTok, "Plant3dJWTSignature", dbPass, "Plant3d"} {
		if strings.Contains(out, secret) {
			t.Errorf("output contains %q:\n%s", secret, out)
		}
	}
	got := lines(t, buf)
	if len(got) != 8 {
		t.Fatalf("got %d lines, want 8", len(got))
	}
	if got[1]["prompt_tokens"] != float64(12) {
		t.Errorf("prompt_tokens = %v, want 12 (not a secret)", got[1]["prompt_tokens"])
	}
	if want := "connect"; got[2]["msg"] != want || !strings.Contains(fmt.Sprint(got[2]["error"]), "postgres://kiln:[REDACTED]@db/kiln") {
		t.Errorf("error line = %v, want the URL kept with its password redacted", got[2])
	}
	for i, l := range got {
		if l["request_id"] != "req-1" {
			t.Errorf("line %d has request_id %v, want req-1", i, l["request_id"])
		}
	}
}

// FuzzRedactString checks that a planted provider key never survives redaction, whatever
// text surrounds it, and that RedactString never panics.
func FuzzRedactString(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"my key is ", " please"},
		{"Bearer ", ""},
		{"Authorization: Bearer x", "y"},
		{"postgres://u:", "@h/db"},
		{"redis://:", "@cache"},
		{"://", ":"},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.", ""},
		{"kiln_live_", "_Chk9"},
		{"kiln_live_0123456789abcdefXY_", ""},
		{"kiln_live_0123456789abcdefXY_ab", ""},
		{"sk-", "sk-"},
		{"s", "-more-text"},
		{"\"api_key\":\"", "\"}"},
		{"日本語のテキスト ", " ✓"},
		{"\x00\xff", "\n\t"},
	} {
		f.Add(seed[0], seed[1])
	}
	const body = "Fuzz9Secret4Body7Qx2Lm8Zp"
	const secret = "sk-" + body
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		got := logging.RedactString(prefix + secret + suffix)
		if strings.Contains(got, secret) {
			t.Fatalf("RedactString(%q) = %q keeps the key", prefix+secret+suffix, got)
		}
		// The key's body must not leak either, unless the surrounding text carries it.
		if strings.Contains(got, body) && !strings.Contains(prefix, body) && !strings.Contains(suffix, body) {
			t.Fatalf("RedactString(%q) = %q keeps the key's body", prefix+secret+suffix, got)
		}
	})
}
