package tools

import (
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
)

func TestCurrentTime(t *testing.T) {
	t.Parallel()
	now := func() time.Time { return time.Date(2026, time.March, 29, 0, 30, 0, 0, time.UTC) } // a Sunday
	r := newTestRegistry(t, builtins(now)...)
	tests := []struct {
		name      string
		args      string
		want      string
		wantError bool
	}{
		{"OKDefaultUTC", `{}`, "2026-03-29T00:30:00Z (Sunday, UTC)", false},
		{"OKEmptyArguments", ``, "2026-03-29T00:30:00Z (Sunday, UTC)", false},
		{"OKExplicitUTC", `{"timezone":"UTC"}`, "2026-03-29T00:30:00Z (Sunday, UTC)", false},
		{"OKEastOfUTC", `{"timezone":"Asia/Tokyo"}`, "2026-03-29T09:30:00+09:00 (Sunday, Asia/Tokyo)", false},
		{"OKWestOfUTCPreviousDay", `{"timezone":"America/New_York"}`, "2026-03-28T20:30:00-04:00 (Saturday, America/New_York)", false},
		{"OKHalfHourOffset", `{"timezone":"Asia/Kolkata"}`, "2026-03-29T06:00:00+05:30 (Sunday, Asia/Kolkata)", false},
		{"OKBeforeDaylightSaving", `{"timezone":"Europe/Berlin"}`, "2026-03-29T01:30:00+01:00 (Sunday, Europe/Berlin)", false},
		{"ErrUnknownZone", `{"timezone":"Mars/Olympus_Mons"}`, `current_time: unknown time zone "Mars/Olympus_Mons"`, true},
		{"ErrLocal", `{"timezone":"Local"}`, `unknown time zone "Local"`, true},
		{"ErrPath", `{"timezone":"../../etc/passwd"}`, `unknown time zone "../../etc/passwd"`, true},
		{"ErrAbsolutePath", `{"timezone":"/etc/localtime"}`, `unknown time zone "/etc/localtime"`, true},
		{"ErrWrongType", `{"timezone":1}`, "- /timezone: got number, want string", true},
		{"ErrExtraArgument", `{"tz":"UTC"}`, "additional properties 'tz' not allowed", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := r.Run(t.Context(), llm.ToolCall{Name: "current_time", Arguments: tt.args}, time.Second)
			if res.IsError != tt.wantError {
				t.Fatalf("IsError = %t, want %t (content %q)", res.IsError, tt.wantError, res.Content)
			}
			if tt.wantError && !strings.Contains(res.Content, tt.want) || !tt.wantError && res.Content != tt.want {
				t.Fatalf("Content = %q, want %q", res.Content, tt.want)
			}
		})
	}
}

func TestBuiltinsRegister(t *testing.T) {
	t.Parallel()
	r := newTestRegistry(t, Builtins()...)
	if got := strings.Join(r.Names(), ","); got != "calculator,current_time" {
		t.Fatalf("Names() = %s", got)
	}
	res := r.Run(t.Context(), llm.ToolCall{Name: "current_time", Arguments: `{"timezone":"Europe/Paris"}`}, time.Second)
	if res.IsError {
		t.Fatalf("current_time with the real clock: %s", res.Content)
	}
	stamp, _, _ := strings.Cut(res.Content, " ")
	got, err := time.Parse(time.RFC3339, stamp)
	if err != nil || time.Since(got).Abs() > time.Minute {
		t.Fatalf("current_time = %q, want the current time in RFC 3339 (%v)", res.Content, err)
	}
}
