// Package csmsim simulates the part of CSM.ai's legacy image-to-3D REST API
// that previewd drives: reading a session and starting its preview mesh.
//
// CSM cannot be reached from tests or the demo, so this package reproduces
// what is known of it (shared/csm-api.md and the seed doc page), traps
// included: a 2025-schema session reads "complete" before any preview was
// asked for, a session lags behind an accepted preview, unknown status strings
// appear, and every accepted preview is billed. Fault knobs inject auth
// errors, throttling, 5xx replies, error envelopes and replies lost after the
// preview was already accepted, so a client's retry logic can be checked
// against exact counts (AcceptedPreviews, Requests).
//
// A Server is an http.Handler: serve it with httptest.NewServer. Lifecycle
// timing derives only from Options.Now, so tests drive it with a fake clock
// and need no sleeps. The Server starts no goroutine; a handler blocks only
// while a Latency or FaultAcceptThenHang wait lasts, and both end with the
// request context or with Close.
package csmsim

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultBaseAssetURL is the asset URL prefix used when Options.BaseAssetURL
// is empty. The .invalid TLD guarantees nothing ever tries to fetch it for real.
const DefaultBaseAssetURL = "https://assets.csm-sim.invalid"

// Options configure a Server.
type Options struct {
	// APIKey is the required value of the x-api-key header. A request without
	// the header gets 401; a request with any other value gets 403. New panics
	// when it is empty: a simulator without auth would hide header bugs.
	APIKey string
	// Now is the clock; default time.Now. All session lifecycle timing derives
	// from it. Latency is real waiting and does not use it.
	Now func() time.Time
	// BaseAssetURL prefixes every spin, image and mesh URL the Server invents;
	// default DefaultBaseAssetURL. A trailing slash is ignored.
	BaseAssetURL string
	// Push, when its URL is set, posts account webhooks on status changes (push.go).
	Push PushOptions
}

// Server is the simulated CSM API. Create it with New; it is safe for
// concurrent use.
type Server struct {
	apiKey  string
	now     func() time.Time
	baseURL string

	// closed is closed by Close to release handlers that are waiting.
	closed    chan struct{}
	closeOnce sync.Once

	mu         sync.Mutex
	sessions   map[string]*session
	total      int
	onAccepted func(code string)

	push   PushOptions
	pushes pusher
}

// New returns a Server with no sessions; add them with AddSession.
func New(opts Options) *Server {
	if opts.APIKey == "" {
		panic("csmsim: Options.APIKey is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	base := strings.TrimRight(opts.BaseAssetURL, "/")
	if base == "" {
		base = DefaultBaseAssetURL
	}
	return &Server{
		apiKey:   opts.APIKey,
		now:      opts.Now,
		baseURL:  base,
		closed:   make(chan struct{}),
		sessions: make(map[string]*session),
		push:     opts.Push,
	}
}

// Close releases every request the Server is holding: Latency waits end at
// once (the request is then answered normally) and FaultAcceptThenHang
// handlers drop their connection without a response. Call it before
// httptest.Server.Close, which otherwise waits for a hanging handler whose
// client never gives up. Close does not stop the Server from serving; it is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed); s.stopPushes() })
}

// AddSession creates the session code with cfg, replacing any existing
// session with that code (its counters and history start again at zero;
// TotalAcceptedPreviews keeps counting). Requests already in flight finish
// against the session they found.
func (s *Server) AddSession(code string, cfg SessionConfig) {
	ss := newSession(code, cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions[code] = ss
}

// AcceptedPreviews reports how many preview POSTs were accepted (and so
// billed upstream) for the session code, including those whose reply a
// FaultAcceptThen* fault then lost. Unknown codes report 0.
func (s *Server) AcceptedPreviews(code string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss := s.sessions[code]; ss != nil {
		return ss.accepted
	}
	return 0
}

// TotalAcceptedPreviews reports the preview POSTs accepted over all sessions
// since New, including sessions since replaced by AddSession.
func (s *Server) TotalAcceptedPreviews() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Requests reports every request seen for the session code and endpoint
// after authentication: faulted, refused, timed out and accepted alike.
func (s *Server) Requests(code string, ep Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[code]
	if ss == nil || !ep.valid() {
		return 0
	}
	return ss.requests[ep]
}

// PreviewCall records one accepted preview POST.
type PreviewCall struct {
	SelectedSpinIndex int       // 0 when the body did not set it
	SelectedSpin      string    // "" when the body did not set it
	ScaledBBox        []float64 // nil when the body did not set it
	PivotPoint        []float64 // nil when the body did not set it
	At                time.Time // Options.Now at acceptance
	UniqueTrialKey    string    // the job key returned (or lost) for this call
}

// LastPreview returns the body of the last accepted preview POST for the
// session code; ok is false when none was accepted.
func (s *Server) LastPreview(code string) (call PreviewCall, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sessions[code]
	if ss == nil || ss.accepted == 0 {
		return PreviewCall{}, false
	}
	c := ss.last
	c.ScaledBBox = cloneFloats(c.ScaledBBox)
	c.PivotPoint = cloneFloats(c.PivotPoint)
	return c, true
}

// OnPreviewAccepted sets a hook run synchronously right after a preview POST
// is accepted and counted, before any response is written, so a test can
// kill or cut off the caller exactly between "billed" and "told". The hook
// runs without the Server's lock held and may call its methods. nil clears it.
func (s *Server) OnPreviewAccepted(fn func(code string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onAccepted = fn
}

const (
	sessionsPrefix = "/image-to-3d-sessions/"
	previewPrefix  = "/image-to-3d-sessions/get-3d/preview/"
)

// route maps a path to the session code and endpoint it addresses.
func route(path string) (code string, ep Endpoint, ok bool) {
	// The preview prefix is tested first: it is itself under sessionsPrefix.
	if rest, found := strings.CutPrefix(path, previewPrefix); found {
		return rest, EndpointPreview, rest != "" && !strings.Contains(rest, "/")
	}
	if rest, found := strings.CutPrefix(path, sessionsPrefix); found {
		return rest, EndpointGetSession, rest != "" && !strings.Contains(rest, "/")
	}
	return "", 0, false
}

// ServeHTTP answers one request. Mesh files (serveAsset) need no key;
// for the API the order is fixed: API key, route and
// method, session lookup (the request is counted from here on), Latency,
// GoneAfter, faults, then the endpoint itself.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, meshesPrefix) {
		s.serveAsset(w, r) // the CDN's part: no API key
		return
	}
	keys := r.Header.Values("x-api-key")
	switch {
	case len(keys) == 0:
		writeError(w, http.StatusUnauthorized, "missing api key")
		return
	case keys[0] != s.apiKey:
		writeError(w, http.StatusForbidden, "invalid api key")
		return
	}

	code, ep, ok := route(r.URL.Path)
	if !ok {
		writeError(w, http.StatusNotFound, "Cannot "+r.Method+" "+r.URL.Path)
		return
	}
	if m := ep.method(); r.Method != m {
		w.Header().Set("Allow", m)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed")
		return
	}

	s.mu.Lock()
	ss := s.sessions[code]
	if ss != nil {
		ss.requests[ep]++
	}
	s.mu.Unlock()
	if ss == nil {
		writeError(w, http.StatusNotFound, "session not found")
		return
	}

	// cfg is never written after newSession, so reading it unlocked is safe.
	if !s.wait(r.Context(), ss.cfg.Latency) {
		return // the client is gone; nobody reads an answer
	}

	now := s.now()
	s.mu.Lock()
	gone := ss.gone(now)
	var f Fault
	var faulted bool
	if !gone {
		f, faulted = ss.takeFault(ep)
	}
	s.mu.Unlock()
	if gone {
		writeError(w, http.StatusNotFound, "session not found")
		return
	}
	// A FaultAcceptThen* fault lets the request do its work; only the reply
	// is lost. Every other fault answers instead of the endpoint.
	var lost *Fault
	if faulted {
		if !f.Kind.losesReply() {
			s.writeFault(w, r, f)
			return
		}
		lost = &f
	}

	switch ep {
	case EndpointGetSession:
		s.getSession(w, r, ss, lost)
	case EndpointPreview:
		s.preview(w, r, ss, lost)
	}
}

// getSession answers GET /image-to-3d-sessions/{code}.
func (s *Server) getSession(w http.ResponseWriter, r *http.Request, ss *session, lost *Fault) {
	now := s.now()
	s.mu.Lock()
	data := ss.snapshot(now, s.baseURL)
	s.mu.Unlock()
	s.reply(w, r, lost, http.StatusOK, envelope{
		Message:    "Session retrieved",
		StatusCode: http.StatusOK,
		Data:       data,
	})
}

// reply writes body with status, unless lost says the reply never reaches
// the client.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, lost *Fault, status int, body any) {
	if lost != nil {
		s.writeFault(w, r, *lost)
		return
	}
	writeJSON(w, status, body)
}

// wait sleeps d in real time. It reports false when ctx ended first; Close
// cuts the wait short and reports true so the request is answered.
func (s *Server) wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closed:
		return true
	case <-ctx.Done():
		return false
	}
}

// hang blocks until the client gives up or Close is called, and never answers.
func (s *Server) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.closed:
		// Returning normally would send an empty 200; abort the connection.
		panic(http.ErrAbortHandler)
	}
}

// resetConn closes the connection under the request without a response.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2, a recorder): net/http turns this panic into
		// an aborted connection or stream, which is what we want to show.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // send RST, like a proxy dropping the connection
	}
	_ = conn.Close()
}

// envelope is the legacy success envelope; a nil Data marshals as null.
type envelope struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	StatusCode int    `json:"statusCode"`
	Data       any    `json:"data"`
}

// errorBody is the legacy error envelope.
type errorBody struct {
	Error      string `json:"error"`
	Message    string `json:"message"`
	StatusCode int    `json:"statusCode"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: http.StatusText(status), Message: msg, StatusCode: status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are marshalled; this is a bug in the simulator.
		http.Error(w, "csmsim: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func cloneFloats(f []float64) []float64 {
	if f == nil {
		return nil
	}
	return append([]float64(nil), f...)
}
