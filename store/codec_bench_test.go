package store

import (
	"encoding/json"
	"testing"
	"time"
)

// BenchmarkPackJob packs a job record as a commit does: its time and
// allocations per record, and the packed size (bytes/record).
//
//	go test -run '^$' -bench PackJob -benchmem ./store/
func BenchmarkPackJob(b *testing.B) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	pct := 100
	j := Job{
		ID: "194003b2-0369-5e8e-8a1d-6879dcc71b5a", SessionCode: "SESSION_BENCH_0001", Status: StatusDone,
		WebhookURL: "https://hooks.example.com/previewd", UniqueTrialKey: "trial_8f9c2d1e4b", PercentDone: &pct,
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(3 * time.Hour), FinishedAt: &now,
		MeshURLs: map[string]string{"glb": "https://cdn.csm.ai/meshes/194003b2/preview.glb", "obj": "https://cdn.csm.ai/meshes/194003b2/preview.obj"},
	}
	j.SetStatus(StatusRequesting, now, "")
	j.SetStatus(StatusGenerating, now, "preview accepted by CSM")
	raw, err := json.Marshal(j)
	if err != nil {
		b.Fatal(err)
	}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		packed, err := pack(raw)
		if err != nil {
			b.Fatal(err)
		}
		size = len(packed)
	}
	b.ReportMetric(float64(size), "bytes/record")
	b.ReportMetric(float64(len(raw)), "json-bytes/record")
}

// BenchmarkUnpackJob reads back a packed job record.
func BenchmarkUnpackJob(b *testing.B) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	raw, err := json.Marshal(Job{ID: "194003b2-0369-5e8e-8a1d-6879dcc71b5a", SessionCode: "SESSION_BENCH_0001",
		Status: StatusGenerating, CreatedAt: now, UpdatedAt: now, Deadline: now.Add(3 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	packed, err := pack(raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Unpack(packed); err != nil {
			b.Fatal(err)
		}
	}
}
