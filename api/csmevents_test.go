package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

const csmToken = "csm-push-token-5e0f1a2b3c4d"

// pushServer is a real API server (with API tokens) whose CSM events route
// uses a real Pusher on a real Redis namespace; logs are captured.
func pushServer(t *testing.T, pushToken string) (url string, control *tasks.Client, logs *observer.ObservedLogs) {
	t.Helper()
	r := testutil.NewRedis(t)
	control = tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	core, logs := observer.New(zap.DebugLevel)
	s := api.New(control, api.Options{
		Tokens: []string{token}, Redis: r.Client, Logger: zap.New(core),
		CSMEvents: &api.CSMEvents{Target: tasks.NewPusher(r.Client, r.Namespace), Token: pushToken},
	})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, control, logs
}

func TestCSMEvents(t *testing.T) {
	t.Parallel()
	url, control, logs := pushServer(t, csmToken)
	closedURL, _, _ := pushServer(t, "")
	// A job of the session, not generating yet: nothing to poll.
	job, err := control.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: "SESSION_1689257215_1674078"})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}

	legacy := `{"type":"preview_done","payload":{"session_id":"SESSION_1689257215_1674078","status":"preview_done","preview_mesh_url":"https://x.invalid/m.obj","selected_spin_index":0}}`
	current := `{"type":"session_status_changed","payload":{"session_id":"SESSION_1689257215_1674078","user_id":"u","session_type":"image_to_3d","old_status":"training_preview","new_status":"preview_done","timestamp":"2026-12-01T00:00:00Z","session_data":{"_id":"SESSION_1689257215_1674078"}}}`
	flat := `{"event":"session_status_changed","session_id":"SESSION_OTHER_1","new_status":"complete"}`
	cases := []struct {
		name, base, query, body string
		bearer                  bool
		want                    int
	}{
		{"legacy shape, job not generating yet: dropped", url, "?token=" + csmToken, legacy, false, http.StatusNoContent},
		{"current shape", url, "?token=" + csmToken, current, false, http.StatusNoContent},
		{"current shape at the top level, unknown session: dropped", url, "?token=" + csmToken, flat, false, http.StatusNoContent},
		{"unknown shape: accepted and logged", url, "?token=" + csmToken, `{"kind":"something new","data":[1,2]}`, false, http.StatusAccepted},
		{"not JSON: accepted and logged", url, "?token=" + csmToken, `<xml/>`, false, http.StatusAccepted},
		{"a session code that is not one", url, "?token=" + csmToken, `{"type":"preview_done","payload":{"session_id":"../../etc"}}`, false, http.StatusAccepted},
		{"wrong token", url, "?token=" + csmToken + "x", legacy, false, http.StatusNotFound},
		{"no token", url, "", legacy, false, http.StatusNotFound},
		{"the API's bearer token is not the route's", url, "", legacy, true, http.StatusNotFound},
		{"route closed: no token configured", closedURL, "?token=" + csmToken, legacy, false, http.StatusNotFound},
		{"route closed, empty token", closedURL, "?token=", legacy, false, http.StatusNotFound},
	}
	for _, c := range cases {
		req, err := http.NewRequest(http.MethodPost, c.base+api.CSMEventsPath+c.query, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.bearer {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, body, c.want)
			continue
		}
		check, _ := http.NewRequest(http.MethodPost, "http://localhost"+api.CSMEventsPath+c.query, strings.NewReader(c.body))
		check.Header.Set("Content-Type", "application/json")
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if ok, verrs := v.ValidateHttpResponse(check, resp); !ok && c.query != "" {
			t.Errorf("%s: the answer breaks the OpenAPI document: %v", c.name, describe(verrs))
		}
	}
	if j, err := control.Job(context.Background(), job.ID); err != nil || j.Status != store.StatusQueued {
		t.Fatalf("the job after the pushes: %v %v; want it untouched (queued)", j.Status, err)
	}
	if logs.FilterMessageSnippet("unknown shape").Len() != 3 {
		t.Errorf("unknown shapes logged %d times, want 3", logs.FilterMessageSnippet("unknown shape").Len())
	}
	for _, e := range logs.All() {
		line := e.Message
		for k, f := range e.ContextMap() {
			line += " " + k + "=" + strings.TrimSpace(toString(f))
		}
		if strings.Contains(line, csmToken) {
			t.Fatalf("the push token is in a log line: %s", line)
		}
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}
