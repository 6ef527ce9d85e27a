// Package version reports the build: a version, commit and date set at link time (by
// `make release-dry-run` and releases), else what the Go toolchain stamped.
package version

import (
	"runtime"
	"runtime/debug"
)

// These are set at link time, e.g.
// -ldflags "-X github.com/kilnhq/kiln/internal/platform/version.Version=v1.2.3".
var (
	// Version is the release's semantic version tag.
	Version = "dev"
	// Commit is the full git commit the binary was built from; when empty, the Go
	// toolchain's VCS stamp is used (absent with -buildvcs=false).
	Commit = ""
	// Date is the build's date in RFC 3339, UTC (releases use the commit's date, so that
	// building the same commit twice gives the same binary).
	Date = ""
)

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
	GoVersion string `json:"go_version"`
}

// Get returns the build information; what was not stamped reads "unknown".
func Get() Info {
	info := Info{Version: Version, Commit: Commit, Date: Date, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && info.Commit == "":
				info.Commit = s.Value
			case s.Key == "vcs.time" && info.Date == "":
				info.Date = s.Value
			}
		}
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	if info.Date == "" {
		info.Date = "unknown"
	}
	return info
}
