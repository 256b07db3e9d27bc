package csm_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

// TestClientFaults drives both calls into every fault the simulator can
// inject and checks the classification the worker branches on, and for the
// preview POST, whether the simulator really accepted (billed) a preview.
func TestClientFaults(t *testing.T) {
	const hangTimeout = 300 * time.Millisecond
	tests := []struct {
		name       string
		kind       csmsim.FaultKind
		retryAfter time.Duration
		want       wantError
		// acceptedOnPreview is the simulator's AcceptedPreviews after a
		// faulted preview POST.
		acceptedOnPreview int
		wantDeadline      bool // the error wraps context.DeadlineExceeded
	}{
		{name: "401", kind: csmsim.Fault401, want: wantError{Kind: csm.KindAuth, StatusCode: 401}},
		{name: "403", kind: csmsim.Fault403, want: wantError{Kind: csm.KindAuth, StatusCode: 403}},
		{name: "404", kind: csmsim.Fault404, want: wantError{Kind: csm.KindNotFound, StatusCode: 404}},
		// A 408 says the request did not arrive in full: not started, so
		// retryable, and the POST may be sent again.
		{name: "408", kind: csmsim.Fault408, want: wantError{Kind: csm.KindTimeout, StatusCode: 408, Retryable: true}},
		{name: "429", kind: csmsim.Fault429, want: wantError{Kind: csm.KindRateLimited, StatusCode: 429, Retryable: true}},
		{
			name: "429 with Retry-After", kind: csmsim.Fault429, retryAfter: 1500 * time.Millisecond, // sent rounded up: "2"
			want: wantError{Kind: csm.KindRateLimited, StatusCode: 429, Retryable: true, RetryAfter: 2 * time.Second},
		},
		{name: "rate limit worded 400", kind: csmsim.FaultRateLimit400, want: wantError{Kind: csm.KindRateLimited, StatusCode: 400, Retryable: true}},
		{name: "500", kind: csmsim.Fault500, want: wantError{Kind: csm.KindServer, StatusCode: 500, Retryable: true, MaybeAccepted: true}},
		{name: "502", kind: csmsim.Fault502, want: wantError{Kind: csm.KindServer, StatusCode: 502, Retryable: true, MaybeAccepted: true}},
		{name: "503", kind: csmsim.Fault503, want: wantError{Kind: csm.KindServer, StatusCode: 503, Retryable: true, MaybeAccepted: true}},
		{
			name: "503 with Retry-After", kind: csmsim.Fault503, retryAfter: 7 * time.Second,
			want: wantError{Kind: csm.KindServer, StatusCode: 503, Retryable: true, MaybeAccepted: true, RetryAfter: 7 * time.Second},
		},
		{
			name: "envelope error in a 200", kind: csmsim.FaultEnvelopeError,
			want: wantError{Kind: csm.KindServer, StatusCode: 500, Retryable: true, MaybeAccepted: true},
		},
		{
			name: "accepted then 502", kind: csmsim.FaultAcceptThen502,
			want:              wantError{Kind: csm.KindServer, StatusCode: 502, Retryable: true, MaybeAccepted: true},
			acceptedOnPreview: 1,
		},
		{
			name: "accepted then reset", kind: csmsim.FaultAcceptThenReset,
			want:              wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: true},
			acceptedOnPreview: 1,
		},
		{
			name: "accepted then hang", kind: csmsim.FaultAcceptThenHang,
			want:              wantError{Kind: csm.KindTransport, Retryable: true, MaybeAccepted: true},
			acceptedOnPreview: 1,
			wantDeadline:      true,
		},
	}
	for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
		for _, tt := range tests {
			t.Run(ep.String()+"/"+tt.name, func(t *testing.T) {
				sim, base := testutil.NewSim(t, csmsim.Options{})
				sim.AddSession(legacyCode, csmsim.SessionConfig{
					Faults: []csmsim.Fault{{Endpoint: ep, Kind: tt.kind, RetryAfter: tt.retryAfter}},
				})
				c := newClient(t, base, func(o *csm.Options) {
					if tt.wantDeadline {
						o.Timeout = hangTimeout
					}
				})

				var err error
				op := "get session"
				if ep == csmsim.EndpointPreview {
					op = "request preview"
					var job *csm.PreviewJob
					job, err = c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0))
					if job != nil {
						t.Errorf("job = %+v, want nil with an error", job)
					}
				} else {
					var s *csm.Session
					s, err = c.GetSession(t.Context(), legacyCode)
					if s != nil {
						t.Errorf("session = %+v, want nil with an error", s)
					}
				}
				checkError(t, err, op, tt.want)
				if got := errors.Is(err, context.DeadlineExceeded); got != tt.wantDeadline {
					t.Errorf("errors.Is(err, DeadlineExceeded) = %v, want %v (err: %v)", got, tt.wantDeadline, err)
				}

				wantAccepted := 0
				if ep == csmsim.EndpointPreview {
					wantAccepted = tt.acceptedOnPreview
				}
				if got := sim.AcceptedPreviews(legacyCode); got != wantAccepted {
					t.Errorf("AcceptedPreviews = %d, want %d", got, wantAccepted)
				}
				// The client never retries on its own: one call, one request.
				if got := sim.Requests(legacyCode, ep); got != 1 {
					t.Errorf("Requests(%s) = %d, want 1", ep, got)
				}
			})
		}
	}
}

// TestClientErrorMessage checks that upstream's message reaches the error,
// so an operator can read what CSM said.
func TestClientErrorMessage(t *testing.T) {
	tests := []struct {
		name        string
		kind        csmsim.FaultKind
		wantMessage string
	}{
		{"401", csmsim.Fault401, "invalid api key"},
		{"404", csmsim.Fault404, "session not found"},
		{"rate limit worded 400", csmsim.FaultRateLimit400, "Rate limit exceeded"},
		{"envelope error", csmsim.FaultEnvelopeError, "Internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, base := testutil.NewSim(t, csmsim.Options{})
			sim.AddSession(legacyCode, csmsim.SessionConfig{
				Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointGetSession, Kind: tt.kind}},
			})
			_, err := newClient(t, base, nil).GetSession(t.Context(), legacyCode)
			ce := asError(t, err)
			if !strings.Contains(ce.Message, tt.wantMessage) {
				t.Errorf("Message = %q, want it to contain %q", ce.Message, tt.wantMessage)
			}
			if !strings.Contains(err.Error(), tt.wantMessage) {
				t.Errorf("Error() = %q, want it to contain %q", err.Error(), tt.wantMessage)
			}
		})
	}
}

// sessionStep is one poll of a simulated session's lifecycle.
type sessionStep struct {
	advance       time.Duration // fake time to pass before this read
	previewFirst  bool          // send the preview POST before this read
	status        string
	sessionStatus string
	percent       int // -1: percent_done absent
	phase         csm.Phase
	meshes        bool // preview mesh URLs present
	refined       bool // refine mesh URLs present
}

func TestGetSessionLifecycle(t *testing.T) {
	tests := []struct {
		name  string
		cfg   csmsim.SessionConfig
		steps []sessionStep
	}{
		{
			name: "legacy",
			cfg:  csmsim.SessionConfig{GenerationTime: 10 * time.Second},
			steps: []sessionStep{
				{status: "spin_generate_done", percent: -1, phase: csm.PhaseSpinStage},
				{previewFirst: true, advance: time.Second, status: "training_preview", percent: -1, phase: csm.PhaseGenerating},
				{advance: 10 * time.Second, status: "preview_done", percent: -1, phase: csm.PhaseDone, meshes: true},
			},
		},
		{
			name: "legacy with queue lag",
			cfg:  csmsim.SessionConfig{QueueTime: 5 * time.Second, GenerationTime: 10 * time.Second},
			steps: []sessionStep{
				{previewFirst: true, advance: time.Second, status: "spin_generate_done", percent: -1, phase: csm.PhaseSpinStage},
				{advance: 5 * time.Second, status: "training_preview", percent: -1, phase: csm.PhaseGenerating},
				{advance: 10 * time.Second, status: "preview_done", percent: -1, phase: csm.PhaseDone, meshes: true},
			},
		},
		{
			name: "legacy auto refine",
			cfg:  csmsim.SessionConfig{GenerationTime: 10 * time.Second, AutoRefine: true},
			steps: []sessionStep{
				{previewFirst: true, advance: time.Second, status: "training_preview", percent: -1, phase: csm.PhaseGenerating},
				{advance: 10 * time.Second, status: "training_refine", percent: -1, phase: csm.PhaseDone, meshes: true},
				{advance: 10 * time.Second, status: "refine_done", percent: -1, phase: csm.PhaseDone, meshes: true, refined: true},
			},
		},
		{
			name: "legacy failed",
			cfg:  csmsim.SessionConfig{GenerationTime: 10 * time.Second, Fail: true},
			steps: []sessionStep{
				{previewFirst: true, advance: 11 * time.Second, status: "preview_failed", percent: -1, phase: csm.PhaseFailed},
			},
		},
		{
			name: "legacy unknown status while generating",
			cfg:  csmsim.SessionConfig{GenerationTime: 10 * time.Second, UnknownStatus: "weird_new_status"},
			steps: []sessionStep{
				{previewFirst: true, advance: time.Second, status: "weird_new_status", percent: -1, phase: csm.PhaseUnknown},
				{advance: 5 * time.Second, status: "training_preview", percent: -1, phase: csm.PhaseGenerating},
			},
		},
		{
			name: "2025",
			cfg:  csmsim.SessionConfig{Schema: csmsim.Schema2025, QueueTime: 2 * time.Second, GenerationTime: 10 * time.Second},
			steps: []sessionStep{
				// The spin stage reads "complete" with no mesh: the trap the
				// worker avoids by comparing against its baseline.
				{sessionStatus: "complete", percent: 100, phase: csm.PhaseDone},
				{previewFirst: true, advance: time.Second, sessionStatus: "queued", percent: 0, phase: csm.PhaseGenerating},
				{advance: 6 * time.Second, sessionStatus: "in_progress", percent: 50, phase: csm.PhaseGenerating},
				{advance: 5 * time.Second, sessionStatus: "complete", percent: 100, phase: csm.PhaseDone, meshes: true},
			},
		},
		{
			name: "2025 failed",
			cfg:  csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 10 * time.Second, Fail: true},
			steps: []sessionStep{
				{previewFirst: true, advance: 11 * time.Second, sessionStatus: "failed", percent: 100, phase: csm.PhaseFailed},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			sim, base := testutil.NewSim(t, csmsim.Options{Now: clk.Now})
			sim.AddSession(legacyCode, tt.cfg)
			c := newClient(t, base, nil)
			var key string
			for i, st := range tt.steps {
				if st.previewFirst {
					job, err := c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 1))
					if err != nil {
						t.Fatalf("step %d: RequestPreview: %v", i, err)
					}
					key = job.UniqueTrialKey
				}
				clk.Advance(st.advance)
				s, err := c.GetSession(t.Context(), legacyCode)
				if err != nil {
					t.Fatalf("step %d: GetSession: %v", i, err)
				}
				checkSessionStep(t, i, s, st, key)
			}
		})
	}
}

func checkSessionStep(t *testing.T, i int, s *csm.Session, st sessionStep, key string) {
	t.Helper()
	if s.Code != legacyCode || s.PreviewMesh != "turbo" {
		t.Errorf("step %d: Code, PreviewMesh = %q, %q; want %q, turbo", i, s.Code, s.PreviewMesh, legacyCode)
	}
	if s.Status != st.status || s.SessionStatus != st.sessionStatus {
		t.Errorf("step %d: Status, SessionStatus = %q, %q; want %q, %q", i, s.Status, s.SessionStatus, st.status, st.sessionStatus)
	}
	switch {
	case st.percent < 0 && s.PercentDone != nil:
		t.Errorf("step %d: PercentDone = %d, want absent", i, *s.PercentDone)
	case st.percent >= 0 && (s.PercentDone == nil || *s.PercentDone != st.percent):
		t.Errorf("step %d: PercentDone = %v, want %d", i, s.PercentDone, st.percent)
	}
	if got := s.Phase(); got != st.phase {
		t.Errorf("step %d: Phase = %v, want %v", i, got, st.phase)
	}
	if len(s.Spins) != 4 {
		t.Fatalf("step %d: %d spins, want 4", i, len(s.Spins))
	}
	for j, sp := range s.Spins {
		if sp.ImageURL != spinURL(legacyCode, j) {
			t.Errorf("step %d: spin %d = %q, want %q", i, j, sp.ImageURL, spinURL(legacyCode, j))
		}
	}

	urls := s.MeshURLs()
	if st.refined == s.Refined.Empty() {
		t.Errorf("step %d: Refined = %+v, want present %v", i, s.Refined, st.refined)
	}
	if !st.meshes {
		if len(urls) != 0 || s.MeshFingerprint() != "" {
			t.Errorf("step %d: MeshURLs = %v, fingerprint %q; want none", i, urls, s.MeshFingerprint())
		}
		return
	}
	wantKeys := []string{"fbx", "glb", "url", "usdz", "zip"}
	gotKeys := sortedKeys(urls)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Errorf("step %d: MeshURLs keys = %v, want %v", i, gotKeys, wantKeys)
	}
	for k, u := range urls {
		// Preview URLs are preferred over refined ones; the job's key is in them.
		if !strings.Contains(u, key) || !strings.Contains(u, "/preview.") {
			t.Errorf("step %d: MeshURLs[%s] = %q, want a preview URL of trial %q", i, k, u, key)
		}
	}
	if len(s.MeshFingerprint()) != 16 {
		t.Errorf("step %d: MeshFingerprint = %q, want 16 hex characters", i, s.MeshFingerprint())
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func TestRequestPreviewSendsParams(t *testing.T) {
	tests := []struct {
		name       string
		mesh       string
		params     csm.PreviewParams
		wantFields []string // keys of the JSON body, sorted
		want       csmsim.PreviewCall
	}{
		{
			name: "turbo with every field",
			params: csm.PreviewParams{
				SelectedSpinIndex: 2, SelectedSpin: spinURL(legacyCode, 2),
				ScaledBBox: []float64{1.5, 2, 0.75}, PivotPoint: []float64{0, -0.5, 0.25},
			},
			wantFields: []string{"pivot_point", "scaled_bbox", "selected_spin", "selected_spin_index"},
			want: csmsim.PreviewCall{
				SelectedSpinIndex: 2, SelectedSpin: spinURL(legacyCode, 2),
				ScaledBBox: []float64{1.5, 2, 0.75}, PivotPoint: []float64{0, -0.5, 0.25},
			},
		},
		{
			name:       "turbo index 0 is still sent",
			params:     turboParams(legacyCode, 0),
			wantFields: []string{"selected_spin", "selected_spin_index"},
			want:       csmsim.PreviewCall{SelectedSpinIndex: 0, SelectedSpin: spinURL(legacyCode, 0)},
		},
		{
			name:       "hd with nothing set",
			mesh:       "hd",
			wantFields: []string{"selected_spin_index"},
			want:       csmsim.PreviewCall{},
		},
		{
			name:       "fast_sculpt with a bbox",
			mesh:       "fast_sculpt",
			params:     csm.PreviewParams{SelectedSpinIndex: 3, ScaledBBox: []float64{0.1, 0.2, 0.3}},
			wantFields: []string{"scaled_bbox", "selected_spin_index"},
			want:       csmsim.PreviewCall{SelectedSpinIndex: 3, ScaledBBox: []float64{0.1, 0.2, 0.3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			sim, rec, base := newRecordingSim(t, csmsim.Options{Now: clk.Now})
			sim.AddSession(legacyCode, csmsim.SessionConfig{PreviewMesh: tt.mesh})
			job, err := newClient(t, base, nil).RequestPreview(t.Context(), legacyCode, tt.params)
			if err != nil {
				t.Fatalf("RequestPreview: %v", err)
			}

			got, ok := sim.LastPreview(legacyCode)
			if !ok {
				t.Fatal("the simulator accepted no preview")
			}
			want := tt.want
			want.At, want.UniqueTrialKey = clk.Now(), got.UniqueTrialKey
			if !previewCallEqual(got, want) {
				t.Errorf("LastPreview = %+v, want %+v", got, want)
			}
			if n := sim.AcceptedPreviews(legacyCode); n != 1 {
				t.Errorf("AcceptedPreviews = %d, want 1", n)
			}

			wantJob := csm.PreviewJob{
				Scenario:       legacyCode,
				UniqueTrialKey: got.UniqueTrialKey,
				Status:         "unprocessed",
				JobID:          "job:dreamfusion:" + legacyCode + "_" + got.UniqueTrialKey,
			}
			if job == nil || *job != wantJob || job.UniqueTrialKey == "" {
				t.Errorf("job = %+v, want %+v", job, wantJob)
			}

			reqs := rec.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests reached the server, want 1", len(reqs))
			}
			r := reqs[0]
			checkRequest(t, r, http.MethodPost, "/image-to-3d-sessions/get-3d/preview/"+legacyCode)
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if !json.Valid(r.Body) {
				t.Fatalf("body is not valid JSON: %s", r.Body)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(r.Body, &fields); err != nil {
				t.Fatalf("body is not a JSON object: %s", r.Body)
			}
			if keys := sortedKeys(rawKeys(fields)); !slices.Equal(keys, tt.wantFields) {
				t.Errorf("body fields = %v, want %v (body %s)", keys, tt.wantFields, r.Body)
			}
		})
	}
}

func rawKeys(m map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func previewCallEqual(a, b csmsim.PreviewCall) bool {
	return a.SelectedSpinIndex == b.SelectedSpinIndex && a.SelectedSpin == b.SelectedSpin &&
		slices.Equal(a.ScaledBBox, b.ScaledBBox) && slices.Equal(a.PivotPoint, b.PivotPoint) &&
		a.At.Equal(b.At) && a.UniqueTrialKey == b.UniqueTrialKey
}

// checkRequest checks what every call to CSM carries.
func checkRequest(t *testing.T, r recordedRequest, method, path string) {
	t.Helper()
	if r.Method != method || r.Path != path {
		t.Errorf("request = %s %s, want %s %s", r.Method, r.Path, method, path)
	}
	if got := r.Header.Values("x-api-key"); len(got) != 1 || got[0] != testutil.SimAPIKey {
		t.Errorf("x-api-key = %q, want [%q]", got, testutil.SimAPIKey)
	}
	if got := r.Header.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q, want application/json", got)
	}
	if got := r.Header.Get("User-Agent"); got == "" {
		t.Error("no User-Agent")
	}
}

func TestGetSessionRequest(t *testing.T) {
	sim, rec, base := newRecordingSim(t, csmsim.Options{})
	sim.AddSession(legacyCode, csmsim.SessionConfig{})
	if _, err := newClient(t, base, nil).GetSession(t.Context(), legacyCode); err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	reqs := rec.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests reached the server, want 1", len(reqs))
	}
	checkRequest(t, reqs[0], http.MethodGet, "/image-to-3d-sessions/"+legacyCode)
	if len(reqs[0].Body) != 0 {
		t.Errorf("GET carried a body: %q", reqs[0].Body)
	}
}

// TestRequestPreviewUnmarshalableParams: params JSON cannot carry are
// refused before anything is sent, so nothing can have been accepted.
func TestRequestPreviewUnmarshalableParams(t *testing.T) {
	tests := []struct {
		name   string
		params csm.PreviewParams
	}{
		{"NaN in bbox", csm.PreviewParams{ScaledBBox: []float64{1, math.NaN(), 1}}},
		{"Inf in pivot", csm.PreviewParams{PivotPoint: []float64{math.Inf(1), 0, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, rec, base := newRecordingSim(t, csmsim.Options{})
			sim.AddSession(legacyCode, csmsim.SessionConfig{PreviewMesh: "hd"})
			_, err := newClient(t, base, nil).RequestPreview(t.Context(), legacyCode, tt.params)
			checkError(t, err, "request preview", wantError{Kind: csm.KindBadRequest})
			if n := len(rec.Requests()); n != 0 {
				t.Errorf("%d requests sent, want 0", n)
			}
		})
	}
}

func TestWrongAPIKey(t *testing.T) {
	tests := []struct {
		name string
		key  string
	}{
		{"wrong key", "wrong-key-7c1d0e"},
		{"empty key", ""},
	}
	for _, tt := range tests {
		for _, ep := range []csmsim.Endpoint{csmsim.EndpointGetSession, csmsim.EndpointPreview} {
			t.Run(tt.name+"/"+ep.String(), func(t *testing.T) {
				sim, base := testutil.NewSim(t, csmsim.Options{})
				sim.AddSession(legacyCode, csmsim.SessionConfig{})
				c := newClient(t, base, func(o *csm.Options) { o.APIKey = tt.key })
				var err error
				if ep == csmsim.EndpointPreview {
					_, err = c.RequestPreview(t.Context(), legacyCode, turboParams(legacyCode, 0))
				} else {
					_, err = c.GetSession(t.Context(), legacyCode)
				}
				ce := asError(t, err)
				if ce.Kind != csm.KindAuth || (ce.StatusCode != 401 && ce.StatusCode != 403) {
					t.Errorf("Kind, StatusCode = %s, %d; want auth, 401 or 403", ce.Kind, ce.StatusCode)
				}
				if ce.Retryable || ce.MaybeAccepted {
					t.Errorf("Retryable, MaybeAccepted = %v, %v; want false, false", ce.Retryable, ce.MaybeAccepted)
				}
				for _, secret := range []string{tt.key, testutil.SimAPIKey} {
					if secret != "" && strings.Contains(err.Error(), secret) {
						t.Errorf("error text leaks a key: %q", err.Error())
					}
				}
				if n := sim.AcceptedPreviews(legacyCode); n != 0 {
					t.Errorf("AcceptedPreviews = %d, want 0", n)
				}
			})
		}
	}
}

func TestInvalidSessionCodesAreNotSent(t *testing.T) {
	tests := []struct {
		name string
		code string
	}{
		{"empty", ""},
		{"slash", "a/b"},
		{"dot dot", "../x"},
		{"bare dot dot", ".."},
		{"space", "SESSION 1"},
		{"200 characters", strings.Repeat("S", 200)},
		{"129 characters", strings.Repeat("S", 129)},
		{"query", "x?y"},
		{"fragment", "x#y"},
		{"percent escape", "%2e%2e"},
		{"trailing newline", "SESSION_1\n"},
		{"non-ASCII", "SESSIÖN_1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if csm.ValidSessionCode(tt.code) {
				t.Errorf("ValidSessionCode(%q) = true, want false", tt.code)
			}
			sim, rec, base := newRecordingSim(t, csmsim.Options{})
			c := newClient(t, base, nil)

			_, err := c.GetSession(t.Context(), tt.code)
			checkError(t, err, "get session", wantError{Kind: csm.KindBadRequest})
			_, err = c.RequestPreview(t.Context(), tt.code, csm.PreviewParams{})
			checkError(t, err, "request preview", wantError{Kind: csm.KindBadRequest})

			if n := len(rec.Requests()); n != 0 {
				t.Errorf("%d requests reached the server, want 0", n)
			}
			if n := sim.TotalAcceptedPreviews(); n != 0 {
				t.Errorf("TotalAcceptedPreviews = %d, want 0", n)
			}
		})
	}
}

func TestValidSessionCodesAreSent(t *testing.T) {
	tests := []struct {
		name string
		code string
	}{
		{"legacy", legacyCode},
		{"seed doc", seedCode},
		{"128 characters", strings.Repeat("S", 128)},
		{"dash", "SESSION-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !csm.ValidSessionCode(tt.code) {
				t.Errorf("ValidSessionCode(%q) = false, want true", tt.code)
			}
			sim, rec, base := newRecordingSim(t, csmsim.Options{})
			sim.AddSession(tt.code, csmsim.SessionConfig{})
			s, err := newClient(t, base, nil).GetSession(t.Context(), tt.code)
			if err != nil {
				t.Fatalf("GetSession: %v", err)
			}
			if s.Code != tt.code {
				t.Errorf("Code = %q, want %q", s.Code, tt.code)
			}
			if reqs := rec.Requests(); len(reqs) != 1 || reqs[0].Path != "/image-to-3d-sessions/"+tt.code {
				t.Errorf("requests = %+v, want one for the code", reqs)
			}
		})
	}
}
