package csm_test

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/previewd/previewd/csm"
)

// FuzzDecodeSession: upstream bodies must never panic the decoder, and what
// it accepts must make sense to the worker.
func FuzzDecodeSession(f *testing.F) {
	f.Add([]byte(seedResponse))
	f.Add([]byte(`{"error":"","message":"ok","statusCode":200,"data":{"session_code":"SESSION_1","status":"preview_done","preview_mesh_url":"https://cdn/p.obj","spins":[{"image_url":"https://cdn/0.png"}]}}`))
	f.Add([]byte(`{"statusCode":200,"data":{"session_code":"SESSION_1","session_status":"in_progress","percent_done":"42.5"}}`))
	f.Add([]byte(`{"session_code":"SESSION_1","status":"training_refine","mesh_url_glb":"https://cdn/r.glb"}`))
	f.Add([]byte(`{"error":"Internal error","message":"x","statusCode":500,"data":null}`))
	f.Add([]byte(`{"data":{"status":"x","percent_done":1e999}}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := csm.DecodeSession(body)
		if err != nil {
			if s != nil {
				t.Fatalf("DecodeSession returned both a session and %v", err)
			}
			return
		}
		if s == nil {
			t.Fatal("DecodeSession returned neither a session nor an error")
		}
		if !json.Valid(body) {
			t.Errorf("DecodeSession accepted invalid JSON %q", body)
		}
		if p := s.PercentDone; p != nil && (*p < 0 || *p > 100) {
			t.Errorf("PercentDone = %d, want 0..100", *p)
		}
		if s.Status != strings.TrimSpace(s.Status) || s.SessionStatus != strings.TrimSpace(s.SessionStatus) {
			t.Errorf("Status, SessionStatus = %q, %q, want them trimmed", s.Status, s.SessionStatus)
		}
		phase := s.Phase()
		if phase < csm.PhaseUnknown || phase > csm.PhaseFailed {
			t.Errorf("Phase() = %d, out of range", phase)
		}
		if !s.Preview.Empty() && (phase == csm.PhaseUnknown || phase == csm.PhaseSpinStage) {
			t.Errorf("Phase() = %v with preview mesh URLs %+v", phase, s.Preview)
		}
		urls := s.MeshURLs()
		for k, v := range urls {
			if v == "" {
				t.Errorf("MeshURLs()[%q] is empty", k)
			}
		}
		fp := s.MeshFingerprint()
		if (fp == "") != (len(urls) == 0) {
			t.Errorf("MeshFingerprint() = %q with %d URLs", fp, len(urls))
		}
		if fp != "" {
			if _, err := hex.DecodeString(fp); err != nil || len(fp) != 16 {
				t.Errorf("MeshFingerprint() = %q, want 16 hex characters", fp)
			}
			if again := s.MeshFingerprint(); again != fp {
				t.Errorf("MeshFingerprint() = %q, then %q", fp, again)
			}
		}
	})
}

// FuzzDecodePreviewJob: what the decoder accepts always identifies a job.
func FuzzDecodePreviewJob(f *testing.F) {
	f.Add([]byte(seedResponse))
	f.Add([]byte(`{"message":"Generating Mesh","data":{"scenario":"S","unique_trial_key":"k","status":"unprocessed"}}`))
	f.Add([]byte(`{"data":{"unique_trial_key":" "}}`))
	f.Add([]byte(`{"error":"Internal error","message":"x","statusCode":500,"data":null}`))
	f.Add([]byte(`{"data":`))
	f.Fuzz(func(t *testing.T, body []byte) {
		job, err := csm.DecodePreviewJob(body)
		if err != nil {
			if job != nil {
				t.Fatalf("DecodePreviewJob returned both a job and %v", err)
			}
			return
		}
		if job == nil {
			t.Fatal("DecodePreviewJob returned neither a job nor an error")
		}
		if strings.TrimSpace(job.UniqueTrialKey) == "" {
			t.Errorf("UniqueTrialKey = %q, want non-blank", job.UniqueTrialKey)
		}
		if !json.Valid(body) {
			t.Errorf("DecodePreviewJob accepted invalid JSON %q", body)
		}
	})
}
