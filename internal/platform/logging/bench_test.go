package logging_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/platform/logging"
)

// BenchmarkAccessLine measures one access-log line, redaction included, against the same
// line through a bare slog JSON handler.
//
//	go test ./internal/platform/logging -run '^$' -bench AccessLine -benchmem
func BenchmarkAccessLine(b *testing.B) {
	ctx := logging.WithRequestID(context.Background(), "01a2154e-2f67-7a65-bf0d-e1a0f0c4ff3c")
	line := func(l *slog.Logger) {
		l.LogAttrs(ctx, slog.LevelInfo, "request",
			slog.String("method", "POST"),
			slog.String("route", "POST /v1/chat/completions"),
			slog.String("path", "/v1/chat/completions"),
			slog.Int("status", 200),
			slog.Int64("bytes", 1234),
			slog.Duration("duration", 1234567*time.Nanosecond),
			slog.String("remote", "127.0.0.1:54321"),
			slog.String("user_agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"),
		)
	}
	b.Run("bare", func(b *testing.B) {
		l := slog.New(slog.NewJSONHandler(io.Discard, nil))
		b.ReportAllocs()
		for b.Loop() {
			line(l)
		}
	})
	b.Run("kiln", func(b *testing.B) {
		l := logging.New(io.Discard, "info")
		b.ReportAllocs()
		for b.Loop() {
			line(l)
		}
	})
}
