package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"
	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// The tests in this file attack a real server on loopback the way a web
// page would, with headless Chromium as the attacker's tool, and count the
// effect in Redis.

// answered records the requests a server has answered, so a test can wait
// for the browser's request to be over before it looks at Redis.
type answered struct {
	mu   sync.Mutex
	seen []string // "METHOD /path STATUS"
}

type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *codeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *answered) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		a.mu.Lock()
		a.seen = append(a.seen, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, cw.code))
		a.mu.Unlock()
	})
}

// wait waits until a request "METHOD /path" has been answered and returns
// its status.
func (a *answered) wait(t *testing.T, method, path string) int {
	t.Helper()
	var code int
	testutil.Eventually(t, 30*time.Second, "the browser's "+method+" "+path, func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, s := range a.seen {
			if rest, ok := strings.CutPrefix(s, method+" "+path+" "); ok {
				_, _ = fmt.Sscan(rest, &code)
				return true
			}
		}
		return false
	})
	return code
}

// serveOn serves h on a loopback address of its own (127.0.0.2 is another
// site than 127.0.0.1 as far as a browser is concerned).
func serveOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// attackerSite serves pages (path → HTML) from 127.0.0.2.
func attackerSite(t *testing.T, pages map[string]string) string {
	t.Helper()
	return serveOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(body))
	}))
}

// autoSubmit is a page that posts a form to action as soon as it loads,
// into a frame so that the page itself stays. A field's name and value
// are sent as name=value; with enctype text/plain a name that is JSON
// makes a JSON-looking body.
func autoSubmit(action, enctype, name, value string) string {
	field := ""
	if name != "" {
		field = `<input type="hidden" name="` + html.EscapeString(name) + `" value="` + html.EscapeString(value) + `">`
	}
	return `<!doctype html><title>free prizes</title><iframe name="sink"></iframe>
<form method="POST" target="sink" action="` + html.EscapeString(action) + `" enctype="` + enctype + `">` + field + `</form>
<script>document.forms[0].submit()</script>`
}

// newChromium starts headless Chromium with a fresh profile.
func newChromium(t *testing.T, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	exe := testutil.Chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// Plain http to the test names, as to a developer's loopback server.
		chromedp.Flag("disable-features", "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable"),
		chromedp.UserDataDir(t.TempDir()),
	)
	opts = append(opts, flags...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	browser, cancelTimeout := context.WithTimeout(browser, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return browser
}

// loggedIn makes the browser send the operator's Basic credentials with
// every request, as a browser does once its user has logged in to the
// dashboard: whichever page starts the request.
func loggedIn(t *testing.T, browser context.Context, password string) {
	t.Helper()
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+password))
	if _, err := chromedp.Call(browser, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": basic},
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardRefusesCrossSiteForms: a page on another site, opened in a
// browser logged in to the dashboard, auto-submits forms that pause a
// queue, delete a scheduled task (a text/plain form whose body parses as
// JSON) and run an archived one. None of it happens; the dashboard's own
// page still pauses the queue; and the dashboard cannot be framed.
func TestDashboardRefusesCrossSiteForms(t *testing.T) {
	t.Parallel()
	// One process for every site, so that the attacker page's frame tree
	// shows the framed dashboard (out-of-process frames are not in it).
	browser := newChromium(t, chromedp.Flag("disable-site-isolation-trials", true),
		chromedp.Flag("disable-features", "HttpsUpgrades,HttpsFirstBalancedModeAutoEnable,IsolateOrigins,site-per-process"))
	e := newDashboardEnv(t)
	var seen answered
	victim := serveOn(t, "127.0.0.1:0", seen.wrap(e.server.Handler()))

	queue := tasks.QueuesFor(e.redis.Namespace).Previews
	client := asynq.NewClientFromRedisClient(e.redis.Client)
	inspector := asynq.NewInspectorFromRedisClient(e.redis.Client)
	for _, id := range []string{"csrf-delete-me", "csrf-archived"} {
		if _, err := client.Enqueue(asynq.NewTask("csrf:probe", nil), asynq.Queue(queue), asynq.TaskID(id), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := inspector.ArchiveTask(queue, "csrf-archived"); err != nil {
		t.Fatal(err)
	}

	api := victim + "/monitoring/api/queues/" + url.PathEscape(queue)
	attacks := []struct {
		name, page, path string
	}{
		{"pause the queue", autoSubmit(api+":pause", "application/x-www-form-urlencoded", "", ""), ":pause"},
		{"delete a scheduled task", autoSubmit(api+"/scheduled_tasks:batch_delete", "text/plain", `{"task_ids":["csrf-delete-me"]}`, ""), "/scheduled_tasks:batch_delete"},
		{"run an archived task", autoSubmit(api+"/archived_tasks/csrf-archived:run", "application/x-www-form-urlencoded", "x", "1"), "/archived_tasks/csrf-archived:run"},
	}
	pages := map[string]string{
		"/frame": `<!doctype html><iframe id="dash" src="` + html.EscapeString(victim+"/monitoring/") + `" width="800" height="600"></iframe>`,
	}
	for i, a := range attacks {
		pages[fmt.Sprintf("/attack/%d", i)] = a.page
	}
	evil := attackerSite(t, pages)

	loggedIn(t, browser, token)
	for i, a := range attacks {
		if err := chromedp.Do(browser, chromedp.Navigate(fmt.Sprintf("%s/attack/%d", evil, i))); err != nil {
			t.Fatal(err)
		}
		path := "/monitoring/api/queues/" + queue + a.path
		if code := seen.wait(t, "POST", path); code != http.StatusForbidden {
			t.Errorf("%s: the dashboard answered the cross-site form %d, want 403", a.name, code)
		}
	}
	info, err := inspector.GetQueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	if info.Paused {
		t.Error("a cross-site form paused the queue")
	}
	if _, err := inspector.GetTaskInfo(queue, "csrf-delete-me"); err != nil {
		t.Errorf("a cross-site form deleted the scheduled task: %v", err)
	}
	if ti, err := inspector.GetTaskInfo(queue, "csrf-archived"); err != nil || ti.State != asynq.TaskStateArchived {
		t.Errorf("a cross-site form ran the archived task: %v, %v", ti, err)
	}

	// Framed by the attacker's page, the dashboard does not render.
	if err := chromedp.Do(browser, chromedp.Navigate(evil+"/frame")); err != nil {
		t.Fatal(err)
	}
	seen.wait(t, "GET", "/monitoring/")
	var frame string
	testutil.Eventually(t, 30*time.Second, "the framed dashboard to settle", func() bool {
		tree, err := chromedp.Call(browser, page.GetFrameTree, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range tree.FrameTree.ChildFrames {
			t.Logf("frame %q unreachable %q", c.Frame.URL, c.Frame.UnreachableURL)
			switch f := c.Frame; {
			case f.UnreachableURL != "" || strings.HasPrefix(f.URL, "chrome-error:"):
				frame = "blocked"
				return true
			case strings.HasPrefix(f.URL, victim):
				frame = "rendered " + f.URL
				return true
			}
		}
		return false
	})
	if frame != "blocked" {
		t.Errorf("a page of another site framed the dashboard: %s", frame)
	}

	// The dashboard's own page still changes state: its scripts' requests
	// are same-origin.
	if err := chromedp.Do(browser, chromedp.Navigate(victim+"/monitoring/")); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(browser, chromedp.Evaluate[int](
		`fetch("/monitoring/api/queues/`+url.PathEscape(queue)+`:pause", {method: "POST"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || got != http.StatusNoContent {
		t.Fatalf("the dashboard's own pause: %d, %v", got, err)
	}
	if info, err := inspector.GetQueueInfo(queue); err != nil || !info.Paused {
		t.Fatalf("the dashboard's own pause did not pause: %+v %v", info, err)
	}
}

// TestDashboardSendsAntiFramingHeaders: every dashboard answer, the 401
// and the refusal included, forbids framing.
func TestDashboardSendsAntiFramingHeaders(t *testing.T) {
	t.Parallel()
	e := newDashboardEnv(t)
	for _, tc := range []struct {
		name, method, path, password string
		header                       map[string]string
		want                         int
	}{
		{"page", "GET", "/monitoring/", token, nil, 200},
		// Its status is asynqmon's, which lists every queue of the shared
		// test Redis (500 while another test drops one): only headers count.
		{"api", "GET", "/monitoring/api/queues", token, nil, 0},
		{"no credentials", "GET", "/monitoring/", "", nil, 401},
		{"cross-site POST", "POST", "/monitoring/api/queues/q:pause", token, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign Origin", "POST", "/monitoring/api/queues/q:pause", token, map[string]string{"Origin": "http://evil.example"}, 403},
		{"same-site is not same-origin", "POST", "/monitoring/api/queues/q:pause", token, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+tc.path, nil)
			if tc.password != "" {
				req.SetBasicAuth("operator", tc.password)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if tc.want != 0 && resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if got := resp.Header.Get("Content-Security-Policy"); got != "frame-ancestors 'none'" {
				t.Errorf("Content-Security-Policy %q", got)
			}
			if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("X-Frame-Options %q", got)
			}
		})
	}
}

// openEnv is a server without tokens (what serve runs on loopback when
// PREVIEWD_API_TOKENS is empty), behind a request recorder.
type openEnv struct {
	redis   *testutil.Redis
	control *tasks.Client
	seen    *answered
	url     string // http://127.0.0.1:port
	port    string
}

func newOpenEnv(t *testing.T) *openEnv {
	t.Helper()
	r := testutil.NewPrivateRedis(t) // the dashboard lists every queue of its Redis
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	s := api.New(control, api.Options{Redis: r.Client, Dashboard: api.NewDashboard(r.Client), Logger: zaptest.NewLogger(t)})
	seen := &answered{}
	u := serveOn(t, "127.0.0.1:0", seen.wrap(s.Handler()))
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	return &openEnv{redis: r, control: control, seen: seen, url: u, port: port}
}

// effects counts the jobs and endpoints in Redis.
func (o *openEnv) effects(t *testing.T) (jobs, endpoints int) {
	t.Helper()
	ctx := context.Background()
	js, _, err := o.control.List(ctx, store.ListOptions{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	eps, err := o.control.Endpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(js), len(eps)
}

// TestOpenServerRefusesCrossSitePages: without tokens, a page on another
// site posts to the loopback API: a no-cors fetch whose body has no
// Content-Type (what a page can send without asking the server) and
// auto-submitted forms. No job (a billed preview) and no endpoint (a
// receiver of every event) is created.
func TestOpenServerRefusesCrossSitePages(t *testing.T) {
	t.Parallel()
	browser := newChromium(t)
	o := newOpenEnv(t)
	preview := `{"session_code":"SESSION_1689257215_1674078"}`
	endpoint := `{"url":"https://8.8.8.8/every-event"}`
	fetchPage := `<!doctype html><script>
for (const [path, body] of [["/v1/previews", ` + "`" + preview + "`" + `], ["/v1/endpoints", ` + "`" + endpoint + "`" + `]]) {
  fetch("` + o.url + `" + path, {method: "POST", mode: "no-cors", body: new Blob([body])});
}
</script>`
	evil := attackerSite(t, map[string]string{
		"/fetch":      fetchPage,
		"/form-plain": autoSubmit(o.url+"/v1/previews", "text/plain", `{"session_code":"SESSION_1","external_id":"`, `"}`),
		"/form-url":   autoSubmit(o.url+"/v1/endpoints", "application/x-www-form-urlencoded", "url", "https://8.8.8.8/every-event"),
	})

	if err := chromedp.Do(browser, chromedp.Navigate(evil+"/fetch")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/previews", "/v1/endpoints"} {
		if code := o.seen.wait(t, "POST", path); code/100 == 2 {
			t.Errorf("a cross-site no-cors POST %s was answered %d", path, code)
		}
	}
	for _, form := range []string{"/form-plain", "/form-url"} {
		if err := chromedp.Do(browser, chromedp.Navigate(evil+form)); err != nil {
			t.Fatal(err)
		}
	}
	o.seen.wait(t, "POST", "/v1/previews")
	o.seen.wait(t, "POST", "/v1/endpoints")
	testutil.Eventually(t, 30*time.Second, "both forms answered", func() bool {
		o.seen.mu.Lock()
		defer o.seen.mu.Unlock()
		return len(o.seen.seen) >= 4
	})
	if jobs, eps := o.effects(t); jobs != 0 || eps != 0 {
		t.Fatalf("pages of another site created %d jobs and %d endpoints on the open server", jobs, eps)
	}
}

// TestOpenServerRefusesDNSRebinding: a page whose name the attacker
// rebinds to 127.0.0.1 talks to the open server as its own origin
// (Chromium's resolver maps rebind.test to loopback, as the attacker's DNS
// would). Same-origin, it may set Content-Type: application/json; what
// stops it is the Host, which names the attacker's domain: no job, no
// endpoint, and no job list read.
func TestOpenServerRefusesDNSRebinding(t *testing.T) {
	t.Parallel()
	browser := newChromium(t, chromedp.Flag("host-resolver-rules", "MAP rebind.test 127.0.0.1"))
	o := newOpenEnv(t)
	if _, err := o.control.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: "SESSION_PRIVATE_1"}); err != nil {
		t.Fatal(err)
	}
	rebound := "http://rebind.test:" + o.port
	if err := chromedp.Do(browser, chromedp.Navigate(rebound+"/healthz")); err != nil {
		t.Fatal(err)
	}
	script := `(async () => {
  const post = (path, body) => fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body}).then(r => r.status);
  const list = await fetch("/v1/previews").then(async r => r.status + " " + await r.text());
  const job = await post("/v1/previews", '{"session_code":"SESSION_1689257215_1674078"}');
  const ep = await post("/v1/endpoints", '{"url":"https://8.8.8.8/every-event"}');
  const dash = await fetch("/monitoring/api/queues").then(r => r.status);
  return [list, String(job), String(ep), String(dash)].join("|");
})()`
	got, err := chromedp.Run(browser, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(got, "|")
	if len(parts) != 4 {
		t.Fatalf("script answered %q", got)
	}
	if strings.Contains(parts[0], "SESSION_PRIVATE_1") || !strings.HasPrefix(parts[0], "403 ") {
		t.Errorf("the rebound page listed the jobs: %.200s", parts[0])
	}
	for i, what := range []string{"", "create a job", "create an endpoint", "read the dashboard"} {
		if i > 0 && parts[i] != "403" {
			t.Errorf("the rebound page could %s: %s", what, parts[i])
		}
	}
	if jobs, eps := o.effects(t); jobs != 1 || eps != 0 {
		t.Fatalf("after the rebinding attack: %d jobs (want the 1 of the test), %d endpoints", jobs, eps)
	}
}

// TestOpenServerRequestRules: the open server's rules for programs on this
// machine, with a plain HTTP client: every loopback Host passes and any
// other is refused naming the Host; a request without browser headers
// passes (API clients, curl, CSM's pushes); one that shows a browser on
// another origin is refused naming the header.
func TestOpenServerRequestRules(t *testing.T) {
	t.Parallel()
	o := newOpenEnv(t)
	body := `{"session_code":"SESSION_RULES_%d"}`
	for i, tc := range []struct {
		name   string
		host   string
		header map[string]string
		want   int
		field  string
	}{
		{"127.0.0.1 with port", "127.0.0.1:" + o.port, nil, 201, ""},
		{"localhost", "localhost:" + o.port, nil, 201, ""},
		{"LOCALHOST without port", "LOCALHOST", nil, 201, ""},
		{"elsewhere in 127/8", "127.3.2.1:80", nil, 201, ""},
		{"[::1]", "[::1]:" + o.port, nil, 201, ""},
		{"[::1] without port", "[::1]", nil, 201, ""},
		{"same-origin browser", "127.0.0.1:" + o.port, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:" + o.port}, 201, ""},
		{"old browser, own Origin", "localhost:" + o.port, map[string]string{"Origin": "http://localhost:" + o.port}, 201, ""},
		{"a rebound name", "rebind.test:" + o.port, nil, 403, "Host"},
		{"a public address", "203.0.113.7", nil, 403, "Host"},
		{"localhost as a subdomain", "localhost.evil.example", nil, 403, "Host"},
		{"IPv4-mapped loopback", "[::ffff:127.0.0.1]:" + o.port, nil, 403, "Host"},
		{"a short IPv4 form", "127.1", nil, 403, "Host"},
		{"cross-site browser", "127.0.0.1:" + o.port, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "Sec-Fetch-Site"},
		{"same-site browser", "127.0.0.1:" + o.port, map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:9"}, 403, "Sec-Fetch-Site"},
		{"old browser, foreign Origin", "127.0.0.1:" + o.port, map[string]string{"Origin": "http://127.0.0.2:8080"}, 403, "Origin"},
		{"old browser, opaque Origin", "127.0.0.1:" + o.port, map[string]string{"Origin": "null"}, 403, "Origin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", o.url+"/v1/previews", strings.NewReader(fmt.Sprintf(body, i)))
			req.Host = tc.host
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.field == "" {
				return
			}
			p := decode[api.Problem](t, mustRead(t, resp))
			if len(p.Errors) != 1 || p.Errors[0].Field != tc.field {
				t.Fatalf("problem %+v, want it to name %s", p, tc.field)
			}
		})
	}
	// A GET of another host is refused too: a rebound page must not read.
	req, _ := http.NewRequest("GET", o.url+"/v1/previews", nil)
	req.Host = "rebind.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("GET with a foreign Host: %d", resp.StatusCode)
	}
	// Probes answer whatever the Host: a load balancer's or kubelet's
	// names the pod's address.
	req, _ = http.NewRequest("GET", o.url+"/healthz", nil)
	req.Host = "10.0.0.7:8080"
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/healthz with the pod's Host: %v %v", resp, err)
	}
	resp.Body.Close()
}

func mustRead(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
