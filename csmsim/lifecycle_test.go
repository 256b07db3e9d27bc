package csmsim_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
)

// noPercent marks a step where percent_done must be absent (legacy schema).
const noPercent = -1

type step struct {
	at      time.Duration // since the accepted preview POST
	status  string
	percent int
	preview bool // preview_mesh_url* filled
	refine  bool // mesh_url* filled
}

const ms = time.Millisecond

func TestLifecycle(t *testing.T) {
	tests := []struct {
		name          string
		cfg           csmsim.SessionConfig
		beforeStatus  string
		beforePercent int
		steps         []step
	}{
		{
			name: "legacy with queue, unknown status and auto refine",
			cfg: csmsim.SessionConfig{
				QueueTime: 10 * time.Second, GenerationTime: 60 * time.Second,
				UnknownStatus: "warming_up", AutoRefine: true,
			},
			beforeStatus: "spin_generate_done", beforePercent: noPercent,
			steps: []step{
				{0, "spin_generate_done", noPercent, false, false},
				{10*time.Second - ms, "spin_generate_done", noPercent, false, false},
				{10 * time.Second, "warming_up", noPercent, false, false},
				{40*time.Second - ms, "warming_up", noPercent, false, false},
				{40 * time.Second, "training_preview", noPercent, false, false},
				{70*time.Second - ms, "training_preview", noPercent, false, false},
				// preview_done passes between two polls: the refine starts at once.
				{70 * time.Second, "training_refine", noPercent, true, false},
				{100 * time.Second, "training_refine", noPercent, true, false},
				{130*time.Second - ms, "training_refine", noPercent, true, false},
				{130 * time.Second, "refine_done", noPercent, true, true},
				{time.Hour, "refine_done", noPercent, true, true},
			},
		},
		{
			name:         "legacy default generation time",
			cfg:          csmsim.SessionConfig{PreviewMesh: "hd"},
			beforeStatus: "spin_generate_done", beforePercent: noPercent,
			steps: []step{
				{0, "training_preview", noPercent, false, false},
				{3*time.Second - ms, "training_preview", noPercent, false, false},
				{3 * time.Second, "preview_done", noPercent, true, false},
				{time.Hour, "preview_done", noPercent, true, false},
			},
		},
		{
			name:         "legacy fail",
			cfg:          csmsim.SessionConfig{Fail: true, AutoRefine: true},
			beforeStatus: "spin_generate_done", beforePercent: noPercent,
			steps: []step{
				{time.Second, "training_preview", noPercent, false, false},
				{3 * time.Second, "preview_failed", noPercent, false, false},
				{time.Hour, "preview_failed", noPercent, false, false},
			},
		},
		{
			name:         "legacy stuck beats fail",
			cfg:          csmsim.SessionConfig{Stuck: true, Fail: true, UnknownStatus: "odd"},
			beforeStatus: "spin_generate_done", beforePercent: noPercent,
			steps: []step{
				{time.Second, "odd", noPercent, false, false},
				{2 * time.Second, "training_preview", noPercent, false, false},
				{time.Hour, "training_preview", noPercent, false, false},
				{1000 * time.Hour, "training_preview", noPercent, false, false},
			},
		},
		{
			name:          "2025 queued then growing percent then complete",
			cfg:           csmsim.SessionConfig{Schema: csmsim.Schema2025, QueueTime: 2 * time.Second, GenerationTime: 10 * time.Second},
			beforeStatus:  "complete",
			beforePercent: 100,
			steps: []step{
				{0, "queued", 0, false, false},
				{2*time.Second - ms, "queued", 0, false, false},
				{2 * time.Second, "in_progress", 0, false, false},
				{3 * time.Second, "in_progress", 10, false, false},
				{7 * time.Second, "in_progress", 50, false, false},
				{10 * time.Second, "in_progress", 80, false, false},
				{12*time.Second - ms, "in_progress", 99, false, false},
				{12 * time.Second, "complete", 100, true, false},
				{time.Hour, "complete", 100, true, false},
			},
		},
		{
			name:          "2025 unknown status in first half",
			cfg:           csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 10 * time.Second, UnknownStatus: "preprocessing"},
			beforeStatus:  "complete",
			beforePercent: 100,
			steps: []step{
				{0, "preprocessing", 0, false, false},
				{5*time.Second - ms, "preprocessing", 49, false, false},
				{5 * time.Second, "in_progress", 50, false, false},
				{10 * time.Second, "complete", 100, true, false},
			},
		},
		{
			name:          "2025 failed",
			cfg:           csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 10 * time.Second, Fail: true},
			beforeStatus:  "complete",
			beforePercent: 100,
			steps: []step{
				{5 * time.Second, "in_progress", 50, false, false},
				{10 * time.Second, "failed", 100, false, false},
				{time.Hour, "failed", 100, false, false},
			},
		},
		{
			name:          "2025 stuck stops at 50",
			cfg:           csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 10 * time.Second, Stuck: true},
			beforeStatus:  "complete",
			beforePercent: 100,
			steps: []step{
				{4 * time.Second, "in_progress", 40, false, false},
				{6 * time.Second, "in_progress", 50, false, false},
				{time.Hour, "in_progress", 50, false, false},
			},
		},
		{
			name:          "2025 ignores auto refine",
			cfg:           csmsim.SessionConfig{Schema: csmsim.Schema2025, AutoRefine: true},
			beforeStatus:  "complete",
			beforePercent: 100,
			steps: []step{
				{3 * time.Second, "complete", 100, true, false},
				{time.Hour, "complete", 100, true, false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, clk := newSim(t, tt.cfg)
			statusKey, otherKey := "status", "session_status"
			if tt.cfg.Schema == csmsim.Schema2025 {
				statusKey, otherKey = otherKey, statusKey
			}
			check := func(label string, s step, key string) {
				t.Helper()
				data := getSession(t, sim)
				if data[statusKey] != s.status {
					t.Errorf("%s: %s = %v, want %q", label, statusKey, data[statusKey], s.status)
				}
				if v, ok := data[otherKey]; ok {
					t.Errorf("%s: %s = %v, want it absent", label, otherKey, v)
				}
				p, ok := data["percent_done"]
				switch {
				case s.percent == noPercent && ok:
					t.Errorf("%s: percent_done = %v, want it absent", label, p)
				case s.percent != noPercent && p != float64(s.percent):
					t.Errorf("%s: percent_done = %v, want %d", label, p, s.percent)
				}
				checkURLs(t, data, previewFields, s.preview, key)
				checkURLs(t, data, refineFields, s.refine, key)
			}

			data := getSession(t, sim)
			if data["session_code"] != code || data["image_url"] == "" || len(data["spins"].([]any)) != 4 {
				t.Errorf("session = %v", data)
			}
			wantMesh := tt.cfg.PreviewMesh
			if wantMesh == "" {
				wantMesh = "turbo"
			}
			if data["preview_mesh"] != wantMesh {
				t.Errorf("preview_mesh = %v, want %s", data["preview_mesh"], wantMesh)
			}
			for i, s := range data["spins"].([]any) {
				if got := s.(map[string]any)["image_url"]; got != spinURL(i) {
					t.Errorf("spins[%d].image_url = %v, want %s", i, got, spinURL(i))
				}
			}
			check("before POST", step{status: tt.beforeStatus, percent: tt.beforePercent}, "")
			clk.Advance(time.Minute) // the lifecycle counts from the POST, not from AddSession

			var key string
			if wantMesh == "turbo" {
				key = mustPreview(t, sim)
			} else {
				status, env := postPreview(t, sim, `{}`)
				if status != 200 {
					t.Fatalf("preview: %d %v", status, env)
				}
				key = env["data"].(map[string]any)["unique_trial_key"].(string)
			}
			var elapsed time.Duration
			for _, s := range tt.steps {
				clk.Advance(s.at - elapsed)
				elapsed = s.at
				check("at "+s.at.String(), s, key)
			}
		})
	}
}

func TestRePreviewRestartsLifecycle(t *testing.T) {
	for _, schema := range []csmsim.Schema{csmsim.SchemaLegacy, csmsim.Schema2025} {
		name, statusKey, queued, running, done := "legacy", "status", "spin_generate_done", "training_preview", "preview_done"
		if schema == csmsim.Schema2025 {
			name, statusKey, queued, running, done = "2025", "session_status", "queued", "in_progress", "complete"
		}
		t.Run(name, func(t *testing.T) {
			sim, clk := newSim(t, csmsim.SessionConfig{Schema: schema, QueueTime: time.Second, GenerationTime: 10 * time.Second})
			key1 := mustPreview(t, sim)
			clk.Advance(11 * time.Second)
			data := getSession(t, sim)
			if data[statusKey] != done {
				t.Fatalf("first generation: %s = %v, want %s", statusKey, data[statusKey], done)
			}
			checkURLs(t, data, previewFields, true, key1)
			firstURL := data["preview_mesh_url"].(string)

			key2 := mustPreview(t, sim)
			if key2 == key1 {
				t.Fatal("re-preview reused the unique_trial_key")
			}
			steps := []struct {
				advance time.Duration
				status  string
				filled  bool
			}{
				{0, queued, false},
				{time.Second, running, false},
				{10 * time.Second, done, true},
			}
			for _, s := range steps {
				clk.Advance(s.advance)
				data := getSession(t, sim)
				if data[statusKey] != s.status {
					t.Errorf("%s = %v, want %s", statusKey, data[statusKey], s.status)
				}
				checkURLs(t, data, previewFields, s.filled, key2)
			}
			if got := getSession(t, sim)["preview_mesh_url"]; got == firstURL || strings.Contains(got.(string), key1) {
				t.Errorf("second preview_mesh_url = %v, want a new URL", got)
			}
			if got := sim.AcceptedPreviews(code); got != 2 {
				t.Errorf("AcceptedPreviews = %d, want 2: a re-preview is billed again", got)
			}
		})
	}
}

func TestGoneAfter(t *testing.T) {
	sim, clk := newSim(t, csmsim.SessionConfig{GoneAfter: 30 * time.Second})
	clk.Advance(time.Hour)
	getSession(t, sim) // no preview yet: nothing to count from, still there
	mustPreview(t, sim)
	clk.Advance(30*time.Second - ms)
	getSession(t, sim)
	clk.Advance(ms)
	for _, r := range []struct{ method, path string }{
		{http.MethodGet, sessionPath(code)},
		{http.MethodPost, previewPath(code)},
	} {
		rec := serve(t, sim, r.method, r.path, turboBody(0))
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s after GoneAfter: status %d, want 404", r.method, rec.Code)
		}
		if body := decode(t, rec); body["statusCode"] != 404.0 || body["error"] != "Not Found" {
			t.Errorf("body = %v", body)
		}
	}
	if got := sim.Requests(code, csmsim.EndpointGetSession); got != 3 {
		t.Errorf("Requests(get) = %d, want 3 (404s count)", got)
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1", got)
	}
}

func TestSpinsNotReady(t *testing.T) {
	tests := []struct {
		name      string
		cfg       csmsim.SessionConfig
		statusKey string
		status    string
	}{
		{"legacy turbo", csmsim.SessionConfig{SpinsNotReady: true}, "status", "spin_generate_processing"},
		{"legacy hd", csmsim.SessionConfig{SpinsNotReady: true, PreviewMesh: "hd"}, "status", "spin_generate_processing"},
		{"2025", csmsim.SessionConfig{SpinsNotReady: true, Schema: csmsim.Schema2025}, "session_status", "in_progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := newSim(t, tt.cfg)
			rec := serve(t, sim, http.MethodGet, sessionPath(code), "")
			if !strings.Contains(rec.Body.String(), `"spins":[]`) {
				t.Errorf("body %s, want an empty spins array", rec.Body)
			}
			data := getSession(t, sim)
			if data[tt.statusKey] != tt.status {
				t.Errorf("%s = %v, want %s", tt.statusKey, data[tt.statusKey], tt.status)
			}
			if tt.cfg.Schema == csmsim.Schema2025 && data["percent_done"] == 100.0 {
				t.Error("percent_done = 100 while spins are processing")
			}
			body := `{}`
			if tt.cfg.PreviewMesh == "" {
				body = turboBody(0)
			}
			status, env := postPreview(t, sim, body)
			if status != 400 || env["message"] != "spins are not ready" {
				t.Errorf("preview: %d %v, want 400 spins are not ready", status, env)
			}
			if got := sim.AcceptedPreviews(code); got != 0 {
				t.Errorf("AcceptedPreviews = %d, want 0", got)
			}
		})
	}
}
