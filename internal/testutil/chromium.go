package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Chromium finds Debian's Chromium for a browser test. Without it the test
// is skipped, except under CI, where .ci/run installs it and its absence is
// a failure.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and no chromium installed (.ci/run installs Debian's chromium)")
	}
	t.Skip("no chromium installed (apt-get install chromium); skipping the browser test")
	return ""
}
