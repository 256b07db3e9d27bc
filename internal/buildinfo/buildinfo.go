// Package buildinfo says which previewd is running: its version, the
// commit it was built from, and the Go and asynq versions inside it, read
// from the build information the Go toolchain embeds in every binary.
// `previewd version` prints it; the previewd_build_info metric carries it.
package buildinfo

import (
	"runtime/debug"
)

// asynqModule is the dependency whose version is reported beside Go's: a
// task's behaviour (leases, retries, recovery) depends on it.
const asynqModule = "github.com/hibiken/asynq"

// version and commit, when set at link time, win over what the toolchain
// stamps: an image built without its .git directory (or with
// -buildvcs=false) still says what it is:
//
//	go build -ldflags "-X github.com/previewd/previewd/internal/buildinfo.version=v1.4.0 \
//	  -X github.com/previewd/previewd/internal/buildinfo.commit=$(git rev-parse HEAD)" ./cmd/previewd
var version, commit string

// Unknown stands for a value the binary does not carry (a test binary has
// no main module version; a build outside a VCS checkout has no commit).
const Unknown = "unknown"

// Info is what a binary says about its build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"` // built from a checkout with uncommitted changes
	GoVersion string `json:"go_version"`
	Asynq     string `json:"asynq"`
}

// Read returns the running binary's build information.
func Read() Info {
	info := Info{Version: Unknown, Commit: Unknown, GoVersion: Unknown, Asynq: Unknown}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info = FromBuildInfo(bi)
	}
	if version != "" {
		info.Version = version
	}
	if commit != "" {
		info.Commit, info.Modified = commit, false
	}
	return info
}

// FromBuildInfo extracts Info from the toolchain's build information.
func FromBuildInfo(bi *debug.BuildInfo) Info {
	info := Info{Version: bi.Main.Version, Commit: Unknown, GoVersion: bi.GoVersion, Asynq: Unknown}
	if info.Version == "" || info.Version == "(devel)" {
		// `go build` outside a module version and `go run` stamp "(devel)";
		// a test binary stamps nothing.
		info.Version = "devel"
	}
	if info.GoVersion == "" {
		info.GoVersion = Unknown
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	for _, dep := range bi.Deps {
		if dep.Path != asynqModule {
			continue
		}
		info.Asynq = dep.Version
		if dep.Replace != nil {
			info.Asynq = dep.Replace.Version
			if info.Asynq == "" {
				info.Asynq = "replaced by " + dep.Replace.Path
			}
		}
	}
	return info
}
