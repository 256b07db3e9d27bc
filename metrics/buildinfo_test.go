package metrics_test

import (
	"runtime"
	"testing"

	"github.com/previewd/previewd/internal/buildinfo"
	"github.com/previewd/previewd/metrics"
)

// TestBuildInfo: every registry carries previewd_build_info = 1 with the
// labels `previewd version` prints.
func TestBuildInfo(t *testing.T) {
	mfs, err := metrics.New(metrics.Sources{}).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := buildinfo.Read()
	for _, mf := range mfs {
		if mf.GetName() != "previewd_build_info" {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%d series, want 1", len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		if v := m.GetGauge().GetValue(); v != 1 {
			t.Errorf("value %v, want 1", v)
		}
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for name, v := range map[string]string{"version": want.Version, "commit": want.Commit, "goversion": runtime.Version(), "asynq": want.Asynq} {
			if labels[name] != v {
				t.Errorf("label %s = %q, want %q (all: %v)", name, labels[name], v, labels)
			}
		}
		return
	}
	t.Fatal("no previewd_build_info metric")
}
