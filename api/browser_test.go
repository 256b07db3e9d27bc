package api_test

import (
	"context"
	"encoding/base64"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/tasks"
)

// TestDashboardInChromium loads the embedded asynq dashboard in headless
// Chromium: without credentials it gets 401; logged in (HTTP Basic, the
// password an API token) the queues page lists our queues, and a task's
// page shows our payload with its job id.
func TestDashboardInChromium(t *testing.T) {
	t.Parallel()
	exe := testutil.Chromium(t)
	e := newDashboardEnv(t)
	ctx := context.Background()

	// Tasks in several states: a pending request, a scheduled poll, an
	// archived delivery.
	job, err := e.control.RequestPreview(ctx, tasks.PreviewRequest{SessionCode: "SESSION_BROWSER_1"})
	if err != nil {
		t.Fatal(err)
	}
	q := tasks.QueuesFor(e.redis.Namespace)
	client := asynq.NewClientFromRedisClient(e.redis.Client)
	poll, _ := tasks.NewTask(tasks.PollPreview{JobID: job.ID, SessionCode: job.SessionCode, Seq: 1}, q, time.Now().Add(time.Hour))
	if _, err := client.Enqueue(poll); err != nil {
		t.Fatal(err)
	}
	hook := tasks.DeliverWebhook{JobID: job.ID, EventID: tasks.EventID(job.ID, "final"), EventType: "preview.done", Destination: "job"}
	hookTask, _ := tasks.NewTask(hook, q, time.Time{})
	if _, err := client.Enqueue(hookTask); err != nil {
		t.Fatal(err)
	}
	if err := asynq.NewInspectorFromRedisClient(e.redis.Client).ArchiveTask(q.FinalWebhooks, hook.TaskID()); err != nil {
		t.Fatal(err)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()
	browser, cancelTimeout := context.WithTimeout(browser, 60*time.Second)
	defer cancelTimeout()

	// Without credentials: 401 for the page and its API. (A top-level
	// navigation to a Basic challenge makes headless Chromium abort with
	// ERR_INVALID_AUTH_CREDENTIALS instead of prompting, so the browser
	// loads them with fetch from a public page of the same origin.)
	if err := chromedp.Do(browser, chromedp.Navigate(e.url+"/healthz")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/monitoring/", "/monitoring/api/queues"} {
		got, err := chromedp.Run(browser, chromedp.Evaluate[string](
			`fetch("`+path+`", {credentials: "omit"}).then(async r => r.status + " " + await r.text())`,
			chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "401 401 unauthorized") {
			t.Fatalf("unauthenticated %s in the browser: %q", path, got)
		}
	}

	// Logged in: HTTP Basic with an API token as the password, on every
	// request of the page (its scripts call the dashboard's API).
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
	if _, err := chromedp.Call(browser, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": basic},
	}); err != nil {
		t.Fatal(err)
	}
	waitText := func(want ...string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			for {
				body, err := chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)(ctx, tg)
				if err != nil {
					return chromedp.Void{}, err
				}
				all := true
				for _, w := range want {
					all = all && strings.Contains(body, w)
				}
				if all {
					return chromedp.Void{}, nil
				}
				select {
				case <-ctx.Done():
					t.Logf("page text when giving up:\n%s", body)
					return chromedp.Void{}, ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}
	resp, err := chromedp.Run(browser, chromedp.NavigateResponse(e.url+"/monitoring/"))
	if err != nil || resp.Status != 200 {
		t.Fatalf("logged-in load: %v, status %v", err, resp)
	}
	if err := chromedp.Do(browser, waitText(q.Previews, q.Polls, q.FinalWebhooks)); err != nil {
		t.Fatalf("the queues page does not list our queues: %v", err)
	}
	queuesShot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	taskURL := e.url + "/monitoring/queues/" + url.PathEscape(q.Polls) + "/tasks/" + url.PathEscape("poll:"+job.ID+":1")
	if err := chromedp.Do(browser, chromedp.Navigate(taskURL), waitText("GET /v1/previews/"+job.ID, "SESSION_BROWSER_1")); err != nil {
		t.Fatalf("the task page does not show our payload and its job: %v", err)
	}
	taskShot, err := chromedp.Run(browser, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, shot := range map[string][]byte{"dashboard-queues.png": queuesShot, "dashboard-task.png": taskShot} {
		if err := os.WriteFile(filepath.Join(dir, name), shot, 0o644); err != nil {
			t.Fatal(err)
		}
		// PREVIEWD_SCREENSHOT_DIR keeps them (the README's screenshot comes from here).
		if keep := os.Getenv("PREVIEWD_SCREENSHOT_DIR"); keep != "" {
			if err := os.WriteFile(filepath.Join(keep, name), shot, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("screenshots in %s", dir)
}
