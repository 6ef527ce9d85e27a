// Package version reports the build: a version set at link time and the VCS revision.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at link time: -ldflags "-X github.com/kilnhq/kiln/internal/platform/version.Version=v1.2.3".
var Version = "dev"

// Info describes this build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns the build information, the commit read from the Go build's VCS stamp.
func Get() Info {
	info := Info{Version: Version, Commit: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				info.Commit = s.Value
			}
		}
	}
	return info
}
