package ui_test

import (
	"bytes"
	"context"
	"image"
	_ "image/png" // screenshots
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/previewd/previewd/internal/testutil"
)

// browser starts headless Chromium with WebGL on SwiftShader (no GPU).
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(testutil.Chromium(t)),
		chromedp.NoSandbox, // as root
		chromedp.DisableGPU,
		chromedp.Flag("use-angle", "swiftshader"),
		chromedp.Flag("enable-unsafe-swiftshader", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancelTimeout)
	return ctx
}

// waitJS waits until a JavaScript expression is true.
func waitJS(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			t.Logf("%s %s", time.Now().Format("15:04:05.000"), what)
			return
		}
		select {
		case <-ctx.Done():
			text, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("waiting for %s (%s): %v; page text:\n%s", what, expr, err, text)
		case <-time.After(150 * time.Millisecond):
		}
	}
}

func login(t *testing.T, ctx context.Context, token string) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": basic(token)},
	}); err != nil {
		t.Fatal(err)
	}
}

func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	t.Logf("%s load %s", time.Now().Format("15:04:05.000"), url)
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil || resp.Status != 200 {
		t.Fatalf("load %s: %v, %v", url, err, resp)
	}
}

// TestJobViewInChromium drives the job view in headless Chromium: 401
// without credentials; the list and a filter; a job's page with its
// timeline, attempts and the preview mesh rendered in 3D (the cube's
// colour on screen); no buttons for a read-only token.
// PREVIEWD_UI_SCREENSHOTS=1 writes docs/ui-jobs.png and docs/ui-job.png.
func TestJobViewInChromium(t *testing.T) {
	t.Parallel()
	e := newUIEnv(t, envOptions{})
	ctx := browser(t)

	// A top-level navigation to a Basic challenge aborts in headless
	// Chromium, so the unauthenticated loads are fetches from a public page.
	navigate(t, ctx, e.url+"/healthz")
	for _, path := range []string{"/ui/", "/ui/jobs/" + e.done.ID} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch("`+path+`", {credentials: "omit"}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if err != nil || got != 401 {
			t.Fatalf("unauthenticated %s: %d %v", path, got, err)
		}
	}

	login(t, ctx, fullToken)
	navigate(t, ctx, e.url+"/ui/")
	waitJS(t, ctx, "four jobs listed", `document.querySelectorAll("#jobs tr[data-job]").length === 4`)
	listShot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}

	// The filter form, as a person uses it.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("status"), "generating"),
		chromedp.SetValue(chromedp.ID("older"), "30m"),
		chromedp.Click(chromedp.ID("apply")),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, "the filtered list", `location.search.includes("status=generating") && document.querySelectorAll("#jobs tr[data-job]").length === 1 && document.querySelector("#jobs tr[data-job]").dataset.job === "`+e.stuck.ID+`"`)

	// The done job: timeline, attempts, the 3D view.
	navigate(t, ctx, e.url+"/ui/jobs/"+e.done.ID)
	waitJS(t, ctx, "the timeline's steps", `document.querySelectorAll("#timeline g.step").length === `+strconv.Itoa(len(e.done.History)))
	waitJS(t, ctx, "three attempts", `document.querySelectorAll("tr.attempt").length === 3`)
	waitJS(t, ctx, "the model loaded", `customElements.get("model-viewer") !== undefined && document.getElementById("viewer").loaded === true`)
	var viewerShot []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Leave the rendering a moment; then look for the cube's orange.
		if err := chromedp.Do(ctx, chromedp.Sleep(300*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if viewerShot, err = chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("viewer"))); err != nil {
			t.Fatal(err)
		}
		if orange, variance := pixelStats(t, viewerShot); orange > 2000 && variance > 100 {
			t.Logf("viewer: %d orange pixels, luminance variance %.0f", orange, variance)
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the 3D view shows no model: %d orange pixels, variance %.1f", orange, variance)
		}
	}
	jobShot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}

	// A replay button, which a full token has:
	replays, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("button.replay").length`))
	if err != nil || replays != 1 {
		t.Errorf("replay buttons for a full token: %d %v", replays, err)
	}

	// Read-only: the same pages, without a button (fetched and parsed in
	// the page: a navigation would load the 3D view again).
	login(t, ctx, readOnlyToken)
	for _, id := range []string{e.done.ID, e.stuck.ID} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch("/ui/jobs/`+id+`").then(async r => {
			const doc = new DOMParser().parseFromString(await r.text(), "text/html");
			return r.status + " " + doc.querySelectorAll("button").length + " " + (doc.getElementById("timeline") !== null);
		})`, chromedp.EvalAwaitPromise))
		if err != nil || got != "200 0 true" {
			t.Errorf("job %s for a read-only token (status, buttons, timeline): %q %v", id, got, err)
		}
	}
	if os.Getenv("PREVIEWD_UI_SCREENSHOTS") == "1" {
		for name, shot := range map[string][]byte{"ui-jobs.png": listShot, "ui-job.png": jobShot} {
			if err := os.WriteFile(filepath.Join("..", "docs", name), shot, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// pixelStats counts the pixels of the cube's orange (a strong red, little
// blue) and the variance of luminance over the image: a blank or
// gradient-only canvas has neither.
func pixelStats(t *testing.T, shot []byte) (orange int, variance float64) {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatal(err)
	}
	var sum, sumSq float64
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			if r > 120 && r > g+40 && r > bl+80 {
				orange++
			}
			l := 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(bl)
			sum += l
			sumSq += l * l
		}
	}
	n := float64(b.Dx() * b.Dy())
	mean := sum / n
	return orange, sumSq/n - mean*mean
}
