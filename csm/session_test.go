package csm_test

import (
	"errors"
	"testing"

	"github.com/previewd/previewd/csm"
)

// seedResponse is the reply of the seed doc page (shared/seed/get-3d-preview.txt).
const seedResponse = `{
  "error": "",
  "message": "Generating Mesh",
  "statusCode": 200,
  "data": {
    "scenario": "SESSION_P_44569824122",
    "unique_trial_key": "168923176748ZJ@NcRfUjXn2r5u8x",
    "status": "unprocessed",
    "complete_job_data": {
      "scenario": "SESSION_P_44569824122",
      "job_priority": "2",
      "username": "admin@test.com",
      "call": "dreamfusion",
      "user_id": "000000",
      "status": "unprocessed",
      "start_time": "1689231769.6472576",
      "unique_trial_key": "168923176748ZJ@NcRfUjXn2r5u8x",
      "task_data": "{\"scenario\": \"SESSION_P_44569824122\", \"unique_trial_key\": \"168923176748ZJ@NcRfUjXn2r5u8x\", \"customer_email\": \"admin@yopmail.com\", \"image_url\": \"https://via.placeholder.com/300/09f/fff.png\", \"text_prompt\": \"Walk\", \"keyword\": \"\", \"discord_user_id\": \"\"}",
      "id": "job:dreamfusion:SESSION_P_44569824122_168923176748ZJ@NcRfUjXn2r5u8x"
    }
  }
}`

func TestPhase(t *testing.T) {
	const meshURL = "https://cdn.example/preview.glb"
	tests := []struct {
		name          string
		status        string // older schema
		sessionStatus string // 2025 schema
		preview       csm.Meshes
		want          csm.Phase
	}{
		// Older schema, every documented status, no mesh yet.
		{name: "spin_generate_processing", status: "spin_generate_processing", want: csm.PhaseSpinStage},
		{name: "spin_generate_done", status: "spin_generate_done", want: csm.PhaseSpinStage},
		{name: "spin_generate_failed", status: "spin_generate_failed", want: csm.PhaseSpinStage},
		{name: "unprocessed", status: "unprocessed", want: csm.PhaseGenerating},
		{name: "training_preview", status: "training_preview", want: csm.PhaseGenerating},
		{name: "preview_done", status: "preview_done", want: csm.PhaseDone},
		{name: "preview_failed", status: "preview_failed", want: csm.PhaseFailed},
		{name: "training_refine means the preview is ready", status: "training_refine", want: csm.PhaseDone},
		{name: "refine_done", status: "refine_done", want: csm.PhaseDone},
		{name: "refine_failed still has the preview", status: "refine_failed", want: csm.PhaseDone},

		// 2025 schema.
		{name: "2025 queued", sessionStatus: "queued", want: csm.PhaseGenerating},
		{name: "2025 in_progress", sessionStatus: "in_progress", want: csm.PhaseGenerating},
		{name: "2025 complete", sessionStatus: "complete", want: csm.PhaseDone},
		{name: "2025 failed", sessionStatus: "failed", want: csm.PhaseFailed},

		// Unknown strings mean "still working".
		{name: "empty", want: csm.PhaseUnknown},
		{name: "unknown legacy", status: "weird_new_status", want: csm.PhaseUnknown},
		{name: "unknown 2025", sessionStatus: "weird_new_status", want: csm.PhaseUnknown},
		{name: "case matters", status: "PREVIEW_DONE", want: csm.PhaseUnknown},
		{name: "2025 word in the legacy field", status: "complete", want: csm.PhaseUnknown},
		{name: "legacy word in the 2025 field", sessionStatus: "preview_done", want: csm.PhaseUnknown},

		// A preview mesh URL means done, unless the status says generating or failed.
		{name: "unknown plus URL", status: "weird_new_status", preview: csm.Meshes{GLB: meshURL}, want: csm.PhaseDone},
		{name: "no status plus URL", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseDone},
		{name: "spin stage plus URL", status: "spin_generate_done", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseDone},
		{name: "spin processing plus fbx URL", status: "spin_generate_processing", preview: csm.Meshes{FBX: meshURL}, want: csm.PhaseDone},
		{name: "training_preview plus URL", status: "training_preview", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseGenerating},
		{name: "unprocessed plus URL", status: "unprocessed", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseGenerating},
		{name: "preview_failed plus URL", status: "preview_failed", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseFailed},
		{name: "preview_done plus URL", status: "preview_done", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseDone},
		{name: "2025 in_progress plus URL", sessionStatus: "in_progress", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseGenerating},
		{name: "2025 failed plus URL", sessionStatus: "failed", preview: csm.Meshes{URL: meshURL}, want: csm.PhaseFailed},
		{name: "2025 unknown plus URL", sessionStatus: "weird_new_status", preview: csm.Meshes{ZIP: meshURL}, want: csm.PhaseDone},

		// session_status wins over status when both are set.
		{name: "both: 2025 failed wins", status: "preview_done", sessionStatus: "failed", want: csm.PhaseFailed},
		{name: "both: 2025 in_progress wins", status: "preview_done", sessionStatus: "in_progress", want: csm.PhaseGenerating},
		{name: "both: 2025 complete wins", status: "preview_failed", sessionStatus: "complete", want: csm.PhaseDone},
		{name: "both: unknown 2025 still wins", status: "preview_done", sessionStatus: "weird_new_status", want: csm.PhaseUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &csm.Session{Status: tt.status, SessionStatus: tt.sessionStatus, Preview: tt.preview}
			if got := s.Phase(); got != tt.want {
				t.Errorf("Phase() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPhaseString(t *testing.T) {
	tests := []struct {
		phase csm.Phase
		want  string
	}{
		{csm.PhaseUnknown, "unknown"},
		{csm.PhaseSpinStage, "spin_stage"},
		{csm.PhaseGenerating, "generating"},
		{csm.PhaseDone, "done"},
		{csm.PhaseFailed, "failed"},
		{csm.Phase(99), "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.phase.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRawStatus(t *testing.T) {
	tests := []struct {
		name, status, sessionStatus, want string
	}{
		{"legacy", "training_preview", "", "training_preview"},
		{"2025", "", "in_progress", "in_progress"},
		{"both", "preview_done", "complete", "complete"},
		{"none", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &csm.Session{Status: tt.status, SessionStatus: tt.sessionStatus}
			if got := s.RawStatus(); got != tt.want {
				t.Errorf("RawStatus() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMeshURLs(t *testing.T) {
	preview := csm.Meshes{URL: "https://cdn/p.obj", GLB: "https://cdn/p.glb"}
	refined := csm.Meshes{URL: "https://cdn/r.obj", OBJ: "https://cdn/r2.obj", FBX: "https://cdn/r.fbx"}
	tests := []struct {
		name    string
		session csm.Session
		want    map[string]string
	}{
		{"none", csm.Session{}, map[string]string{}},
		{"preview only", csm.Session{Preview: preview}, map[string]string{"url": "https://cdn/p.obj", "glb": "https://cdn/p.glb"}},
		{"refined only", csm.Session{Refined: refined}, map[string]string{"url": "https://cdn/r.obj", "obj": "https://cdn/r2.obj", "fbx": "https://cdn/r.fbx"}},
		{"preview preferred over refined", csm.Session{Preview: preview, Refined: refined}, map[string]string{"url": "https://cdn/p.obj", "glb": "https://cdn/p.glb"}},
		{
			"every format",
			csm.Session{Preview: csm.Meshes{URL: "u", GLB: "g", OBJ: "o", ZIP: "z", USDZ: "s", FBX: "f"}},
			map[string]string{"url": "u", "glb": "g", "obj": "o", "zip": "z", "usdz": "s", "fbx": "f"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.session.MeshURLs()
			if len(got) != len(tt.want) {
				t.Fatalf("MeshURLs() = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("MeshURLs()[%q] = %q, want %q", k, got[k], v)
				}
			}
			if gotFP := tt.session.MeshFingerprint(); (gotFP == "") != (len(tt.want) == 0) {
				t.Errorf("MeshFingerprint() = %q with %d URLs", gotFP, len(tt.want))
			}
		})
	}
}

func TestMeshFingerprint(t *testing.T) {
	base := csm.Meshes{URL: "https://cdn/k1/p.obj", GLB: "https://cdn/k1/p.glb", OBJ: "https://cdn/k1/p2.obj", ZIP: "https://cdn/k1/p.zip", USDZ: "https://cdn/k1/p.usdz", FBX: "https://cdn/k1/p.fbx"}
	fp := (&csm.Session{Preview: base}).MeshFingerprint()
	if len(fp) != 16 {
		t.Fatalf("MeshFingerprint() = %q, want 16 hex characters", fp)
	}

	t.Run("empty when there is no mesh", func(t *testing.T) {
		if got := (&csm.Session{Status: "preview_done"}).MeshFingerprint(); got != "" {
			t.Errorf("MeshFingerprint() = %q, want empty", got)
		}
	})
	t.Run("stable across calls and map orders", func(t *testing.T) {
		s := &csm.Session{Preview: base}
		for range 50 {
			if got := s.MeshFingerprint(); got != fp {
				t.Fatalf("MeshFingerprint() = %q, then %q", fp, got)
			}
		}
	})
	t.Run("same URLs, same fingerprint, whatever else differs", func(t *testing.T) {
		s := &csm.Session{Code: "X", Status: "refine_done", Preview: base, Refined: csm.Meshes{URL: "https://cdn/r.obj"}}
		if got := s.MeshFingerprint(); got != fp {
			t.Errorf("MeshFingerprint() = %q, want %q", got, fp)
		}
	})

	changes := []struct {
		name string
		edit func(m *csm.Meshes)
	}{
		{"url", func(m *csm.Meshes) { m.URL = "https://cdn/k2/p.obj" }},
		{"glb", func(m *csm.Meshes) { m.GLB = "https://cdn/k2/p.glb" }},
		{"obj", func(m *csm.Meshes) { m.OBJ = "https://cdn/k2/p2.obj" }},
		{"zip", func(m *csm.Meshes) { m.ZIP = "https://cdn/k2/p.zip" }},
		{"usdz", func(m *csm.Meshes) { m.USDZ = "https://cdn/k2/p.usdz" }},
		{"fbx", func(m *csm.Meshes) { m.FBX = "https://cdn/k2/p.fbx" }},
		{"one removed", func(m *csm.Meshes) { m.FBX = "" }},
		{"two formats swap URLs", func(m *csm.Meshes) { m.URL, m.OBJ = m.OBJ, m.URL }},
	}
	for _, tt := range changes {
		t.Run("changes when "+tt.name+" changes", func(t *testing.T) {
			m := base
			tt.edit(&m)
			if got := (&csm.Session{Preview: m}).MeshFingerprint(); got == fp || got == "" {
				t.Errorf("MeshFingerprint() = %q, want a new non-empty fingerprint (was %q)", got, fp)
			}
		})
	}
}

func TestDecodeSession(t *testing.T) {
	pct := func(n int) *int { return &n }
	tests := []struct {
		name          string
		body          string
		wantStatus    string
		wantSession   string
		wantCode      string
		wantPercent   *int
		wantPreviewGL string
	}{
		{
			name:       "legacy envelope",
			body:       `{"error":"","message":"ok","statusCode":200,"data":{"session_code":"S1","status":"training_preview","preview_mesh":"turbo","spins":[{"image_url":"a"},{"image_url":"b"}],"preview_mesh_url":""}}`,
			wantStatus: "training_preview", wantCode: "S1",
		},
		{
			name:        "2025 envelope",
			body:        `{"statusCode":200,"data":{"session_code":"S1","session_status":"in_progress","percent_done":40}}`,
			wantSession: "in_progress", wantCode: "S1", wantPercent: pct(40),
		},
		{
			name:       "session at top level without envelope",
			body:       `{"session_code":"S1","status":"preview_done","preview_mesh_url_glb":"https://cdn/p.glb"}`,
			wantStatus: "preview_done", wantCode: "S1", wantPreviewGL: "https://cdn/p.glb",
		},
		{
			name:       "data null, session at top level",
			body:       `{"data":null,"session_code":"S1","status":"training_preview"}`,
			wantStatus: "training_preview", wantCode: "S1",
		},
		{name: "percent as float rounds", body: `{"data":{"session_status":"in_progress","percent_done":42.6}}`, wantSession: "in_progress", wantPercent: pct(43)},
		{name: "percent as numeric string", body: `{"data":{"session_status":"in_progress","percent_done":"42"}}`, wantSession: "in_progress", wantPercent: pct(42)},
		{name: "percent as float string", body: `{"data":{"session_status":"in_progress","percent_done":"7.2"}}`, wantSession: "in_progress", wantPercent: pct(7)},
		{name: "percent above 100 clamped", body: `{"data":{"session_status":"complete","percent_done":150}}`, wantSession: "complete", wantPercent: pct(100)},
		{name: "percent string above 100 clamped", body: `{"data":{"session_status":"complete","percent_done":"1e6"}}`, wantSession: "complete", wantPercent: pct(100)},
		{name: "percent negative clamped", body: `{"data":{"session_status":"queued","percent_done":-5}}`, wantSession: "queued", wantPercent: pct(0)},
		{name: "percent null", body: `{"data":{"session_status":"queued","percent_done":null}}`, wantSession: "queued"},
		{name: "percent absent", body: `{"data":{"session_status":"queued"}}`, wantSession: "queued"},
		{name: "statuses trimmed", body: `{"data":{"status":" preview_done\n","session_status":"\tcomplete "}}`, wantStatus: "preview_done", wantSession: "complete"},
		{name: "unknown fields ignored", body: `{"data":{"status":"x","new_field":{"a":[1,2]},"spins":null}}`, wantStatus: "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := csm.DecodeSession([]byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeSession: %v", err)
			}
			if s.Status != tt.wantStatus || s.SessionStatus != tt.wantSession || s.Code != tt.wantCode {
				t.Errorf("Status, SessionStatus, Code = %q, %q, %q; want %q, %q, %q",
					s.Status, s.SessionStatus, s.Code, tt.wantStatus, tt.wantSession, tt.wantCode)
			}
			switch {
			case tt.wantPercent == nil && s.PercentDone != nil:
				t.Errorf("PercentDone = %d, want nil", *s.PercentDone)
			case tt.wantPercent != nil && (s.PercentDone == nil || *s.PercentDone != *tt.wantPercent):
				t.Errorf("PercentDone = %v, want %d", s.PercentDone, *tt.wantPercent)
			}
			if s.Preview.GLB != tt.wantPreviewGL {
				t.Errorf("Preview.GLB = %q, want %q", s.Preview.GLB, tt.wantPreviewGL)
			}
		})
	}
}

func TestDecodeSessionMeshFields(t *testing.T) {
	body := `{"data":{"status":"refine_done",
		"preview_mesh_url":"p","preview_mesh_url_glb":"pg","preview_mesh_url_obj":"po","preview_mesh_url_zip":"pz","preview_mesh_url_usdz":"pu","preview_mesh_url_fbx":"pf",
		"mesh_url":"m","mesh_url_glb":"mg","mesh_url_obj":"mo","mesh_url_zip":"mz","mesh_url_usdz":"mu","mesh_url_fbx":"mf",
		"spins":[{"image_url":"s0"},{"image_url":"s1"}],"preview_mesh":"hd"}}`
	s, err := csm.DecodeSession([]byte(body))
	if err != nil {
		t.Fatalf("DecodeSession: %v", err)
	}
	wantPreview := csm.Meshes{URL: "p", GLB: "pg", OBJ: "po", ZIP: "pz", USDZ: "pu", FBX: "pf"}
	wantRefined := csm.Meshes{URL: "m", GLB: "mg", OBJ: "mo", ZIP: "mz", USDZ: "mu", FBX: "mf"}
	if s.Preview != wantPreview || s.Refined != wantRefined {
		t.Errorf("Preview, Refined = %+v, %+v; want %+v, %+v", s.Preview, s.Refined, wantPreview, wantRefined)
	}
	if len(s.Spins) != 2 || s.Spins[1].ImageURL != "s1" || s.PreviewMesh != "hd" {
		t.Errorf("Spins, PreviewMesh = %+v, %q", s.Spins, s.PreviewMesh)
	}
}

func TestDecodeSessionRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ""},
		{"null", "null"},
		{"array", "[]"},
		{"string", `"SESSION_1"`},
		{"number", "123"},
		{"truncated", `{"data":{"status":"preview_done"`},
		{"empty object", "{}"},
		{"empty data", `{"data":{}}`},
		{"envelope without session", `{"error":"","message":"ok","statusCode":200}`},
		{"data is a string", `{"data":"preview_done"}`},
		{"data is an array", `{"data":[{"status":"preview_done"}]}`},
		{"percent not a number", `{"data":{"status":"x","percent_done":"half"}}`},
		{"percent boolean", `{"data":{"status":"x","percent_done":true}}`},
		{"percent NaN", `{"data":{"status":"x","percent_done":"NaN"}}`},
		{"status not a string", `{"data":{"status":3}}`},
		{"spins not a list", `{"data":{"status":"x","spins":"a"}}`},
		{"seed doc's invalid request body", "{\n selected_spin_index: 0\n selected_spin: \"https://via.placeholder.com/300/09f/fff.png\"\n}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := csm.DecodeSession([]byte(tt.body))
			if err == nil {
				t.Fatalf("DecodeSession(%q) = %+v, want an error", tt.body, s)
			}
			if s != nil {
				t.Errorf("session = %+v, want nil with the error", s)
			}
		})
	}
}

// TestDecodeSessionHugePercent: a JSON number beyond float64 is still a
// number, and flexInt documents clamping to 0..100.
func TestDecodeSessionHugePercent(t *testing.T) {
	for _, body := range []string{`{"data":{"session_status":"complete","percent_done":1e999}}`, `{"data":{"session_status":"complete","percent_done":-1e999}}`} {
		s, err := csm.DecodeSession([]byte(body))
		if err != nil {
			t.Errorf("DecodeSession(%s): %v, want percent_done clamped", body, err)
			continue
		}
		if s.PercentDone == nil || (*s.PercentDone != 0 && *s.PercentDone != 100) {
			t.Errorf("PercentDone = %v, want clamped to 0 or 100", s.PercentDone)
		}
	}
}

func TestDecodePreviewJob(t *testing.T) {
	job, err := csm.DecodePreviewJob([]byte(seedResponse))
	if err != nil {
		t.Fatalf("DecodePreviewJob(seed doc reply): %v", err)
	}
	want := csm.PreviewJob{
		Scenario:       seedCode,
		UniqueTrialKey: "168923176748ZJ@NcRfUjXn2r5u8x",
		Status:         "unprocessed",
		JobID:          "job:dreamfusion:SESSION_P_44569824122_168923176748ZJ@NcRfUjXn2r5u8x",
	}
	if *job != want {
		t.Errorf("job = %+v, want %+v", *job, want)
	}
}

func TestDecodePreviewJobRejects(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"empty", ""},
		{"invalid JSON", "{"},
		{"array", "[]"},
		{"no data", `{"error":"","message":"Generating Mesh","statusCode":200}`},
		{"data null", `{"data":null}`},
		{"data string", `{"data":"x"}`},
		{"no unique_trial_key", `{"data":{"scenario":"S","status":"unprocessed"}}`},
		{"blank unique_trial_key", `{"data":{"scenario":"S","unique_trial_key":"  \t","status":"unprocessed"}}`},
		{"unique_trial_key not a string", `{"data":{"unique_trial_key":12}}`},
		{"a session, not a job", `{"data":{"session_code":"S","session_status":"in_progress","percent_done":10}}`},
		{"envelope error", `{"error":"Internal error","message":"x","statusCode":500,"data":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job, err := csm.DecodePreviewJob([]byte(tt.body))
			if err == nil {
				t.Fatalf("DecodePreviewJob(%q) = %+v, want an error", tt.body, job)
			}
			if job != nil {
				t.Errorf("job = %+v, want nil with the error", job)
			}
		})
	}
}

func TestErrorUnwrap(t *testing.T) {
	inner := errors.New("inner")
	e := &csm.Error{Op: "get session", Kind: csm.KindTransport, Err: inner}
	if !errors.Is(e, inner) {
		t.Error("errors.Is(e, inner) = false, want true")
	}
	want := "csm get session: transport: inner"
	if e.Error() != want {
		t.Errorf("Error() = %q, want %q", e.Error(), want)
	}
}
