package csmsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
)

const (
	apiKey = "test-key"
	code   = "SESSION_1689257215_1674078"
	base   = csmsim.DefaultBaseAssetURL
)

// fakeClock is a settable Options.Now.
func newFakeClock() *testutil.Clock { return testutil.NewClock(time.Unix(1689231767, 480_000_000)) }

// newSim returns a simulator on a fake clock holding session code with cfg.
func newSim(t *testing.T, cfg csmsim.SessionConfig) (*csmsim.Server, *testutil.Clock) {
	t.Helper()
	clk := newFakeClock()
	sim := csmsim.New(csmsim.Options{APIKey: apiKey, Now: clk.Now})
	t.Cleanup(sim.Close)
	sim.AddSession(code, cfg)
	return sim, clk
}

// liveServer serves sim over real connections, for faults acting on them.
func liveServer(t *testing.T, sim *csmsim.Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sim)
	// sim.Close first, so a handler still hanging cannot block srv.Close.
	t.Cleanup(func() { sim.Close(); srv.Close() })
	return srv
}

func sessionPath(c string) string { return "/image-to-3d-sessions/" + c }
func previewPath(c string) string { return "/image-to-3d-sessions/get-3d/preview/" + c }

func spinURL(i int) string { return base + "/spins/" + code + "/" + strconv.Itoa(i) + ".png" }

// turboBody is a valid preview body choosing spin i.
func turboBody(i int) string {
	return fmt.Sprintf(`{"selected_spin_index":%d,"selected_spin":%q}`, i, spinURL(i))
}

// serve runs one authenticated request through h.
func serve(t *testing.T, h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("x-api-key", apiKey)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// decode checks rec is a JSON reply and returns its body.
func decode(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json (body %q)", ct, rec.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatalf("body is not a JSON object: %v: %q", err, rec.Body)
	}
	return m
}

// getSession reads the session and returns its data object.
func getSession(t *testing.T, h http.Handler) map[string]any {
	t.Helper()
	rec := serve(t, h, http.MethodGet, sessionPath(code), "")
	if rec.Code != http.StatusOK {
		t.Fatalf("GET session: status %d, body %s", rec.Code, rec.Body)
	}
	env := decode(t, rec)
	if env["error"] != "" || env["statusCode"] != 200.0 {
		t.Fatalf("GET session envelope = %v", env)
	}
	data, ok := env["data"].(map[string]any)
	if !ok {
		t.Fatalf("GET session data = %v", env["data"])
	}
	return data
}

// postPreview sends body to the preview endpoint and returns the reply.
func postPreview(t *testing.T, h http.Handler, body string) (int, map[string]any) {
	t.Helper()
	rec := serve(t, h, http.MethodPost, previewPath(code), body)
	return rec.Code, decode(t, rec)
}

// mustPreview starts a turbo preview and returns its unique_trial_key.
func mustPreview(t *testing.T, h http.Handler) string {
	t.Helper()
	status, env := postPreview(t, h, turboBody(0))
	if status != http.StatusOK {
		t.Fatalf("preview: status %d, body %v", status, env)
	}
	return env["data"].(map[string]any)["unique_trial_key"].(string)
}

var previewFields = []string{
	"preview_mesh_url", "preview_mesh_url_glb", "preview_mesh_url_zip",
	"preview_mesh_url_usdz", "preview_mesh_url_fbx",
}

var refineFields = []string{
	"mesh_url", "mesh_url_glb", "mesh_url_obj", "mesh_url_zip", "mesh_url_usdz", "mesh_url_fbx",
}

// checkURLs asserts fields are all present, and all "" or all filled with
// distinct URLs naming the session and key.
func checkURLs(t *testing.T, data map[string]any, fields []string, filled bool, key string) {
	t.Helper()
	seen := map[string]bool{}
	for _, f := range fields {
		v, ok := data[f].(string)
		switch {
		case !ok:
			t.Errorf("%s = %v, want a string", f, data[f])
		case !filled && v != "":
			t.Errorf("%s = %q, want empty", f, v)
		case filled && (!strings.HasPrefix(v, base+"/") || !strings.Contains(v, code) || !strings.Contains(v, key)):
			t.Errorf("%s = %q, want a URL under %s naming %s and %s", f, v, base, code, key)
		case filled && seen[v]:
			t.Errorf("%s = %q repeats another field", f, v)
		}
		seen[v] = true
	}
}
