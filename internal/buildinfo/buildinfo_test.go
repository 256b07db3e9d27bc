package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	cases := []struct {
		name string
		bi   debug.BuildInfo
		want Info
	}{
		{
			name: "release build from a clean checkout",
			bi: debug.BuildInfo{
				GoVersion: "go1.26.0",
				Main:      debug.Module{Path: "github.com/previewd/previewd", Version: "v1.4.0"},
				Deps:      []*debug.Module{{Path: "github.com/redis/go-redis/v9", Version: "v9.23.0"}, {Path: "github.com/hibiken/asynq", Version: "v0.26.0"}},
				Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "ce8907f0"}, {Key: "vcs.modified", Value: "false"}},
			},
			want: Info{Version: "v1.4.0", Commit: "ce8907f0", GoVersion: "go1.26.0", Asynq: "v0.26.0"},
		},
		{
			name: "local build with changes",
			bi: debug.BuildInfo{
				GoVersion: "go1.26.0",
				Main:      debug.Module{Path: "github.com/previewd/previewd", Version: "(devel)"},
				Deps:      []*debug.Module{{Path: "github.com/hibiken/asynq", Version: "v0.26.0", Replace: &debug.Module{Path: "../asynq"}}},
				Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}},
			},
			want: Info{Version: "devel", Commit: "abc", Modified: true, GoVersion: "go1.26.0", Asynq: "replaced by ../asynq"},
		},
		{
			name: "no build information",
			bi:   debug.BuildInfo{},
			want: Info{Version: "devel", Commit: Unknown, GoVersion: Unknown, Asynq: Unknown},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromBuildInfo(&tc.bi); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRead reads this test binary's own build information: the Go version
// is the running one.
func TestRead(t *testing.T) {
	if got := Read(); got.GoVersion != runtime.Version() {
		t.Fatalf("Read().GoVersion = %q, want %q", got.GoVersion, runtime.Version())
	}
}
