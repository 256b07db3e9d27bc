// Package ui is previewd's job view: server-rendered pages (html/template)
// that show jobs as operators think of them, not as asynq tasks. It owns
// the list of jobs (/ui/), a job's page with its timeline, webhook
// attempts, dashboard links and 3D preview (/ui/jobs/{id}), the GLB proxy
// behind that preview, and the embedded assets (CSS and Google's
// <model-viewer> 4.4.0, vendored from npm: no CDN).
//
// It authenticates nobody: api.Server mounts it behind the dashboard's
// login (Basic, a token as the password) and same-origin rules, and picks
// Handler(true) for read-only tokens, which shows no buttons and refuses
// every POST.
package ui

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Jobs is what the pages read and change (tasks.Client).
type Jobs interface {
	Job(ctx context.Context, id string) (store.Job, error)
	List(ctx context.Context, opts store.ListOptions) ([]store.Job, string, error)
	Cancel(ctx context.Context, id string) (store.Job, error)
	Messages(ctx context.Context, jobID string) ([]store.Message, error)
	Replay(ctx context.Context, msgID string) (store.Message, error)
}

// Counter counts jobs per status (store.Store).
type Counter interface {
	StatusCounts(ctx context.Context) (map[store.Status]int64, error)
}

// Fetcher GETs a URL under the webhook address policy, size-capped
// (webhook.Sender).
type Fetcher interface {
	Fetch(ctx context.Context, rawURL string, maxBytes int64) ([]byte, string, error)
}

// Options configure the job view. Zero values take the defaults.
type Options struct {
	Jobs Jobs
	// Counts shows the counts per status on the list; nil shows none.
	Counts Counter
	// Mesh fetches the preview GLB for the 3D view; nil: no 3D view.
	Mesh Fetcher
	// Namespace names the asynq queues the dashboard links point into;
	// default "previewd".
	Namespace string
	// Root is where the job view is mounted; default "/ui".
	Root string
	// DashboardPath is the asynq dashboard's path; default "/monitoring".
	DashboardPath string
	// MeshMaxBytes caps a fetched GLB; default 20 MiB.
	MeshMaxBytes int64
	// MeshCacheTTL is how long a fetched GLB is kept; default 1 minute.
	MeshCacheTTL time.Duration
	// MeshCacheBytes bounds the GLB cache; default 64 MiB.
	MeshCacheBytes int64
	Now            func() time.Time
	Logger         *zap.Logger
}

// UI serves the job view.
type UI struct {
	opts      Options
	queues    tasks.Queues
	log       *zap.Logger
	cache     *meshCache
	readWrite http.Handler
	readOnly  http.Handler
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns the job view, defaults applied.
func New(opts Options) *UI {
	if opts.Namespace == "" {
		opts.Namespace = "previewd"
	}
	if opts.Root == "" {
		opts.Root = "/ui"
	}
	if opts.DashboardPath == "" {
		opts.DashboardPath = "/monitoring"
	}
	if opts.MeshMaxBytes <= 0 {
		opts.MeshMaxBytes = 20 << 20
	}
	if opts.MeshCacheTTL <= 0 {
		opts.MeshCacheTTL = time.Minute
	}
	if opts.MeshCacheBytes <= 0 {
		opts.MeshCacheBytes = 64 << 20
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	u := &UI{
		opts: opts, queues: tasks.QueuesFor(opts.Namespace), log: opts.Logger,
		cache: newMeshCache(opts.MeshCacheBytes),
	}
	u.readWrite = u.routes(false)
	u.readOnly = u.routes(true)
	return u
}

// Handler returns the job view for full tokens (readOnly false: cancel and
// replay buttons, and the POSTs behind them) or read-only tokens.
func (u *UI) Handler(readOnly bool) http.Handler {
	if readOnly {
		return u.readOnly
	}
	return u.readWrite
}

// contentSecurity allows the page's own scripts only: no inline script,
// no other origin. Inline styles are allowed because model-viewer writes
// the styles of its shadow DOM as <style> elements (blocked, its canvas
// escapes its box); it needs blob: for the textures it decodes and data:
// for its built-in environment image.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
	"connect-src 'self' data: blob:; worker-src 'self' blob:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func (u *UI) routes(readOnly bool) http.Handler {
	m := http.NewServeMux()
	root := u.opts.Root
	m.HandleFunc("GET "+root+"/{$}", u.list)
	m.HandleFunc("GET "+root+"/jobs/{id}", func(w http.ResponseWriter, r *http.Request) { u.job(w, r, readOnly) })
	m.HandleFunc("GET "+root+"/jobs/{id}/mesh.glb", u.mesh)
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix(root+"/static/", http.FileServerFS(static))
	m.Handle("GET "+root+"/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Embedded files change only with the binary.
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	}))
	if readOnly {
		refuse := func(w http.ResponseWriter, r *http.Request) {
			u.errorPage(w, http.StatusForbidden, "Read-only", "a read-only token cannot cancel jobs or replay messages")
		}
		m.HandleFunc("POST "+root+"/jobs/{id}/cancel", refuse)
		m.HandleFunc("POST "+root+"/jobs/{id}/messages/{msg}/replay", refuse)
	} else {
		m.HandleFunc("POST "+root+"/jobs/{id}/cancel", u.cancel)
		m.HandleFunc("POST "+root+"/jobs/{id}/messages/{msg}/replay", u.replay)
	}
	m.HandleFunc(root+"/", func(w http.ResponseWriter, r *http.Request) {
		u.errorPage(w, http.StatusNotFound, "Not found", "no such page: "+r.Method+" "+r.URL.Path)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		m.ServeHTTP(w, r)
	})
}
