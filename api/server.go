// Package api is previewd's HTTP surface: the JSON API backends in any
// language use (/v1/...), its OpenAPI document, the asynq dashboard
// (asynqmon) behind our authentication, health and readiness probes, and
// Prometheus metrics.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// Control is what the API needs of the producer API (tasks.Client).
type Control interface {
	Submit(ctx context.Context, req tasks.PreviewRequest) (store.Job, bool, error)
	Job(ctx context.Context, id string) (store.Job, error)
	List(ctx context.Context, opts store.ListOptions) ([]store.Job, string, error)
	Cancel(ctx context.Context, id string) (store.Job, error)
	Messages(ctx context.Context, jobID string) ([]store.Message, error)
	Replay(ctx context.Context, msgID string) (store.Message, error)
	AddEndpoint(ctx context.Context, req tasks.EndpointRequest) (store.Endpoint, string, error)
	EndpointPage(ctx context.Context, opts store.EndpointListOptions) ([]store.Endpoint, string, error)
	Endpoint(ctx context.Context, id string) (store.Endpoint, error)
	SetEndpointEnabled(ctx context.Context, id string, enabled bool, reason string) (store.Endpoint, error)
	RotateEndpointSecret(ctx context.Context, id string) (store.Endpoint, string, error)
	DeleteEndpoint(ctx context.Context, id string) error
}

// Recorder receives request measurements (metrics.Metrics).
type Recorder interface {
	HTTPRequest(route string, code int, latency time.Duration)
}

// Options configure a Server.
type Options struct {
	// Tokens are the bearer tokens of the API, compared in constant time.
	// They also open the dashboard read-write. With none, the API and the
	// dashboard are open: serve only on loopback then (the serve command
	// enforces it).
	Tokens []string
	// ReadOnlyTokens open the dashboard in asynqmon's read-only mode.
	ReadOnlyTokens []string
	// Redis is where the readiness probe and the dashboard look.
	Redis redis.UniversalClient
	// Metrics serves /metrics; nil serves nothing there.
	Metrics http.Handler
	// Recorder records each request; nil records nothing.
	Recorder Recorder
	// Dashboard is the asynqmon handler pair; nil leaves /monitoring/ out.
	Dashboard *Dashboard
	Logger    *zap.Logger
	// MaxBodyBytes bounds request bodies; default 64 KiB.
	MaxBodyBytes int64
	// CSMEvents opens the route of CSM's account webhooks; nil: 404.
	CSMEvents *CSMEvents
	// UI is the job view, served under UIPath behind the dashboard's
	// login; nil leaves /ui/ out.
	UI Views
}

// Server is the HTTP API.
type Server struct {
	control  Control
	opts     Options
	tokens   tokenSet
	readOnly tokenSet
	log      *zap.Logger
	draining atomic.Bool
	mux      *http.ServeMux
	// crossOrigin refuses the non-safe requests a browser sends on behalf
	// of a page of another origin (see sameOrigin).
	crossOrigin *http.CrossOriginProtection
}

// New returns a Server. With a nil control it serves only the probes and
// metrics (a worker's listener).
func New(control Control, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	s := &Server{
		control: control, opts: opts, log: opts.Logger,
		tokens: newTokenSet(opts.Tokens), readOnly: newTokenSet(opts.ReadOnlyTokens),
		mux: http.NewServeMux(), crossOrigin: http.NewCrossOriginProtection(),
	}
	s.routes()
	return s
}

// apiRoutes are the authenticated /v1 routes.
var apiRoutes = []struct {
	pattern string
	handle  func(*Server, http.ResponseWriter, *http.Request)
}{
	{"POST /v1/previews", (*Server).createPreview},
	{"GET /v1/previews", (*Server).listPreviews},
	{"GET /v1/previews/{id}", (*Server).getPreview},
	{"POST /v1/previews/{id}/cancel", (*Server).cancelPreview},
	{"GET /v1/previews/{id}/webhooks", (*Server).previewWebhooks},
	{"POST /v1/messages/{id}/replay", (*Server).replayMessage},
	{"POST /v1/endpoints", (*Server).createEndpoint},
	{"GET /v1/endpoints", (*Server).listEndpoints},
	{"GET /v1/endpoints/{id}", (*Server).getEndpoint},
	{"DELETE /v1/endpoints/{id}", (*Server).deleteEndpoint},
	{"POST /v1/endpoints/{id}/disable", (*Server).disableEndpoint},
	{"POST /v1/endpoints/{id}/enable", (*Server).enableEndpoint},
	{"POST /v1/endpoints/{id}/rotate-secret", (*Server).rotateEndpointSecret},
}

// Routes lists the API's routes ("METHOD /path"), all of which the OpenAPI
// document describes.
func Routes() []string {
	out := make([]string, len(apiRoutes))
	for i, rt := range apiRoutes {
		out[i] = rt.pattern
	}
	return out
}

// SetDraining makes /readyz answer 503, so load balancers stop sending
// traffic before the server shuts down.
func (s *Server) SetDraining() { s.draining.Store(true) }

// Handler returns the server's handler.
func (s *Server) Handler() http.Handler { return s.observe(s.mux) }

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /readyz", s.readyz)
	if s.opts.Metrics != nil {
		m.Handle("GET /metrics", s.opts.Metrics)
	}
	if s.control == nil {
		return // a worker's listener: probes and metrics only
	}
	m.HandleFunc("GET /v1/openapi.json", serveOpenAPI)
	m.HandleFunc("POST "+CSMEventsPath, s.csmEvents) // CSM sends no bearer token: its own ?token= (csmevents.go)

	for _, rt := range apiRoutes {
		handle := rt.handle
		m.Handle(rt.pattern, s.authenticate(func(w http.ResponseWriter, r *http.Request) { handle(s, w, r) }))
	}
	// Anything else under /v1/ is a JSON 404, not the mux's text one.
	m.Handle("/v1/", s.authenticate(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "Not found", "no such API route: "+r.Method+" "+r.URL.Path, nil)
	}))
	if d := s.opts.Dashboard; d != nil {
		m.Handle(DashboardPath+"/", s.dashboard(d))
		m.Handle("GET "+DashboardPath, http.RedirectHandler(DashboardPath+"/", http.StatusMovedPermanently))
	}
	if v := s.opts.UI; v != nil {
		m.Handle(UIPath+"/", s.loggedIn("the job view", v.Handler(false), v.Handler(true)))
		m.Handle("GET "+UIPath, http.RedirectHandler(UIPath+"/", http.StatusMovedPermanently))
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	if s.opts.Redis != nil {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		if err := s.opts.Redis.Ping(ctx).Err(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("redis does not answer\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// tokenSet compares tokens in constant time: each candidate is hashed, so
// the comparison takes the same time whatever the tokens' lengths, and
// every configured token is compared.
type tokenSet [][32]byte

func newTokenSet(tokens []string) tokenSet {
	var out tokenSet
	for _, t := range tokens {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, sha256.Sum256([]byte(t)))
		}
	}
	return out
}

func (t tokenSet) match(token string) bool {
	if token == "" {
		return false
	}
	d := sha256.Sum256([]byte(token))
	found := 0
	for _, want := range t {
		found |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	return found == 1
}

// open reports whether the API runs without tokens (loopback only).
func (s *Server) open() bool { return len(s.tokens) == 0 }

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// authenticate admits requests with a valid bearer token. Without tokens
// (open) it admits what only a program on this machine or a page of the
// server's own loopback origin can send: a loopback Host, so that a name
// rebound to 127.0.0.1 (DNS rebinding) gets nothing, and no cross-origin
// browser request, so that a page elsewhere cannot create billed jobs or
// endpoints (CSRF). With tokens neither is needed: a browser never attaches
// a bearer token by itself.
func (s *Server) authenticate(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.open() {
			if !loopbackHost(r.Host) {
				writeProblem(w, http.StatusForbidden, "Host not served", hostDetail, []tasks.FieldError{hostField})
				return
			}
			if field, ok := s.sameOrigin(r); !ok {
				writeProblem(w, http.StatusForbidden, "Cross-origin request",
					"a page of another origin cannot change this API's state", []tasks.FieldError{field})
				return
			}
			next(w, r)
			return
		}
		if s.tokens.match(bearer(r)) {
			next(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="previewd"`)
		writeProblem(w, http.StatusUnauthorized, "Unauthorized", "a valid bearer token is required (Authorization: Bearer <token>)", nil)
	})
}

const hostDetail = "without API tokens the server answers only requests addressed to a loopback host (localhost, 127.0.0.1, [::1]); set PREVIEWD_API_TOKENS to serve other names"

var hostField = tasks.FieldError{Field: "Host", Message: "must be localhost, an address in 127.0.0.0/8 or [::1] (any port)"}

// loopbackHost reports whether a Host header names this machine's
// loopback: localhost, 127.0.0.0/8 or [::1], with or without a port. A
// page can make a browser send any name that resolves to 127.0.0.1, but
// not one of these unless it is itself served from loopback.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return false // an IPv6 address without brackets is not a Host
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return false
	}
	return (addr.Is4() && addr.IsLoopback()) || addr == netip.IPv6Loopback()
}

// sameOrigin reports whether r may change state as far as browsers are
// concerned: a safe method (GET, HEAD, OPTIONS), or a request a browser
// marks same-origin (Sec-Fetch-Site: same-origin, or none for what the
// user did), or, from a browser too old for Sec-Fetch-Site, an Origin
// whose host is the request's own. A request with neither header is not
// a browser's and passes: API clients, curl and CSM's pushes send none,
// while every browser sends one of them on a cross-site POST. The check
// is the standard library's (http.CrossOriginProtection), which compares
// Origin with Host by host and port, not scheme, so that a TLS-terminating
// proxy in front does not make every request look cross-origin. Otherwise
// it names the header that shows the request's origin.
func (s *Server) sameOrigin(r *http.Request) (tasks.FieldError, bool) {
	if s.crossOrigin.Check(r) == nil {
		return tasks.FieldError{}, true
	}
	if r.Header.Get("Sec-Fetch-Site") != "" {
		return tasks.FieldError{Field: "Sec-Fetch-Site", Message: "must be same-origin for a request that changes state"}, false
	}
	return tasks.FieldError{Field: "Origin", Message: "must be this server's own origin for a request that changes state"}, false
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets the dashboard stream.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// observe logs and measures every request, and turns a panic into a 500.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("HTTP handler panicked", zap.Any("panic", p), zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Stack("stack"))
				if rec.code == 0 {
					writeProblem(rec, http.StatusInternalServerError, "Internal error", "the request could not be processed", nil)
				}
			}
			route := r.Pattern
			if route == "" || strings.HasPrefix(r.URL.Path, DashboardPath) {
				route = routeGroup(r.URL.Path)
			}
			latency := time.Since(start)
			if s.opts.Recorder != nil {
				s.opts.Recorder.HTTPRequest(route, rec.code, latency)
			}
			if route != "GET /healthz" && route != "GET /readyz" && route != "GET /metrics" {
				s.log.Info("http request", zap.String("method", r.Method), zap.String("route", route),
					zap.Int("status", rec.code), zap.Duration("latency", latency))
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// routeGroup bounds the label values of unmatched paths.
func routeGroup(path string) string {
	switch {
	case strings.HasPrefix(path, DashboardPath):
		return "dashboard"
	case strings.HasPrefix(path, "/v1/"):
		return "v1 unmatched"
	}
	return "other"
}

//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the OpenAPI 3.1 document of the API.
func OpenAPIDocument() []byte { return openAPIDocument }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openAPIDocument)
}
