package version

import (
	"strings"
	"testing"
)

// The variables are package state, so this test does not run in parallel.
func TestGet(t *testing.T) {
	t.Run("OKStamped", func(t *testing.T) {
		defer func(v, c, d string) { Version, Commit, Date = v, c, d }(Version, Commit, Date)
		Version, Commit, Date = "v1.2.3", "0123abc", "2026-12-07T03:00:00Z"
		got := Get()
		if got.Version != "v1.2.3" || got.Commit != "0123abc" || got.Date != "2026-12-07T03:00:00Z" || !strings.HasPrefix(got.GoVersion, "go") {
			t.Fatalf("Get() = %+v", got)
		}
	})
	t.Run("OKUnstamped", func(t *testing.T) {
		got := Get()
		// A test binary carries no VCS stamp: what is unknown says so rather than being empty.
		if got.Version != "dev" || got.Commit == "" || got.Date == "" {
			t.Fatalf("Get() = %+v", got)
		}
	})
}
