package csmsim_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
)

func TestAuth(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{
		// Auth is checked before faults: this fault must survive the refusals.
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault500}},
	})
	tests := []struct {
		name       string
		method     string
		path       string
		key        []string
		wantStatus int
	}{
		{"get missing key", http.MethodGet, sessionPath(code), nil, 401},
		{"get wrong key", http.MethodGet, sessionPath(code), []string{"nope"}, 403},
		{"get empty key", http.MethodGet, sessionPath(code), []string{""}, 403},
		{"preview missing key", http.MethodPost, previewPath(code), nil, 401},
		{"preview wrong key", http.MethodPost, previewPath(code), []string{"nope"}, 403},
		{"unknown session missing key", http.MethodGet, sessionPath("SESSION_NONE"), nil, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, strings.NewReader(turboBody(0)))
			req.Header.Set("Content-Type", "application/json")
			for _, k := range tt.key {
				req.Header.Add("x-api-key", k)
			}
			rec := httptest.NewRecorder()
			sim.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			body := decode(t, rec)
			if body["statusCode"] != float64(tt.wantStatus) || body["error"] != http.StatusText(tt.wantStatus) || body["message"] == "" {
				t.Errorf("body = %v", body)
			}
		})
	}
	if got := sim.Requests(code, csmsim.EndpointGetSession); got != 0 {
		t.Errorf("refused requests counted: Requests = %d", got)
	}
	if rec := serve(t, sim, http.MethodGet, sessionPath(code), ""); rec.Code != 500 {
		t.Errorf("first authenticated GET = %d, want the injected 500", rec.Code)
	}
}

func TestRoutes(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{})
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantAllow  string
	}{
		{"get unknown session", http.MethodGet, sessionPath("SESSION_NONE"), 404, ""},
		{"preview unknown session", http.MethodPost, previewPath("SESSION_NONE"), 404, ""},
		{"root", http.MethodGet, "/", 404, ""},
		{"sessions collection", http.MethodGet, "/image-to-3d-sessions", 404, ""},
		{"empty code", http.MethodGet, "/image-to-3d-sessions/", 404, ""},
		{"empty preview code", http.MethodPost, previewPath(""), 404, ""},
		{"refine is not simulated", http.MethodPost, "/image-to-3d-sessions/get-3d/refine/" + code, 404, ""},
		{"nested path", http.MethodGet, sessionPath(code) + "/extra", 404, ""},
		{"v3", http.MethodGet, "/v3/sessions/" + code, 404, ""},
		{"post on session", http.MethodPost, sessionPath(code), 405, "GET"},
		{"delete on session", http.MethodDelete, sessionPath(code), 405, "GET"},
		{"get on preview", http.MethodGet, previewPath(code), 405, "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(t, sim, tt.method, tt.path, "{}")
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if got := rec.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			body := decode(t, rec)
			if body["statusCode"] != float64(tt.wantStatus) || body["error"] == "" || body["message"] == "" {
				t.Errorf("body = %v, want an error envelope", body)
			}
		})
	}
	if got := sim.Requests(code, csmsim.EndpointGetSession) + sim.Requests(code, csmsim.EndpointPreview); got != 0 {
		t.Errorf("unrouted requests counted: %d", got)
	}
}

func TestCounters(t *testing.T) {
	clk := newFakeClock()
	sim := csmsim.New(csmsim.Options{APIKey: apiKey, Now: clk.Now})
	sim.AddSession(code, csmsim.SessionConfig{
		Faults: []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault503}},
	})
	sim.AddSession("SESSION_HD", csmsim.SessionConfig{PreviewMesh: "hd"})

	if _, ok := sim.LastPreview(code); ok {
		t.Fatal("LastPreview ok before any preview")
	}
	serve(t, sim, http.MethodGet, sessionPath(code), "")
	serve(t, sim, http.MethodGet, sessionPath(code), "")
	if rec := serve(t, sim, http.MethodPost, previewPath(code), turboBody(1)); rec.Code != 503 {
		t.Fatalf("first preview = %d, want the injected 503", rec.Code)
	}
	if rec := serve(t, sim, http.MethodPost, previewPath(code), `{"selected_spin_index":9}`); rec.Code != 400 {
		t.Fatalf("invalid preview = %d, want 400", rec.Code)
	}
	clk.Advance(time.Second)
	if rec := serve(t, sim, http.MethodPost, previewPath(code), `{"selected_spin_index":1,"selected_spin":"`+spinURL(1)+`","scaled_bbox":[1,2,3],"pivot_point":[0,-0.5,0.5]}`); rec.Code != 200 {
		t.Fatalf("valid preview = %d: %s", rec.Code, rec.Body)
	}
	if rec := serve(t, sim, http.MethodPost, previewPath("SESSION_HD"), `{}`); rec.Code != 200 {
		t.Fatalf("hd preview = %d: %s", rec.Code, rec.Body)
	}

	checks := []struct {
		name string
		got  int
		want int
	}{
		{"Requests get", sim.Requests(code, csmsim.EndpointGetSession), 2},
		{"Requests preview", sim.Requests(code, csmsim.EndpointPreview), 3},
		{"Requests hd preview", sim.Requests("SESSION_HD", csmsim.EndpointPreview), 1},
		{"Requests unknown session", sim.Requests("SESSION_NONE", csmsim.EndpointPreview), 0},
		{"Requests unknown endpoint", sim.Requests(code, csmsim.Endpoint(7)), 0},
		{"AcceptedPreviews", sim.AcceptedPreviews(code), 1},
		{"AcceptedPreviews hd", sim.AcceptedPreviews("SESSION_HD"), 1},
		{"AcceptedPreviews unknown", sim.AcceptedPreviews("SESSION_NONE"), 0},
		{"TotalAcceptedPreviews", sim.TotalAcceptedPreviews(), 2},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}

	call, ok := sim.LastPreview(code)
	if !ok || call.SelectedSpinIndex != 1 || call.SelectedSpin != spinURL(1) ||
		!equalFloats(call.ScaledBBox, []float64{1, 2, 3}) || !equalFloats(call.PivotPoint, []float64{0, -0.5, 0.5}) ||
		!call.At.Equal(clk.Now()) || call.UniqueTrialKey == "" {
		t.Errorf("LastPreview = %+v, %v", call, ok)
	}
	call.ScaledBBox[0] = 99
	if again, _ := sim.LastPreview(code); again.ScaledBBox[0] != 1 {
		t.Error("LastPreview shares its slices with the caller")
	}
	if hd, _ := sim.LastPreview("SESSION_HD"); hd.ScaledBBox != nil || hd.PivotPoint != nil || hd.SelectedSpin != "" {
		t.Errorf("LastPreview of an empty body = %+v", hd)
	}

	// Replacing a session starts its counters again; the total keeps counting.
	sim.AddSession(code, csmsim.SessionConfig{})
	if got := sim.AcceptedPreviews(code); got != 0 {
		t.Errorf("AcceptedPreviews after AddSession = %d, want 0", got)
	}
	if got := sim.TotalAcceptedPreviews(); got != 2 {
		t.Errorf("TotalAcceptedPreviews after AddSession = %d, want 2", got)
	}
	if _, ok := sim.LastPreview(code); ok {
		t.Error("LastPreview ok after AddSession replaced the session")
	}
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOnPreviewAcceptedRunsBeforeResponse(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{})
	rec := httptest.NewRecorder()
	var calls []string
	sim.OnPreviewAccepted(func(c string) {
		calls = append(calls, c)
		if rec.Body.Len() != 0 || rec.Header().Get("Content-Type") != "" {
			t.Errorf("hook ran after the response was started: %q", rec.Body)
		}
		// The hook runs unlocked, already counted and recorded.
		if got := sim.AcceptedPreviews(c); got != 1 {
			t.Errorf("AcceptedPreviews in hook = %d, want 1", got)
		}
		if _, ok := sim.LastPreview(c); !ok {
			t.Error("LastPreview in hook not ok")
		}
	})
	req := httptest.NewRequest(http.MethodPost, previewPath(code), strings.NewReader(turboBody(0)))
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	sim.ServeHTTP(rec, req)
	if rec.Code != 200 || len(calls) != 1 || calls[0] != code {
		t.Fatalf("status %d, hook calls %v", rec.Code, calls)
	}

	// A refused preview does not run the hook.
	serve(t, sim, http.MethodPost, previewPath(code), "{")
	sim.OnPreviewAccepted(nil)
	mustPreview(t, sim)
	if len(calls) != 1 {
		t.Errorf("hook calls = %v, want only the first", calls)
	}
}

// TestOnPreviewAcceptedCutsOffClient shows the use the hook exists for: the
// preview is billed but the client never learns it.
func TestOnPreviewAcceptedCutsOffClient(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{})
	srv := liveServer(t, sim)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	release := make(chan struct{})
	sim.OnPreviewAccepted(func(string) {
		cancel()
		<-release // hold the response until the client has given up
	})

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+previewPath(code), strings.NewReader(turboBody(0)))
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	close(release)
	if err == nil {
		resp.Body.Close()
		t.Fatal("client got a response after being cut off")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if got := sim.AcceptedPreviews(code); got != 1 {
		t.Errorf("AcceptedPreviews = %d, want 1", got)
	}
}

func TestLatency(t *testing.T) {
	const latency = 30 * time.Millisecond
	sim, _ := newSim(t, csmsim.SessionConfig{Latency: latency})

	start := time.Now()
	if rec := serve(t, sim, http.MethodGet, sessionPath(code), ""); rec.Code != 200 {
		t.Fatalf("status = %d", rec.Code)
	}
	if took := time.Since(start); took < latency {
		t.Errorf("answered after %v, want at least %v", took, latency)
	}

	t.Run("cancelled", func(t *testing.T) {
		sim.AddSession(code, csmsim.SessionConfig{Latency: time.Hour})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, previewPath(code), strings.NewReader(turboBody(0)))
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req) // returns once ctx ends, not after an hour
		if rec.Body.Len() != 0 {
			t.Errorf("answered a cancelled request: %q", rec.Body)
		}
		if got := sim.Requests(code, csmsim.EndpointPreview); got != 1 {
			t.Errorf("Requests = %d, want 1", got)
		}
		if got := sim.AcceptedPreviews(code); got != 0 {
			t.Errorf("AcceptedPreviews = %d, want 0", got)
		}
	})

	t.Run("close", func(t *testing.T) {
		sim.AddSession(code, csmsim.SessionConfig{Latency: time.Hour})
		sim.Close()
		if rec := serve(t, sim, http.MethodGet, sessionPath(code), ""); rec.Code != 200 {
			t.Errorf("status after Close = %d, want 200 without the wait", rec.Code)
		}
	})
}

func TestNewRequiresAPIKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New without APIKey did not panic")
		}
	}()
	csmsim.New(csmsim.Options{})
}

func TestBaseAssetURL(t *testing.T) {
	sim := csmsim.New(csmsim.Options{APIKey: apiKey, BaseAssetURL: "http://127.0.0.1:9/assets/"})
	sim.AddSession(code, csmsim.SessionConfig{})
	data := getSession(t, sim)
	spins := data["spins"].([]any)
	if got := spins[2].(map[string]any)["image_url"]; got != "http://127.0.0.1:9/assets/spins/"+code+"/2.png" {
		t.Errorf("spin URL = %v", got)
	}
}
