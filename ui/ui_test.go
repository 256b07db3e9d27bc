package ui_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/store"
)

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestListFiltersAndPages: the list shows every job newest first with its
// counts; the status and age filters select from the indexes; pages follow
// the API's cursor; a bad filter names its field.
func TestListFiltersAndPages(t *testing.T) {
	t.Parallel()
	e := newUIEnv(t, envOptions{})
	order := []store.Job{e.recent, e.failed, e.stuck, e.done} // newest first
	ids := func(page string) []string {
		var out []string
		for _, j := range order {
			if strings.Contains(page, `data-job="`+j.ID+`"`) {
				out = append(out, j.SessionCode)
			}
		}
		return out
	}
	cases := []struct {
		name, query string
		want        []string
	}{
		{"all", "", []string{"SESSION_UI_RECENT", "SESSION_UI_FAILED", "SESSION_UI_STUCK", "SESSION_UI_DONE"}},
		{"generating", "?status=generating", []string{"SESSION_UI_STUCK"}},
		{"older than 30m", "?older=30m", []string{"SESSION_UI_STUCK", "SESSION_UI_DONE"}},
		{"generating over 30m", "?status=generating&older=30m", []string{"SESSION_UI_STUCK"}},
		{"queued over 30m", "?status=queued&older=30m", nil},
	}
	for _, c := range cases {
		resp := e.do("GET", "/ui/"+c.query, fullToken, nil)
		page := body(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", c.name, resp.StatusCode, page)
		}
		got := ids(page)
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: jobs %v, want %v", c.name, got, c.want)
		}
		// Rows come newest first.
		if c.name == "all" {
			last := -1
			for _, j := range order {
				i := strings.Index(page, `data-job="`+j.ID+`"`)
				if i < last {
					t.Errorf("job %s out of order", j.SessionCode)
				}
				last = i
			}
			for _, want := range []string{`data-status="generating">generating <b>1</b>`, `data-status="done">done <b>1</b>`, `data-status="queued">queued <b>1</b>`, "order-recent", "1m 30s"} {
				if !strings.Contains(page, want) {
					t.Errorf("the list lacks %q", want)
				}
			}
		}
	}

	// Pages of two: following the cursor lists every job once, in order.
	var got []string
	next, pages := "/ui/?limit=2", 0
	for next != "" && pages < 5 {
		page := body(t, e.do("GET", next, fullToken, nil))
		got, next, pages = append(got, ids(page)...), "", pages+1
		if i := strings.Index(page, `id="next" href="`); i >= 0 {
			rest := page[i+len(`id="next" href="`):]
			next = strings.ReplaceAll(rest[:strings.Index(rest, `"`)], "&amp;", "&")
		}
	}
	if strings.Join(got, ",") != strings.Join(cases[0].want, ",") || pages < 2 {
		t.Errorf("pages of two: %v in %d pages", got, pages)
	}

	for query, field := range map[string]string{"?older=soon": "older", "?status=stuck": "status", "?limit=0": "limit", "?cursor=%21%21": "cursor"} {
		resp := e.do("GET", "/ui/"+query, fullToken, nil)
		if page := body(t, resp); resp.StatusCode != 400 || !strings.Contains(page, field) {
			t.Errorf("%s: %d, want 400 naming %s: %s", query, resp.StatusCode, field, page)
		}
	}
}

// TestJobPage: the timeline, the upstream status, every attempt, the
// dashboard links, the downloads; the webhook URL shown by origin only.
func TestJobPage(t *testing.T) {
	t.Parallel()
	e := newUIEnv(t, envOptions{})
	page := body(t, e.do("GET", "/ui/jobs/"+e.done.ID, fullToken, nil))
	for _, want := range []string{
		`<svg`, `>preview_done<`, `&#43;41s<`, // 7s to 48s between two upstream steps
		`class="attempt"`, `>503<`, "the receiver did not answer in time", `>204<`,
		`href="/monitoring/queues/` + e.redis.Namespace + `:webhooks:final/tasks/webhook:evt_`,
		`<model-viewer id="viewer" src="/ui/jobs/` + e.done.ID + `/mesh.glb"`,
		`href="` + e.meshes["glb"] + `"`, "https://hooks.example.com",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the done job's page lacks %q", want)
		}
	}
	if n := strings.Count(page, `class="attempt"`); n != 3 {
		t.Errorf("%d attempt rows, want 3", n)
	}
	if n := strings.Count(page, `<g class="step">`); n != len(e.done.History) {
		t.Errorf("%d timeline steps, want %d", n, len(e.done.History))
	}
	if strings.Contains(page, "secret-receiver-token") {
		t.Errorf("the page shows the webhook URL's query")
	}
	stuck := body(t, e.do("GET", "/ui/jobs/"+e.stuck.ID, fullToken, nil))
	for _, want := range []string{`id="task" href="/monitoring/queues/` + e.redis.Namespace + `:polls/tasks/poll:` + e.stuck.ID + `:7"`, `value="50"`, `id="cancel"`} {
		if !strings.Contains(stuck, want) {
			t.Errorf("the generating job's page lacks %q", want)
		}
	}
	if resp := e.do("GET", "/ui/jobs/0e7c0a6e-0000-4000-8000-000000000000", fullToken, nil); resp.StatusCode != 404 {
		t.Errorf("unknown job: %d", resp.StatusCode)
	}
}

// TestAccess: no credentials, 401 everywhere; a read-only token sees no
// buttons and cannot POST; a full token's POST from another origin is
// refused, from the page itself it cancels.
func TestAccess(t *testing.T) {
	t.Parallel()
	e := newUIEnv(t, envOptions{})
	for _, path := range []string{"/ui/", "/ui/jobs/" + e.done.ID, "/ui/jobs/" + e.done.ID + "/mesh.glb", "/ui/static/style.css"} {
		if resp := e.do("GET", path, "", nil); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s without credentials: %d", path, resp.StatusCode)
		}
		if resp := e.do("GET", path, "wrong-token", nil); resp.StatusCode != 401 {
			t.Errorf("%s with a wrong token: %d", path, resp.StatusCode)
		}
	}
	ro := body(t, e.do("GET", "/ui/jobs/"+e.stuck.ID, readOnlyToken, nil))
	done := body(t, e.do("GET", "/ui/jobs/"+e.done.ID, readOnlyToken, nil))
	if !strings.Contains(ro, "SESSION_UI_STUCK") || strings.Contains(ro+done, "<button") || strings.Contains(ro+done, `method="post"`) {
		t.Errorf("a read-only token's pages show buttons")
	}
	sameOrigin := map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": e.url}
	cancel := "/ui/jobs/" + e.stuck.ID + "/cancel"
	if resp := e.do("POST", cancel, readOnlyToken, sameOrigin); resp.StatusCode != 403 {
		t.Errorf("read-only cancel: %d", resp.StatusCode)
	}
	if resp := e.do("POST", cancel, fullToken, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}); resp.StatusCode != 403 {
		t.Errorf("cross-site cancel: %d", resp.StatusCode)
	}
	if j, _ := e.client.Job(context.Background(), e.stuck.ID); j.Status != store.StatusGenerating {
		t.Fatalf("refused cancels changed the job: %s", j.Status)
	}
	resp := e.do("POST", cancel, fullToken, sameOrigin)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "?done=canceled") {
		t.Fatalf("cancel: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if j, _ := e.client.Job(context.Background(), e.stuck.ID); j.Status != store.StatusCanceled {
		t.Errorf("after cancel: %s", j.Status)
	}
	msg := store.MessageID(firstMessageEvent(t, e), "job")
	resp = e.do("POST", "/ui/jobs/"+e.done.ID+"/messages/"+msg+"/replay", fullToken, sameOrigin)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasSuffix(resp.Header.Get("Location"), "?done=replayed") {
		t.Fatalf("replay: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	msgs, _ := e.client.Messages(context.Background(), e.done.ID)
	if len(msgs) != 1 || msgs[0].Status != store.MessagePending || msgs[0].Replays != 1 {
		t.Errorf("after replay: %+v", msgs)
	}
}

func firstMessageEvent(t *testing.T, e *uiEnv) string {
	msgs, err := e.client.Messages(context.Background(), e.done.ID)
	if err != nil || len(msgs) == 0 {
		t.Fatalf("messages: %v %v", msgs, err)
	}
	return msgs[0].EventID
}

// TestMeshProxy: the GLB comes through previewd byte for byte; under the
// address policy the simulator's loopback URL is refused (no SSRF); a mesh
// over the cap is refused.
func TestMeshProxy(t *testing.T) {
	t.Parallel()
	path := func(e *uiEnv) string { return "/ui/jobs/" + e.done.ID + "/mesh.glb" }
	open := newUIEnv(t, envOptions{})
	for range 2 { // the second from the cache
		resp := open.do("GET", path(open), readOnlyToken, nil)
		if b := body(t, resp); resp.StatusCode != 200 || !bytes.Equal([]byte(b), csmsim.CubeGLB()) || resp.Header.Get("Content-Type") != "model/gltf-binary" {
			t.Fatalf("mesh: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
	}
	if resp := open.do("GET", "/ui/jobs/"+open.stuck.ID+"/mesh.glb", fullToken, nil); resp.StatusCode != 404 {
		t.Errorf("a job without a mesh: %d", resp.StatusCode)
	}
	policy := newUIEnv(t, envOptions{policy: true})
	resp := policy.do("GET", path(policy), fullToken, nil)
	if b := body(t, resp); resp.StatusCode != 403 || !strings.Contains(b, "address policy") {
		t.Errorf("a loopback mesh URL under the policy: %d %s", resp.StatusCode, b)
	}
	small := newUIEnv(t, envOptions{meshMaxBytes: 100})
	resp = small.do("GET", path(small), fullToken, nil)
	if b := body(t, resp); resp.StatusCode != 502 || !strings.Contains(b, "larger than") {
		t.Errorf("a mesh over the cap: %d %s", resp.StatusCode, b)
	}
}
