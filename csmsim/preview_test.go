package csmsim_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/previewd/previewd/csmsim"
)

func TestPreviewValidation(t *testing.T) {
	seedBody, err := os.ReadFile("testdata/seed-request-body.txt")
	if err != nil {
		t.Fatal(err)
	}
	spin1 := strconv.Quote(spinURL(1))
	tests := []struct {
		name        string
		mesh        string
		body        string
		wantStatus  int
		wantMessage string // substring of the 400 message
	}{
		{"seed doc body is not JSON", "", string(seedBody), 400, "invalid JSON body"},
		{"empty body", "", "", 400, "invalid JSON body"},
		{"null", "", "null", 400, "invalid JSON body"},
		{"array", "", "[]", 400, "invalid JSON body"},
		{"string", "", `"x"`, 400, "invalid JSON body"},
		{"trailing garbage", "", turboBody(0) + "{}", 400, "invalid JSON body"},
		{"truncated", "", `{"selected_spin_index":0`, 400, "invalid JSON body"},

		{"turbo empty object", "", `{}`, 400, "selected_spin_index"},
		{"turbo index only", "", `{"selected_spin_index":1}`, 400, "selected_spin"},
		{"turbo spin only", "", `{"selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo null index", "", `{"selected_spin_index":null,"selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo index 4", "", `{"selected_spin_index":4,"selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo index -1", "", `{"selected_spin_index":-1,"selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo index 1.5", "", `{"selected_spin_index":1.5,"selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo index as string", "", `{"selected_spin_index":"1","selected_spin":` + spin1 + `}`, 400, "selected_spin_index"},
		{"turbo spin not a string", "", `{"selected_spin_index":1,"selected_spin":1}`, 400, "selected_spin"},
		{"turbo seed placeholder spin", "", `{"selected_spin_index":0,"selected_spin":"https://via.placeholder.com/300/09f/fff.png"}`, 400, "selected_spin"},
		{"turbo spin of another index", "", `{"selected_spin_index":0,"selected_spin":` + spin1 + `}`, 400, "selected_spin"},
		{"turbo ok", "", turboBody(1), 200, ""},
		{"turbo explicit", "turbo", turboBody(3), 200, ""},
		{"turbo index 2.0 is an integer", "", `{"selected_spin_index":2.0,"selected_spin":` + strconv.Quote(spinURL(2)) + `}`, 200, ""},
		{"unknown keys ignored", "", `{"selected_spin_index":1,"selected_spin":` + spin1 + `,"text_prompt":"Walk","extra":{"a":[1]}}`, 200, ""},

		{"bbox two numbers", "hd", `{"scaled_bbox":[1,2]}`, 400, "scaled_bbox"},
		{"bbox four numbers", "hd", `{"scaled_bbox":[1,2,3,4]}`, 400, "scaled_bbox"},
		{"bbox zero", "hd", `{"scaled_bbox":[1,2,0]}`, 400, "scaled_bbox"},
		{"bbox negative", "hd", `{"scaled_bbox":[1,-2,3]}`, 400, "scaled_bbox"},
		{"bbox string item", "hd", `{"scaled_bbox":["1",2,3]}`, 400, "scaled_bbox"},
		{"bbox null item", "hd", `{"scaled_bbox":[1,null,3]}`, 400, "scaled_bbox"},
		{"bbox object", "hd", `{"scaled_bbox":{"w":1}}`, 400, "scaled_bbox"},
		{"bbox ok", "hd", `{"scaled_bbox":[0.5,2,3e2]}`, 200, ""},
		{"bbox null is absent", "hd", `{"scaled_bbox":null}`, 200, ""},

		{"pivot two numbers", "hd", `{"pivot_point":[0,0]}`, 400, "pivot_point"},
		{"pivot above range", "hd", `{"pivot_point":[0,0.51,0]}`, 400, "pivot_point"},
		{"pivot below range", "hd", `{"pivot_point":[-0.6,0,0]}`, 400, "pivot_point"},
		{"pivot null item", "hd", `{"pivot_point":[0,null,0]}`, 400, "pivot_point"},
		{"pivot bounds ok", "hd", `{"pivot_point":[-0.5,0.5,0]}`, 200, ""},

		{"hd needs no spin", "hd", `{}`, 200, ""},
		{"fast_sculpt needs no spin", "fast_sculpt", `{"selected_spin_index":2}`, 200, ""},
		{"hd index still checked", "hd", `{"selected_spin_index":7}`, 400, "selected_spin_index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, _ := newSim(t, csmsim.SessionConfig{PreviewMesh: tt.mesh})
			status, body := postPreview(t, sim, tt.body)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %v)", status, tt.wantStatus, body)
			}
			wantAccepted := 0
			if tt.wantStatus == 200 {
				wantAccepted = 1
			} else {
				msg, _ := body["message"].(string)
				if body["error"] != "Bad Request" || body["statusCode"] != 400.0 || !strings.Contains(msg, tt.wantMessage) {
					t.Errorf("body = %v, want a Bad Request naming %q", body, tt.wantMessage)
				}
			}
			if got := sim.AcceptedPreviews(code); got != wantAccepted {
				t.Errorf("AcceptedPreviews = %d, want %d", got, wantAccepted)
			}
		})
	}
}

func TestPreviewContentType(t *testing.T) {
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded"} {
		t.Run(fmt.Sprintf("%q", ct), func(t *testing.T) {
			sim, _ := newSim(t, csmsim.SessionConfig{})
			req := httptest.NewRequest(http.MethodPost, previewPath(code), strings.NewReader(turboBody(0)))
			req.Header.Set("x-api-key", apiKey)
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			rec := httptest.NewRecorder()
			sim.ServeHTTP(rec, req)
			if rec.Code != 400 || sim.AcceptedPreviews(code) != 0 {
				t.Errorf("status %d, accepted %d: want 400 and nothing billed", rec.Code, sim.AcceptedPreviews(code))
			}
		})
	}
	t.Run("with charset", func(t *testing.T) {
		sim, _ := newSim(t, csmsim.SessionConfig{})
		req := httptest.NewRequest(http.MethodPost, previewPath(code), strings.NewReader(turboBody(0)))
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Errorf("status = %d, want 200", rec.Code)
		}
	})
}

var trialKeyRE = regexp.MustCompile(`^[0-9]{12}[A-Za-z0-9]{2}@[A-Za-z0-9]{14}$`)

// TestPreviewResponseShape holds the reply to the seed doc's example: same
// keys at every level, same JSON types.
func TestPreviewResponseShape(t *testing.T) {
	raw, err := os.ReadFile("testdata/seed-response.json")
	if err != nil {
		t.Fatal(err)
	}
	var seed map[string]any
	if err := json.Unmarshal(raw, &seed); err != nil {
		t.Fatal(err)
	}
	if !trialKeyRE.MatchString(seed["data"].(map[string]any)["unique_trial_key"].(string)) {
		t.Fatal("trialKeyRE does not match the seed's own key")
	}

	sim, clk := newSim(t, csmsim.SessionConfig{})
	status, got := postPreview(t, sim, turboBody(2))
	if status != 200 {
		t.Fatalf("status = %d, body %v", status, got)
	}
	sameShape(t, "", seed, got)

	data := got["data"].(map[string]any)
	job := data["complete_job_data"].(map[string]any)
	key := data["unique_trial_key"].(string)
	if !trialKeyRE.MatchString(key) || !strings.HasPrefix(key, "168923176748") {
		t.Errorf("unique_trial_key = %q, want the seed's shape with clock digits 168923176748", key)
	}
	want := map[string]any{
		"error": "", "message": "Generating Mesh", "statusCode": 200.0,
		"data.scenario": code, "data.status": "unprocessed",
		"job.scenario": code, "job.status": "unprocessed", "job.call": "dreamfusion",
		"job.job_priority": "2", "job.user_id": "000000", "job.unique_trial_key": key,
		"job.id":         "job:dreamfusion:" + code + "_" + key,
		"job.start_time": "1689231767.4800000",
	}
	have := map[string]any{
		"error": got["error"], "message": got["message"], "statusCode": got["statusCode"],
		"data.scenario": data["scenario"], "data.status": data["status"],
	}
	for k, v := range job {
		have["job."+k] = v
	}
	for k, v := range want {
		if have[k] != v {
			t.Errorf("%s = %v, want %v", k, have[k], v)
		}
	}
	if start, err := strconv.ParseFloat(job["start_time"].(string), 64); err != nil || int64(start) != clk.Now().Unix() {
		t.Errorf("start_time = %v, want unix seconds of the clock", job["start_time"])
	}

	var task map[string]any
	if err := json.Unmarshal([]byte(job["task_data"].(string)), &task); err != nil {
		t.Fatalf("task_data is not a JSON string: %v", err)
	}
	if task["scenario"] != code || task["unique_trial_key"] != key || task["image_url"] != spinURL(2) {
		t.Errorf("task_data = %v", task)
	}
	if call, _ := sim.LastPreview(code); call.UniqueTrialKey != key {
		t.Errorf("LastPreview key = %q, want %q", call.UniqueTrialKey, key)
	}
}

// sameShape fails unless got has exactly want's keys, recursively, with the
// same JSON types.
func sameShape(t *testing.T, path string, want, got map[string]any) {
	t.Helper()
	for k, wv := range want {
		gv, ok := got[k]
		if !ok {
			t.Errorf("%s%s missing", path, k)
			continue
		}
		if wm, ok := wv.(map[string]any); ok {
			gm, ok := gv.(map[string]any)
			if !ok {
				t.Errorf("%s%s = %T, want an object", path, k, gv)
				continue
			}
			sameShape(t, path+k+".", wm, gm)
			continue
		}
		if fmt.Sprintf("%T", wv) != fmt.Sprintf("%T", gv) {
			t.Errorf("%s%s = %T, want %T", path, k, gv, wv)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s%s is not in the seed's response", path, k)
		}
	}
}

func TestTrialKeysDiffer(t *testing.T) {
	sim, _ := newSim(t, csmsim.SessionConfig{})
	seen := map[string]bool{}
	for range 50 {
		k := mustPreview(t, sim) // same fake instant every time
		if seen[k] {
			t.Fatalf("unique_trial_key %q repeated", k)
		}
		seen[k] = true
	}
}

// FuzzPreviewBody: whatever the body, the preview endpoint answers 200 or
// 400 with a well-formed envelope, and bills only what it answers 200 to.
func FuzzPreviewBody(f *testing.F) {
	seedBody, err := os.ReadFile("testdata/seed-request-body.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(seedBody), "", "{}", "null", turboBody(0), turboBody(3),
		`{"selected_spin_index":1e400}`, `{"scaled_bbox":[1,2,3],"pivot_point":[0,0,0]}`,
		`{"selected_spin_index":0,"selected_spin":"` + spinURL(0) + `","scaled_bbox":[1,1,1]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		sim := csmsim.New(csmsim.Options{APIKey: apiKey, Now: newFakeClock().Now})
		sim.AddSession(code, csmsim.SessionConfig{})
		rec := serve(t, sim, http.MethodPost, previewPath(code), body)
		env := decode(t, rec)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("status = %d", rec.Code)
		}
		if env["statusCode"] != float64(rec.Code) {
			t.Errorf("statusCode = %v, HTTP %d", env["statusCode"], rec.Code)
		}
		wantAccepted := 0
		if rec.Code == 200 {
			wantAccepted = 1
		}
		if got := sim.AcceptedPreviews(code); got != wantAccepted {
			t.Errorf("AcceptedPreviews = %d after HTTP %d", got, rec.Code)
		}
	})
}
