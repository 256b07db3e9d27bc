package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/tasks"
)

// FuzzCreatePreviewBody: whatever body a client POSTs to /v1/previews, the
// API answers 200/201 with a job or a 4xx problem document, never a 5xx
// and never a panic. Webhook URLs are checked without DNS (private
// addresses allowed) so no input waits on a resolver.
func FuzzCreatePreviewBody(f *testing.F) {
	for _, s := range []string{
		`{"session_code":"SESSION_1689257215_1674078","selected_spin_index":0,"scaled_bbox":[1,1.5,0.8]}`,
		`{"session_code":"S1","webhook_url":"http://127.0.0.1/hook","pivot_point":[0,0.5,-0.5]}`,
		`{"session_code":"S1","selected_spin_index":9}`,
		`{"session_code":7}`, `{"session_code":"S1","colour":"red"}`, `{"session_code":`,
		`{"session_code":"S1"} {}`, `[]`, `null`, ``, `{"scaled_bbox":[1e999,0,0]}`,
	} {
		f.Add([]byte(s))
	}
	r := testutil.NewRedis(f)
	producer := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, AllowPrivateWebhooks: true})
	h := api.New(producer, api.Options{Redis: r.Client}).Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/previews", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch code := rec.Code; {
		case code == http.StatusOK || code == http.StatusCreated:
			var job struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &job); err != nil || job.ID == "" {
				t.Fatalf("%d with body %q", code, rec.Body.String())
			}
		case code >= 400 && code < 500:
			var p api.Problem
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("%d with Content-Type %q", code, ct)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != code || p.Title == "" {
				t.Fatalf("%d with problem %q", code, rec.Body.String())
			}
		default:
			t.Fatalf("status %d for body %q: %s", code, body, rec.Body.String())
		}
	})
}
